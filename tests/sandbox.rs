//! Hostile guests. Each test asserts that the guest is stopped or refused with the right
//! error, that the host keeps serving other instances, that the guest's locks are freed,
//! and that Redis holds nothing it should not (every test runs on a Redis of its own).

use std::time::Duration;

use std::sync::Arc;

use harness::{
    Fixture, guest, latchkey, lockctl, lockctl_limited, run_with, script, signal, spawn_lockctl,
    warm,
};
use latchkey_host::backend::{BackendResult, Intercepted, Interceptor, Step, StepCall};
use latchkey_host::{Exit, GuestLimits, Limits, LockCtxBuilder, LockStore, ResourcePolicy};

fn deadline(ms: u64) -> GuestLimits {
    let mut limits = GuestLimits::default();
    limits.deadline = Some(Duration::from_millis(ms));
    limits
}

/// A guest that loops forever inside its critical section is stopped at its deadline,
/// its locks are released, and another instance is served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn endless_loop_while_holding_locks_is_stopped() {
    let fx = Fixture::on_redis();
    let app = fx.app("app");
    let spinner = {
        let app = app.clone();
        tokio::spawn(async move {
            lockctl_limited(
                &app,
                "open lockstore try a 60000 try b 60000 spin",
                deadline(1500),
            )
            .await
        })
    };
    let redis = fx.redis();
    redis.wait_for_key("latchkey:{app:b}:lock");
    let meanwhile = lockctl(&app, "open lockstore try c 60000 unlock try a 60000").await;
    assert_eq!(meanwhile.lines()[2], "unlocked success");
    assert_eq!(meanwhile.lines()[3], "held a", "the spinner should hold a");

    let spinner = spinner.await.unwrap();
    assert!(matches!(spinner.exit, Exit::Deadline(_)), "{spinner:?}");
    assert!(
        spinner.elapsed < Duration::from_secs(4),
        "{:?}",
        spinner.elapsed
    );
    assert_eq!(redis.lock_keys(), Vec::<String>::new());
    let after = lockctl(&app, "open lockstore try a 60000 try b 60000").await;
    assert_eq!(after.fences().len(), 2, "{after:?}");
}

/// Two guests spinning in endless loops, one per core of a two-thread host, do not keep a
/// third from being served: a running guest yields its thread at every epoch tick, so the
/// third's 200 lock + unlock pairs on Redis complete while the spinners still run, long
/// before their deadline stops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_guests_do_not_starve_others() {
    let fx = Fixture::on_redis();
    let app = fx.app("app");
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { lockctl_limited(&app, "spin", deadline(6000)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let worker = run_with(
        &app,
        "bench",
        &["pairs", "200", "served"],
        deadline(6000),
        |_| {},
    )
    .await;
    let spinning = spinners.iter().filter(|s| !s.is_finished()).count();
    assert!(
        matches!(worker.exit, Exit::Status(0)),
        "the third guest was not served beside the spinners: {:?} after {:?}",
        worker.exit,
        worker.elapsed
    );
    assert_eq!(worker.lines().len(), 200, "{worker:?}");
    assert_eq!(spinning, 2, "served only once a spinner had stopped");
    for spinner in spinners {
        let spinner = spinner.await.unwrap();
        assert!(matches!(spinner.exit, Exit::Deadline(_)), "{spinner:?}");
    }
}

/// A guest that allocates without end while holding locks is stopped at its memory cap,
/// and its locks are released.
#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_while_holding_locks_is_stopped() {
    let mut limits = GuestLimits::default();
    limits.max_memory = Some(32 << 20);
    assert_trapped_and_released("bomb", limits, "growing memory").await;
}

/// A guest that runs out of fuel while holding locks is stopped and its locks released.
#[tokio::test(flavor = "multi_thread")]
async fn fuel_exhaustion_while_holding_locks_is_stopped() {
    let mut limits = GuestLimits::default();
    limits.fuel = Some(50_000_000);
    assert_trapped_and_released("spin", limits, "fuel").await;
}

/// Takes two locks, then runs `hostile_step` within `limits`: the instance must trap with
/// `cause` in the error, leave no lock in Redis, and the locks must be free at once.
async fn assert_trapped_and_released(hostile_step: &str, limits: GuestLimits, cause: &str) {
    let fx = Fixture::on_redis();
    let app = fx.app("app");
    let steps = format!("open lockstore try a 60000 try b 60000 {hostile_step}");
    let run = lockctl_limited(&app, &steps, limits).await;
    let Exit::Trap(err) = &run.exit else {
        panic!("{hostile_step} was not stopped: {run:?}");
    };
    assert!(format!("{err:?}").contains(cause), "{err:?}");
    assert_eq!(fx.redis().lock_keys(), Vec::<String>::new());
    let after = lockctl(&app, "open lockstore try a 60000 try b 60000").await;
    assert_eq!(after.fences().len(), 2, "{after:?}");
}

/// Time blocked waiting for a lock counts against the deadline, and a hundred blocked
/// instances hold no threads: another instance is served at once meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn waiting_counts_against_the_deadline_without_holding_threads() {
    let fx = Fixture::on_redis();
    let app = fx.app("app");
    let holder = spawn_lockctl(&app, "open lockstore try w 60000 sleep 3000");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                lockctl_limited(&app, "open lockstore lock w 60000 300000", deadline(1500)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = lockctl(&app, "open lockstore try other 1000 unlock").await;
    assert_eq!(served.lines()[2], "unlocked success");
    assert!(
        served.elapsed < Duration::from_secs(1),
        "{:?}",
        served.elapsed
    );

    for waiter in waiters {
        let run = waiter.await.unwrap();
        assert!(matches!(run.exit, Exit::Deadline(_)), "{run:?}");
        assert!(
            run.elapsed < Duration::from_millis(2500),
            "{:?}",
            run.elapsed
        );
    }
    holder.await.unwrap().assert_success();
    assert_eq!(fx.redis().lock_keys(), Vec::<String>::new());
}

/// 10^5 distinct ids stop at the per-instance limit with `limit-exceeded`; the refused
/// ones never reach the store, and all are freed when the instance ends.
#[tokio::test(flavor = "multi_thread")]
async fn many_ids_hit_the_instance_limit() {
    let fx = Fixture::on_redis();
    let mut app = fx.app("app");
    let mut limits = Limits::default();
    limits.max_held = 100;
    app.limits(limits);
    let run = lockctl(&app, "open lockstore many 100000 60000").await;
    assert_eq!(
        run.assert_success().lines()[1],
        "many granted=100 first-error=limit-exceeded: this instance already holds 100 locks, \
         the most it may hold"
    );
    let redis = fx.redis();
    assert_eq!(redis.lock_keys(), Vec::<String>::new());
    assert_eq!(
        redis.keys().len(),
        100,
        "one fence per granted id, nothing for refused ones"
    );
}

/// Ids of 1 MiB are refused without touching the store; ids of every awkward character
/// each get their own, escaped key.
#[tokio::test(flavor = "multi_thread")]
async fn huge_and_awkward_ids() {
    let fx = Fixture::on_redis();
    let app = fx.app("app");
    let run = lockctl(&app, "open lockstore try-long 1048576 1000").await;
    assert!(
        run.lines()[1].starts_with("error invalid-argument: resource-id is 1048576 bytes"),
        "{run:?}"
    );
    let redis = fx.redis();
    assert!(redis.keys().is_empty());

    let awkward = [
        "\0",
        "\n",
        "\t",
        " ",
        "\u{7f}",
        "\u{ffff}",
        "{",
        "}",
        "{}",
        "%",
        "%7B",
        ":",
        "::",
        "*",
        "?",
        "[a]",
        "\\",
        "\"",
        "'",
        "a b",
        "é",
        "e\u{301}",
        "🔒",
        "\u{202e}rtl",
    ];
    let mut args = vec!["open", "lockstore"];
    for id in awkward {
        args.extend(["try", id, "60000"]);
    }
    args.extend(["sleep", "300"]);
    let holder = {
        let (app, args) = (
            app.clone(),
            args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_with(&app, "lockctl", &args, GuestLimits::default(), |_| {}).await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let locks = redis.lock_keys();
    let holder = holder.await.unwrap();
    assert_eq!(
        holder.assert_success().fences().len(),
        awkward.len(),
        "{holder:?}"
    );
    assert_eq!(locks.len(), awkward.len(), "{locks:?}");
    for key in &locks {
        let inner = &key["latchkey:{".len()..key.len() - "}:lock".len()];
        assert!(
            !inner.contains(['{', '}']),
            "{key:?} has a brace inside its hash tag"
        );
    }
    assert!(locks.contains(&"latchkey:{app:%7B%7D}:lock".to_owned()));
    assert!(locks.contains(&"latchkey:{app:%257B}:lock".to_owned()));
    assert_eq!(redis.lock_keys(), Vec::<String>::new());
}

/// A guest has no environment, files or network unless granted; the controls show each
/// probe would see them if granted.
#[tokio::test(flavor = "multi_thread")]
async fn guests_get_no_ambient_authority() {
    let fx = Fixture::on_redis();
    let app = fx.app("app");
    let redis = format!("127.0.0.1:{}", fx.redis().port());
    let probe = format!("env read /etc/hostname connect {redis}");
    let denied = run_with(
        &app,
        "lockctl",
        &script(&probe),
        GuestLimits::default(),
        |_| {},
    )
    .await;
    let lines = denied.assert_success().lines();
    assert_eq!(lines.len(), 2, "the guest saw variables: {lines:?}");
    assert!(lines[0].starts_with("read error"), "{lines:?}");
    assert!(lines[1].starts_with("connect error"), "{lines:?}");

    let granted = run_with(
        &app,
        "lockctl",
        &script(&probe),
        GuestLimits::default(),
        |wasi| {
            wasi.env("GIVEN", "1")
                .preopened_dir("/etc", "/etc", wasmtime_wasi::FsPerms::ReadOnly)
                .unwrap()
                .inherit_network()
                .allow_tcp(true);
        },
    )
    .await;
    let lines = granted.assert_success().lines();
    assert_eq!(lines[0], "env GIVEN=1");
    assert!(
        lines[1].starts_with("read ") && !lines[1].contains("error"),
        "{lines:?}"
    );
    assert_eq!(lines[2], "connect ok");
}

/// App A cannot reach app B's locks: the same id is another lock, and a made-up handle is
/// a trap that leaves B's lock alone.
#[tokio::test(flavor = "multi_thread")]
async fn apps_cannot_touch_each_others_locks() {
    let fx = Fixture::on_redis();
    let b = spawn_lockctl(
        &fx.app("b"),
        "open lockstore try x 60000 sleep 800 extend 60000 unlock",
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = lockctl(&fx.app("a"), "open lockstore lock x 60000 0 unlock").await;
    assert!(a.lines()[1].starts_with("granted x"), "{a:?}");
    assert_eq!(a.lines()[2], "unlocked success");
    for handle in ["0", "1", "2", "3", "1000"] {
        let forger = lockctl(&fx.app("a"), &format!("open lockstore forge {handle}")).await;
        assert!(matches!(forger.exit, Exit::Trap(_)), "{forger:?}");
    }
    let b = b.await.unwrap();
    assert_eq!(
        b.assert_success().lines()[2..],
        ["extended true", "unlocked success"]
    );
    assert_eq!(fx.redis().lock_keys(), Vec::<String>::new());
}

/// The operator's policy refuses ids outside the app's patterns and leases over its
/// maximum, and a store not offered to the app does not exist for it; nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn policy_refusals_change_nothing() {
    let fx = Fixture::on_redis();
    let mut app = fx.app("app");
    let mut limits = Limits::default();
    limits.max_lease = Duration::from_secs(10);
    app.resources(ResourcePolicy::only(["job-*"]).unwrap())
        .limits(limits);
    let run = lockctl(
        &app,
        "open lockstore try payroll 1000 try job-1 10001 \
                             try job-1 1000 open other",
    )
    .await;
    let lines = run.assert_success().lines();
    assert!(
        lines[1]
            .starts_with("error access-denied: app \"app\" may not lock resource id \"payroll\""),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("error invalid-argument: lease-ms is 10001; the limit is 10000 ms"),
        "{lines:?}"
    );
    assert!(lines[3].starts_with("granted job-1"), "{lines:?}");
    assert!(lines[4].starts_with("error no-such-store"), "{lines:?}");
    assert_eq!(fx.redis().keys(), ["latchkey:{app:job-1}:fence"]);
}

/// Delays each release by its duration before it is sent: time for an instance's deadline
/// to cancel one midway.
struct SlowReleases(Duration);

#[async_trait::async_trait]
impl Interceptor for SlowReleases {
    async fn around<T: Send>(&self, step: Step, call: StepCall<'_, T>) -> BackendResult<T> {
        if step == Step::Release {
            tokio::time::sleep(self.0).await;
        }
        call.await
    }
}

/// A lock whose handle the guest dropped stays the instance's until the store confirms
/// the release: when the deadline cancels that release midway, the instance's final
/// release frees the lock, rather than leaving it to its 60 s lease.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_cut_short_by_the_deadline_is_made_at_the_instances_end() {
    let fx = Fixture::on_redis();
    let slow = Intercepted::new(
        fx.store.backend().clone(),
        SlowReleases(Duration::from_millis(1000)),
    );
    let mut app = LockCtxBuilder::new("app");
    app.store(LockStore::new(
        "lockstore",
        Arc::new(slow),
        Duration::from_secs(3),
    ));
    let run = lockctl_limited(&app, "open lockstore try a 60000 drop", deadline(300)).await;
    assert!(matches!(run.exit, Exit::Deadline(_)), "{run:?}");
    assert_eq!(
        fx.redis().lock_keys(),
        Vec::<String>::new(),
        "the lock outlived its instance"
    );
}

/// The resident memory of a `latchkey run` of `lockctl` with `flags`, once its guest has run
/// `steps` (whose last step prints the line returned) and before it ends.
fn rss_after(flags: &[&str], steps: &str) -> (String, u64) {
    use std::io::BufRead as _;
    warm(&guest("lockctl"));
    let mut child = latchkey()
        .args(["run", "--max-memory", "64MiB"])
        .args(flags)
        .arg(guest("lockctl"))
        .args(script(steps))
        .args(["sleep", "600000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = stdout.lines().last_before_sleep();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    signal(&child, "-TERM");
    child.wait().unwrap();
    (line, rss_kb)
}

/// The lines a guest prints, up to the one its last step printed before it sleeps.
trait LastBeforeSleep {
    fn last_before_sleep(self) -> String;
}

impl<I: Iterator<Item = std::io::Result<String>>> LastBeforeSleep for I {
    fn last_before_sleep(mut self) -> String {
        let mut last = String::new();
        for line in self.by_ref() {
            last = line.unwrap();
            if last.starts_with("flood-") || last.starts_with("error") {
                return last;
            }
        }
        panic!("the guest ended without flooding: {last}");
    }
}

/// A guest cannot grow the host's memory through handles. Every handle an instance holds —
/// stores it opened, `lost` pollables, WASI's own — takes a slot in a table capped per
/// instance (`--max-handles`, 10,000 by default): past the cap, `open` is `limit-exceeded`,
/// and a million opens leave the host about where one open does. The control raises the cap
/// to a million, and the host grows by hundreds of MB.
#[test]
fn a_flood_of_handles_is_capped() {
    let (one, baseline) = rss_after(&[], "open lockstore flood-open 1");
    assert_eq!(one, "flood-open opened=1");
    let (flooded, capped) = rss_after(&[], "open lockstore flood-open 1000000");
    assert!(
        flooded.starts_with("flood-open opened=99")
            && flooded.contains("first-error=limit-exceeded: this instance holds 10000 handles"),
        "{flooded}"
    );
    let (uncapped_line, uncapped) = rss_after(
        &["--max-handles", "1000000"],
        "open lockstore flood-open 1000000",
    );
    println!(
        "RSS: one open {baseline} kB; a million opens, capped {capped} kB; \
         uncapped ({uncapped_line}) {uncapped} kB"
    );
    assert!(
        capped < baseline + 16 * 1024,
        "{capped} kB after the flood, {baseline} kB before"
    );
    assert!(
        uncapped > baseline + 100 * 1024,
        "the control grew only to {uncapped} kB: the test cannot tell"
    );
}

/// Watching an election past the cap on handles is `limit-exceeded`, as taking a lock is —
/// in 0.2, where a watch is two handles (its pollable's and the watch's), and in 0.3, where
/// each `leader-change` pending holds two of the guest's — not a trap that would lose the
/// instance's locks.
/// The instance goes on, still holding what it held.
#[tokio::test(flavor = "multi_thread")]
async fn leader_watches_past_the_cap_are_limit_exceeded() {
    let fx = Fixture::in_memory();
    let app = fx.app("app");
    let mut limits = GuestLimits::default();
    limits.max_handles = 1000;
    let leader = "open lockstore try a 60000 campaign e v 60000 0";
    for guest in ["lockctl", "lockctl_p3"] {
        let steps = format!("{leader} flood-watch 100000 e held");
        let run = run_with(&app, guest, &script(&steps), limits, |_| {}).await;
        let lines = run.assert_success().lines();
        let flooded = lines.iter().find(|l| l.starts_with("flood-watch")).unwrap();
        assert!(
            flooded.contains("first-error=limit-exceeded"),
            "{guest}: {flooded}"
        );
        assert_eq!(lines.last(), Some(&"held true"), "{guest}: {lines:?}");
    }
}

/// Past the cap on handles, a `lost` pollable or a WASI timer — calls with no error to
/// return — trap, saying why; the host goes on.
#[tokio::test(flavor = "multi_thread")]
async fn pollables_past_the_cap_trap() {
    let fx = Fixture::in_memory();
    let app = fx.app("app");
    let mut limits = GuestLimits::default();
    limits.max_handles = 1000;
    for steps in [
        "open lockstore try a 60000 flood-lost 100000",
        "flood-timers 100000",
    ] {
        let run = lockctl_limited(&app, steps, limits).await;
        let Exit::Trap(err) = &run.exit else {
            panic!("{steps}: {run:?}");
        };
        assert!(
            format!("{err:?}").contains("1000 handles"),
            "{steps}: {err:?}"
        );
    }
    lockctl(&app, "open lockstore try a 60000")
        .await
        .assert_success();
}
