//! The semantics of `latchkey:lock`, the same on every backend: each test runs on the
//! in-memory store, on a real Redis, on a three-master Redis Cluster, on a primary with two
//! replicas behind three sentinels and on three Redlock masters (`memory::name`,
//! `redis::name`, `cluster::name`, `sentinel::name`, `redlock::name`).
//!
//! Guests are real components (`guest/demos`) run by the real host; the scripted client
//! `lockctl` prints one line per step, which the tests read.

use std::time::Duration;

use harness::{Fixture, lockctl, on_every_backend, run_with, spawn_lockctl};
use latchkey_host::Exit;
use wasmtime_wasi::FsPerms;

on_every_backend! {
    /// Dapr's scenario: of two instances, one gets the lock and the other is denied; after
    /// the first unlocks, the second gets it; another app locks the same name independently.
    async fn seed_scenario(fx: &Fixture) {
        let app = fx.app("app1");
        let first = spawn_lockctl(&app, "open lockstore try my_file_name 60000 sleep 1500 unlock");
        let second = spawn_lockctl(
            &app,
            "open lockstore sleep 300 try my_file_name 60000 sleep 1700 try my_file_name 60000",
        );
        let other_app = spawn_lockctl(&fx.app("app2"), "open lockstore sleep 300 try my_file_name 60000");

        let first = first.await.unwrap();
        let second = second.await.unwrap();
        let other_app = other_app.await.unwrap();
        assert!(first.lines()[1].starts_with("granted my_file_name"), "{first:?}");
        assert_eq!(first.lines()[2], "unlocked success");
        assert_eq!(second.lines()[1], "held my_file_name");
        assert!(second.lines()[2].starts_with("granted my_file_name"), "{second:?}");
        assert!(other_app.lines()[1].starts_with("granted my_file_name"), "{other_app:?}");
    }

    /// Unlock reports each of Dapr's statuses, and never frees another holder's lock.
    async fn unlock_reports_every_status(fx: &Fixture) {
        let app = fx.app("app");
        let run = lockctl(&app, "open lockstore \
            try mine 60000 unlock \
            try lapsed 50 sleep 150 unlock \
            try taken 50 sleep 150 try taken 60000 swap unlock \
            try taken 60000").await;
        let lines = run.assert_success().lines();
        assert_eq!(lines[2], "unlocked success");
        assert_eq!(lines[4], "unlocked lock-does-not-exist");
        assert_eq!(lines[7], "unlocked lock-belongs-to-others");
        // The stale unlock left the new holder in place.
        assert_eq!(lines[8], "held taken");
    }

    /// Extend keeps a live lock past its first lease, and is refused once the lease ended.
    async fn extend_before_and_after_expiry(fx: &Fixture) {
        let run = lockctl(&fx.app("app"), "open lockstore \
            try job 300 sleep 100 extend 800 sleep 400 try job 60000 \
            sleep 700 extend 60000").await;
        assert_eq!(
            run.assert_success().lines()[2..],
            ["extended true", "held job", "extended false"]
        );
    }

    /// Every grant's fence is greater than all earlier ones on the same resource, across
    /// instances too.
    async fn fences_strictly_increase(fx: &Fixture) {
        let app = fx.app("app");
        let steps = "open lockstore try f 60000 unlock try f 60000 unlock try f 60000 unlock \
                     try f 50 sleep 100 try f 60000 drop try f 60000";
        let mut fences = lockctl(&app, steps).await.assert_success().fences();
        fences.extend(lockctl(&app, steps).await.assert_success().fences());
        assert_eq!(fences.len(), 12);
        for pair in fences.windows(2) {
            assert!(pair[0] < pair[1], "fences not increasing: {fences:?}");
        }
    }

    /// A waiter is woken by the holder's unlock, long before the lease or its wait ends.
    async fn waiter_wakes_on_release(fx: &Fixture) {
        let (outcome, waited) = wait_behind(fx, "try w 60000 sleep 600 unlock", "w", 20000).await;
        assert!(outcome.starts_with("granted w"), "{outcome}");
        assert_between(waited, 300, 10_000, "woken by the unlock");
    }

    /// A waiter gets the lock when the holder's lease ends, though the holder never unlocks.
    async fn waiter_wakes_on_expiry(fx: &Fixture) {
        let (outcome, waited) = wait_behind(fx, "try e 700 sleep 4000", "e", 20000).await;
        assert!(outcome.starts_with("granted e"), "{outcome}");
        // Well before the holder's instance ends at 4 s and releases everything.
        assert_between(waited, 400, 3000, "woken by the expiry");
    }

    /// A waiter gives up when its wait ends and gets `none`.
    async fn waiter_times_out(fx: &Fixture) {
        let (outcome, waited) = wait_behind(fx, "try t 60000 sleep 2000", "t", 400).await;
        assert!(outcome.starts_with("held t"), "{outcome}");
        assert_between(waited, 400, 1800, "gave up when the wait ended");
    }

    /// Locks an instance still holds are released when it ends: returning, trapping, or
    /// dropping the handle. The next taker does not wait for the 60 s lease.
    async fn locks_are_released_when_an_instance_ends(fx: &Fixture) {
        let app = fx.app("app");
        lockctl(&app, "open lockstore try returned 60000").await.assert_success();
        let trapped = lockctl(&app, "open lockstore try trapped 60000 trap").await;
        assert!(matches!(trapped.exit, Exit::Trap(_)), "{trapped:?}");
        let after = lockctl(&app, "open lockstore try returned 60000 try trapped 60000 \
                                   try dropped 60000 drop try dropped 60000").await;
        let lines = after.assert_success().lines();
        assert!(lines[1].starts_with("granted returned"), "{lines:?}");
        assert!(lines[2].starts_with("granted trapped"), "{lines:?}");
        assert_eq!(lines[4], "dropped");
        assert!(lines[5].starts_with("granted dropped"), "{lines:?}");
    }

    /// Bad input is an `invalid-argument` naming the argument, or `no-such-store`, and
    /// changes nothing: the held lock is still held and nothing else was taken.
    async fn bad_input_is_refused_and_changes_nothing(fx: &Fixture) {
        let app = fx.app("app");
        let run = lockctl(&app, "open lockstore try kept 60000 \
            try-long 1025 1000 try-long 1024 1000 unlock \
            try a 0 try a 3600001 lock a 1000 300001 extend 0 extend 3600001 \
            open nope try a 9 extend 2").await;
        let lines = run.assert_success().lines();
        assert!(lines[2].starts_with("error invalid-argument: resource-id is 1025 bytes"), "{lines:?}");
        assert!(lines[3].starts_with("granted <1024 bytes>"), "{lines:?}");
        assert_eq!(lines[4], "unlocked success");
        assert!(lines[5].starts_with("error invalid-argument: lease-ms is 0"), "{lines:?}");
        assert!(lines[6].starts_with("error invalid-argument: lease-ms is 3600001"), "{lines:?}");
        assert!(lines[7].starts_with("error invalid-argument: wait-ms is 300001"), "{lines:?}");
        assert!(lines[8].starts_with("error invalid-argument: lease-ms is 0"), "{lines:?}");
        assert!(lines[9].starts_with("error invalid-argument: lease-ms is 3600001"), "{lines:?}");
        assert!(lines[10].starts_with("error no-such-store: no lock store named \"nope\""), "{lines:?}");
        // Leases too short to be granted in time are refused, not left to fail.
        assert_eq!(lines[11], "error invalid-argument: lease-ms is 9; a lease must be at least 10 ms");
        assert_eq!(lines[12], "error invalid-argument: lease-ms is 2; a lease must be at least 10 ms");

        let empty = lockctl(&app, "open lockstore try-long 0 1000").await;
        assert!(empty.lines()[1].starts_with("error invalid-argument: resource-id is empty"));

        // The refused extends did not end the lease, and `a` was never taken.
        let check = spawn_lockctl(&app, "open lockstore try a 60000").await.unwrap();
        assert!(check.lines()[1].starts_with("granted a"), "{check:?}");
    }

    /// Ids are opaque: separators, glob characters, braces and non-ASCII never collide
    /// with each other, nor with other apps' ids that print alike.
    async fn awkward_ids_never_collide(fx: &Fixture) {
        let ids = ["a||b", "{x}", ":", "*", "a:b", "a%3Ab", "%", "}{", "ключ", "🔒"];
        let mut steps = String::from("open lockstore");
        for id in ids {
            steps += &format!(" try {id} 60000");
        }
        let run = lockctl(&fx.app("x"), &steps).await;
        assert_eq!(run.fences().len(), ids.len(), "{run:?}");

        // App `x` holds `a:b`; app `x:a` asking for `b` is someone else entirely.
        let holder = spawn_lockctl(&fx.app("x"), "open lockstore try a:b 60000 sleep 1000");
        let other = lockctl(&fx.app("x:a"), "open lockstore sleep 200 try b 60000").await;
        assert!(other.lines()[1].starts_with("granted b"), "{other:?}");
        holder.await.unwrap();
    }

    /// A lease kept alive outlasts its length: a job three times longer than its 500 ms
    /// lease keeps the lock throughout — every try of another instance meanwhile finds it
    /// held — and still holds it at the end.
    async fn a_kept_alive_lease_outlasts_its_length(fx: &Fixture) {
        let app = fx.app("app");
        let prober = spawn_lockctl(&app, "open lockstore sleep 150 \
            try report 60000 sleep 300 try report 60000 sleep 300 \
            try report 60000 sleep 300 try report 60000");
        let job = run_with(&app, "long-job", &["--lease-ms", "500", "--steps", "6", "--step-ms", "250"],
            Default::default(), |_| {}).await;
        let prober = prober.await.unwrap();
        assert_eq!(prober.lines()[1..], ["held report"; 4], "{prober:?}");
        assert_eq!(job.assert_success().lines().last(), Some(&"done 6 steps; held=true"), "{job:?}");
    }

    /// Keep-alive renews to the length last asked for: after an `extend` to a shorter lease
    /// it renews that one. (Its schedule stayed the first lease's: the 2 s lease ran out at
    /// about 4 s and a rival could take the lock; only then was it lost.)
    async fn keep_alive_follows_a_shorter_extend(fx: &Fixture) {
        let run = lockctl(&fx.app("app"), "open lockstore try job 30000 keepalive \
            extend 2000 sleep 1000 lost held sleep 4000 lost held").await;
        assert_eq!(
            run.assert_success().lines()[2..],
            ["keeping alive", "extended true", "lost false", "held true", "lost false", "held true"]
        );
    }

    /// 8 instances × 200 read-modify-write steps under the lock lose nothing; the same
    /// without the lock (the control) loses updates, so the test can tell.
    async fn counter_is_exact_under_the_lock(fx: &Fixture) {
        let app = fx.app("counter");
        let locked = run_counter(&app, &[]).await;
        assert_eq!(locked, 8 * 200, "the lock let updates through");
        let unlocked = run_counter(&app, &["--no-lock"]).await;
        assert!(unlocked < 8 * 200, "the control lost no update: it cannot catch a bug");
    }
}

/// Runs 8 counter instances, 200 increments each, on one shared file; returns the count.
async fn run_counter(app: &latchkey_host::LockCtxBuilder, extra: &[&str]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut instances = Vec::new();
    for _ in 0..8 {
        let (app, path) = (app.clone(), dir.path().to_owned());
        let mut args = vec!["--iterations", "200"];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        instances.push(tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_with(&app, "counter", &args, Default::default(), |wasi| {
                wasi.preopened_dir(&path, "/data", FsPerms::ReadWrite)
                    .unwrap();
            })
            .await
        }));
    }
    for instance in instances {
        instance.await.unwrap().assert_success();
    }
    let text = std::fs::read_to_string(dir.path().join("counter")).unwrap();
    text.trim().parse().unwrap()
}

/// Runs a holder with `holder` steps and, 100 ms later, a waiter doing `lock ID 60000
/// WAIT_MS`; returns the waiter's outcome line and how long its `lock` took.
async fn wait_behind(fx: &Fixture, holder: &str, id: &str, wait_ms: u32) -> (String, Duration) {
    let app = fx.app("app");
    let holder = spawn_lockctl(&app, &format!("open lockstore {holder}"));
    let waiter = lockctl(
        &app,
        &format!("open lockstore sleep 100 lock {id} 60000 {wait_ms}"),
    )
    .await;
    holder.await.unwrap().assert_success();
    (waiter.lines()[1].to_owned(), waiter.waited())
}

fn assert_between(waited: Duration, min_ms: u64, max_ms: u64, what: &str) {
    let range = Duration::from_millis(min_ms)..Duration::from_millis(max_ms);
    assert!(
        range.contains(&waited),
        "{what}: waited {waited:?}, expected {range:?}"
    );
}
