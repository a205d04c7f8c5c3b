//! Keep-alive (`latchkey:lock@0.2.0`): the host renews a short lease while its instance
//! lives, and tells the guest the moment the lock is lost. Real host processes, killed and
//! paused, on a real Redis; and the 0.1.0 interface, still served.

use std::process::Child;
use std::time::{Duration, Instant};

use harness::{Fixture, PATIENCE, RedisServer, host_process, lines, lockctl, run, signal};

const LOCK: &str = "latchkey:{jobs:report}:lock";

/// `latchkey run` of `guest` as app `jobs` on `redis`, a process of its own.
fn host(redis: &RedisServer, flags: &[&str], guest_name: &str, args: &[&str]) -> Child {
    let store = format!("lockstore={}", redis.url());
    host_process("jobs", &store, flags, guest_name, args)
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// A host killed (SIGKILL) while it keeps a 2 s lease alive frees the lock within that
/// lease — not at the end of a lease long enough for the job — and no sooner.
#[test]
fn a_killed_hosts_lock_is_free_within_its_short_lease() {
    let redis = RedisServer::start();
    let job = ["--lease-ms", "2000", "--steps", "100", "--step-ms", "500"];
    let mut doomed = host(&redis, &[], "long-job", &job);
    redis.wait_for_key(LOCK);
    // Long enough for renewals to have extended the lease past its first end.
    std::thread::sleep(Duration::from_millis(2500));
    doomed.kill().unwrap();
    let killed = Instant::now();
    doomed.wait().unwrap();
    let left: i64 = redis.cmd(&["PTTL", LOCK]);
    assert!(left > 0, "the lease was not kept alive");

    let taker = host(
        &redis,
        &[],
        "lockctl",
        &["open", "lockstore", "lock", "report", "60000", "20000"],
    );
    let out = lines(&taker.wait_with_output().unwrap());
    let waited = killed.elapsed();
    assert!(out[1].starts_with("granted report"), "{out:?}");
    assert!(
        waited >= Duration::from_millis(left as u64),
        "{waited:?}, {left} ms left"
    );
    assert!(
        waited < Duration::from_millis(3500),
        "freed only after {waited:?}"
    );
}

/// A host paused (SIGSTOP) past its lease: another host takes the lock meanwhile; once
/// resumed (SIGCONT), the paused guest learns it lost the lock — its `lost` pollable is
/// ready and `held` is false — before it writes again.
#[test]
fn a_paused_host_learns_of_its_loss_before_writing_again() {
    let redis = RedisServer::start();
    let job = ["--lease-ms", "1000", "--steps", "100", "--step-ms", "200"];
    let paused = host(&redis, &[], "long-job", &job);
    redis.wait_for_key(LOCK);
    std::thread::sleep(Duration::from_millis(500));
    signal(&paused, "-STOP");
    let stopped_at = now_ms();
    std::thread::sleep(Duration::from_millis(1500));
    let taker = host(
        &redis,
        &[],
        "lockctl",
        &[
            "open",
            "lockstore",
            "try",
            "report",
            "60000",
            "sleep",
            "2000",
        ],
    );
    let started = Instant::now();
    while redis.cmd::<i64>(&["PTTL", LOCK]) < 30_000 {
        assert!(
            started.elapsed() < PATIENCE,
            "the other host never took the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&paused, "-CONT");
    let out = paused.wait_with_output().unwrap();
    let taker = lines(&taker.wait_with_output().unwrap());
    assert!(taker[1].starts_with("granted report"), "{taker:?}");

    let job = lines(&out);
    assert!(!out.status.success(), "{job:?}");
    let last = job.last().unwrap();
    assert!(
        last.starts_with("lost the lock before step") && last.ends_with("held=false"),
        "{job:?}"
    );
    for step in job.iter().filter(|line| line.starts_with("step ")) {
        let at: u128 = step.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(
            at <= stopped_at,
            "wrote after losing the lock: {step} ({job:?})"
        );
    }
}

/// A renewal the replicas never confirmed does not count (R12). A primary with one
/// replica, grants waiting for it (`--wait-replicas lockstore=1`), a guest keeping a 1 s
/// lease alive: once the replica stops answering, renewals reach the primary alone — which a
/// failover would lose — so the host counts the lease from the last renewal the replica
/// confirmed, and the guest learns it lost the lock within that lease and writes nothing
/// after. (Before, the host renewed on the primary for as long as the job ran and never
/// told the guest.)
#[test]
fn a_renewal_the_replicas_never_confirm_does_not_count() {
    const LEASE_MS: u128 = 1000;
    let primary = RedisServer::start();
    let replica = primary.start_replica();
    let job = ["--lease-ms", "1000", "--steps", "100", "--step-ms", "100"];
    let flags = ["--wait-replicas", "lockstore=1"];
    let holder = host(&primary, &flags, "long-job", &job);
    primary.wait_for_key(LOCK);
    // Renewals confirmed by the replica meanwhile: the lease outlives its first second.
    std::thread::sleep(Duration::from_millis(1500));
    replica.pause();
    let paused_at = now_ms();
    let out = holder.wait_with_output().unwrap();
    replica.resume();

    let job = lines(&out);
    let last = job.last().unwrap();
    assert!(last.starts_with("lost the lock before step"), "{job:?}");
    assert!(!last.ends_with("held=true"), "{job:?}");
    let at = |line: &str| -> u128 {
        let at = line.split(" at ").nth(1).unwrap();
        at.split([' ', ';']).next().unwrap().parse().unwrap()
    };
    let lost_at = at(last);
    eprintln!(
        "R12: lost {} ms after the replica stopped, on a {LEASE_MS} ms lease: {last}",
        lost_at - paused_at
    );
    assert!(
        lost_at < paused_at + LEASE_MS + 1000,
        "lost only {} ms after the replica stopped: {job:?}",
        lost_at - paused_at
    );
    // Each write follows a check that the lock is not lost; the 100 ms of one step cover
    // what may pass between the check and the write (what fences are for).
    for step in job.iter().filter(|line| line.starts_with("step ")) {
        assert!(
            at(step) <= paused_at + LEASE_MS + 100,
            "wrote after the lease the replica knew of had ended: {step} ({job:?})"
        );
    }
}

/// The operator's cap ends renewal: with `--max-keep-alive 1s`, a job kept alive on a
/// 500 ms lease loses its lock about a second and a half in, and a waiter gets it.
#[test]
fn keep_alive_stops_at_the_operators_cap() {
    let redis = RedisServer::start();
    let job = ["--lease-ms", "500", "--steps", "40", "--step-ms", "100"];
    let capped = host(&redis, &["--max-keep-alive", "1s"], "long-job", &job);
    redis.wait_for_key(LOCK);
    let started = Instant::now();
    let waiter = host(
        &redis,
        &[],
        "lockctl",
        &["open", "lockstore", "lock", "report", "60000", "20000"],
    );
    let waiter = lines(&waiter.wait_with_output().unwrap());
    let waited = started.elapsed();
    let job = lines(&capped.wait_with_output().unwrap());
    assert!(waiter[1].starts_with("granted report"), "{waiter:?}");
    assert!(
        waited < Duration::from_millis(2500),
        "renewed past the cap: {waited:?}"
    );
    assert!(job.last().unwrap().starts_with("lost the lock"), "{job:?}");
}

/// Renewal stops when the guest unlocks, drops the lock, or ends: no lock is left, and the
/// store sees no more renewals.
#[tokio::test(flavor = "multi_thread")]
async fn renewal_stops_with_unlock_drop_and_the_instances_end() {
    let fx = Fixture::on_redis();
    let app = fx.app("app");
    let run = lockctl(
        &app,
        "open lockstore try a 300 keepalive unlock try b 300 keepalive drop \
         try c 300 keepalive sleep 700",
    )
    .await;
    assert_eq!(
        run.assert_success().lines()[3],
        "unlocked success",
        "{run:?}"
    );
    let redis = fx.redis();
    assert_eq!(redis.lock_keys(), Vec::<String>::new());
    let evalsha = || redis.calls("evalsha");
    let before = evalsha();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        evalsha(),
        before,
        "renewals went on after the locks were let go"
    );
}

/// A guest built against `latchkey:lock@0.1.0` still runs: the host serves both versions.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_built_against_0_1_still_runs() {
    let fx = Fixture::on_redis();
    let run = run(&fx.app("app"), "lock-v0-1", &["legacy"]).await;
    let lines = run.assert_success().lines();
    assert!(lines[0].starts_with("granted legacy fence="), "{lines:?}");
    assert_eq!(
        lines[1..],
        ["extended true", "unlocked UnlockStatus::Success"]
    );
    assert_eq!(fx.redis().lock_keys(), Vec::<String>::new());
}
