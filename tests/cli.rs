//! The `latchkey` command as a user runs it: the demo, `--instances`, and one-line errors.

use std::process::Output;

use harness::{RedisServer, free_port, guest, host_process, latchkey, signal};

fn run(args: &[&str]) -> Output {
    latchkey().args(args).output().expect("latchkey runs")
}

/// Runs a command line split at spaces (the paths of these tests have none).
fn run_line(line: &str) -> Output {
    run(&line.split_whitespace().collect::<Vec<_>>())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The README's demo: two instances of the Dapr sample, one wins, one is told so, each line
/// prefixed by its instance.
#[test]
fn two_instances_of_the_sample_contend() {
    let out = run_line(&format!(
        "run --instances 2 {}",
        guest("try-lock").display()
    ));
    assert!(out.status.success(), "{out:?}");
    let mut lines: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.split_once("] ").expect("a prefix").1.to_owned())
        .collect();
    lines.sort();
    assert_eq!(lines, ["Failed to lock my_file_name.", "Success"]);
}

/// The counter through the CLI on Redis: several instances, one shared file, exact.
#[test]
fn counter_instances_share_a_redis_store() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = run_line(&format!(
        "run --instances 4 --store lockstore={} --dir {}::/data {} --iterations 50",
        redis.url(),
        dir.path().display(),
        guest("counter").display()
    ));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).lines().count(), 4);
    let count = std::fs::read_to_string(dir.path().join("counter")).unwrap();
    assert_eq!(count.trim(), "200");
}

/// The guest gets only the variables given with --env, never the host's.
#[test]
fn guests_inherit_no_environment() {
    let lockctl = guest("lockctl");
    let out = latchkey()
        .env("HOST_SECRET", "x")
        .args(["run", "--env", "GIVEN=1", lockctl.to_str().unwrap(), "env"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "env GIVEN=1\n");
}

/// A Redis password comes from a file or the host's environment, never the command line.
#[test]
fn passwords_come_from_a_file_or_the_environment() {
    let redis = RedisServer::start_with(&["--requirepass", "pw-from-elsewhere"]);
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "pw-from-elsewhere\n").unwrap();
    let (url, lockctl) = (redis.url(), guest("lockctl"));
    let lockctl = lockctl.display();

    let out = run_line(&format!(
        "run --store lockstore={url} --password-file lockstore={} {lockctl} \
         open lockstore try a 1000",
        password_file.display()
    ));
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("granted a"), "{out:?}");

    let line = format!(
        "run --store lockstore={url} --password-env lockstore=LOCK_PW {lockctl} \
         open lockstore try a 1000"
    );
    let out = latchkey()
        .env("LOCK_PW", "pw-from-elsewhere")
        .args(line.split_whitespace())
        .output()
        .unwrap();
    assert!(text(&out.stdout).contains("granted a"), "{out:?}");

    // Without it, the server refuses the host before any guest runs.
    let out = run_line(&format!("run --store lockstore={url} {lockctl}"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("credentials"), "{out:?}");
}

/// Each mistake is one line on stderr and a non-zero exit.
#[test]
fn mistakes_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("notes.txt");
    std::fs::write(&text_file, "hello").unwrap();
    let core_module = dir.path().join("core.wasm");
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").unwrap();
    let lockctl = guest("lockctl");
    let lockctl = lockctl.to_str().unwrap();
    let dead = format!("lockstore=redis://user:hunter2@127.0.0.1:{}", free_port());
    let long_app = "a".repeat(100_000);

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "missing.wasm"], "cannot read missing.wasm"),
        (
            vec!["run", text_file.to_str().unwrap()],
            "is not a WebAssembly file",
        ),
        (
            vec!["run", core_module.to_str().unwrap()],
            "is not a WebAssembly component",
        ),
        (
            vec!["run", "--frobnicate", lockctl],
            "unexpected argument '--frobnicate'",
        ),
        (
            vec!["run"],
            "required arguments were not provided: <COMPONENT>",
        ),
        (
            vec!["run", "--store", "lockstore=ftp://x", lockctl],
            "neither `memory` nor",
        ),
        (
            vec!["run", "--store", "nonsense", lockctl],
            "expected NAME=VALUE",
        ),
        (
            vec!["run", "--max-keep-alive", "500000000000y", lockctl],
            "is longer than ten years",
        ),
        (
            vec!["run", "--store", &dead, lockctl],
            "could not be reached",
        ),
        (
            vec!["run", "--password-file", "other=/x", lockctl],
            "no --store other=URL",
        ),
        (
            vec![
                "run",
                "--store",
                "s=redis+sentinel://127.0.0.1:1/x",
                lockctl,
            ],
            "set wait-replicas",
        ),
        (
            vec!["run", "--store", "s=redis+sentinel://127.0.0.1:1", lockctl],
            "name the monitored service",
        ),
        (
            vec!["run", "--store", "s=redis+redlock://h:1,h:2", lockctl],
            "Redlock needs three or more masters",
        ),
        (
            vec![
                "run",
                "--store",
                "s=memory",
                "--wait-replicas",
                "s=x",
                lockctl,
            ],
            "expected NAME=N",
        ),
        (
            vec!["run", "--wait-replicas", "t=1", lockctl],
            "no --store t=URL",
        ),
        (
            vec!["run", "--app-id", "billing\nforged", lockctl],
            "--app-id: the app id holds a control character",
        ),
        (
            vec!["run", "--app-id", &long_app, lockctl],
            "--app-id: the app id is 100000 bytes; the limit is 1024 bytes",
        ),
        (
            vec!["run", "--deadline", "0s", lockctl],
            "must be longer than zero",
        ),
    ];
    for (args, expected) in cases {
        let out = run(&args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("latchkey: "), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "a password was printed: {stderr}"
        );
    }
}

/// No message or log line holds a password, however the URL around it is written: with
/// `/`, `?`, `#` or `@` inside the password, parseable or not, for every URL form — even
/// with every log line on (`RUST_LOG=trace`).
#[test]
fn passwords_never_reach_a_message_or_log_line() {
    let lockctl = guest("lockctl");
    let port = free_port();
    let secrets = ["se/cret", "se?cret", "se#cret", "se@cret", "se:cret%2F"];
    for secret in secrets {
        for form in [
            format!("redis://user:{secret}@127.0.0.1:{port}"),
            format!("rediss://:{secret}@127.0.0.1:{port}/0"),
            format!("redis+cluster://user:{secret}@127.0.0.1:{port},127.0.0.1:{port}"),
            format!("redis+sentinel://user:{secret}@127.0.0.1:{port}/svc"),
            format!("redis+redlock://user:{secret}@127.0.0.1:{port},h:1,h:2"),
            format!("redis://user:{secret}@"),
            // The only way to give a unix socket's password, and redis-rs' query forms.
            format!("redis+unix:///tmp/latchkey-no-such.sock?pass={secret}"),
            format!("redis://127.0.0.1:{port}/?password={secret}"),
            format!("redis://127.0.0.1:{port}/?user=u&password={secret}&protocol=resp3"),
        ] {
            let out = latchkey()
                .env("RUST_LOG", "trace")
                .args(["run", "--store-timeout-ms", "300", "--wait-replicas"])
                .arg("s=1")
                .arg("--store")
                .arg(format!("s={form}"))
                .arg(&lockctl)
                .output()
                .unwrap();
            let stderr = text(&out.stderr);
            assert!(!out.status.success(), "{form}: {stderr}");
            assert!(
                !stderr.contains("cret"),
                "{form}: the password was printed:\n{stderr}"
            );
        }
        // A flag value clap refuses is quoted in its message: a URL given without NAME=.
        for url in [
            format!("redis://user:{secret}@127.0.0.1:{port}"),
            format!("redis+unix:///tmp/r.sock?pass={secret}"),
        ] {
            let out = latchkey()
                .args(["run", "--store", &url])
                .arg(&lockctl)
                .output()
                .unwrap();
            let stderr = text(&out.stderr);
            assert!(stderr.contains("expected NAME=VALUE"), "{stderr}");
            assert!(
                !stderr.contains("cret"),
                "{url}: the password was printed:\n{stderr}"
            );
        }
    }
}

/// A guest's failure is the command's failure.
#[test]
fn a_trapping_guest_fails_the_command() {
    let out = run_line(&format!(
        "run {} open lockstore trap",
        guest("lockctl").display()
    ));
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("opened lockstore"));
}

/// A config file sets the app's policy; flags override the file's stores; a guest that
/// outstays `--timeout` is stopped, and one that outgrows `--max-memory` too.
#[test]
fn config_file_policy_and_limit_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("latchkey.toml");
    let redis_down = format!("redis://127.0.0.1:{}", free_port());
    std::fs::write(
        &config,
        format!(
            "[stores.lockstore]\nurl = \"{redis_down}\"\n\
             [apps.jobs]\nresources = [\"job-*\"]\nmax-lease = \"10s\"\n"
        ),
    )
    .unwrap();
    let (config, lockctl) = (config.display(), guest("lockctl"));
    let lockctl = lockctl.display();

    // The file's Redis is down: the file alone fails, the flag's memory store replaces it.
    let out = run_line(&format!("run --config {config} --app-id jobs {lockctl}"));
    assert!(
        text(&out.stderr).contains("could not be reached"),
        "{out:?}"
    );
    let out = run_line(&format!(
        "run --config {config} --app-id jobs --store lockstore=memory {lockctl} \
         open lockstore try payroll 1000 try job-1 20000 try job-1 1000"
    ));
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[1].starts_with("error access-denied"), "{lines:?}");
    assert!(
        lines[2].starts_with("error invalid-argument: lease-ms is 20000"),
        "{lines:?}"
    );
    assert!(lines[3].starts_with("granted job-1"), "{lines:?}");

    let out = run_line(&format!(
        "run --timeout 1s {lockctl} open lockstore try a 60000 spin"
    ));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("stopped at its deadline of 1s"), "{stderr}");

    let out = run_line(&format!(
        "run --max-memory 32MiB {lockctl} open lockstore bomb"
    ));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("growing memory"), "{out:?}");
}

/// A mistake in the config file is one line saying where and what.
#[test]
fn config_mistakes_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let lockctl = guest("lockctl");
    let cases = [
        (
            "[stores.a]\nurl = \"memory\"\ncolor = \"red\"\n",
            "unknown field `color`",
        ),
        (
            "[stores.a]\nurl = \"http://x\"\n",
            "stores.a: http://x is neither",
        ),
        (
            "[apps.x]\nmax-wait = \"forever\"\n",
            "\"forever\" is not a duration",
        ),
        (
            "[apps.x]\nstores = [\"b\"]\n",
            "apps.x.stores: there is no [stores.b]",
        ),
    ];
    for (i, (toml, expected)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let out = run_line(&format!(
            "run --config {} {}",
            path.display(),
            lockctl.display()
        ));
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{toml}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{toml:?}: {stderr}");
    }
}

/// An instance's deadline is `--deadline`, or `--timeout` (its old name), or the config
/// file's `deadline`, or its `timeout` (its old name, read with a warning to rename it).
#[test]
fn deadlines_by_their_new_and_old_names() {
    let dir = tempfile::tempdir().unwrap();
    let lockctl = guest("lockctl");
    let lockctl = lockctl.display();
    let config = |key: &str| {
        let path = dir.path().join(format!("{key}.toml"));
        std::fs::write(&path, format!("[apps.jobs]\n{key} = \"1s\"\n")).unwrap();
        format!("--config {} --app-id jobs", path.display())
    };
    for flags in [
        "--deadline 1s".to_owned(),
        "--timeout 1s".to_owned(),
        config("deadline"),
        config("timeout"),
    ] {
        let out = run_line(&format!("run {flags} {lockctl} spin"));
        assert!(!out.status.success(), "{flags}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("stopped at its deadline of 1s"),
            "{flags}: {stderr}"
        );
        let warned = stderr.contains("apps.jobs.timeout is read as apps.jobs.deadline");
        assert_eq!(warned, flags.contains("timeout.toml"), "{flags}: {stderr}");
    }
}

/// SIGTERM stops `latchkey run`: its instances are stopped and their locks released before
/// it exits (with 128 + 15), so the next taker does not wait for the 60 s lease.
#[test]
fn a_signal_stops_run_after_releasing_its_locks() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    let steps = ["open", "lockstore", "try", "a", "60000", "sleep", "60000"];
    let mut host = host_process("app", &store, &[], "lockctl", &steps);
    redis.wait_for_key("latchkey:{app:a}:lock");
    signal(&host, "-TERM");
    let status = host.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status}");
    assert_eq!(
        redis.lock_keys(),
        Vec::<String>::new(),
        "the lock outlived the host"
    );
}

/// A stderr nobody can write to — `latchkey run ... 2>&1 | head -1` once `head` is gone —
/// is no reason to panic (exit 101): the host's messages are lost, and it exits as it
/// would have.
#[test]
fn a_closed_stderr_does_not_crash_the_host() {
    let mut child = latchkey()
        .args(["run", "--store", "lockstore=ftp://nowhere"])
        .arg(guest("lockctl"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
}

/// Eight instances writing 100 MB each to a reader that keeps up: every line arrives, whole
/// and prefixed, and the host's memory stays flat — a guest whose output outruns its reader
/// waits for room, rather than the host holding what it wrote.
#[test]
fn a_flood_of_output_arrives_whole_in_flat_memory() {
    use std::io::BufRead as _;
    const LINES: usize = 1_000_000;
    let mut child = latchkey()
        .args(["run", "--instances", "8"])
        .arg(guest("lockctl"))
        .args(["print", &(LINES * 100).to_string(), "sleep", "600000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut per_instance = [0usize; 8];
    let expected = "x".repeat(99);
    for line in stdout.lines() {
        let line = line.unwrap();
        let (prefix, rest) = line.split_once("] ").expect("a prefix");
        assert_eq!(rest, expected, "a torn line: {line:?}");
        let n: usize = prefix.trim_start_matches('[').parse().unwrap();
        per_instance[n - 1] += 1;
        if per_instance.iter().all(|&count| count == LINES) {
            break;
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let high_water_kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    signal(&child, "-TERM");
    child.wait().unwrap();
    assert_eq!(per_instance, [LINES; 8]);
    assert!(
        high_water_kb < 128 * 1024,
        "{high_water_kb} kB at most in memory"
    );
}

/// A store URL's query option that no URL form takes — `color`, say — is refused in one
/// line, never ignored; a word without `=`, which may be a secret in the wrong place, is not
/// quoted. The control: the options redis-rs takes, and latchkey's `key-layout`, still pass.
#[test]
fn unknown_url_options_are_refused() {
    let lockctl = guest("lockctl");
    let try_store = |url: &str| {
        run(&[
            "run",
            "--store",
            &format!("lockstore={url}"),
            lockctl.to_str().unwrap(),
            "open",
            "lockstore",
        ])
    };
    let out = try_store("redis://127.0.0.1:1/?color=blue");
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.contains(r#"no store URL takes the option "color""#),
        "{said}"
    );
    let out = try_store("redis://127.0.0.1:1/?s3cret");
    let said = text(&out.stderr);
    assert!(
        said.contains("the option without a value") && !said.contains("s3cret"),
        "{said}"
    );
    // The control: redis-rs's own options are taken (the store then fails to answer).
    for taken in ["protocol=resp3", "key-layout=dapr"] {
        let out = try_store(&format!("redis://127.0.0.1:1/?{taken}"));
        let said = text(&out.stderr);
        assert!(said.contains("could not be reached"), "{taken}: {said}");
    }
}

/// daprd's key layout where a store cannot keep it — a Cluster (no hash tags), Sentinel and
/// Redlock (daprd locks one server without replicas), the memory store (daprd cannot reach it), beside a namespace — or a
/// layout of no known name: each one line, at start-up, before any guest runs. The control:
/// the same store in latchkey's layout gets as far as connecting.
#[test]
fn daprs_key_layout_is_refused_where_it_cannot_be_kept() {
    let dir = tempfile::tempdir().unwrap();
    let lockctl = guest("lockctl");
    let refusal = |store: &str| {
        let config = dir.path().join("latchkey.toml");
        std::fs::write(&config, format!("[stores.lockstore]\n{store}\n")).unwrap();
        let out = run(&[
            "run",
            "--config",
            config.to_str().unwrap(),
            lockctl.to_str().unwrap(),
            "open",
            "lockstore",
        ]);
        assert!(!out.status.success(), "{store}: {out:?}");
        let said = text(&out.stderr);
        assert_eq!(said.lines().count(), 1, "{store}: {said}");
        said
    };
    let cases = [
        (
            "url = \"redis+cluster://127.0.0.1:1/?key-layout=dapr\"",
            "has no hash tags",
        ),
        (
            "url = \"redis+redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3\"\nkey-layout = \"dapr\"",
            "daprd takes a lock on one server",
        ),
        (
            "url = \"redis+sentinel://127.0.0.1:1/mymaster?key-layout=dapr\"",
            "refuses failover and replicas",
        ),
        (
            "url = \"memory\"\nkey-layout = \"dapr\"",
            "the memory store is this process's own",
        ),
        (
            "url = \"redis://127.0.0.1:1\"\nkey-layout = \"dapr\"\nnamespace = \"blue\"",
            "has no namespaces",
        ),
        (
            "url = \"redis://127.0.0.1:1/?key-layout=daprd\"",
            r#"key-layout "daprd" is not one of "latchkey", "dapr""#,
        ),
        (
            "url = \"redis://127.0.0.1:1/?key-layout=dapr\"\nkey-layout = \"latchkey\"",
            r#"key-layout "dapr" in the URL, "latchkey" in the settings"#,
        ),
    ];
    for (store, reason) in cases {
        let said = refusal(store);
        assert!(said.contains(reason), "{store}: {said}");
    }
    let control = refusal("url = \"redis://127.0.0.1:1\"\nkey-layout = \"latchkey\"");
    assert!(control.contains("could not be reached"), "{control}");
}
