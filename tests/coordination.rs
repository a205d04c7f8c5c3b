//! Coordination beyond the mutex (`latchkey:lock@0.2.1`): leased semaphores and leader
//! election, through real guests (`limited`, `leader`, `lockctl`) on every backend, and
//! through real `latchkey run` processes killed mid-lease.
//!
//! Two histories are checked, each with a control that breaks it:
//!
//! - a semaphore's: instances count themselves in and out of a shared file while they hold
//!   a permit, and the most ever inside is the limit (`--no-permit` goes past it);
//! - an election's: leaders print each tick of work with their fence and the wall clock,
//!   and merged by time the fences never go down — two leaders never worked at once
//!   (`--ignore-lost`, a leader that works on past its lease, makes them go down).

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::leaders::{History, LeaderHosts, field, followed, now_us};
use harness::{
    Fixture, RedisServer, Run, guest, latchkey, lockctl, on_every_backend, on_memory_and_redis,
    run, run_with, script, signal, spawn_lockctl,
};
use latchkey_host::LockCtxBuilder;
use wasmtime_wasi::FsPerms;

on_every_backend! {
    /// 16 instances share a semaphore of limit 3, two rounds each: never more than 3 are
    /// inside, and 3 are at some point; without permits (the control) more than 3 are.
    async fn a_semaphore_lets_no_more_than_its_limit_in(fx: &Fixture) {
        let app = fx.app("limited");
        let inside = run_limited(&app, &[]).await;
        assert_eq!(inside.iter().max(), Some(&3), "{inside:?}");
        assert_eq!(inside.len(), 16 * 2);
        let control = run_limited(&app, &["--no-permit"]).await;
        assert!(
            control.iter().max() > Some(&3),
            "the control never had more than 3 inside: it cannot catch a bug ({control:?})"
        );
    }

    /// 8 instances campaign for one election, each leading for a while and resigning: one
    /// leader at any moment (their ticks, merged by time, never go back to an older
    /// fence), every instance leads once, and each follower sees the leaders in order.
    async fn an_election_has_one_leader_at_a_time(fx: &Fixture) {
        let app = fx.app("leader");
        let runs = run_leaders(&app, 8, &["--lead-ms", "150"]).await;
        let history = History::of(&runs);
        history.assert_one_leader_at_a_time();
        assert_eq!(history.leaders.len(), 8, "{runs:?}");
        for run in &runs {
            let seen = followed(run.lines());
            assert!(seen.is_sorted(), "a follower saw leaders out of order: {seen:?}");
        }
    }

    /// A release wakes a waiter for a permit long before any lease ends, and every new
    /// permit's fence is above the last one's of the same permit.
    async fn a_release_wakes_a_permit_waiter(fx: &Fixture) {
        let app = fx.app("app");
        let holder = spawn_lockctl(
            &app,
            "open lockstore permit s 2 60000 0 permit s 2 60000 0 sleep 600 unlock",
        );
        let waiter = lockctl(&app, "open lockstore sleep 200 permit s 2 60000 20000").await;
        let holder = holder.await.unwrap();
        let held = holder.assert_success().fences();
        assert_eq!(holder.lines()[3], "unlocked success");
        // The wait is shorter than the leases: only the release can have ended it.
        let line = waiter.assert_success().lines()[1].to_owned();
        assert!(line.starts_with("granted s"), "{line}");
        assert!(waiter.waited() >= Duration::from_millis(300), "{line}");
        // It took the permit the release freed, the second: its fence is above that one's.
        assert!(waiter.fences()[0] > held[1], "{held:?} then {line}");
    }

    /// A holder that shortens its lease (10 s, then `extend` to 100 ms) frees the lock at
    /// the new end, and whoever waits for it learns so: a `lock` waiter, a permit waiter, a
    /// campaign and a leader watch all get it long before the old end. Asleep until the old
    /// end, they would wait about 10 s.
    async fn a_shortened_lease_wakes_its_waiters(fx: &Fixture) {
        let app = fx.app("app");
        let holders = [
            "open lockstore try a 10000 sleep 300 extend 100 sleep 1000",
            "open lockstore permit s 1 10000 0 sleep 300 extend 100 sleep 1000",
            "open lockstore campaign e first 10000 0 sleep 300 extend 100 sleep 1000",
        ]
        .map(|steps| spawn_lockctl(&app, steps));
        let waiters = [
            "open lockstore sleep 100 lock a 10000 20000",
            "open lockstore sleep 100 permit s 1 10000 20000",
            "open lockstore sleep 100 campaign e second 10000 20000",
        ]
        .map(|steps| spawn_lockctl(&app, steps));
        let watcher = spawn_lockctl(&app, "open lockstore sleep 100 watch e await-change");
        for holder in holders {
            let holder = holder.await.unwrap();
            assert_eq!(holder.assert_success().lines()[2], "extended true", "{holder:?}");
        }
        let old_end = Duration::from_millis(9_000);
        for waiter in waiters {
            let waiter = waiter.await.unwrap();
            let line = waiter.assert_success().lines()[1].to_owned();
            assert!(line.starts_with("granted") || line.starts_with("leading"), "{line}");
            assert!(waiter.waited() < old_end, "woken only at the old end: {line}");
        }
        let watcher = watcher.await.unwrap();
        assert!(watcher.assert_success().waited_for_change() < old_end, "{watcher:?}");
    }
}

/// What waiting costs the store while nothing changes hands: waiters and watchers of one
/// host that cannot win share their asking. Each count is over five seconds of two
/// holders (or a leader) renewing 1 s leases; asked once per waiter per renewal, as before,
/// it would be in the thousands.
mod quiet_waits {
    use super::*;

    /// Counts the scripts Redis runs while `steps` wait, after `ready` scripts have run.
    async fn scripts_while_waiting(redis: &RedisServer, ready: u64) -> u64 {
        let started = Instant::now();
        while redis.calls("evalsha") < ready {
            assert!(
                started.elapsed() < harness::PATIENCE,
                "the waiters never all asked"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = redis.calls("evalsha");
        tokio::time::sleep(Duration::from_secs(5)).await;
        redis.calls("evalsha") - before
    }

    /// 200 waiters for a full semaphore of kept-alive permits: only one of them asks the
    /// store again at each renewal, not all 200.
    #[tokio::test(flavor = "multi_thread")]
    async fn waiters_for_a_full_semaphore_ask_once_per_host() {
        let fx = Fixture::on_redis();
        let app = fx.app("app");
        let holders: Vec<_> = (0..2)
            .map(|_| {
                spawn_lockctl(
                    &app,
                    "open lockstore permit s 2 1000 0 keepalive sleep 9000",
                )
            })
            .collect();
        fx.redis()
            .wait_for_reply(&["EXISTS", "latchkey:{app:s}:permit:1:lock"], "1");
        let base = fx.redis().calls("evalsha");
        let waiters: Vec<_> = (0..200)
            .map(|_| spawn_lockctl(&app, "open lockstore permit s 2 1000 30000"))
            .collect();
        let asked = scripts_while_waiting(fx.redis(), base + 200).await;
        assert!(asked < 100, "{asked} scripts in 5 s of waiting");
        for run in holders.into_iter().chain(waiters) {
            run.await.unwrap().assert_success();
        }
    }

    /// 2,000 `leader-change` calls pending on one election, in one instance: they share one
    /// reading of who leads, not one each per renewal of the leader's lease.
    #[tokio::test(flavor = "multi_thread")]
    async fn watchers_of_one_election_share_one_reading() {
        let fx = Fixture::on_redis();
        let app = fx.app("app");
        let leader = spawn_lockctl(
            &app,
            "open lockstore campaign e v 1000 0 keepalive sleep 8000",
        );
        fx.redis()
            .wait_for_reply(&["EXISTS", "latchkey:{app:e}:leader:lock"], "1");
        let base = fx.redis().calls("evalsha");
        let steps = script("open lockstore flood-watch 2000 e");
        let app_ = app.clone();
        let watchers = tokio::spawn(async move { run(&app_, "lockctl_p3", &steps).await });
        let asked = scripts_while_waiting(fx.redis(), base + 1).await;
        assert!(asked < 100, "{asked} scripts in 5 s of watching");
        leader.await.unwrap().assert_success();
        let watchers = watchers.await.unwrap();
        assert_eq!(
            watchers.assert_success().lines()[1],
            "flood-watch all changed"
        );
    }
}

/// What the host does the same on every backend: ends, hand-overs, refusals.
mod lifecycle {
    use super::*;

    on_memory_and_redis! {
        /// A permit ends with its instance: the next instance takes it at once, without
        /// waiting for its lease.
        async fn an_instances_end_releases_its_permits(fx: &Fixture) {
            let app = fx.app("app");
            let first = lockctl(&app, "open lockstore permit s 1 60000 0").await;
            assert!(first.assert_success().lines()[1].starts_with("granted s"), "{first:?}");
            let next = lockctl(&app, "open lockstore permit s 1 60000 0").await;
            assert!(next.assert_success().lines()[1].starts_with("granted s"), "{next:?}");
            assert!(next.fences()[0] > first.fences()[0]);
        }

        /// A leader that resigns hands over at once to a campaign waiting behind it, and an
        /// observer is woken by the change; `leader` says who leads, with what value.
        async fn resigning_hands_over_at_once(fx: &Fixture) {
            let app = fx.app("app");
            let leader = spawn_lockctl(
                &app,
                "open lockstore campaign e first 60000 0 leader e sleep 600 unlock",
            );
            let observer = spawn_lockctl(&app, "open lockstore sleep 200 watch e changed await-change");
            let next = lockctl(&app, "open lockstore sleep 200 campaign e second 60000 20000 leader e").await;
            let leader = leader.await.unwrap();
            let fence = leader.assert_success().fences()[0];
            assert_eq!(leader.lines()[2], format!("leader first fence={fence}"));
            assert_eq!(leader.lines()[3], "unlocked success");
            // The wait is shorter than the lease: only the resignation can have ended it.
            let lines = next.assert_success().lines();
            assert!(lines[1].starts_with("leading e"), "{lines:?}");
            assert!(next.waited() >= Duration::from_millis(300), "{lines:?}");
            let new = next.fences()[0];
            assert!(new > fence);
            assert_eq!(lines[2], format!("leader second fence={new}"));
            let observer = observer.await.unwrap();
            let lines = observer.assert_success().lines();
            assert_eq!(lines[1..3], ["watching e", "changed false"]);
            assert!(lines[3].starts_with("changed after="), "{lines:?}");
            assert!(observer.waited_for_change() >= Duration::from_millis(300), "{lines:?}");
        }

        /// A leader whose lease runs out unrenewed is a change too: the observer wakes by the
        /// lease's end (the store announces no expiry), and nobody leads; the pollable stays
        /// ready once it is.
        async fn an_expired_leader_is_a_change(fx: &Fixture) {
            let app = fx.app("app");
            let steps = "open lockstore campaign e v 400 0 watch e await-change changed leader e";
            let run = lockctl(&app, steps).await;
            let lines = run.assert_success().lines();
            assert_eq!(lines[2], "watching e");
            assert!(lines[3].starts_with("changed after="), "{lines:?}");
            // Once ready, the pollable stays ready.
            assert_eq!(lines[4..], ["changed true", "leader none"]);
            assert!(run.waited_for_change() >= Duration::from_millis(300), "{lines:?}");
        }

        /// A WASI 0.3 task (`latchkey:lock@0.3.1`) takes a permit and leads beside a 0.2.1
        /// guest: the 0.2.1 guest waits for the permit until the task releases it, and sees its
        /// value while it leads; another task's `leader-change` completes when it resigns.
        async fn a_p3_task_takes_permits_and_leads(fx: &Fixture) {
            let app = fx.app("app");
            let task = {
                let app = app.clone();
                let steps = "open lockstore permit s 1 60000 0 campaign e first 60000 0 \
                             sleep 600 unlock unlock";
                tokio::spawn(async move { run(&app, "lockctl_p3", &script(steps)).await })
            };
            let watcher = {
                let app = app.clone();
                let steps = "open lockstore sleep 200 leader e leader-change e";
                tokio::spawn(async move { run(&app, "lockctl_p3", &script(steps)).await })
            };
            let v2 = lockctl(&app, "open lockstore sleep 200 leader e permit s 1 60000 20000").await;
            let task = task.await.unwrap();
            let lines = task.assert_success().lines();
            assert!(lines[1].starts_with("granted s fence="), "{lines:?}");
            assert!(lines[2].starts_with("leading e fence="), "{lines:?}");
            assert_eq!(lines[3..], ["unlocked success", "unlocked success"]);
            let leader_fence = task.fences()[1];
            let v2_lines = v2.assert_success().lines();
            assert_eq!(v2_lines[1], format!("leader first fence={leader_fence}"));
            assert!(v2_lines[2].starts_with("granted s"), "{v2_lines:?}");
            assert!(v2.waited() >= Duration::from_millis(300), "{v2_lines:?}");
            let watcher = watcher.await.unwrap();
            let lines = watcher.assert_success().lines();
            assert_eq!(lines[1], format!("leader first fence={leader_fence}"));
            assert!(lines[2].starts_with("changed none after="), "{lines:?}");
        }

        /// Bad arguments are `invalid-argument` and a policy's refusal `access-denied`, before
        /// the store is touched: nothing is taken.
        async fn bad_input_is_refused(fx: &Fixture) {
            let mut app = fx.app("app");
            app.resources(latchkey_host::ResourcePolicy::only(["job*"]).unwrap());
            let long = "x".repeat(1025);
            let value = "v".repeat(1025);
            let steps = format!(
                "open lockstore \
                 permit job 0 1000 0  permit job 257 1000 0  permit {long} 3 1000 0 \
                 permit job 3 5 0  permit job 3 1000 300001  permit payroll 3 1000 0 \
                 campaign job {value} 1000 0  campaign {long} v 1000 0  campaign payroll v 1000 0 \
                 leader {long}  leader payroll  watch payroll  \
                 campaign job v 1000 0  permit job 3 1000 0"
            );
            let run = lockctl(&app, &steps).await;
            let lines = run.assert_success().lines();
            let expected = [
                "error invalid-argument: limit is 0; a semaphore has 1 to 256 permits",
                "error invalid-argument: limit is 257; a semaphore has 1 to 256 permits",
                "error invalid-argument: semaphore-id is 1025 bytes; the limit is 1024 bytes",
                "error invalid-argument: lease-ms is 5; a lease must be at least 10 ms",
                "error invalid-argument: wait-ms is 300001; the limit is 300000 ms",
                "error access-denied: app \"app\" may not use semaphore \"payroll\"",
                "error invalid-argument: value is 1025 bytes; the limit is 1024 bytes",
                "error invalid-argument: election-id is 1025 bytes; the limit is 1024 bytes",
                "error access-denied: app \"app\" may not use election \"payroll\"",
                "error invalid-argument: election-id is 1025 bytes; the limit is 1024 bytes",
                "error access-denied: app \"app\" may not use election \"payroll\"",
                "error access-denied: app \"app\" may not use election \"payroll\"",
            ];
            assert_eq!(lines[1..13], expected);
            // Nothing was taken by the refused calls: both kinds are free.
            assert!(lines[13].starts_with("leading job"), "{lines:?}");
            assert!(lines[14].starts_with("granted job"), "{lines:?}");
        }
    }
}

/// The control of the election history: leaders that neither renew nor heed the lost
/// signal work on past their short lease while the next leads, and the history check
/// catches the overlap.
#[tokio::test(flavor = "multi_thread")]
async fn the_election_check_catches_two_leaders() {
    let fx = Fixture::in_memory();
    let args = ["--lead-ms", "600", "--lease-ms", "100", "--ignore-lost"];
    let runs = run_leaders(&fx.app("leader"), 3, &args).await;
    let overlap = std::panic::catch_unwind(|| History::of(&runs).assert_one_leader_at_a_time());
    assert!(
        overlap.is_err(),
        "no overlap found: the check cannot catch a bug: {runs:?}"
    );
}

/// The leader's host is killed (SIGKILL: nothing is released) while it keeps a 1 s lease
/// alive; one of the followers, each in a host of its own, leads once the lease ends —
/// woken by the end of the lease it read, not by polling — and a follower prints the new
/// leader.
#[test]
fn a_killed_leaders_host_hands_over_by_its_lease_end() {
    let redis = RedisServer::start();
    let hosts = LeaderHosts::start(&format!("lockstore={}", redis.url()), 3, 1000);
    let (first, line) = hosts.hear(|_, line| line.starts_with("lead "));
    let first_fence = field(&line, 1);
    // Past its first lease: kept alive, it still leads.
    std::thread::sleep(Duration::from_millis(1500));
    hosts.kill(first);
    let killed_at = now_us();
    let (next, line) = hosts.hear(|i, line| i != first && line.starts_with("lead "));
    let handed_over = Duration::from_micros(
        field(&line, 2)
            .checked_sub(killed_at)
            .expect("a second leader while the first was alive"),
    );
    let fence = field(&line, 1);
    assert!(fence > first_fence);
    // Not before the lease it last renewed ended; the bound is for a loaded machine.
    assert!(
        handed_over <= Duration::from_millis(1000) + Duration::from_secs(2),
        "handed over {handed_over:?} after the kill"
    );
    let follower = 3 - first - next;
    let new_leader = format!("follow {fence} replica-{next}");
    hosts.hear(|i, line| i == follower && line == new_leader);
}

/// A permit of a host killed while holding it frees when its lease ends, not before, and
/// not never: the next instance waits for it.
#[test]
fn a_killed_hosts_permit_frees_at_its_lease_end() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    let lockctl = guest("lockctl");
    harness::warm(&lockctl);
    let mut holder = latchkey()
        .args(["run", "--app-id", "app", "--store", &store])
        .arg(&lockctl)
        .args(script("open lockstore permit s 1 2000 0 sleep 60000"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap()).lines();
    let granted = out.nth(1).unwrap().unwrap();
    assert!(granted.starts_with("granted s"), "{granted}");
    signal(&holder, "-KILL");
    let killed = Instant::now();
    holder.wait().unwrap();
    let next = latchkey()
        .args(["run", "--app-id", "app", "--store", &store])
        .arg(&lockctl)
        .args(script(
            "open lockstore permit s 1 2000 0 permit s 1 2000 30000",
        ))
        .output()
        .unwrap();
    let said = harness::lines(&next);
    assert!(
        said[1].starts_with("held s"),
        "freed before its lease ended: {said:?}"
    );
    assert!(said[2].starts_with("granted s"), "{said:?}");
    assert!(killed.elapsed() < Duration::from_secs(30));
}

/// Runs 16 `limited` instances of limit 3, two rounds of 100 ms each, counting themselves
/// in one shared file: the count each saw on entering.
async fn run_limited(app: &LockCtxBuilder, extra: &[&str]) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--limit", "3", "--rounds", "2", "--work-ms", "100"];
    args.extend_from_slice(extra);
    let runs = run_many(app, "limited", 16, &args, Some(dir.path())).await;
    runs.iter()
        .flat_map(|run| run.assert_success().lines())
        .filter_map(|line| {
            line.strip_prefix("inside ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Runs `count` `leader` instances with `args` at once, to their ends.
async fn run_leaders(app: &LockCtxBuilder, count: usize, args: &[&str]) -> Vec<Run> {
    let runs = run_many(app, "leader", count, args, None).await;
    for run in &runs {
        run.assert_success();
    }
    runs
}

/// Runs `count` instances of `guest` with `args` at once, each with `dir` (if given) as
/// its `/data`.
async fn run_many(
    app: &LockCtxBuilder,
    guest: &'static str,
    count: usize,
    args: &[&str],
    dir: Option<&std::path::Path>,
) -> Vec<Run> {
    let instances: Vec<_> = (0..count)
        .map(|_| {
            let (app, dir) = (app.clone(), dir.map(ToOwned::to_owned));
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            tokio::spawn(async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_with(&app, guest, &args, Default::default(), |wasi| {
                    if let Some(dir) = dir {
                        wasi.preopened_dir(dir, "/data", FsPerms::ReadWrite)
                            .unwrap();
                    }
                })
                .await
            })
        })
        .collect();
    let mut runs = Vec::new();
    for instance in instances {
        runs.push(instance.await.unwrap());
    }
    runs
}
