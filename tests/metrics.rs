//! Metrics as an operator scrapes them: `--metrics-addr` on a real `latchkey serve` and
//! `latchkey run`, a real Redis, and Prometheus' text format read back and checked against
//! what the guests did.

use std::time::Duration;

use harness::{
    PATIENCE, RedisServer, ServeProcess, free_port, guest, latchkey, post, signal, warm,
};

/// The text of `http://addr/metrics`.
fn scrape(addr: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(PATIENCE))
        .build()
        .into();
    agent
        .get(&format!("http://{addr}/metrics"))
        .call()
        .expect("the metrics endpoint answers")
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// The value of the series `name` whose labels include every one of `labels`; 0 if there
/// is none (a counter that never moved is not exported).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn operations(text: &str, op: &str, outcome: &str) -> f64 {
    value(
        text,
        "latchkey_lock_operations_total",
        &[
            ("app", "jobs"),
            ("store", "lockstore"),
            ("op", op),
            ("outcome", outcome),
        ],
    )
}

/// The numbers match what the handlers did: 8 clients × 50 locked increments are 400 grants
/// and 400 successful unlocks; a held job's `try` is `busy`; a trapped holder's lock is a
/// `release_on_exit`; a Redis that stopped answering is `unavailable` and counted for its
/// store. No label holds a resource id, the store's URL or its password.
#[test]
fn metrics_count_what_the_guests_did() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cr3t-pw"]);
    let data = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let store = format!("lockstore=redis://127.0.0.1:{}", redis.port());
    let dir = format!("{}::/data", data.path().display());
    let demo = guest("http_demo");
    let password = [("LATCHKEY_TEST_PW", "s3cr3t-pw")];
    let server = ServeProcess::start_with_env(
        &[
            "--app-id",
            "jobs",
            "--store",
            &store,
            "--password-env",
            "lockstore=LATCHKEY_TEST_PW",
            // Time enough for every call on a loaded machine; a stopped Redis still fails.
            "--store-timeout-ms",
            "2000",
            "--metrics-addr",
            &metrics,
            "--dir",
            &dir,
            demo.to_str().unwrap(),
        ],
        &password,
    );

    let clients: Vec<_> = (0..8)
        .map(|_| {
            let url = server.url("/counter");
            std::thread::spawn(move || {
                for _ in 0..50 {
                    assert_eq!(post(&url, PATIENCE).unwrap().status, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let text = scrape(&metrics);
    assert_eq!(operations(&text, "lock", "granted"), 400.0, "{text}");
    assert_eq!(operations(&text, "unlock", "success"), 400.0, "{text}");

    let url = server.url("/jobs/nightly-report-42?ms=1500");
    let running = std::thread::spawn(move || post(&url, PATIENCE).unwrap());
    redis.wait_for_key("latchkey:{jobs:nightly-report-42}:lock");
    let busy = post(&server.url("/jobs/nightly-report-42"), PATIENCE).unwrap();
    assert_eq!(busy.status, 409);
    assert_eq!(running.join().unwrap().status, 200);
    let trapped = post(&server.url("/jobs/doomed-job-7?then=panic"), PATIENCE).unwrap();
    assert_eq!(trapped.status, 500);
    redis.pause();
    let stalled = post(&server.url("/jobs/stalled-job-9"), PATIENCE).unwrap();
    redis.resume();
    assert_eq!(stalled.status, 503, "{stalled:?}");

    let text = scrape(&metrics);
    assert_eq!(operations(&text, "try_lock", "busy"), 1.0, "{text}");
    assert_eq!(
        operations(&text, "release_on_exit", "success"),
        1.0,
        "{text}"
    );
    assert_eq!(operations(&text, "try_lock", "unavailable"), 1.0, "{text}");
    let unavailable = value(
        &text,
        "latchkey_store_unavailable_total",
        &[("store", "lockstore")],
    );
    assert_eq!(unavailable, 1.0, "{text}");
    assert_eq!(
        value(&text, "latchkey_locks_held", &[("app", "jobs")]),
        0.0,
        "{text}"
    );
    for secret in [
        "nightly-report-42",
        "doomed-job-7",
        "stalled-job-9",
        "s3cr3t",
        "redis://",
        &redis.port().to_string(),
    ] {
        assert!(
            !text.contains(secret),
            "{secret} is in the metrics:\n{text}"
        );
    }
}

/// `latchkey run --metrics-addr` serves the same while its instances run: a held lock and
/// a running instance show in the gauges. (The guest holds its lock until the test has
/// scraped, then SIGTERM stops it.)
#[test]
fn run_serves_metrics_while_instances_run() {
    let metrics = format!("127.0.0.1:{}", free_port());
    warm(&guest("lockctl"));
    let mut run = latchkey()
        .args(["run", "--app-id", "jobs", "--metrics-addr", &metrics])
        .arg(guest("lockctl"))
        .args(["open", "lockstore", "try", "a", "60000", "sleep", "600000"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let text = loop {
        if let Ok(stream) = std::net::TcpStream::connect(&metrics) {
            drop(stream);
            let text = scrape(&metrics);
            if text.contains("latchkey_locks_held") {
                break text;
            }
        }
        assert!(started.elapsed() < PATIENCE, "no metrics");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(operations(&text, "try_lock", "granted"), 1.0, "{text}");
    assert_eq!(
        value(&text, "latchkey_locks_held", &[("app", "jobs")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "latchkey_instances_running", &[("app", "jobs")]),
        1.0,
        "{text}"
    );
    signal(&run, "-TERM");
    assert_eq!(run.wait().unwrap().code(), Some(128 + 15));
}
