//! WASI 0.3 guests and `latchkey:lock@0.3.0`: calls that suspend only the calling task, locks
//! owned by the task that took them, and `latchkey serve` reusing one instance for many
//! requests without carrying one request's lock into another.
//!
//! The guests: `tasks_demo_p3` (three tasks of one command sharing a lock), `lockctl_p3` (lockctl's
//! steps over 0.3.0, printing lockctl's lines) and `http_demo_p3` (the HTTP demo as a WASI
//! 0.3 handler, saying which instance served each request).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use harness::{
    Answer, Fixture, PATIENCE, RedisServer, ServeProcess, guest, latchkey, lines, lockctl,
    on_memory_and_redis, post, run, script, spawn_lockctl, warm,
};

on_memory_and_redis! {
    /// One instance, three tasks: while the reader waits for the lock the writer holds, the
    /// ticker goes on ticking — the wait suspends the reader alone — and the reader gets the
    /// lock once the writer unlocks it, with a greater fence.
    async fn a_wait_suspends_only_the_waiting_task(fx: &Fixture) {
        let run = run(&fx.app("ledger"), "tasks_demo_p3", &[]).await;
        let lines = run.assert_success().lines();
        let at = |what: &str| {
            lines
                .iter()
                .position(|line| line.contains(what))
                .unwrap_or_else(|| panic!("no {what:?} in {lines:?}"))
        };
        let (waiting, granted) = (at("reader: waiting for ledger"), at("reader: granted ledger"));
        let ticks_while_waiting = lines[waiting..granted]
            .iter()
            .filter(|line| line.contains("ticker: tick"))
            .count();
        assert!(ticks_while_waiting >= 1, "the wait blocked the instance: {lines:?}");
        assert!(at("writer: unlocked success") < granted, "{lines:?}");
        let fence = |line: &str| -> u64 {
            line.split("fence ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()
        };
        assert!(fence(lines[granted]) > fence(lines[at("writer: granted ledger")]), "{lines:?}");
    }

    /// Bad input through 0.3.0 gets the very answers of 0.2.0: the same script through
    /// `lockctl` and `lockctl_p3` prints the same lines, errors and their texts included.
    async fn bad_input_gets_the_answers_of_0_2(fx: &Fixture) {
        let steps = "open nope open lockstore try-long 0 1000 try-long 1025 1000 \
            try a 0 try a 9 try a 3600001 lock a 1000 300001 \
            try kept 60000 extend 0 extend 2 extend 3600001 held unlock unlock-missing";
        let steps = steps.replace(" unlock-missing", "");
        let v2 = lockctl(&fx.app("app"), &steps).await;
        let v3 = run(&fx.app("app"), "lockctl_p3", &script(&steps)).await;
        let without_fences = |run: &harness::Run| -> Vec<String> {
            run.lines()
                .iter()
                .map(|line| line.split(" fence=").next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(without_fences(v3.assert_success()), without_fences(v2.assert_success()));
        assert!(v3.lines()[0].starts_with("error no-such-store: "), "{v3:?}");
        assert!(v3.lines()[4].starts_with("error invalid-argument: lease-ms is 0"), "{v3:?}");
    }

    /// A guest that drops a pending `lock` cancels it: the host stops waiting, so when the
    /// holder lets go the cancelled wait does not take the lock behind the guest's back —
    /// the guest's own later try gets it. (A host that went on waiting would hold it for the
    /// instance until the instance ended.)
    async fn a_cancelled_wait_takes_nothing(fx: &Fixture) {
        let app = fx.app("app");
        let holder = spawn_lockctl(&app, "open lockstore try c 60000 sleep 600 unlock");
        let run = run(&app, "lockctl_p3", &script("open lockstore sleep 200 \
            cancel c 60000 30000 100 sleep 800 try c 60000")).await;
        let holder = holder.await.unwrap();
        assert_eq!(holder.assert_success().lines()[2], "unlocked success", "{holder:?}");
        let lines = run.assert_success().lines();
        assert_eq!(lines[1], "cancelled c", "{lines:?}");
        assert!(lines[2].starts_with("granted c"), "{lines:?}");
    }

    /// A grant that races the cancel of its `lock` is released, never leaked: 200 times a
    /// holder unlocks while a waiter's `lock` is dropped from 0 to 400 µs after the unlock
    /// returned — before, during and after the grant the waiter is woken to make — and
    /// each time the lock is free again once the host has let go of whatever the waiter
    /// won. (A host that let the wait run on after the cancel left the lock taken within
    /// a few hundred rounds.)
    async fn a_grant_racing_its_cancel_is_released(fx: &Fixture) {
        let run = run(&fx.app("app"), "lockctl_p3", &script("open lockstore race r 200 400")).await;
        assert_eq!(run.assert_success().lines()[1], "race r free=200 of 200", "{run:?}");
    }
}

/// One host runs guests of every version of `latchkey:lock` at once — 0.1.0, 0.2.0 and
/// 0.2.1 (WASI 0.2) and 0.3.0 (WASI 0.3) — and they share the app's locks: while a 0.2.0
/// guest (linked to the host's 0.2.1) holds one, the 0.3.0, 0.2.1 and 0.1.0 guests are
/// refused it; once it is free, each gets it in turn.
#[tokio::test(flavor = "multi_thread")]
async fn guests_of_every_version_share_one_host() {
    let fx = Fixture::on_redis();
    let app = fx.app("app");
    let holder = {
        let app = app.clone();
        tokio::spawn(async move { run(&app, "lock-v0-2-0", &["shared", "1000"]).await })
    };
    fx.redis().wait_for_key("latchkey:{app:shared}:lock");
    let v21_refused = lockctl(&app, "open lockstore try shared 60000").await;
    let v1_refused = run(&app, "lock-v0-1", &["shared"]).await;
    let v3 = {
        let app = app.clone();
        let steps = "open lockstore try shared 60000 lock shared 60000 30000 unlock";
        tokio::spawn(async move { run(&app, "lockctl_p3", &script(steps)).await })
    };
    let (holder, v3) = (holder.await.unwrap(), v3.await.unwrap());
    let v1_granted = run(&app, "lock-v0-1", &["shared"]).await;

    assert_eq!(
        holder.assert_success().lines()[1..],
        [
            "keeping alive",
            "held true",
            "unlocked UnlockStatus::Success"
        ],
        "{holder:?}"
    );
    assert_eq!(v21_refused.assert_success().lines()[1], "held shared");
    assert_eq!(v1_refused.assert_success().lines(), ["held shared"]);
    let v3 = v3.assert_success().lines();
    assert!(v3[1].starts_with("held shared"), "{v3:?}");
    assert!(v3[2].starts_with("granted shared"), "{v3:?}");
    assert_eq!(v3[3], "unlocked success", "{v3:?}");
    assert!(
        v1_granted.lines()[0].starts_with("granted shared"),
        "{v1_granted:?}"
    );
}

/// `latchkey serve` of the WASI 0.3 demo handler as app `jobs`, on `redis`, with `extra`
/// flags.
fn serve_p3_demo(redis: &RedisServer, extra: &[&str]) -> ServeProcess {
    let store = format!("lockstore={}", redis.url());
    let demo = guest("http_demo_p3");
    let mut args = vec!["--app-id", "jobs", "--store", &store];
    args.extend_from_slice(extra);
    args.push(demo.to_str().unwrap());
    ServeProcess::start(&args)
}

/// The instance that served `answer`, and how many requests it had been given by then.
fn served_by(answer: &Answer) -> (String, u64) {
    let instance = answer.header("x-instance").expect("x-instance").to_owned();
    let count = answer.header("x-instance-requests").expect("a count");
    (instance, count.parse().unwrap())
}

/// `POST path`, answered.
fn post_to(server: &ServeProcess, path: &str) -> Answer {
    post(&server.url(path), PATIENCE).unwrap()
}

/// Polls until Redis holds no lock; false if one is still there after [`PATIENCE`].
fn no_lock_left(redis: &RedisServer) -> bool {
    let started = Instant::now();
    while !redis.lock_keys().is_empty() {
        if started.elapsed() > PATIENCE {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Requests served at once by one instance are tasks that exclude each other: one job runs
/// while 7 requests for it are refused, some of them by the very instance that runs it.
#[test]
fn concurrent_requests_in_one_instance_exclude_each_other() {
    let redis = RedisServer::start();
    let server = serve_p3_demo(&redis, &[]);
    let url = server.url("/jobs/nightly?ms=2000");
    let first = std::thread::spawn(move || post(&url, PATIENCE).unwrap());
    redis.wait_for_key("latchkey:{jobs:nightly}:lock");
    let others: Vec<_> = (0..7)
        .map(|_| {
            let url = server.url("/jobs/nightly?ms=2000");
            std::thread::spawn(move || post(&url, PATIENCE).unwrap())
        })
        .collect();
    let others: Vec<Answer> = others.into_iter().map(|a| a.join().unwrap()).collect();
    let first = first.join().unwrap();
    assert_eq!(first.status, 200, "{first:?}");
    assert!(others.iter().all(|a| a.status == 409), "{others:?}");
    let runner = served_by(&first).0;
    assert!(
        others.iter().any(|a| served_by(a).0 == runner),
        "no refusal came from the instance running the job: {first:?} {others:?}"
    );
    assert!(no_lock_left(&redis), "{:?}", redis.lock_keys());
}

/// A request that leaks its lock's handle — never unlocking, never dropping it — leaves the
/// lock free the moment its response is complete, while its instance lives on: the next
/// request, served by that same instance, runs the job at once. (The lease is 30 s.)
#[test]
fn a_leaked_lock_is_free_when_its_response_ends() {
    let redis = RedisServer::start();
    let server = serve_p3_demo(&redis, &[]);
    let leaked = post_to(&server, "/jobs/b?then=leak");
    assert!(leaked.body.starts_with("leaked b fence "), "{leaked:?}");
    assert_eq!(
        redis.lock_keys(),
        Vec::<String>::new(),
        "the lock outlived its response"
    );
    let next = post_to(&server, "/jobs/b?ms=0");
    assert!(next.body.starts_with("ran b fence "), "{next:?}");
    let (leaker, count) = served_by(&leaked);
    assert_eq!(
        served_by(&next),
        (leaker, count + 1),
        "the instance was not reused"
    );
}

/// A request's end belongs to that request alone, even when its task is long over and
/// wasmtime has given the task's id to the next request: `POST /later`'s task ends as soon
/// as it has answered, leaving its body open; the next request in the instance (which
/// wasmtime gives the freed id) takes its lock and then finishes that body. The end of the
/// first response — its last chunk — must not release the second request's lock. (Ownership kept by
/// wasmtime's task id alone released it: 503s under load, and this test, caught that.)
#[test]
fn a_response_that_ends_late_frees_no_other_requests_lock() {
    use std::io::{Read as _, Write as _};
    let redis = RedisServer::start();
    let server = serve_p3_demo(&redis, &[]);
    let address = server.address();
    let mut later = std::net::TcpStream::connect(&address).unwrap();
    later.set_read_timeout(Some(PATIENCE)).unwrap();
    later
        .write_all(b"POST /later HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    // Its head arrives once its task has answered; its body stays open.
    let mut received = Vec::new();
    let mut read_until = |end: &str| {
        let mut chunk = [0; 4096];
        while !String::from_utf8_lossy(&received).contains(end) {
            let n = later.read(&mut chunk).expect("the answer to POST /later");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&chunk[..n]);
        }
    };
    read_until("\r\n\r\n");
    let url = server.url("/jobs/holder?then=finish-later&ms=600000");
    let holder = std::thread::spawn(move || post(&url, PATIENCE));
    // The body ends with the last chunk, once the server has ended the request.
    read_until("finished by holder\n\r\n0\r\n\r\n");
    assert_eq!(
        redis.lock_keys(),
        ["latchkey:{jobs:holder}:lock"],
        "the end of one request released another's lock"
    );
    drop(server);
    let _ = holder.join();
}

/// Requests that come one after another, each computing for a moment, are all served by
/// one instance: an instance is busy only while its guest computes without a break, not
/// because it was entered at tick after tick.
#[test]
fn requests_in_quick_succession_reuse_one_instance() {
    let redis = RedisServer::start();
    let server = serve_p3_demo(&redis, &[]);
    let first = served_by(&post_to(&server, "/jobs/q?ms=1"));
    for n in 2..=100 {
        let answer = post_to(&server, "/jobs/q?ms=1");
        assert_eq!(
            served_by(&answer),
            (first.0.clone(), n),
            "request {n} went to another instance"
        );
    }
}

/// A lock handle kept by the instance past its request is inert in the next: the lock was
/// released at the first request's end, so `lost` has completed, `held` and `extend` say
/// false, and `unlock` finds nobody holds it — and another request took it meanwhile.
#[test]
fn a_handle_kept_past_its_request_is_inert() {
    let redis = RedisServer::start();
    let server = serve_p3_demo(&redis, &[]);
    let stashed = post_to(&server, "/jobs/s?then=stash");
    assert!(stashed.body.starts_with("stashed s"), "{stashed:?}");
    let taken = post_to(&server, "/jobs/s?then=leak");
    assert!(
        taken.body.starts_with("leaked s"),
        "the kept handle still held: {taken:?}"
    );
    let report = post_to(&server, "/stashed");
    assert_eq!(
        report.body, "lost true held false extend false unlock lock-does-not-exist\n",
        "{report:?}"
    );
    assert_eq!(
        served_by(&report).0,
        served_by(&stashed).0,
        "not the same instance"
    );
}

/// A request that traps in an instance serving another request at once fails, and takes
/// the instance with it: the other request fails too (`500`), the locks of both are
/// released at once (their leases are 30 s), and the next request gets a fresh instance.
#[test]
fn a_trap_frees_the_locks_of_every_request_in_its_instance() {
    let redis = RedisServer::start();
    let server = serve_p3_demo(&redis, &[]);
    let url = server.url("/jobs/long?ms=60000");
    let long = std::thread::spawn(move || post(&url, PATIENCE).unwrap());
    redis.wait_for_key("latchkey:{jobs:long}:lock");
    let trapped = post_to(&server, "/jobs/p?then=panic");
    assert_eq!(trapped.status, 500, "{trapped:?}");
    let long = long.join().unwrap();
    assert_eq!(
        long.status, 500,
        "the other request outlived its instance: {long:?}"
    );
    assert!(no_lock_left(&redis), "{:?}", redis.lock_keys());
    let next = post_to(&server, "/jobs/long?ms=0");
    assert!(next.body.starts_with("ran long"), "{next:?}");
    assert_eq!(served_by(&next).1, 1, "not a fresh instance: {next:?}");
    assert!(server.stderr().contains("dropped: "), "{}", server.stderr());
}

/// A request past its deadline (`504`, even while its handler spins) and one whose client
/// hung up each free their lock at once; the next request for each job runs it. The hung-up
/// handler would sleep ten minutes under a twenty-minute deadline, holding a ten-minute
/// lease: only the end of its request can free the lock in time.
#[test]
fn a_deadline_or_a_hang_up_frees_the_lock() {
    let redis = RedisServer::start();
    let server = serve_p3_demo(&redis, &["--deadline", "1s"]);
    for job in ["spin", "sleep"] {
        let stopped = post_to(&server, &format!("/jobs/{job}?then={job}"));
        assert_eq!(stopped.status, 504, "{stopped:?}");
        assert!(no_lock_left(&redis), "{:?}", redis.lock_keys());
        let next = post_to(&server, &format!("/jobs/{job}?ms=0"));
        assert!(next.body.starts_with("ran"), "{next:?}");
    }

    let server = serve_p3_demo(&redis, &["--deadline", "20m"]);
    // The client gives up after 300 ms.
    let url = server.url("/jobs/c?then=sleep&lease=600000");
    let hung_up = std::thread::spawn(move || post(&url, Duration::from_millis(300)));
    redis.wait_for_key("latchkey:{jobs:c}:lock");
    assert!(hung_up.join().unwrap().is_err(), "the handler answered");
    assert!(
        no_lock_left(&redis),
        "the lock outlived its client: {:?}",
        redis.lock_keys()
    );
    assert!(post_to(&server, "/jobs/c?ms=0").body.starts_with("ran c"));
}

/// 8 clients × 50 requests, each a locked read-modify-write of one file, served by reused
/// instances many at once: exactly 400. The control without the lock loses updates.
#[test]
fn a_locked_counter_loses_no_update_with_reuse() {
    let redis = RedisServer::start();
    let data = tempfile::tempdir().unwrap();
    let dir = format!("{}::/data", data.path().display());
    let server = serve_p3_demo(&redis, &["--dir", &dir]);
    let count = |path: &str| {
        let _ = std::fs::remove_file(data.path().join("counter"));
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let url = server.url(path);
                std::thread::spawn(move || {
                    let mut instances = HashMap::<String, u64>::new();
                    for _ in 0..50 {
                        let answer = post(&url, PATIENCE).unwrap();
                        assert_eq!(answer.status, 200, "{answer:?}");
                        *instances.entry(served_by(&answer).0).or_default() += 1;
                    }
                    instances
                })
            })
            .collect();
        let mut instances = HashMap::<String, u64>::new();
        for client in clients {
            for (instance, n) in client.join().unwrap() {
                *instances.entry(instance).or_default() += n;
            }
        }
        let text = std::fs::read_to_string(data.path().join("counter")).unwrap();
        (text.trim().parse::<u64>().unwrap(), instances.len())
    };
    let (locked, instances) = count("/counter");
    assert_eq!(locked, 400, "the lock let updates through");
    assert!(instances < 400, "no instance was reused");
    let (unlocked, _) = count("/counter?nolock");
    assert!(
        unlocked < 400,
        "the control lost no update: it cannot catch a bug"
    );
}

/// `latchkey run`'s grants reach a WASI 0.3 command through WASI 0.3's own interfaces:
/// `--env` through `wasi:cli/environment@0.3.0`, `--dir` through
/// `wasi:filesystem@0.3.0` — and nothing of the host's without them (the control).
#[test]
fn a_p3_command_gets_what_the_flags_grant_and_nothing_else() {
    let lockctl_p3 = guest("lockctl_p3");
    warm(&lockctl_p3);
    let data = tempfile::tempdir().unwrap();
    let dir = format!("{}::/data", data.path().display());
    let steps = ["env", "dirs"];
    let granted = latchkey()
        .args(["run", "--env", "GREETING=hello", "--dir", &dir])
        .arg(&lockctl_p3)
        .args(steps)
        .output()
        .unwrap();
    assert_eq!(
        lines(&granted),
        ["env GREETING=hello", "dirs /data:DescriptorType::Directory"],
        "{granted:?}"
    );
    let bare = latchkey()
        .arg("run")
        .arg(&lockctl_p3)
        .args(steps)
        .output()
        .unwrap();
    assert_eq!(lines(&bare), ["dirs"], "{bare:?}");
}
