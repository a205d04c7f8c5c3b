//! Faults injected into a real Redis while two `latchkey` host processes do locked
//! read-modify-writes on one counter. Every grant is recorded (fence, acquired, released,
//! host) and a checker verifies the history: no two holders overlap while a lease runs,
//! fences grow in grant order, and the counter equals the number of grants. Where a fault
//! is documented as unsafe (Redis losing its data), the checker counts the double grants and
//! the test reports them instead of hiding them.

use std::time::Duration;

use harness::history::{
    Grant, LEASE_NS, Workers, after, assert_stayed_safe, assert_survived_data_loss, check, now_ns,
};
use harness::{RedisCluster, RedisServer, SentinelSet, redlock_url};

/// Runs two worker hosts, applies `fault` once they are at work, and returns the history
/// and the counter.
fn run_with_fault<R>(redis: &mut R, url: &str, fault: impl FnOnce(&mut R)) -> (Vec<Grant>, u64) {
    run_with_fault_and_flags(redis, url, &[], fault)
}

/// [`run_with_fault`], with `store_flags` for the hosts.
fn run_with_fault_and_flags<R>(
    redis: &mut R,
    url: &str,
    store_flags: &[&str],
    fault: impl FnOnce(&mut R),
) -> (Vec<Grant>, u64) {
    let workers = Workers::start(url, store_flags, &[None, None]);
    workers.wait_for_progress();
    fault(redis);
    workers.finish()
}

/// The checker catches what it should: two made-up overlapping grants are a double grant,
/// and a falling fence is a regression.
#[test]
fn checker_catches_overlaps_and_fence_regressions() {
    let grant = |fence, acquired, released| Grant {
        fence,
        acquired,
        released,
        host: 0,
    };
    let bad = check(vec![
        grant(1, 0, 10_000_000),
        grant(3, 5_000_000, 20_000_000),
        grant(2, 30_000_000, 40_000_000),
    ]);
    assert_eq!((bad.double_grants, bad.fence_regressions), (1, 1));
    let good = check(vec![
        grant(1, 0, 10),
        grant(2, 20, 30),
        grant(3, LEASE_NS + 1, LEASE_NS + 2),
    ]);
    assert_eq!((good.double_grants, good.fence_regressions), (0, 0));
}

/// Redis stopped (SIGSTOP) for twice the lease, then continued: no double grant, fences
/// grow, the counter is exact, and the hosts carry on by themselves.
#[test]
fn redis_paused_for_twice_the_lease() {
    let mut redis = RedisServer::start();
    let mut resumed_at = 0;
    let url = redis.url();
    let (history, counter) = run_with_fault(&mut redis, &url, |redis| {
        redis.pause();
        std::thread::sleep(Duration::from_nanos(2 * LEASE_NS as u64));
        redis.resume();
        resumed_at = now_ns();
    });
    assert_stayed_safe("SIGSTOP for 2 × lease", &history, counter, resumed_at);
    assert!(history.iter().any(|g| g.host == 0) && history.iter().any(|g| g.host == 1));
}

/// Redis killed (SIGKILL) and restarted without persistence: the lock keys are gone, so a
/// second holder can be granted while the first still works — the documented unsafe case,
/// counted and reported. Fences still grow (they follow Redis' clock when the counter is
/// lost), which is what lets a resource refuse the stale holder; and the hosts recover.
#[test]
fn redis_crash_without_persistence() {
    let mut redis = RedisServer::start();
    let mut restarted_at = 0;
    let url = redis.url();
    let (history, counter) = run_with_fault(&mut redis, &url, |redis| {
        redis.crash_and_restart();
        restarted_at = now_ns();
    });
    assert_survived_data_loss(
        "SIGKILL + restart without persistence",
        &history,
        counter,
        restarted_at,
    );
}

/// A Redis Cluster master killed (SIGKILL) and restarted empty — the one serving the
/// counter's lock: its locks are `unavailable` while it is down and lost when it comes back
/// (the unsafe case, counted); fences keep rising, and work resumes without a host restart.
#[test]
fn cluster_master_crash() {
    let mut cluster = RedisCluster::start();
    let owner = cluster.owner_of("latchkey:{faults:counter}:lock");
    let url = cluster.url();
    let mut restarted_at = 0;
    let (history, counter) = run_with_fault(&mut cluster, &url, |cluster| {
        cluster.nodes[owner].crash_and_restart();
        cluster.wait_until_ok();
        restarted_at = now_ns();
    });
    assert_survived_data_loss(
        "cluster master SIGKILL + restart",
        &history,
        counter,
        restarted_at,
    );
}

/// A Sentinel failover while hosts whose grants wait for `wait_replicas` of the two replicas
/// work on the counter: the primary killed, a replica promoted, the old primary back empty
/// as a replica. Returns the history, the counter and when the failover ended.
fn sentinel_failover(wait_replicas: u32) -> (Vec<Grant>, u64, u128) {
    let mut set = SentinelSet::start(SentinelSet::QUICK);
    let url = set.url();
    let mut failed_over_at = 0;
    let wait = format!("lockstore={wait_replicas}");
    let flags = ["--wait-replicas", wait.as_str()];
    let (history, counter) = run_with_fault_and_flags(&mut set, &url, &flags, |set| {
        set.fail_over();
        failed_over_at = now_ns();
    });
    (history, counter, failed_over_at)
}

/// Grants that waited for *every* replica are on whichever one Sentinel promotes: no
/// double grant, fences grow, the counter is exact, and the hosts follow the new primary
/// (grants resume once the old primary is back as a replica).
#[test]
fn sentinel_failover_waiting_for_every_replica() {
    let (history, counter, failed_over_at) = sentinel_failover(2);
    assert_stayed_safe(
        "Sentinel failover, grants on 2 of 2 replicas",
        &history,
        counter,
        failed_over_at,
    );
}

/// Grants that waited for *one* of two replicas: Sentinel picks the replica to promote from
/// replication offsets it polls about once a second, so it can promote the one that had not
/// confirmed a grant made just before the kill — the documented unsafe case, counted and
/// reported. Fences still rise, and the hosts follow the new primary.
#[test]
fn sentinel_failover_waiting_for_one_replica() {
    let (history, counter, failed_over_at) = sentinel_failover(1);
    assert_survived_data_loss(
        "Sentinel failover, grants on 1 of 2 replicas",
        &history,
        counter,
        failed_over_at,
    );
}

/// One of three Redlock masters killed, kept down for twice the lease (Redlock's delayed
/// restart), and restarted empty: the other two keep granting, with no double grant, fences
/// growing and an exact counter.
#[test]
fn redlock_master_down() {
    let mut masters: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let url = redlock_url(&masters);
    let (mut crashed_at, mut restarted_at) = (0, 0);
    let (history, counter) = run_with_fault(&mut masters, &url, |masters| {
        masters[0].crash();
        crashed_at = now_ns();
        std::thread::sleep(Duration::from_nanos(2 * LEASE_NS as u64));
        restarted_at = now_ns();
        masters[0].restart();
    });
    assert_stayed_safe("Redlock master down", &history, counter, restarted_at);
    let during = after(&history, crashed_at) - after(&history, restarted_at);
    println!("Redlock master down: {during} grants while it was down");
    assert!(during > 0, "no grant while one master was down");
}
