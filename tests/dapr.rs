//! `latchkey dapr`: Dapr's lock API for Dapr's own clients — here Dapr's Python SDK (gRPC)
//! and JavaScript SDK (HTTP), as Dapr applications run them, pinned in `tests/clients` — on
//! the same locks as guests.

use std::io::BufRead as _;
use std::process::Stdio;

use harness::dapr::{DaprProcess, GrpcClient, dapr_node, dapr_python};
use harness::{RedisServer, guest, latchkey, warm};

/// Dapr's sample: two owners, one resource — the first gets it, the second does not, and an
/// unlock says whose it was.
#[test]
fn one_owner_gets_the_lock_and_unlock_says_whose_it_is() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    let endpoint = DaprProcess::start(&["--app-id", "billing", "--store", &store], &[]);
    let lines = dapr_python(
        endpoint.ports(),
        None,
        "lock lockstore my_file_name owner-a 60 \
         lock lockstore my_file_name owner-b 60 \
         unlock lockstore my_file_name owner-b \
         unlock lockstore my_file_name owner-a \
         unlock lockstore my_file_name owner-a",
    );
    assert_eq!(
        lines,
        [
            "success true",
            "success false",
            "status lock_belongs_to_others",
            "status success",
            "status lock_does_not_exist"
        ]
    );
}

/// The same through Dapr's JavaScript SDK, over HTTP, on the same store as a Python client:
/// the two SDKs exclude each other; and the token, refused and accepted.
#[test]
fn the_javascript_sdk_takes_the_same_locks() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    let endpoint = DaprProcess::start(&["--app-id", "billing", "--store", &store], &[]);
    let lines = dapr_node(
        endpoint.http_port,
        None,
        "lock lockstore my_file_name owner-a 60 lock lockstore my_file_name owner-b 60 \
         unlock lockstore my_file_name owner-b",
    );
    assert_eq!(lines, ["success true", "success false", "status 2"]);
    let python = dapr_python(
        endpoint.ports(),
        None,
        "lock lockstore my_file_name owner-c 60",
    );
    assert_eq!(python, ["success false"]);
    let lines = dapr_node(
        endpoint.http_port,
        None,
        "unlock lockstore my_file_name owner-a unlock lockstore my_file_name owner-a",
    );
    assert_eq!(lines, ["status 0", "status 1"]);

    let guarded = DaprProcess::start(&["--app-id", "billing"], &[("DAPR_API_TOKEN", "s3cret")]);
    let refused = dapr_node(
        guarded.http_port,
        Some("guess"),
        "lock lockstore r owner-a 60",
    );
    assert_eq!(refused.len(), 1);
    assert!(refused[0].starts_with("error"), "{refused:?}");
    let allowed = dapr_node(
        guarded.http_port,
        Some("s3cret"),
        "lock lockstore r owner-b 60",
    );
    assert_eq!(allowed, ["success true"]);
}

/// The operator's forced release (`latchkey locks release`) frees a Dapr client's lock: the
/// owner's next unlock finds it gone, and another owner gets it.
#[test]
fn a_forced_release_is_seen_by_the_owners_next_unlock() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    let endpoint = DaprProcess::start(&["--app-id", "billing", "--store", &store], &[]);
    let held = dapr_python(endpoint.ports(), None, "lock lockstore job owner-a 600");
    assert_eq!(held, ["success true"]);
    let released = latchkey()
        .args([
            "locks",
            "release",
            "--store",
            &redis.url(),
            "--app",
            "billing",
            "job",
        ])
        .output()
        .unwrap();
    assert!(released.status.success(), "{released:?}");
    let lines = dapr_python(
        endpoint.ports(),
        None,
        "unlock lockstore job owner-a lock lockstore job owner-b 60",
    );
    assert_eq!(lines, ["status lock_does_not_exist", "success true"]);
}

/// A lock nobody unlocks ends with its expiry: another owner gets it then.
#[test]
fn a_lock_ends_with_its_expiry() {
    let endpoint = DaprProcess::start(&["--app-id", "billing"], &[]);
    let lines = dapr_python(
        endpoint.ports(),
        None,
        "lock lockstore job owner-a 1 lock lockstore job owner-b 60 \
         lock-until lockstore job owner-b 60",
    );
    assert_eq!(lines, ["success true", "success false", "success true"]);
}

/// With an API token set, a call without it, or with another, is refused before anything
/// is taken; with it, the call goes through.
#[test]
fn the_api_token_is_required_when_set() {
    let endpoint = DaprProcess::start(&["--app-id", "billing"], &[("DAPR_API_TOKEN", "s3cret")]);
    let refused = dapr_python(endpoint.ports(), None, "lock lockstore r owner-a 60");
    assert_eq!(refused, ["error UNAUTHENTICATED"]);
    let wrong = dapr_python(
        endpoint.ports(),
        Some("guess"),
        "lock lockstore r owner-a 60",
    );
    assert_eq!(wrong, ["error UNAUTHENTICATED"]);
    // Nothing was taken by the refused calls: the first owner with the token gets it.
    let allowed = dapr_python(
        endpoint.ports(),
        Some("s3cret"),
        "lock lockstore r owner-b 60",
    );
    assert_eq!(allowed, ["success true"]);
}

/// A Dapr client and a guest of the same app on the same store exclude each other on one
/// resource id, both ways; another app's guest does not meet them.
#[test]
fn a_dapr_client_and_a_guest_of_one_app_exclude_each_other() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    let endpoint = DaprProcess::start(&["--app-id", "billing", "--store", &store], &[]);
    warm(&guest("lockctl"));
    let guest_tries = |app: &str| run_lockctl(app, &store, "try shared 60000").remove(1);

    // The client holds it: the guest of its app is refused, another app's is not.
    let held = dapr_python(endpoint.ports(), None, "lock lockstore shared owner-a 60");
    assert_eq!(held, ["success true"]);
    assert_eq!(guest_tries("billing"), "held shared");
    assert!(guest_tries("shipping").starts_with("granted shared"));
    let freed = dapr_python(endpoint.ports(), None, "unlock lockstore shared owner-a");
    assert_eq!(freed, ["status success"]);

    // A guest holds it: the client is refused until the guest lets it go.
    let holder = Holder::take(&["--store", &store]);
    let refused = dapr_python(endpoint.ports(), None, "lock lockstore shared owner-a 60");
    assert_eq!(refused, ["success false"]);
    holder.release();
    let after = dapr_python(endpoint.ports(), None, "lock lockstore shared owner-a 60");
    assert_eq!(after, ["success true"]);
}

/// `--dapr-http-addr` and `--dapr-grpc-addr` serve Dapr's API beside guests, from their
/// process and stores — here the zero-setup memory store, which nothing outside the process
/// reaches: a client is refused the lock a guest holds, and gets another id.
#[test]
fn the_api_beside_guests_shares_their_stores() {
    let (http, grpc) = (harness::free_port(), harness::free_port());
    let holder = Holder::take(&[
        "--dapr-http-addr",
        &format!("127.0.0.1:{http}"),
        "--dapr-grpc-addr",
        &format!("127.0.0.1:{grpc}"),
    ]);
    let lines = dapr_python(
        (http, grpc),
        None,
        "lock lockstore shared owner-a 60 lock lockstore other owner-a 60",
    );
    assert_eq!(lines, ["success false", "success true"]);
    holder.release();
}

/// Bad input gets Dapr's error answer over HTTP, and takes nothing.
#[test]
fn bad_input_is_refused_and_takes_nothing() {
    let endpoint = DaprProcess::start(&["--app-id", "billing"], &[]);
    let lock = endpoint.url("/v1.0-alpha1/lock/lockstore");
    let cases: [(&str, &str); 9] = [
        ("not json", "ERR_MALFORMED_REQUEST"),
        (
            r#"{"resourceId":"r","lockOwner":"a"}"#,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            r#"{"resourceId":"r","lockOwner":"a","expiryInSeconds":"60"}"#,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            r#"{"resourceId":"r","lockOwner":"a","expiryInSeconds":0}"#,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            r#"{"resourceId":"r","lockOwner":"a","expiryInSeconds":-5}"#,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            r#"{"resourceId":"r","lockOwner":"a","expiryInSeconds":100000000}"#,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            r#"{"resourceId":"r","lockOwner":"","expiryInSeconds":60}"#,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            r#"{"resourceId":"","lockOwner":"a","expiryInSeconds":60}"#,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            r#"{"resourceId":"a||r","lockOwner":"a","expiryInSeconds":60}"#,
            "ERR_MALFORMED_REQUEST",
        ),
    ];
    for (body, code) in cases {
        let (status, answer) = post(&lock, body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["errorCode"], code, "{body}: {answer}");
    }
    let (status, answer) = post(
        &endpoint.url("/v1.0-alpha1/lock/nosuchstore"),
        r#"{"resourceId":"r","lockOwner":"a","expiryInSeconds":60}"#,
    );
    assert_eq!(
        (status, answer["errorCode"].as_str()),
        (400, Some("ERR_LOCK_STORE_NOT_FOUND"))
    );
    // Nothing was taken: every resource id above is free for another owner.
    for id in ["r", "a||r"] {
        let body = format!(r#"{{"resourceId":"{id}","lockOwner":"b","expiryInSeconds":60}}"#);
        let (status, answer) = post(&lock, &body);
        let taken = status == 200 && answer["success"] == true;
        assert!(taken || id.contains("||"), "{id}: {status} {answer}");
    }
    // A huge body is refused, not read to its end: a 400, or — when the client is still
    // sending as the endpoint answers and closes — a connection cut under it. Either way
    // the endpoint serves on.
    let huge = format!(
        r#"{{"resourceId":"{}","lockOwner":"a","expiryInSeconds":60}}"#,
        "x".repeat(1 << 20)
    );
    match try_post(&lock, &huge) {
        Ok((status, answer)) => {
            assert_eq!(
                (status, answer["errorCode"].as_str()),
                (400, Some("ERR_MALFORMED_REQUEST"))
            );
        }
        Err(ureq::Error::Io(err)) => {
            assert!(
                matches!(
                    err.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ),
                "{err}"
            );
        }
        Err(other) => panic!("{other}"),
    }
    let (status, _) = post(
        &lock,
        r#"{"resourceId":"after","lockOwner":"a","expiryInSeconds":60}"#,
    );
    assert_eq!(status, 200);
    // Routes Dapr has and latchkey does not serve: Dapr's error shape, 404.
    let (status, answer) = post(&endpoint.url("/v1.0/state/statestore"), "[]");
    assert_eq!(
        (status, answer["errorCode"].as_str()),
        (404, Some("ERR_NOT_FOUND"))
    );
}

/// An owner holds at most its app's `max-held` locks through the endpoint, as an instance
/// does: the next TryLock is refused (HTTP 429, gRPC `RESOURCE_EXHAUSTED`) without touching
/// the store, an unlock gives the place back, and another owner has places of its own.
#[test]
fn an_owner_holds_at_most_its_apps_max_held() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("latchkey.toml");
    std::fs::write(
        &config,
        format!(
            "[stores.lockstore]\nurl = \"{}\"\n[apps.billing]\nmax-held = 2\n",
            redis.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let endpoint = DaprProcess::start(&["--app-id", "billing", "--config", config], &[]);
    let lock = endpoint.url("/v1.0-alpha1/lock/lockstore");
    let take = |id: &str, owner: &str| {
        let body = format!(r#"{{"resourceId":"{id}","lockOwner":"{owner}","expiryInSeconds":60}}"#);
        post(&lock, &body)
    };
    for id in ["one", "two"] {
        assert_eq!(
            take(id, "owner-a"),
            (200, serde_json::json!({"success": true}))
        );
    }
    let (status, answer) = take("three", "owner-a");
    assert_eq!(
        (status, answer["errorCode"].as_str()),
        (429, Some("ERR_TRY_LOCK")),
        "{answer}"
    );
    let over_grpc = dapr_python(endpoint.ports(), None, "lock lockstore three owner-a 60");
    assert_eq!(over_grpc, ["error RESOURCE_EXHAUSTED"]);
    assert!(
        redis.lock_keys().iter().all(|key| !key.contains("three")),
        "{:?}",
        redis.keys()
    );

    assert_eq!(take("three", "owner-b").0, 200);
    let freed = dapr_python(
        endpoint.ports(),
        None,
        "unlock lockstore one owner-a lock lockstore three owner-a 60",
    );
    assert_eq!(freed, ["status success", "success false"]);
    assert_eq!(
        take("four", "owner-a"),
        (200, serde_json::json!({"success": true}))
    );
}

/// daprd's unlock, as its Redis lock store runs it: delete the key if it holds the owner;
/// `-1` if there is no lock, `-2` if it is another owner's, `1` once deleted.
const DAPRD_UNLOCK: &str = "local owner = redis.call('GET', KEYS[1]) \
     if owner == false then return -1 end \
     if owner ~= ARGV[1] then return -2 end \
     return redis.call('DEL', KEYS[1])";

/// A store in daprd's key layout shares its locks with daprd, driven here as daprd drives
/// Redis (`SET NX PX` of `lock||APP||ID`, then its compare-and-delete): daprd's lock excludes
/// a guest, and a waiting guest gets it after daprd's unlock — which announces nothing, so
/// the waiter must look again by itself (without that it would wait out daprd's ten-minute
/// expiry); a guest's grant excludes daprd; fences rise; the operator lists daprd's lock.
#[test]
fn a_store_in_daprs_layout_shares_locks_with_daprd() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}/?key-layout=dapr", redis.url());
    let key = "lock||billing||shared";
    let set_nx = |owner: &str| redis.redis_cli(&["SET", key, owner, "NX", "PX", "600000"]);

    assert_eq!(set_nx("daprd-owner"), "OK");
    let tried = run_lockctl("billing", &store, "try shared 60000");
    assert_eq!(tried, ["opened lockstore", "held shared"]);
    let listed = latchkey()
        .args(["locks", "list", "--json", "--store"])
        .arg(format!("{}/?key-layout=dapr", redis.url()))
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        (&listed[0]["app"], &listed[0]["id"]),
        (&"billing".into(), &"shared".into()),
        "{listed}"
    );

    // A guest waits for it; once it has subscribed and been refused, daprd unlocks.
    let channel = "lock||billing||shared||released";
    let refusals = redis.calls("pttl");
    let lockctl = guest("lockctl");
    let waiter = latchkey()
        .args(["run", "--app-id", "billing", "--store", &store])
        .arg(&lockctl)
        .args([
            "open",
            "lockstore",
            "lock",
            "shared",
            "60000",
            "120000",
            "unlock",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while redis
        .redis_cli(&["PUBSUB", "NUMSUB", channel])
        .ends_with('0')
        || redis.calls("pttl") == refusals
    {
        assert!(
            started.elapsed() < harness::PATIENCE,
            "the guest never waited"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        redis.redis_cli(&["EVAL", DAPRD_UNLOCK, "1", key, "daprd-owner"]),
        "1"
    );
    let out = waiter.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = lines.lines().collect();
    assert!(lines[1].starts_with("granted shared fence="), "{lines:?}");
    // Granted before its wait ran out: at the deadline it would look once more anyway.
    let after: u64 = lines[1].rsplit_once("after=").unwrap().1.parse().unwrap();
    assert!(after < 120_000, "{lines:?}");
    assert_eq!(lines[2], "unlocked success", "{lines:?}");
    let waiters_fence: u64 = redis
        .redis_cli(&["GET", &format!("{key}||fence")])
        .parse()
        .unwrap();

    // A guest holds it: daprd cannot take it, nor unlock it as another owner.
    let holder = Holder::take(&["--store", &store]);
    assert_eq!(set_nx("daprd-owner"), "");
    assert_eq!(
        redis.redis_cli(&["EVAL", DAPRD_UNLOCK, "1", key, "daprd-owner"]),
        "-2"
    );
    let fence: u64 = redis
        .redis_cli(&["GET", &format!("{key}||fence")])
        .parse()
        .unwrap();
    assert!(fence > waiters_fence, "{fence} after {waiters_fence}");
    holder.release();
    assert_eq!(redis.redis_cli(&["EXISTS", key]), "0");
    assert_eq!(set_nx("daprd-owner"), "OK");
}

/// In daprd's layout a Dapr client's owner is stored as daprd stores it, so the endpoint and
/// daprd agree whose a lock is: daprd unlocks the endpoint's lock as its owner, and the
/// endpoint unlocks daprd's.
#[test]
fn the_endpoint_and_daprd_agree_whose_a_lock_is() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}/?key-layout=dapr", redis.url());
    let endpoint = DaprProcess::start(&["--app-id", "billing", "--store", &store], &[]);
    let key = "lock||billing||report";
    let held = dapr_python(endpoint.ports(), None, "lock lockstore report owner-a 60");
    assert_eq!(held, ["success true"]);
    assert_eq!(redis.redis_cli(&["GET", key]), "owner-a");
    let daprd_unlock = |owner: &str| redis.redis_cli(&["EVAL", DAPRD_UNLOCK, "1", key, owner]);
    assert_eq!(daprd_unlock("owner-b"), "-2");
    assert_eq!(daprd_unlock("owner-a"), "1");
    let gone = dapr_python(endpoint.ports(), None, "unlock lockstore report owner-a");
    assert_eq!(gone, ["status lock_does_not_exist"]);

    let taken = redis.redis_cli(&["SET", key, "owner-b", "NX", "PX", "60000"]);
    assert_eq!(taken, "OK");
    let lines = dapr_python(
        endpoint.ports(),
        None,
        "lock lockstore report owner-a 60 unlock lockstore report owner-a \
         unlock lockstore report owner-b",
    );
    assert_eq!(
        lines,
        [
            "success false",
            "status lock_belongs_to_others",
            "status success"
        ]
    );
    assert_eq!(redis.redis_cli(&["EXISTS", key]), "0");
}

/// `latchkey run --app-id APP --store STORE lockctl open lockstore STEPS`: its lines.
fn run_lockctl(app: &str, store: &str, steps: &str) -> Vec<String> {
    let out = latchkey()
        .args(["run", "--app-id", app, "--store", store])
        .arg(guest("lockctl"))
        .args(["open", "lockstore"])
        .args(steps.split_whitespace())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Bad input over gRPC — what Dapr's SDKs check before sending, sent anyway by a raw client
/// — is `INVALID_ARGUMENT` and takes nothing; a method latchkey does not serve is
/// `UNIMPLEMENTED`; with a token set, a call without it is `UNAUTHENTICATED`.
#[test]
fn bad_input_over_grpc_is_refused_and_takes_nothing() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    let endpoint = DaprProcess::start(&["--app-id", "billing", "--store", &store], &[]);
    let client = GrpcClient::connect(endpoint.grpc_port, None);
    let long = "x".repeat(2000);
    let cases = [
        ("lockstore", "r", "a", 0),
        ("lockstore", "r", "a", -5),
        ("lockstore", "r", "a", i32::MAX),
        ("lockstore", "r", "", 60),
        ("lockstore", "", "a", 60),
        ("lockstore", "a||r", "a", 60),
        ("lockstore", long.as_str(), "a", 60),
        ("nosuchstore", "r", "a", 60),
    ];
    for (store, id, owner, expiry) in cases {
        let status = client.try_lock(store, id, owner, expiry).unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{id:.20} {owner} {expiry}: {status}"
        );
    }
    let status = client.unlock("lockstore", "a||r", "a").unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert_eq!(redis.keys(), Vec::<String>::new(), "nothing was taken");

    for method in ["GetState", "PublishEvent", "SubtleEncryptAlpha1"] {
        assert_eq!(
            client.call_other(method).code(),
            tonic::Code::Unimplemented,
            "{method}"
        );
    }
    assert!(client.try_lock("lockstore", "r", "a", 60).unwrap());
    assert_eq!(client.unlock("lockstore", "r", "a").unwrap(), 0);

    let guarded = DaprProcess::start(&["--app-id", "billing"], &[("DAPR_API_TOKEN", "s3cret")]);
    let without = GrpcClient::connect(guarded.grpc_port, None);
    let status = without.try_lock("lockstore", "r", "a", 60).unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(!status.message().contains("s3cret"), "{status}");
    let status = without.call_other("GetState");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    let with = GrpcClient::connect(guarded.grpc_port, Some("s3cret"));
    assert!(with.try_lock("lockstore", "r", "a", 60).unwrap());
}

/// A flood of silent connections — more than the endpoint serves at once, on both ports —
/// holds no more than its bound of them open, and the silent ones are let go (HTTP: the
/// time for a request's head; gRPC: the time for a connection's first bytes), so Dapr's
/// clients are served again while the flood's sockets are still open.
#[test]
fn a_flood_of_silent_connections_stays_bounded() {
    const FLOOD: usize = 1100;
    const SERVED_AT_ONCE: usize = 1024;
    let endpoint = DaprProcess::start(&["--app-id", "billing"], &[]);
    let before = endpoint.open_files();
    let mut flood = Vec::new();
    for port in [endpoint.http_port, endpoint.grpc_port] {
        for _ in 0..FLOOD {
            flood.push(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
        }
    }
    // Accepting takes a moment; what is held must never pass the bound meanwhile.
    let bound = before + 2 * SERVED_AT_ONCE;
    let started = std::time::Instant::now();
    let mut most = 0;
    while started.elapsed() < std::time::Duration::from_secs(2) {
        most = most.max(endpoint.open_files());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(most <= bound, "{most} files open, more than {bound}");
    assert!(
        most > before + SERVED_AT_ONCE,
        "the flood was not accepted: {most}"
    );
    // Served again while the flood's sockets are open: a client that connects now waits at
    // most for the silent ones' time to run out.
    let served = |call: &dyn Fn() -> bool| {
        while !call() {
            assert!(started.elapsed() < harness::PATIENCE, "not served again");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    served(&|| {
        let client = GrpcClient::connect(endpoint.grpc_port, None);
        let got = client.try_lock("lockstore", "r", "owner-a", 60);
        got.is_ok_and(|taken| taken)
    });
    served(&|| {
        let unlock = endpoint.url("/v1.0-alpha1/unlock/lockstore");
        try_post(&unlock, r#"{"resourceId":"r","lockOwner":"owner-a"}"#)
            .is_ok_and(|(status, answer)| status == 200 && answer["status"] == 0)
    });
    drop(flood);
}

/// A guest of app `billing` (`latchkey run FLAGS lockctl_p3`) holding the lock on `shared`
/// until [`Holder::release`].
struct Holder {
    guest: std::process::Child,
    go: tempfile::TempDir,
}

impl Holder {
    /// Starts the guest, and returns once it holds the lock.
    fn take(flags: &[&str]) -> Self {
        let go = tempfile::tempdir().unwrap();
        let lockctl_p3 = guest("lockctl_p3");
        warm(&lockctl_p3);
        let mut guest = latchkey()
            .args(["run", "--app-id", "billing"])
            .args(flags)
            .arg("--dir")
            .arg(format!("{}::/go", go.path().display()))
            .arg(&lockctl_p3)
            .args([
                "open",
                "lockstore",
                "try",
                "shared",
                "60000",
                "await-file",
                "/go/go",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(guest.stdout.take().unwrap()).lines();
        assert_eq!(out.next().unwrap().unwrap(), "opened lockstore");
        let granted = out.next().unwrap().unwrap();
        assert!(granted.starts_with("granted shared"), "{granted}");
        Holder { guest, go }
    }

    /// Lets the guest go on to its end, which releases the lock.
    fn release(mut self) {
        std::fs::write(self.go.path().join("go"), "").unwrap();
        assert!(self.guest.wait().unwrap().success());
    }
}

/// POSTs `body` to `url`: the status and the JSON answer.
fn post(url: &str, body: &str) -> (u16, serde_json::Value) {
    try_post(url, body).unwrap()
}

/// [`post`], its failure to connect or send given back.
fn try_post(url: &str, body: &str) -> Result<(u16, serde_json::Value), ureq::Error> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut answer = agent.post(url).send(body)?;
    let status = answer.status().as_u16();
    let text = answer.body_mut().read_to_string()?;
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}
