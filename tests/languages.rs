//! Guests in every language latchkey has an SDK for, driven from one table: the same
//! programs (Dapr's sample, the counter, the scripted client `lockctl`) written in Rust,
//! Python (componentize-py) and JavaScript (componentize-js) for WASI 0.2, and in Python
//! for WASI 0.3 (async, on `latchkey:lock@0.3.0`), run by the real `latchkey` binary, on a
//! real Redis where it matters. Adding a language adds a row and its guests,
//! not a test.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use harness::leaders::{History, followed};
use harness::{
    PATIENCE, RedisServer, ServeProcess, guest, latchkey, lines, polyglot_guest, post, warm,
};

/// A language and the names of its guests; `coordination` names its `leader` and
/// `limited` demos, where its SDK has semaphores and elections (`latchkey:lock@0.2.1`,
/// `@0.3.1`).
struct Language {
    name: &'static str,
    try_lock: &'static str,
    counter: &'static str,
    lockctl: &'static str,
    coordination: Option<(&'static str, &'static str)>,
}

const LANGUAGES: [Language; 4] = [
    Language {
        name: "rust",
        try_lock: "try-lock",
        counter: "counter",
        lockctl: "lockctl",
        coordination: Some(("leader", "limited")),
    },
    Language {
        name: "python",
        try_lock: "try_lock",
        counter: "counter",
        lockctl: "lockctl",
        coordination: Some(("leader", "limited")),
    },
    Language {
        name: "js",
        try_lock: "try-lock",
        counter: "counter",
        lockctl: "lockctl",
        coordination: Some(("leader", "limited")),
    },
    // Python on WASI 0.3 (`latchkey.aio`, `latchkey:lock@0.3.0`): async guests.
    Language {
        name: "python-p3",
        try_lock: "try_lock",
        counter: "counter",
        lockctl: "lockctl",
        coordination: Some(("leader", "limited")),
    },
];

impl Language {
    fn guest(&self, name: &str) -> PathBuf {
        match self.name {
            "rust" => guest(name),
            language => polyglot_guest(language, name),
        }
    }

    /// `latchkey run FLAGS... GUEST ARGS...`, to its end.
    fn run(&self, flags: &[&str], name: &str, args: &[&str]) -> Output {
        self.command(flags, name, args).output().unwrap()
    }

    /// The guest is compiled first (see [`warm`]): a Python or JavaScript component takes
    /// seconds, and no test's timing may include that.
    fn command(&self, flags: &[&str], name: &str, args: &[&str]) -> Command {
        let guest = self.guest(name);
        warm(&guest);
        let mut command = latchkey();
        command
            .arg("run")
            .args(flags)
            .arg(guest)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

/// Dapr's sample, two instances at once: in every language, exactly one gets the lock.
#[test]
fn the_dapr_sample_grants_exactly_one_of_two() {
    for language in &LANGUAGES {
        let out = language.run(&["--instances", "2"], language.try_lock, &[]);
        assert!(out.status.success(), "{}: {out:?}", language.name);
        let mut said: Vec<String> = lines(&out)
            .iter()
            .map(|line| line.split_once("] ").expect("a prefix").1.to_owned())
            .collect();
        said.sort();
        assert_eq!(
            said,
            ["Failed to lock my_file_name.", "Success"],
            "{}",
            language.name
        );
    }
}

/// 8 instances of a semaphore of limit 3 count themselves in one file on Redis: never more
/// than 3 inside in any language (and 3 at some point), while without permits (the
/// control) more are.
#[test]
fn a_semaphore_holds_its_limit_in_every_language() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    for language in &LANGUAGES {
        let Some((_, limited)) = language.coordination else {
            continue;
        };
        for (extra, permits) in [(None, true), (Some("--no-permit"), false)] {
            let data = tempfile::tempdir().unwrap();
            let dir = format!("{}::/data", data.path().display());
            let mut args = vec!["--limit", "3", "--rounds", "2", "--work-ms", "100"];
            args.extend(extra);
            let flags = ["--instances", "8", "--store", &store, "--dir", &dir];
            let out = language.run(&flags, limited, &args);
            assert!(out.status.success(), "{}: {out:?}", language.name);
            let inside: Vec<u64> = lines(&out)
                .iter()
                .filter_map(|line| {
                    let said = line.split_once("] ")?.1;
                    said.strip_prefix("inside ")?
                        .split(' ')
                        .next()?
                        .parse()
                        .ok()
                })
                .collect();
            assert_eq!(inside.len(), 16, "{}: {out:?}", language.name);
            let most = inside.iter().max().copied().unwrap_or(0);
            if permits {
                assert_eq!(most, 3, "{}: {inside:?}", language.name);
            } else {
                assert!(
                    most > 3,
                    "{}: the control stayed within the limit",
                    language.name
                );
            }
        }
    }
}

/// 4 instances of the `leader` demo on Redis, each leading for 150 ms and resigning: in
/// every language one leader at a time, each instance leads once, and followers see the
/// leaders in order.
#[test]
fn an_election_has_one_leader_at_a_time_in_every_language() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    for language in &LANGUAGES {
        let Some((leader, _)) = language.coordination else {
            continue;
        };
        let flags = ["--instances", "4", "--store", &store];
        let out = language.run(&flags, leader, &["--lead-ms", "150"]);
        assert!(out.status.success(), "{}: {out:?}", language.name);
        let said = lines(&out);
        let by_instance = |i: usize| -> Vec<&str> {
            let prefix = format!("[{i}] ");
            said.iter()
                .filter_map(|line| line.strip_prefix(&prefix))
                .collect()
        };
        let all: Vec<&str> = (1..=4).flat_map(by_instance).collect();
        let history = History::of_lines(all);
        history.assert_one_leader_at_a_time();
        assert_eq!(history.leaders.len(), 4, "{}: {said:?}", language.name);
        for i in 1..=4 {
            assert!(
                followed(by_instance(i)).is_sorted(),
                "{}: {said:?}",
                language.name
            );
        }
    }
}

/// 4 instances × 50 locked read-modify-writes of one file on Redis: exactly 200 in every
/// language, while the same without the lock (the control) loses updates.
#[test]
fn the_counter_is_exact_under_the_lock_in_every_language() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    for language in &LANGUAGES {
        for (extra, locked) in [(None, true), (Some("--no-lock"), false)] {
            let data = tempfile::tempdir().unwrap();
            let dir = format!("{}::/data", data.path().display());
            let mut args = vec!["--iterations", "50"];
            args.extend(extra);
            let flags = ["--instances", "4", "--store", &store, "--dir", &dir];
            let out = language.run(&flags, language.counter, &args);
            assert!(out.status.success(), "{}: {out:?}", language.name);
            let count: u64 = std::fs::read_to_string(data.path().join("counter"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            if locked {
                assert_eq!(
                    count, 200,
                    "{}: the lock let updates through",
                    language.name
                );
            } else {
                assert!(count < 200, "{}: the control lost no update", language.name);
            }
        }
    }
}

/// Every error variant arrives as that language's own error of its kind, with the host's
/// text (each `lockctl` checks the class before it prints), and every unlock status comes
/// back right — the same lines in every language.
#[test]
fn errors_and_unlock_statuses_arrive_alike_in_every_language() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("latchkey.toml");
    std::fs::write(
        &config,
        "[stores.lockstore]\nurl = \"memory\"\n\
         [apps.probe]\nresources = [\"job-*\"]\nmax-held = 2\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let script = "open nope open lockstore try job-a 0 try payroll 1000 \
                  try job-mine 60000 unlock \
                  try job-lapsed 50 sleep 150 unlock \
                  try job-taken 50 sleep 150 try job-taken 60000 swap unlock \
                  try job-x 60000 try job-y 60000";
    let script: Vec<&str> = script.split_whitespace().collect();
    let expected = [
        "error no-such-store: no lock store named \"nope\" is configured for app \"probe\"",
        "opened lockstore",
        "error invalid-argument: lease-ms is 0; a lease must be at least 10 ms",
        "error access-denied: app \"probe\" may not lock resource id \"payroll\"",
        "granted job-mine",
        "unlocked success",
        "granted job-lapsed",
        "unlocked lock-does-not-exist",
        "granted job-taken",
        "granted job-taken",
        "unlocked lock-belongs-to-others",
        "granted job-x",
        "error limit-exceeded: this instance already holds 2 locks, the most it may hold",
    ];
    for language in &LANGUAGES {
        let flags = ["--config", config, "--app-id", "probe"];
        let out = language.run(&flags, language.lockctl, &script);
        assert!(out.status.success(), "{}: {out:?}", language.name);
        let said = lines(&out);
        assert_eq!(said.len(), expected.len(), "{}: {said:#?}", language.name);
        for (line, expected) in said.iter().zip(expected) {
            assert!(
                line.starts_with(expected),
                "{}: {line:?} is not {expected:?}",
                language.name
            );
        }
    }
}

/// A store that stops answering is `unavailable` in every language, as its own error.
#[test]
fn an_unavailable_store_is_an_error_in_every_language() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    for language in &LANGUAGES {
        redis.cmd::<()>(&["FLUSHALL"]);
        let flags = [
            "--store",
            &store,
            // Time enough for the first call, which connects, on a loaded machine.
            "--store-timeout-ms",
            "2000",
            "--app-id",
            "probe",
        ];
        let steps = [
            "open",
            "lockstore",
            "try",
            "warm",
            "1000",
            "unlock",
            "sleep",
            "3000",
        ];
        let late = ["try", "late", "1000"];
        let args: Vec<&str> = steps.iter().chain(&late).copied().collect();
        let run = language
            .command(&flags, language.lockctl, &args)
            .spawn()
            .unwrap();
        // Once the guest has been granted `warm`, it sleeps: Redis stops answering then,
        // until the guest has tried `late` and ended.
        redis.wait_for_key("latchkey:{probe:warm}:fence");
        redis.pause();
        let out = run.wait_with_output().unwrap();
        redis.resume();
        let said = lines(&out);
        assert!(
            said.last()
                .unwrap()
                .starts_with("error unavailable: store 'lockstore' "),
            "{}: {said:?}",
            language.name
        );
    }
}

/// The WASI WIT the guests are built against is the WASI the host's own wasmtime-wasi
/// ships, file for file — 0.2.12 in `wit/deps`, 0.3.0 in `guest/wit/deps`: componentize-py
/// refuses any other 0.2 version, and a guest built against a newer one would not link.
#[test]
fn the_guests_wasi_wit_is_the_hosts() {
    let host = PathBuf::from(env!("LATCHKEY_HOST_WASI_WIT"));
    let host_p3 = PathBuf::from(env!("LATCHKEY_HOST_WASI_P3_WIT"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p2 = ["cli", "clocks", "filesystem", "io", "random", "sockets"].map(|package| {
        let ours = root
            .join("wit/deps")
            .join(package)
            .join(format!("{package}.wit"));
        (package, host.join(format!("{package}.wit")), ours)
    });
    let p3 = ["cli", "clocks", "filesystem", "random", "sockets"].map(|package| {
        let ours = root.join(format!("guest/wit/deps/{package}-0.3.0.wit"));
        (package, host_p3.join(format!("{package}.wit")), ours)
    });
    for (package, host, ours) in p2.into_iter().chain(p3) {
        let theirs = std::fs::read_to_string(&host)
            .unwrap_or_else(|e| panic!("the host's wasi:{package} ({}): {e}", host.display()));
        let mine =
            std::fs::read_to_string(&ours).unwrap_or_else(|e| panic!("{}: {e}", ours.display()));
        let version = |wit: &str| {
            wit.lines()
                .find_map(|line| line.strip_prefix("package "))
                .map(|p| p.trim_end_matches(';').to_owned())
        };
        assert_eq!(version(&mine), version(&theirs), "wasi:{package} drifted");
        assert!(
            mine == theirs,
            "{} differs from the host's wasi:{package}",
            ours.display()
        );
    }
}

/// Every language's sample runs with the default instance pool, and with eight instances
/// at once — components of many core modules (a Python guest has more than a dozen) fit
/// the pool's slots: exactly one of the eight gets the lock.
#[test]
fn every_language_fits_the_instance_pool() {
    for language in &LANGUAGES {
        let alone = language.run(&[], language.try_lock, &["--hold-ms", "0"]);
        assert_eq!(lines(&alone), ["Success"], "{}: {alone:?}", language.name);
        let out = language.run(&["--instances", "8"], language.try_lock, &[]);
        assert!(out.status.success(), "{}: {out:?}", language.name);
        let said = lines(&out);
        let won = said
            .iter()
            .filter(|line| line.ends_with("] Success"))
            .count();
        let lost = said
            .iter()
            .filter(|line| line.ends_with("] Failed to lock my_file_name."))
            .count();
        assert_eq!((won, lost), (1, 7), "{}: {said:?}", language.name);
    }
}

/// Each SDK refuses what the WIT cannot carry, as the host refuses bad input: with an
/// `invalid-argument` of its language's own class, before the host is asked — never by
/// wrapping a number into range, turning a lone surrogate into U+FFFD (so that three ids
/// were one lock), or trapping the instance.
#[test]
fn sdks_refuse_what_the_wit_cannot_carry() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    let python = "open lockstore try a nan try a inf try a -5000 lock a 1000 -1 \
                  try-surrogate 1000 try-bytes 1000 open-int closed unlocked";
    let cases: [(&Language, &str, usize); 3] = [
        (&LANGUAGES[1], python, 9),
        (&LANGUAGES[3], python, 9),
        (
            &LANGUAGES[2],
            "open lockstore try a 4294972296 try a -4294964296 lock a 1000 4294967297 \
             try a -1 try a 1.5 try-surrogate 1000",
            6,
        ),
    ];
    for (language, steps, refusals) in cases {
        let args: Vec<&str> = steps.split_whitespace().collect();
        let out = language.run(&["--store", &store], language.lockctl, &args);
        let said = lines(&out);
        assert!(out.status.success(), "{}: {out:?}", language.name);
        let refused = &said[1..];
        assert_eq!(refused.len(), refusals, "{}: {said:?}", language.name);
        for line in refused {
            assert!(
                line.starts_with("error invalid-argument: "),
                "{}: {said:?}",
                language.name
            );
        }
    }
    assert_eq!(
        redis.lock_keys(),
        Vec::<String>::new(),
        "a refusal reached the store"
    );
    let python = lines(&LANGUAGES[1].run(
        &["--store", &store],
        "lockctl",
        &[
            "open",
            "lockstore",
            "try",
            "a",
            "-5000",
            "lock",
            "a",
            "1000",
            "-1",
        ],
    ));
    assert_eq!(
        python[1..],
        [
            "error invalid-argument: lease is -5 s; it must not be negative",
            "error invalid-argument: wait is -0.001 s; it must not be negative",
        ]
    );
}

/// JavaScript's `withLock` with an async callback holds the lock until the callback's
/// promise settles: a rival trying the lock after the callback's first `await` finds it
/// held. (It was released when the callback returned its promise: the rival got it.)
#[test]
fn an_async_callback_keeps_its_lock_until_it_settles() {
    let js = &LANGUAGES[2];
    let out = js.run(
        &[],
        js.lockctl,
        &["open", "lockstore", "with-async", "b", "60000"],
    );
    assert_eq!(
        lines(&out),
        ["opened lockstore", "with-async rival=held"],
        "{out:?}"
    );
}

/// Python's async demo: while the reader task waits for `ledger`, which the writer task of
/// the same instance holds for 300 ms, the ticker task keeps ticking — the wait suspends
/// the waiting task alone — and the reader is granted the lock when the writer unlocks.
#[test]
fn a_python_task_waiting_for_a_lock_suspends_only_itself() {
    let python = &LANGUAGES[3];
    let out = python.run(&[], "tasks", &[]);
    assert!(out.status.success(), "{out:?}");
    let said = lines(&out);
    let at = |what: &str| {
        said.iter()
            .position(|line| line.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in {said:#?}"))
    };
    let (waiting, unlocked, granted) = (
        at("reader: waiting for ledger"),
        at("writer: unlocked success"),
        at("reader: granted ledger"),
    );
    let ticks = said[waiting..granted]
        .iter()
        .filter(|line| line.contains("ticker: tick"))
        .count();
    assert!(
        ticks > 0,
        "the ticker stopped while the reader waited: {said:#?}"
    );
    assert!(unlocked < granted, "{said:#?}");
}

/// Python's WASI 0.3 HTTP handler under `latchkey serve`, its instance reused: while one
/// request runs a job, a request for the same job is refused (`409`); once the first has
/// answered, its lock is already free (no key left in Redis) and the job runs again.
#[test]
fn a_python_handler_holds_its_lock_for_its_request() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    let handler = polyglot_guest("python-p3", "http_jobs");
    warm(&handler);
    let args = [
        "--app-id",
        "jobs",
        "--store",
        &store,
        handler.to_str().unwrap(),
    ];
    let server = ServeProcess::start(&args);
    let url = server.url("/jobs/nightly?ms=5000");
    let first = std::thread::spawn(move || post(&url, PATIENCE).unwrap());
    redis.wait_for_key("latchkey:{jobs:nightly}:lock");
    let refused = post(&server.url("/jobs/nightly"), PATIENCE).unwrap();
    assert_eq!(refused.status, 409, "{refused:?}");
    let first = first.join().unwrap();
    assert!(first.body.starts_with("ran nightly fence "), "{first:?}");
    assert_eq!(
        redis.lock_keys(),
        Vec::<String>::new(),
        "the lock outlived its request"
    );
    let again = post(&server.url("/jobs/nightly"), PATIENCE).unwrap();
    assert!(again.body.starts_with("ran nightly fence "), "{again:?}");
}
