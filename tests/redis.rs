//! What only a real Redis can show: fences that survive the loss of all data, the key
//! layout, credentials, one shared connection, `unavailable` when Redis is not there,
//! replicas (refused, or waited for), locks that outlive a Sentinel or Cluster failover, and
//! Redlock's majorities and fences.

use std::time::Duration;

use harness::{
    Fixture, PATIENCE, RedisCluster, RedisServer, SentinelSet, free_port, guest, latchkey, lockctl,
    redis_store, spawn_lockctl,
};
use latchkey_host::{LockCtxBuilder, LockStore, OpenError, StoreSettings};

/// Runs `steps` until no step is `unavailable` — until the host has reconnected, or found
/// the new primary — and returns that run.
async fn until_available(app: &LockCtxBuilder, steps: &str) -> harness::Run {
    for _ in 0..40 {
        let run = lockctl(app, steps).await;
        if !run.stdout.contains("error unavailable") {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the store stayed unavailable");
}

/// The fence of the first grant of `steps`, once the store is available again.
async fn fence_after_recovery(app: &LockCtxBuilder, steps: &str) -> u64 {
    until_available(app, steps).await.fences()[0]
}

/// Fences keep growing when Redis forgets everything: after FLUSHALL and after a crash and
/// restart without persistence.
#[tokio::test(flavor = "multi_thread")]
async fn fences_grow_across_flushall_and_restart() {
    let mut fx = Fixture::on_redis();
    let app = fx.app("app");
    let steps = "open lockstore try f 60000 unlock";
    let before = fence_after_recovery(&app, steps).await;

    let redis = fx.redis_mut();
    let () = redis.cmd(&["FLUSHALL"]);
    assert!(redis.keys().is_empty());
    let after_flush = fence_after_recovery(&app, steps).await;
    assert!(after_flush > before, "{after_flush} after {before}");

    redis.crash_and_restart();
    assert!(redis.keys().is_empty());
    let after_restart = fence_after_recovery(&app, steps).await;
    assert!(
        after_restart > after_flush,
        "{after_restart} after {after_flush}"
    );
}

/// Keys follow the documented layout, escaped, in one hash tag per lock, with the lease as
/// TTL; an unlocked lock leaves only its fence.
#[tokio::test(flavor = "multi_thread")]
async fn keys_follow_the_documented_layout() {
    let fx = Fixture::on_redis();
    let redis = fx.redis();
    let holder = spawn_lockctl(
        &fx.app("shop"),
        "open lockstore try {order}:7 5000 sleep 1000",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lock = "latchkey:{shop:%7Border%7D%3A7}:lock";
    let fence = "latchkey:{shop:%7Border%7D%3A7}:fence";
    assert_eq!(redis.keys(), [fence, lock]);
    let ttl: i64 = redis.cmd(&["PTTL", lock]);
    assert!((1..=5000).contains(&ttl), "lease TTL {ttl}");
    let token: String = redis.cmd(&["GET", lock]);
    assert_eq!(token.len(), 32, "a 128-bit hex token");
    // Redis Cluster hashes what is between the first `{` and the next `}`.
    let hash_tag = |key: &str| {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        key[open..=close].to_owned()
    };
    assert_eq!(hash_tag(lock), "{shop:%7Border%7D%3A7}");
    assert_eq!(hash_tag(fence), hash_tag(lock));

    holder.await.unwrap().assert_success();
    assert_eq!(redis.keys(), [fence]);
}

/// A store nobody listens on is `unavailable`, within the configured timeout.
#[tokio::test(flavor = "multi_thread")]
async fn unreachable_redis_is_unavailable_quickly() {
    let timeout = Duration::from_millis(500);
    let mut app = LockCtxBuilder::new("app");
    let url = format!("redis://127.0.0.1:{}", free_port());
    app.store(redis_store(&url, timeout));
    let run = lockctl(&app, "open lockstore try a 1000 lock b 1000 5000").await;
    let lines = run.assert_success().lines();
    assert!(
        lines[1].starts_with("error unavailable: store 'lockstore'"),
        "{lines:?}"
    );
    assert!(lines[2].starts_with("error unavailable"), "{lines:?}");
    assert!(
        !run.stdout.contains("127.0.0.1"),
        "the address reached the guest"
    );
    assert!(
        run.elapsed < 2 * timeout + Duration::from_secs(1),
        "{:?}",
        run.elapsed
    );
}

/// A Redis that stops answering (SIGSTOP) is `unavailable` after the timeout, and the
/// host recovers by itself once it answers again.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_redis_is_unavailable_then_recovers() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(500);
    let mut app = LockCtxBuilder::new("app");
    app.store(redis_store(&server.url(), timeout));
    lockctl(&app, "open lockstore try a 1000 unlock")
        .await
        .assert_success();

    server.pause();
    let run = lockctl(&app, "open lockstore try a 1000").await;
    server.resume();
    assert!(run.lines()[1].starts_with("error unavailable"), "{run:?}");
    assert!(run.elapsed >= timeout, "{:?}", run.elapsed);
    assert!(
        run.elapsed < timeout + Duration::from_secs(2),
        "{:?}",
        run.elapsed
    );

    let fence = fence_after_recovery(&app, "open lockstore try a 1000").await;
    assert!(fence > 0);
}

/// The password stays with the host: it works, and a wrong one gives the guest an error
/// that holds no secret.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_stay_with_the_host() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let with = |password: &str| {
        let mut app = LockCtxBuilder::new("app");
        let mut settings =
            StoreSettings::new(format!("redis://default@127.0.0.1:{}", server.port()));
        settings.password = Some(password.into());
        settings.timeout = Duration::from_secs(1);
        let store = latchkey_host::open("lockstore", &settings).unwrap();
        app.store(store);
        app
    };
    let good = lockctl(&with("s3cret-pw"), "open lockstore try a 1000 env").await;
    assert!(good.lines()[1].starts_with("granted a"), "{good:?}");
    assert_eq!(good.lines().len(), 2, "the guest saw variables: {good:?}");

    let bad = lockctl(&with("wrong-pw"), "open lockstore try a 1000").await;
    assert!(bad.lines()[1].starts_with("error unavailable"), "{bad:?}");
    assert!(!bad.stdout.contains("wrong-pw") && !bad.stdout.contains("s3cret"));
}

/// Many waiters on one host share its one connection and one subscription per lock.
#[tokio::test(flavor = "multi_thread")]
async fn waiters_share_one_connection() {
    let fx = Fixture::on_redis();
    let redis = fx.redis();
    let app = fx.app("app");
    let holder = spawn_lockctl(&app, "open lockstore try q 60000 sleep 1500 unlock");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiters: Vec<_> = (0..20)
        .map(|_| spawn_lockctl(&app, "open lockstore lock q 60000 20000 unlock"))
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;

    let clients: String = redis.cmd(&["CLIENT", "LIST"]);
    // The host's connection and the test's own.
    assert_eq!(clients.lines().count(), 2, "{clients}");
    let numsub: (String, i64) = redis.cmd(&["PUBSUB", "NUMSUB", "latchkey:{app:q}:released"]);
    assert_eq!(numsub.1, 1);

    holder.await.unwrap().assert_success();
    for waiter in waiters {
        let run = waiter.await.unwrap();
        assert!(run.lines()[1].starts_with("granted q"), "{run:?}");
    }
}

/// A store can be a Redis listening on a unix socket only (`redis+unix://`).
#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_store_works() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let server = RedisServer::start_with(&["--unixsocket", socket.to_str().unwrap()]);
    let mut app = LockCtxBuilder::new("app");
    let url = format!("redis+unix://{}", socket.display());
    app.store(redis_store(&url, Duration::from_secs(2)));
    let run = lockctl(&app, "open lockstore try s 60000 sleep 200").await;
    assert!(run.lines()[1].starts_with("granted s"), "{run:?}");
    // It really went to that server: the host released the lock, leaving only the fence.
    assert_eq!(server.keys(), ["latchkey:{app:s}:fence"]);
}

/// A primary with one replica attached and in sync.
fn primary_and_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start();
    let replica = primary.start_replica();
    (primary, replica)
}

/// An app on `server`, with a timeout generous enough that a loaded machine's replica still
/// confirms in time (`WAIT` gets half of it).
fn replicated_app(url: &str, wait_replicas: u32) -> LockCtxBuilder {
    let mut settings = StoreSettings::new(url);
    settings.timeout = Duration::from_millis(4000);
    settings.wait_replicas = wait_replicas;
    let store = latchkey_host::open("lockstore", &settings).unwrap();
    let mut app = LockCtxBuilder::new("app");
    app.store(store);
    app
}

/// Asynchronous replication can lose a granted lock on failover, so a replicated server is
/// refused unless grants wait for replicas; and a replica is refused outright.
#[tokio::test(flavor = "multi_thread")]
async fn replicated_servers_are_refused_unless_grants_wait() {
    let (primary, replica) = primary_and_replica();
    let run = lockctl(
        &replicated_app(&primary.url(), 0),
        "open lockstore try a 1000",
    )
    .await;
    assert!(
        run.lines()[1].starts_with("error unavailable: store 'lockstore' has 1 replica(s)"),
        "{run:?}"
    );
    let run = lockctl(
        &replicated_app(&replica.url(), 0),
        "open lockstore try a 1000",
    )
    .await;
    assert!(
        run.lines()[1].starts_with("error unavailable: store 'lockstore' is a replica"),
        "{run:?}"
    );
    assert!(primary.keys().is_empty());
}

/// With `wait_replicas`, a grant reaches the replica before the guest has it; if the
/// replica cannot confirm, the guest gets `unavailable` and the primary keeps no lock.
#[tokio::test(flavor = "multi_thread")]
async fn grants_wait_for_replicas() {
    let (primary, replica) = primary_and_replica();
    let app = replicated_app(&primary.url(), 1);
    let holder = spawn_lockctl(&app, "open lockstore try a 60000 sleep 1000");
    let started = std::time::Instant::now();
    while replica.cmd::<i64>(&["EXISTS", "latchkey:{app:a}:lock"]) == 0 {
        if holder.is_finished() || started.elapsed() > PATIENCE {
            panic!("the replica never had the lock: {:?}", holder.await);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let holder = holder.await.unwrap();
    assert!(holder.lines()[1].starts_with("granted a"), "{holder:?}");

    replica.pause();
    let run = lockctl(&app, "open lockstore try b 60000").await;
    replica.resume();
    assert!(
        run.lines()[1].starts_with("error unavailable: store 'lockstore' had 0 of 1 replicas"),
        "{run:?}"
    );
    let started = std::time::Instant::now();
    while !primary.lock_keys().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            primary.lock_keys()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An extend, and a `held`, that the replica cannot confirm are `unavailable`, not `true`:
/// the lease the replica knows of — the one a failover would keep — is still the old one,
/// and the host goes on counting it. Once it has passed, the guest's lock is lost, though
/// the primary alone took the longer lease.
#[tokio::test(flavor = "multi_thread")]
async fn extends_and_held_wait_for_replicas() {
    let (primary, replica) = primary_and_replica();
    let app = replicated_app(&primary.url(), 1);
    // 12 s from the grant: the extend and the held take 2 s each (WAIT gets half the 4 s
    // timeout), and `lost` is asked 15 s in.
    let holder = spawn_lockctl(
        &app,
        "open lockstore try a 12000 sleep 2000 extend 60000 held sleep 9000 lost",
    );
    replica.wait_for_key("latchkey:{app:a}:lock");
    replica.pause();
    let run = holder.await.unwrap();
    replica.resume();
    let lines = run.assert_success().lines();
    assert!(lines[1].starts_with("granted a"), "{lines:?}");
    assert!(
        lines[2].starts_with(
            "error unavailable: store 'lockstore' had 0 of 1 replicas confirm the extension"
        ),
        "{lines:?}"
    );
    assert!(
        lines[3].starts_with("error unavailable: store 'lockstore' had 0 of 1 replicas"),
        "{lines:?}"
    );
    assert_eq!(
        lines[4], "lost true",
        "the unconfirmed extension was counted"
    );
}

/// A grant that comes back later than its lease — here a replica confirms it only after
/// 400 ms, for a 100 ms lease — may already be someone else's: the guest gets `unavailable`,
/// not the lock, and no lock is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_grant_slower_than_its_lease_is_not_handed_out() {
    let (primary, replica) = primary_and_replica();
    let app = replicated_app(&primary.url(), 1);
    lockctl(&app, "open lockstore try warm 1000")
        .await
        .assert_success();
    replica.pause();
    let slow = spawn_lockctl(&app, "open lockstore try a 100");
    tokio::time::sleep(Duration::from_millis(400)).await;
    replica.resume();
    let slow = slow.await.unwrap();
    assert!(
        slow.lines()[1].starts_with("error unavailable: store 'lockstore' took")
            && slow.lines()[1].ends_with("ms to grant a 100 ms lease"),
        "{slow:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(primary.lock_keys().is_empty(), "{:?}", primary.lock_keys());
}

/// On a Redis Cluster, a lock's keys live on one node (one hash slot), while different
/// locks spread over the masters.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_keeps_each_locks_keys_on_one_node() {
    let fx = Fixture::on_cluster();
    let cluster = fx.cluster();
    let mut steps = String::from("open lockstore");
    for i in 0..30 {
        steps += &format!(" try job-{i} 60000");
    }
    steps += " sleep 300";
    let holder = spawn_lockctl(&fx.app("app"), &steps);
    let started = std::time::Instant::now();
    while cluster
        .keys()
        .iter()
        .filter(|k| k.ends_with(":lock"))
        .count()
        < 30
    {
        assert!(started.elapsed() < PATIENCE, "{:?}", cluster.keys());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut nodes_used = 0;
    for node in &cluster.nodes {
        let keys = node.keys();
        nodes_used += usize::from(!keys.is_empty());
        for key in keys.iter().filter(|k| k.ends_with(":lock")) {
            let fence = format!("{}:fence", key.strip_suffix(":lock").unwrap());
            assert!(
                keys.contains(&fence),
                "{key} and its fence are on different nodes"
            );
        }
    }
    assert!(nodes_used > 1, "30 locks all on one node");
    assert_eq!(holder.await.unwrap().fences().len(), 30);
    assert!(cluster.keys().iter().all(|k| k.ends_with(":fence")));
}

/// How long the holder of a failover test keeps its lock: longer than any failover here.
const HOLDER_SLEEP: Duration = Duration::from_secs(15);

/// Takes lock `a`, keeps it for [`HOLDER_SLEEP`], then unlocks it.
fn spawn_holder(app: &LockCtxBuilder) -> tokio::task::JoinHandle<harness::Run> {
    let steps = format!(
        "open lockstore try a 60000 sleep {} unlock",
        HOLDER_SLEEP.as_millis()
    );
    spawn_lockctl(app, &steps)
}

/// What a failover that began at `started` must not change: lock `a`, taken by `holder`
/// before it, is still held after it; its holder still unlocks it; and the next grant's
/// fence is higher.
async fn assert_lock_survived(
    app: &LockCtxBuilder,
    holder: tokio::task::JoinHandle<harness::Run>,
    started: std::time::Instant,
) {
    let after = until_available(app, "open lockstore try a 1000 try b 1000").await;
    assert!(
        started.elapsed() + Duration::from_secs(1) < HOLDER_SLEEP,
        "the failover outlasted the holder's sleep: the test proves nothing"
    );
    assert_eq!(after.lines()[1], "held a", "{after:?}");
    let holder = holder.await.unwrap();
    assert_eq!(holder.lines()[2], "unlocked success", "{holder:?}");
    let (before, later) = (holder.fences()[0], after.fences()[0]);
    assert!(
        later > before,
        "fence {later} after the failover, {before} before"
    );
}

/// A Sentinel store must wait for replicas, and must name the service it follows.
#[test]
fn sentinel_stores_are_checked_when_configured() {
    let sentinel = |url: &str, wait_replicas| {
        let mut settings = StoreSettings::new(url);
        settings.wait_replicas = wait_replicas;
        latchkey_host::open("lockstore", &settings).err()
    };
    let no_wait = sentinel("redis+sentinel://127.0.0.1:1/latchkey", 0).unwrap();
    assert!(
        matches!(no_wait, OpenError::SentinelNeedsWaitReplicas { .. }),
        "{no_wait}"
    );
    let no_service = sentinel("redis+sentinel://127.0.0.1:1", 1).unwrap();
    assert!(
        no_service
            .to_string()
            .contains("name the monitored service"),
        "{no_service}"
    );
    assert!(sentinel("redis+sentinel://127.0.0.1:1/latchkey", 1).is_none());
}

/// Through a Sentinel failover (the primary killed, a replica promoted, the old primary
/// back empty): a lock granted before it is still held after it, because the grant waited
/// for a replica; its holder still unlocks it; fences keep rising; and the host follows the
/// new primary without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_granted_lock_survives_a_sentinel_failover() {
    let mut fx = Fixture::on_sentinel_failing_over_after(SentinelSet::QUICK);
    let app = fx.app("app");
    let holder = spawn_holder(&app);
    let set = fx.sentinel_mut();
    let old_primary = set.primary();
    set.servers[old_primary].wait_for_key("latchkey:{app:a}:lock");
    let started = std::time::Instant::now();
    tokio::task::block_in_place(|| set.fail_over());
    assert_ne!(set.primary(), old_primary);

    assert_lock_survived(&app, holder, started).await;
}

/// Redlock grants on a majority: a stray lock on one master does not block it, a rival on
/// two does — and then the attempt leaves nothing behind on the third.
#[tokio::test(flavor = "multi_thread")]
async fn redlock_needs_a_majority() {
    let mut fx = Fixture::on_redlock();
    let app = fx.app("app");
    let key = "latchkey:{app:a}:lock";
    fx.redlock()[0].cmd::<()>(&["SET", key, "rival", "PX", "60000"]);
    let run = lockctl(&app, "open lockstore try a 60000 unlock").await;
    assert!(run.lines()[1].starts_with("granted a"), "{run:?}");
    assert_eq!(run.lines()[2], "unlocked success");

    fx.redlock()[1].cmd::<()>(&["SET", key, "rival", "PX", "60000"]);
    let run = lockctl(&app, "open lockstore try a 60000").await;
    assert_eq!(run.lines()[1], "held a", "{run:?}");
    assert!(
        fx.redlock()[2].lock_keys().is_empty(),
        "a partial grant was left"
    );
}

/// With one master of three down, locks are still granted (and released); with two down,
/// calls are `unavailable` and no partial grant stays on the last one.
#[tokio::test(flavor = "multi_thread")]
async fn redlock_survives_one_master_down_not_two() {
    let mut fx = Fixture::on_redlock();
    let app = fx.app("app");
    fx.redlock()[0].crash();
    let run = lockctl(&app, "open lockstore try a 60000 unlock").await;
    assert!(run.lines()[1].starts_with("granted a"), "{run:?}");
    assert_eq!(run.lines()[2], "unlocked success");

    fx.redlock()[1].crash();
    let run = lockctl(&app, "open lockstore try b 60000").await;
    assert!(
        run.lines()[1].starts_with(
            "error unavailable: store 'lockstore' had 1 of 3 Redlock masters answer in time"
        ),
        "{run:?}"
    );
    assert!(
        fx.redlock()[2].lock_keys().is_empty(),
        "a partial grant was left"
    );
}

/// With one master of three silent (SIGSTOP: its connections stay open, nothing answers),
/// a semaphore's last free permit is still granted, however many of its permits are held:
/// each busy permit is decided by the two masters that answer, not after the silent one's
/// timeout — which, added up over the busy permits, used to outlast the call's own.
#[tokio::test(flavor = "multi_thread")]
async fn redlock_semaphores_go_on_with_one_master_silent() {
    let mut fx = Fixture::on_redlock();
    let lease = Duration::from_secs(60);
    for limit in [4, 12, 64] {
        let id = format!("pool-{limit}");
        let permits = fx.store.permits("app", &id, limit);
        let mut held = Vec::new();
        for _ in 1..limit {
            let grant = fx
                .store
                .acquire_permit(permits.clone(), lease, Duration::ZERO);
            held.push(grant.await.unwrap().expect("a free permit"));
        }
        fx.redlock()[2].pause();
        let last = fx
            .store
            .acquire_permit(permits.clone(), lease, Duration::ZERO)
            .await;
        fx.redlock()[2].resume();
        let last = last.unwrap_or_else(|err| panic!("limit {limit}: {err}"));
        assert!(
            last.is_some(),
            "limit {limit}: the free permit was not granted"
        );
    }
}

/// A Redlock grant decided by two masters while the third was silent: the third carries
/// out the acquire once it answers again, with a fence of its own (its clock is later).
/// Who leads, and the operator's listing, still say the grant's fence — the one its
/// majority holds — or a watcher would take the late master's for a new leader.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_masters_fence_is_not_the_grants() {
    let mut fx = Fixture::on_redlock();
    let election = fx.store.leadership("app", "e");
    // Every master connected first: the late one must have the request to carry out.
    fx.store.holders(None).await.unwrap();
    fx.redlock()[2].pause();
    let campaign = fx.store.campaign(
        election.clone(),
        "v",
        Duration::from_secs(60),
        Duration::ZERO,
    );
    let grant = campaign.await.unwrap().expect("a free election");
    fx.redlock()[2].resume();
    fx.redlock()[2].wait_for_key(election.lock());
    let late: u64 = fx.redlock()[2].cmd(&["GET", election.fence()]);
    assert_ne!(late, grant.fence, "the late master took the grant's fence");
    let leader = fx.store.leader(&election).await.unwrap().expect("a leader");
    assert_eq!(leader.fence, grant.fence);
    let listed = fx.store.holders(None).await.unwrap().holders;
    assert_eq!(listed[0].fence, grant.fence, "{listed:?}");
}

/// Redlock fences grow across grants made by different majorities, because each grant
/// writes its fence back to its majority. One master's counter is set far ahead; with the
/// third master silent, the grant is made by the first two, takes the fence ahead and
/// writes it back to both; with the first master gone, the next grant (by the other two)
/// still goes above it. Without the write-back those two would only know the second's own,
/// much lower, counter.
#[tokio::test(flavor = "multi_thread")]
async fn redlock_fences_are_written_back_to_the_majority() {
    let mut fx = Fixture::on_redlock();
    let app = fx.app("app");
    let fence_key = "latchkey:{app:f}:fence";
    let ahead: u64 = 4_000_000_000_000_000;
    fx.redlock()[0].cmd::<()>(&["SET", fence_key, &ahead.to_string()]);

    fx.redlock()[2].pause();
    let first = lockctl(&app, "open lockstore try f 60000 unlock").await;
    fx.redlock()[2].resume();
    let first = first.fences()[0];
    assert!(
        first > ahead,
        "fence {first} is not above the largest counter"
    );
    for master in &fx.redlock()[..2] {
        assert_eq!(master.cmd::<u64>(&["GET", fence_key]), first);
    }

    fx.redlock()[0].crash();
    let second = lockctl(&app, "open lockstore try f 60000 unlock").await;
    let second = second.fences()[0];
    assert!(second > first, "fence {second} after {first}");
}

/// A cluster grant is confirmed by the replicas of the master that made it, also when the
/// store's map of slots is stale: after the lock's slot moves to another master, the script
/// is redirected there, and `WAIT` must count that master's replicas. With them stopped,
/// nothing can confirm the grant.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_grant_waits_for_the_replica_of_the_master_that_made_it() {
    let cluster = RedisCluster::start_with_replicas();
    let app = replicated_app(&cluster.url(), 1);
    let key = "latchkey:{app:a}:lock";
    // The store learns the map of slots, and the lock's fence key exists to be moved.
    let warm = lockctl(&app, "open lockstore try a 1000 unlock").await;
    assert_eq!(warm.lines()[2], "unlocked success", "{warm:?}");

    let owner = cluster.owner_of(key);
    let new_owner = *cluster.masters().iter().find(|&&m| m != owner).unwrap();
    let replica = cluster.replica_of(new_owner);
    cluster.move_slot_of(key, new_owner);
    cluster.nodes[replica].pause();
    let stalled = lockctl(&app, "open lockstore try a 1000").await;
    cluster.nodes[replica].resume();

    assert!(
        stalled.lines()[1].starts_with("error unavailable"),
        "granted with the new master's replica stopped: {stalled:?}"
    );
    let after = until_available(&app, "open lockstore try a 1000 unlock").await;
    assert_eq!(after.lines()[2], "unlocked success", "{after:?}");
    assert_eq!(cluster.owner_of(key), new_owner);
}

/// A Redis Cluster with replicas is refused unless grants wait for them. With
/// `wait_replicas`, a lock granted before its master is killed is still held after its
/// replica takes over (the old master returns empty, as the new one's replica): its holder
/// still unlocks it, the host follows by itself, and fences keep rising. It guards the
/// acquire script and its `WAIT` travelling as one pipeline, on one connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_failover_keeps_a_granted_lock() {
    let cluster = RedisCluster::start_with_replicas();
    let refused = lockctl(
        &replicated_app(&cluster.url(), 0),
        "open lockstore try a 1000",
    )
    .await;
    assert!(
        refused.lines()[1]
            .starts_with("error unavailable: store 'lockstore' is a cluster with 3 replica(s)"),
        "{refused:?}"
    );

    let app = replicated_app(&cluster.url(), 1);
    let key = "latchkey:{app:a}:lock";
    // The store's map of the cluster is complete before the holder's grant, which is
    // confirmed once the owner's replica has the lock.
    until_available(&app, "open lockstore try warm 1000 unlock").await;
    let holder = spawn_holder(&app);
    let owner = cluster.owner_of(key);
    cluster.nodes[cluster.replica_of(owner)].wait_for_replicated_key(key);
    let started = std::time::Instant::now();
    let mut cluster = cluster;
    tokio::task::block_in_place(|| {
        cluster.nodes[owner].crash();
        while cluster.owner_of(key) == owner {
            assert!(started.elapsed() < PATIENCE, "no failover");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Back empty, it becomes the new master's replica: until then, nothing can confirm
        // a grant on that master, and its grants are `unavailable`. Until it has the data,
        // a second failover would promote an empty server (the book's Redis page): wait for it.
        cluster.nodes[owner].restart();
        cluster.nodes[owner].wait_for_reply(&["INFO", "replication"], "master_link_status:up");
    });

    assert_lock_survived(&app, holder, started).await;
}

/// Takes lock `w` for 10 s, then, with a waiter on it, unlocks it: how long after the
/// unlock the waiter had the lock. Far less than the lease if the unlock woke it.
async fn wake_up_after_unlock(store: &LockStore) -> Duration {
    let key = store.key("app", "w");
    let lease = Duration::from_secs(10);
    let holder = store.try_lock(key.clone(), lease).await;
    let holder = holder.unwrap().expect("w is free");
    let waiter = {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move {
            let grant = store.lock(key, lease, Duration::from_secs(20)).await;
            (
                grant.unwrap().expect("w within the wait"),
                std::time::Instant::now(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unlocked = std::time::Instant::now();
    store.unlock(&holder).await.unwrap();
    let (grant, granted) = waiter.await.unwrap();
    store.unlock(&grant).await.unwrap();
    granted - unlocked
}

/// Asserts that a waiter is woken by an unlock — not by the holder's lease's end — both
/// before and after `change` changes the connection of the store of `settings`, while a
/// watch made before the change lives on through it.
async fn assert_waiters_wake_across(settings: StoreSettings, change: impl FnOnce()) {
    let store = latchkey_host::open("lockstore", &settings).unwrap();
    let backend = store.backend().clone();
    let mut app = LockCtxBuilder::new("app");
    app.store(store.clone());
    let before = wake_up_after_unlock(&store).await;
    assert!(
        before < Duration::from_secs(2),
        "{before:?} before the change"
    );

    let _lasting = backend.watch(&store.key("app", "w")).await.unwrap();
    tokio::task::block_in_place(change);
    until_available(&app, "open lockstore try warm 1000 unlock").await;

    let after = wake_up_after_unlock(&store).await;
    assert!(
        after < Duration::from_secs(2),
        "woken {after:?} after the unlock: by the lease's end, not by the unlock"
    );
}

/// Waiters are woken by unlocks after the store's connection changed under a watch that
/// outlived the change: after a Sentinel failover (another server, a new connection with
/// no subscriptions) a new waiter must subscribe again there, not trust the old
/// subscription — or it wakes only when the holder's lease ends.
#[tokio::test(flavor = "multi_thread")]
async fn waiters_wake_on_unlock_after_a_sentinel_failover() {
    let mut fx = Fixture::on_sentinel_failing_over_after(SentinelSet::QUICK);
    let mut settings = StoreSettings::new(fx.sentinel_mut().url());
    settings.wait_replicas = 1;
    assert_waiters_wake_across(settings, || fx.sentinel_mut().fail_over()).await;
}

/// The same after Redis restarts at the same address: the connection reconnects, and a
/// waiter is still woken by an unlock rather than by the lease's end.
#[tokio::test(flavor = "multi_thread")]
async fn waiters_wake_on_unlock_after_a_reconnect() {
    let mut fx = Fixture::on_redis();
    let settings = StoreSettings::new(fx.redis().url());
    assert_waiters_wake_across(settings, || fx.redis_mut().crash_and_restart()).await;
}

/// The ACL the book gives latchkey's Redis user (docs/src/redis.md), with `PASSWORD` in
/// it, read from the page itself so that the two cannot drift apart: `ACL SETUSER latchkey
/// on >PASSWORD ...`.
fn documented_acl() -> Vec<String> {
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/src/redis.md");
    let page = std::fs::read_to_string(page).expect("the book's Redis page");
    let line = page
        .lines()
        .find(|line| line.starts_with("ACL SETUSER latchkey "))
        .expect("the docs give an ACL line");
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

/// The documented ACL is enough, and what it lacks is named: as exactly that
/// user, `latchkey run` takes, renews, waits for, extends and releases locks, permits and
/// leaderships and watches an election, and `latchkey locks list` and `release` see and
/// free them. Controls: without `+info` the host refuses to start, and without `+type`
/// the listing fails — each in one line of latchkey's naming what is missing.
#[test]
fn the_documented_acl_is_complete() {
    let redis = RedisServer::start();
    let acl = documented_acl();
    let with = |acl: &[String]| {
        let mut args: Vec<&str> = acl.iter().map(String::as_str).collect();
        args.insert(0, "ACL");
        for arg in &mut args {
            if *arg == ">PASSWORD" {
                *arg = ">pw-of-latchkey";
            }
        }
        redis.cmd::<()>(&args);
    };
    with(&acl);
    let url = format!("redis://latchkey:pw-of-latchkey@{}", redis.address());
    let store = format!("lockstore={url}");
    let lockctl = guest("lockctl");
    harness::warm(&lockctl);
    let steps = "open lockstore try a 3000 keepalive extend 2000 held lock b 1000 0 \
                 permit s 2 3000 0 campaign e v 3000 0 leader e watch e changed";
    let out = latchkey()
        .args(["run", "--app-id", "ops", "--store", &store])
        .arg(&lockctl)
        .args(steps.split_whitespace())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(!said.contains("error"), "{said}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let as_latchkey = redis_store(&url, Duration::from_secs(2));
    let held = runtime.block_on(as_latchkey.try_lock(as_latchkey.key("ops", "c"), PATIENCE));
    held.unwrap().expect("a free lock");
    let list = latchkey()
        .args(["locks", "list", "--store", &url])
        .output()
        .unwrap();
    assert!(list.status.success(), "{list:?}");
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("ops"),
        "{list:?}"
    );
    let release = ["locks", "release", "--store", &url, "--app", "ops", "c"];
    let freed = latchkey().args(release).output().unwrap();
    assert!(
        String::from_utf8_lossy(&freed.stdout).contains("released"),
        "{freed:?}"
    );

    let without = |permission: &str| -> Vec<String> {
        let acl: Vec<String> = acl.iter().filter(|p| *p != permission).cloned().collect();
        assert!(
            acl.len() < documented_acl().len(),
            "{permission} is not in the ACL"
        );
        // `-@all` in it takes every command away before the listed ones are given.
        acl
    };
    with(&without("+info"));
    let out = latchkey()
        .args(["run", "--store", &store])
        .arg(&lockctl)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("refused the command INFO") && stderr.contains("+info"),
        "{stderr}"
    );
    with(&without("+type"));
    let held = runtime.block_on(as_latchkey.try_lock(as_latchkey.key("ops", "d"), PATIENCE));
    held.unwrap().expect("a free lock");
    let list = latchkey()
        .args(["locks", "list", "--store", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&list.stderr);
    assert!(!list.status.success(), "{list:?}");
    assert!(
        stderr.contains("refused a command latchkey's scripts run"),
        "{stderr}"
    );
}
