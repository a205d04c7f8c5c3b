//! The operator's view (`latchkey locks list|release`): the real `latchkey` binary, run as
//! an operator runs it, against every Redis deployment — locks taken by real stores and
//! by real guests, read back, and freed by force.

use std::process::Output;
use std::time::Duration;

use harness::{
    Deployment, Fixture, PATIENCE, RedisServer, guest, latchkey, lines, redis_store, redlock_url,
};
use serde_json::Value;

/// `latchkey locks ARGS...`, to its end.
fn locks(args: &[&str]) -> Output {
    latchkey().arg("locks").args(args).output().unwrap()
}

/// The flags that name the fixture's store as an operator would.
fn store_flags(fx: &Fixture) -> Vec<String> {
    let (url, wait_replicas) = match &fx.deployment {
        Deployment::Redis(server) => (server.url(), 0),
        Deployment::Cluster(cluster) => (cluster.url(), 0),
        Deployment::Sentinel(set) => (set.url(), 1),
        Deployment::Redlock(masters) => (redlock_url(masters), 0),
        Deployment::Memory => unreachable!("an operator cannot reach a memory store"),
    };
    let wait_replicas = wait_replicas.to_string();
    ["--store", &url, "--wait-replicas", &wait_replicas]
        .map(String::from)
        .to_vec()
}

/// `locks list --json` of the fixture's store, and what else: the listing, parsed.
fn listing(fx: &Fixture, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["list".to_owned(), "--json".to_owned()];
    args.extend(store_flags(fx));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = locks(&args);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// On every Redis deployment, the listing shows each held lock once — its app, id, kind,
/// fence, the lease it has left and its age — and `--app` keeps one app's, matching the
/// app by its exact name even where it holds a glob's wildcards.
#[tokio::test(flavor = "multi_thread")]
async fn the_listing_shows_every_held_lock() {
    for fx in [
        Fixture::on_redis(),
        Fixture::on_cluster(),
        Fixture::on_sentinel(),
        Fixture::on_redlock(),
    ] {
        let lease = Duration::from_secs(60);
        let mut fences = Vec::new();
        for (app, id) in [("a*", "nightly"), ("ab", "nightly"), ("ab", "we:ird{id}")] {
            let grant = fx.store.try_lock(fx.store.key(app, id), lease).await;
            fences.push(grant.unwrap().expect("free").fence);
        }
        let all = tokio::task::block_in_place(|| listing(&fx, &[]));
        let seen: Vec<(&str, &str, u64)> = all
            .iter()
            .map(|e| {
                assert_eq!(e["kind"], "lock");
                let left = Duration::from_millis(e["lease_left_ms"].as_u64().unwrap());
                assert!(left <= lease && left > lease - PATIENCE, "{e}");
                let age = Duration::from_millis(e["age_ms"].as_u64().unwrap());
                assert!(age < PATIENCE, "{e}");
                let fence = e["fence"].as_u64().unwrap();
                (e["app"].as_str().unwrap(), e["id"].as_str().unwrap(), fence)
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("a*", "nightly", fences[0]),
                ("ab", "nightly", fences[1]),
                ("ab", "we:ird{id}", fences[2]),
            ],
            "{}",
            store_flags(&fx)[1]
        );
        let one_app = tokio::task::block_in_place(|| listing(&fx, &["--app", "a*"]));
        assert_eq!(one_app.len(), 1, "{one_app:?}");
        assert_eq!(one_app[0]["app"], "a*");
    }
}

/// The listing of a password-protected Redis, as a table: what is held, and neither the
/// password nor the server's address.
#[test]
fn the_listing_shows_no_secret() {
    let password = "pw-of-the-operator";
    let redis = RedisServer::start_with(&["--requirepass", password]);
    let url = format!("redis://:{password}@{}", redis.address());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = redis_store(&url, Duration::from_secs(2));
    let grant = runtime
        .block_on(store.try_lock(store.key("billing", "nightly"), Duration::from_secs(60)))
        .unwrap()
        .unwrap();
    let out = latchkey()
        .args([
            "locks",
            "list",
            "--store",
            &redis.url(),
            "--password-env",
            "OPS_PW",
        ])
        .env("OPS_PW", password)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = lines(&out);
    assert_eq!(
        said[0].split_whitespace().collect::<Vec<_>>(),
        [
            "APP", "ID", "KIND", "FENCE", "LEASE", "LEFT", "AGE", "VALUE"
        ]
    );
    let row: Vec<&str> = said[1].split_whitespace().collect();
    assert_eq!(
        row[..4],
        ["billing", "nightly", "lock", &grant.fence.to_string()]
    );
    let all = format!("{out:?}");
    for secret in [password, &redis.port().to_string(), "127.0.0.1"] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
}

/// A lock released by force: its holder — a guest keeping its lease alive — learns it
/// lost the lock at its next renewal and finds it gone when it unlocks; the next grant's
/// fence is higher. Control: while nobody forces it, the holder keeps it (no `lost`).
#[test]
fn a_forced_release_is_seen_by_its_holder_as_lost() {
    let redis = RedisServer::start();
    let lockctl_p3 = guest("lockctl_p3");
    harness::warm(&lockctl_p3);
    let store = format!("lockstore={}", redis.url());
    // Bounded, so that a holder never told of its loss ends the test instead of hanging it.
    let bounded = [
        "run",
        "--app-id",
        "billing",
        "--store",
        &store,
        "--deadline",
        "60s",
    ];
    let holder = latchkey()
        .args(bounded)
        .arg(&lockctl_p3)
        .args([
            "open",
            "lockstore",
            "try",
            "nightly",
            "1500",
            "keepalive",
            "await-lost",
            "unlock",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    redis.wait_for_key("latchkey:{billing:nightly}:lock");
    // Kept alive past its first lease: the holder is not losing it by itself.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(redis.lock_keys(), ["latchkey:{billing:nightly}:lock"]);
    let release = [
        "release",
        "--store",
        &redis.url(),
        "--app",
        "billing",
        "nightly",
    ];
    let out = locks(&release);
    assert!(out.status.success(), "{out:?}");
    assert!(lines(&out)[0].contains("released"), "{out:?}");
    let holder = holder.wait_with_output().unwrap();
    let said = lines(&holder);
    assert_eq!(
        said[2..],
        ["keeping alive", "lost", "unlocked lock-does-not-exist"],
        "{said:?}"
    );
    let fence = |line: &str| -> u64 { line.split("fence=").nth(1).unwrap().parse().unwrap() };
    let first = fence(&said[1]);
    let next = latchkey()
        .args(["run", "--app-id", "billing", "--store", &store])
        .arg(&lockctl_p3)
        .args(["open", "lockstore", "try", "nightly", "1000"])
        .output()
        .unwrap();
    assert!(fence(&lines(&next)[1]) > first, "{next:?}");
    // Releasing what nobody holds says so, and succeeds.
    let again = locks(&release);
    assert!(again.status.success(), "{again:?}");
    assert!(lines(&again)[0].contains("was not held"), "{again:?}");
}

/// Mistakes are one line on stderr and a non-zero exit: a missing flag, a memory store
/// (out of an operator's reach), a password refused, a store that is not there.
#[test]
fn mistakes_are_one_line() {
    let redis = RedisServer::start_with(&["--requirepass", "pw"]);
    let closed = format!("redis://127.0.0.1:{}", harness::free_port());
    let cases: [(&[&str], &str); 7] = [
        (&["list"], "--store"),
        (
            &["release", "--store", &redis.url(), "--app", "a"],
            "RESOURCE_ID",
        ),
        (
            &[
                "release",
                "--store",
                &redis.url(),
                "--app",
                "a",
                "--permit",
                "1",
                "--leadership",
                "e",
            ],
            "--leadership",
        ),
        (
            &[
                "release",
                "--store",
                &redis.url(),
                "--app",
                "a",
                "--permit",
                "x",
                "s",
            ],
            "--permit",
        ),
        (&["list", "--store", "memory"], "memory store"),
        (&["list", "--store", &redis.url()], "refused"),
        (&["list", "--store", &closed], "could not be reached"),
    ];
    for (args, says) in cases {
        let out = locks(args);
        assert!(!out.status.success(), "{args:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// Permits and leaderships are listed beside locks — each permit with its number, each
/// leadership with its leader's value — and freed by force as locks are: the evicted
/// holder's grant is gone, and the next grant's fence is higher.
#[tokio::test(flavor = "multi_thread")]
async fn permits_and_leaderships_are_listed_and_freed() {
    for fx in [
        Fixture::on_redis(),
        Fixture::on_cluster(),
        Fixture::on_redlock(),
    ] {
        let (store, lease, now) = (&fx.store, Duration::from_secs(60), Duration::ZERO);
        let permits = || store.permits("ops", "pool", 3);
        let first = store
            .acquire_permit(permits(), lease, now)
            .await
            .unwrap()
            .unwrap();
        let second = store
            .acquire_permit(permits(), lease, now)
            .await
            .unwrap()
            .unwrap();
        let election = store.leadership("ops", "scheduler");
        let leader = store.campaign(election.clone(), "10.0.0.7:8080", lease, now);
        let leader = leader.await.unwrap().unwrap();

        let all = tokio::task::block_in_place(|| listing(&fx, &[]));
        let seen: Vec<(&str, &str, Value, u64, Value)> = all
            .iter()
            .map(|e| {
                let fence = e["fence"].as_u64().unwrap();
                let (id, kind) = (e["id"].as_str().unwrap(), e["kind"].as_str().unwrap());
                (id, kind, e["permit"].clone(), fence, e["value"].clone())
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("pool", "permit", 0.into(), first.fence, Value::Null),
                ("pool", "permit", 1.into(), second.fence, Value::Null),
                (
                    "scheduler",
                    "leadership",
                    Value::Null,
                    leader.fence,
                    "10.0.0.7:8080".into()
                ),
            ],
            "{}",
            store_flags(&fx)[1]
        );

        let flags = store_flags(&fx);
        let release = |extra: &[&str]| {
            let mut args = vec!["release", "--app", "ops"];
            args.extend(flags.iter().map(String::as_str));
            args.extend_from_slice(extra);
            let out = tokio::task::block_in_place(|| locks(&args));
            assert!(out.status.success(), "{out:?}");
            lines(&out)[0].clone()
        };
        assert!(release(&["--permit", "1", "pool"]).starts_with("permit:1 \"pool\""));
        assert!(release(&["--leadership", "scheduler"]).contains("released"));
        assert!(
            store.holds(&first).await.unwrap(),
            "the other permit was freed"
        );
        assert!(!store.holds(&second).await.unwrap());
        assert!(!store.holds(&leader).await.unwrap());
        assert_eq!(store.leader(&election).await.unwrap(), None);
        let next = store
            .acquire_permit(permits(), lease, now)
            .await
            .unwrap()
            .unwrap();
        assert!(next.fence > second.fence);
    }
}

/// Ids and leaders' values are the guests' own text: in the table, control characters are
/// escaped (`\x0a`), as `serve` escapes guest output, so no guest forges a row or drives
/// the operator's terminal. The JSON keeps them as they are, escaped by JSON itself.
#[tokio::test(flavor = "multi_thread")]
async fn the_table_escapes_what_guests_wrote() {
    let fx = Fixture::on_redis();
    let lease = Duration::from_secs(60);
    let forged = "job\nops  forged  lock  1  1h  1s  -";
    for id in [forged, "clear\x1b[2J", "cr\rnul\0"] {
        fx.store
            .try_lock(fx.store.key("ops", id), lease)
            .await
            .unwrap()
            .unwrap();
    }
    let election = fx.store.leadership("ops", "e");
    fx.store
        .campaign(election, "v\x1b]0;title\x07", lease, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let mut args = vec!["list".to_owned()];
    args.extend(store_flags(&fx));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tokio::task::block_in_place(|| locks(&args));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1 + 4, "{text}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in {text:?}"
    );
    for shown in [
        r"job\x0aops",
        r"clear\x1b[2J",
        r"cr\x0dnul\x00",
        r"v\x1b]0;title\x07",
    ] {
        assert!(text.contains(shown), "{shown} not in {text}");
    }
    let json = tokio::task::block_in_place(|| listing(&fx, &[]));
    assert!(json.iter().any(|e| e["id"] == forged), "{json:?}");
}

/// A release that names nothing — an empty id, `--app ''` — is a mistake: one line, a
/// non-zero exit, and the lock it might have meant stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_of_nothing_is_refused() {
    let fx = Fixture::on_redis();
    let grant = fx
        .store
        .try_lock(fx.store.key("", "x"), Duration::from_secs(60))
        .await;
    let grant = grant.unwrap().unwrap();
    let flags = store_flags(&fx);
    for named in [["--app", "", "x"], ["--app", "ops", ""]] {
        let mut args = vec!["release"];
        args.extend(flags.iter().map(String::as_str));
        args.extend_from_slice(&named);
        let out = tokio::task::block_in_place(|| locks(&args));
        assert!(!out.status.success(), "{named:?}: {out:?}");
        let said = String::from_utf8(out.stderr).unwrap();
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(said.contains("empty"), "{said}");
    }
    assert!(fx.store.holds(&grant).await.unwrap());
}

/// Keys under `latchkey:` that are no lock of latchkey's — a name that is not UTF-8, a
/// hash where a lock's key would be — are skipped and counted, not a failure of the whole
/// listing; the locks beside them are listed.
#[tokio::test(flavor = "multi_thread")]
async fn foreign_keys_are_skipped_and_counted() {
    let fx = Fixture::on_redis();
    let grant = fx
        .store
        .try_lock(fx.store.key("ops", "real"), Duration::from_secs(60))
        .await;
    let grant = grant.unwrap().unwrap();
    let redis = fx.redis();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("SET")
        .arg(b"latchkey:{ops:\xff\xfe}:lock".as_slice())
        .arg("x")
        .query::<()>(&mut conn)
        .unwrap();
    redis.cmd::<()>(&["HSET", "latchkey:{ops:hash}:lock", "field", "value"]);
    redis.cmd::<()>(&["SET", "latchkey:{ops:nofence}:lock", "token", "PX", "60000"]);
    redis.cmd::<()>(&["SADD", "latchkey:{ops:nofence}:fence", "member"]);
    for json in [true, false] {
        let mut args = vec!["list".to_owned()];
        if json {
            args.push("--json".to_owned());
        }
        args.extend(store_flags(&fx));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = tokio::task::block_in_place(|| locks(&args));
        assert!(out.status.success(), "{out:?}");
        let listed = String::from_utf8(out.stdout).unwrap();
        assert!(listed.contains(&grant.fence.to_string()), "{listed}");
        assert!(
            !listed.contains("hash") && !listed.contains("nofence"),
            "{listed}"
        );
        let said = String::from_utf8(out.stderr).unwrap();
        assert!(said.contains("skipped 3 keys"), "{said}");
    }
}

/// Locks held under a namespace are not listed without it, but the listing says where
/// they are; so does a release that found nothing where it looked.
#[tokio::test(flavor = "multi_thread")]
async fn locks_under_other_namespaces_are_pointed_out() {
    let redis = RedisServer::start();
    let mut settings = latchkey_host::StoreSettings::new(redis.url());
    settings.namespace = Some("blue".into());
    let store = latchkey_host::open("lockstore", &settings).unwrap();
    let grant = store
        .try_lock(store.key("ops", "job"), Duration::from_secs(60))
        .await;
    let grant = grant.unwrap().unwrap();
    let url = redis.url();
    let out = tokio::task::block_in_place(|| locks(&["list", "--store", &url]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&out).len(), 1, "{out:?}");
    let said = String::from_utf8(out.stderr).unwrap();
    assert!(said.contains("--namespace blue"), "{said}");
    let release = ["release", "--store", &url, "--app", "ops", "job"];
    let out = tokio::task::block_in_place(|| locks(&release));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("was not held") && said.contains("--namespace blue"),
        "{said}"
    );
    assert!(store.holds(&grant).await.unwrap());
    let listed = ["list", "--store", &url, "--namespace", "blue"];
    let out = tokio::task::block_in_place(|| locks(&listed));
    assert_eq!(lines(&out).len(), 2, "{out:?}");
}
