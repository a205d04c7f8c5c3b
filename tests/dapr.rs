//! `latchkey dapr`: Dapr's lock API for Dapr's own clients — here Dapr's Python SDK (gRPC)
//! and JavaScript SDK (HTTP), as Dapr applications run them, pinned in `tests/clients` — on
//! the same locks as guests.

use std::io::BufRead as _;
use std::process::Stdio;

use harness::dapr::{DaprProcess, dapr_node, dapr_python};
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
    let lockctl = guest("lockctl");
    warm(&lockctl);
    let guest_tries = |app: &str| {
        let out = latchkey()
            .args(["run", "--app-id", app, "--store", &store])
            .arg(&lockctl)
            .args(["open", "lockstore", "try", "shared", "60000"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .to_owned()
    };

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
