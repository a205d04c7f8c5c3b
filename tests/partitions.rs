//! Network partitions, as production meets them: every Redis server and every `latchkey`
//! host runs in a network namespace of its own — a host with its own address — on a bridge
//! the test makes and removes ([`harness::netns`]). A partition drops packets silently, as a
//! cut cable does: no reset, no error, only silence until a timeout.
//!
//! Each run checks its history of grants with their fences: in the safe modes (Sentinel
//! with grants waiting for every replica, Redlock) no two holders overlap while a lease
//! runs; in the unsafe ones (waiting for fewer replicas) double grants are counted and
//! reported. And a host cut off while it keeps a lease alive learns
//! that it lost the lock before the store lets anyone else have it, and writes nothing
//! after.
//!
//! These tests need root (or CAP_NET_ADMIN), iproute2 and nftables; `make test` installs
//! the tools, and a test that cannot make its namespaces fails saying so.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use harness::history::{
    Grant, LEASE_NS, Workers, after, assert_stayed_safe, assert_survived_data_loss, now_ns,
};
use harness::netns::{Net, Node};
use harness::{PATIENCE, RedisServer, SentinelSet, guest, latchkey_path, lines, redlock_url, warm};

/// `latchkey run` of `guest_name` as app `jobs` in `node`, on the store at `url`.
fn host_in(node: &Node, url: &str, flags: &[&str], guest_name: &str, args: &[&str]) -> Child {
    warm(&guest(guest_name));
    node.command(latchkey_path())
        .env_remove("RUST_LOG")
        .args(["run", "--app-id", "jobs", "--store"])
        .arg(format!("lockstore={url}"))
        .args(flags)
        .arg(guest(guest_name))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("latchkey starts")
}

/// Where a `long-job` line says it happened: `... at MS ...`, in ms since the Unix epoch.
fn at_ms(line: &str) -> u128 {
    let at = line.split(" at ").nth(1).expect("an `at`");
    at.split([' ', ';']).next().unwrap().parse().unwrap()
}

fn now_ms() -> u128 {
    now_ns() / 1_000_000
}

/// A host keeping a 1 s lease alive is cut off from the store `url` (its node isolated), and
/// another host waits for the lock. The cut-off host's guest must learn that it lost the
/// lock — by its host's clock, counted from the last renewal the store confirmed — and
/// write nothing after the other host was granted it; the other host gets the lock once
/// the store let the lease go, and not before the cut. `servers` are the store's.
fn a_cut_off_host_learns_of_its_loss(
    store: &str,
    net: &Net,
    url: &str,
    servers: &[&RedisServer],
    flags: &[&str],
) {
    const LEASE_MS: u128 = 1000;
    let (cut_off, other) = (net.node(), net.node());
    let job = ["--lease-ms", "1000", "--steps", "200", "--step-ms", "100"];
    let holder = host_in(&cut_off, url, flags, "long-job", &job);
    let key = "latchkey:{jobs:report}:lock";
    wait_until("the holder has the lock", || {
        servers.iter().any(|s| s.cmd::<i64>(&["EXISTS", key]) == 1)
    });
    net.isolate(&cut_off);
    let cut_at = now_ms();
    let steps = ["open", "lockstore", "lock", "report", "60000", "30000"];
    let waiter = host_in(&other, url, flags, "lockctl", &steps);
    let waiter = lines(&waiter.wait_with_output().unwrap());
    let job = lines(&holder.wait_with_output().unwrap());
    net.rejoin(&cut_off);

    assert!(waiter[1].starts_with("granted report"), "{waiter:?}");
    // A fence is the store's clock in µs when the counter lags it: here, when it granted.
    let fence: u128 = waiter[1]
        .split("fence=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let granted_at = fence / 1000;
    let last = job.last().expect("the job said something");
    assert!(last.starts_with("lost the lock before step"), "{job:?}");
    let lost_at = at_ms(last);
    println!(
        "R13 {store}, a host cut off: its guest learnt it lost the lock {} ms after the cut; \
         the other host was granted it {} ms after the cut",
        lost_at - cut_at,
        granted_at.saturating_sub(cut_at),
    );
    assert!(granted_at >= cut_at, "granted before the cut: {waiter:?}");
    assert!(
        lost_at <= cut_at + LEASE_MS + 1000,
        "learnt of the loss {} ms after the cut: {job:?}",
        lost_at - cut_at
    );
    for step in job.iter().filter(|line| line.starts_with("step ")) {
        assert!(
            at_ms(step) <= granted_at,
            "wrote at {} after another host was granted the lock at {granted_at}: {job:?}",
            at_ms(step)
        );
    }
}

/// Waits, up to [`PATIENCE`], until `ready` says so.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < PATIENCE, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A host cut off from its one Redis server while keeping a lease alive.
#[test]
fn a_host_cut_off_from_redis_learns_of_its_loss_before_anyone_else_has_the_lock() {
    let net = Net::new();
    let node = net.node();
    let redis = RedisServer::start_on(&node, &[]);
    a_cut_off_host_learns_of_its_loss("one Redis", &net, &redis.url(), &[&redis], &[]);
}

/// A host cut off from every Redlock master while keeping a lease alive.
#[test]
fn a_host_cut_off_from_redlock_learns_of_its_loss_before_anyone_else_has_the_lock() {
    let net = Net::new();
    let nodes: Vec<Node> = (0..3).map(|_| net.node()).collect();
    let masters: Vec<RedisServer> = nodes
        .iter()
        .map(|n| RedisServer::start_on(n, &[]))
        .collect();
    let servers: Vec<&RedisServer> = masters.iter().collect();
    a_cut_off_host_learns_of_its_loss("Redlock", &net, &redlock_url(&masters), &servers, &[]);
}

/// A host cut off from a Sentinel-managed primary and its replicas while keeping a lease
/// alive; its grants and renewals waited for both replicas.
#[test]
fn a_host_cut_off_from_sentinel_learns_of_its_loss_before_anyone_else_has_the_lock() {
    let net = Net::new();
    let set = SentinelSet::start_on(&net, Duration::from_secs(60));
    let flags = ["--wait-replicas", "lockstore=2"];
    let servers: Vec<&RedisServer> = set.servers.iter().collect();
    a_cut_off_host_learns_of_its_loss("Sentinel", &net, &set.url(), &servers, &flags);
}

/// The primary is cut off from its replicas and from the sentinels — a minority side with
/// nothing but the primary — while two worker hosts, which still reach every server, lock
/// and count. Grants wait for `wait_replicas` of the two replicas. The minority primary can
/// confirm nothing, so it grants nothing; the sentinels promote a replica, and the hosts
/// follow them there. The partition then heals, and the old primary rejoins as a replica.
/// Returns the history, the counter, when the cut was made and when a replica was promoted.
fn primary_cut_off_from_replicas_and_sentinels(
    wait_replicas: u32,
) -> (Vec<Grant>, u64, u128, u128) {
    let net = Net::new();
    let set = SentinelSet::start_on(&net, SentinelSet::QUICK);
    let workers_nodes = [net.node(), net.node()];
    let wait = format!("lockstore={wait_replicas}");
    let flags = ["--wait-replicas", wait.as_str()];
    // Long enough for a failover, the partition's end and the old primary's rejoining.
    let workers = Workers::start_for(
        20_000,
        &set.url(),
        &flags,
        &[Some(&workers_nodes[0]), Some(&workers_nodes[1])],
    );
    workers.wait_for_progress();
    let old = set.primary();
    let primary = &set.nodes[old];
    let others: Vec<&Node> = set
        .nodes
        .iter()
        .filter(|n| n.netns != primary.netns)
        .collect();
    for other in &others {
        net.cut(primary, other);
    }
    let cut_at = now_ns();
    // The sentinels, on the majority side, promote a replica.
    wait_until("a replica is promoted", || {
        set.primary_by(&set.sentinels[0])
            .is_some_and(|now| now != old)
    });
    let promoted_at = now_ns();
    std::thread::sleep(Duration::from_millis(1000));
    let mut all: Vec<&Node> = set.nodes.iter().collect();
    all.push(primary);
    net.mend(&all);
    let (history, counter) = workers.finish();
    // Nothing the minority primary granted could be confirmed: from a moment after the cut
    // (a grant confirmed just before it may still be on its way to its guest) until the
    // promotion, no grant at all.
    let during: Vec<_> = history
        .iter()
        .filter(|g| g.acquired > cut_at + 500_000_000 && g.acquired < promoted_at)
        .collect();
    assert!(
        during.is_empty(),
        "the minority primary granted: {during:?}"
    );
    drop(workers_nodes);
    (history, counter, cut_at, promoted_at)
}

/// Grants waiting for every replica through a primary cut off from its replicas and the
/// sentinels: no double grant, fences rise, the counter is exact, and work resumes once
/// the old primary rejoins as a replica.
#[test]
fn a_primary_cut_off_from_its_replicas_grants_nothing_waiting_for_every_replica() {
    let (history, counter, _, promoted_at) = primary_cut_off_from_replicas_and_sentinels(2);
    assert_stayed_safe(
        "R13 Sentinel, primary cut off, grants on 2 of 2 replicas",
        &history,
        counter,
        promoted_at,
    );
}

/// The same waiting for one of the two replicas: grants go on once a replica is promoted;
/// a grant the promoted replica had not confirmed can be lost — counted and reported.
#[test]
fn a_primary_cut_off_from_its_replicas_waiting_for_one_replica_is_counted() {
    let (history, counter, _, promoted_at) = primary_cut_off_from_replicas_and_sentinels(1);
    assert_survived_data_loss(
        "R13 Sentinel, primary cut off, grants on 1 of 2 replicas",
        &history,
        counter,
        promoted_at,
    );
}

/// One of three Redlock masters isolated for several leases while two worker hosts lock
/// and count: the other two keep granting, with no double grant, fences rising and an
/// exact counter; the master rejoins with its stale keys, which expire.
#[test]
fn redlock_with_one_master_cut_off() {
    let net = Net::new();
    let nodes: Vec<Node> = (0..3).map(|_| net.node()).collect();
    let workers_nodes = [net.node(), net.node()];
    let masters: Vec<RedisServer> = nodes
        .iter()
        .map(|n| RedisServer::start_on(n, &[]))
        .collect();
    let workers = Workers::start(
        &redlock_url(&masters),
        &[],
        &[Some(&workers_nodes[0]), Some(&workers_nodes[1])],
    );
    workers.wait_for_progress();
    net.isolate(&nodes[0]);
    let cut_at = now_ns();
    std::thread::sleep(Duration::from_nanos(6 * LEASE_NS as u64));
    net.rejoin(&nodes[0]);
    let rejoined_at = now_ns();
    let (history, counter) = workers.finish();
    assert_stayed_safe(
        "R13 Redlock, one master cut off",
        &history,
        counter,
        rejoined_at,
    );
    let during = after(&history, cut_at) - after(&history, rejoined_at);
    println!("R13 Redlock, one master cut off: {during} grants while it was cut off");
    assert!(during > 0, "no grant while one master was cut off");
}
