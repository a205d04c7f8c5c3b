//! B9: semaphores and elections (`cargo bench -p latchkey-tests -- b9`).
//!
//! - A permit's acquire + release from one guest, uncontended, against the same two scripts
//!   (acquire over the semaphore's permits, release) by raw redis-rs; ABBA rounds on one
//!   thread, as B1.
//! - A permit of a semaphore of limit 1 handed between 8 waiting guests: the time from one
//!   release to the next grant, against a round trip (as B3).
//! - A leader's failover: three `latchkey run` hosts of the `leader` demo with a 1 s lease
//!   kept alive; the leader's host is killed, and the next leader's first line is timed from
//!   the kill and from the end of the lease the store still had (its PTTL at the kill).

use std::time::{Duration, Instant};

use harness::leaders::{LeaderHosts, field, now_us};
use harness::{RedisServer, redis_store};
use latchkey_host::LockStore;
use latchkey_host::key::{GrantKind, LockKey};
use redis::aio::ConnectionManager;

use crate::hand_off::{hand_off_table, hand_offs};
use crate::setup::{
    FENCE_TTL_MS, RELEASE, Stats, bench_pairs, connection, pairs_table, round_trip, row,
    single_threaded,
};

/// latchkey's acquire over a semaphore's permits.
const ACQUIRE_ANY: &str = include_str!("../../host/src/backend/redis/scripts/acquire_any.lua");

/// The semaphore's limit in the pairs.
const LIMIT: u32 = 3;

/// Runs the bench guest's permit `pairs` and reads back the latency of each pair.
async fn guest_permit_pairs(store: &LockStore, count: usize, id: &str) -> Vec<Duration> {
    bench_pairs(
        store,
        &["pairs", &count.to_string(), id, &LIMIT.to_string()],
    )
    .await
}

/// The baseline: the same acquire over `LIMIT` permits and release, by raw redis-rs.
async fn raw_permit_pairs(conn: &ConnectionManager, count: usize, id: &str) -> Vec<Duration> {
    let (acquire, release) = (redis::Script::new(ACQUIRE_ANY), redis::Script::new(RELEASE));
    let permits: Vec<LockKey> = (0..LIMIT)
        .map(|slot| LockKey::of_kind(None, "raw", id, GrantKind::Permit { slot }))
        .collect();
    let mut conn = conn.clone();
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let token = format!("{i:032x}");
        let started = Instant::now();
        let mut invocation = acquire.prepare_invoke();
        for permit in &permits {
            invocation.key(permit.lock()).key(permit.fence());
        }
        let (index, _): (i64, i64) = invocation
            .arg(&token)
            .arg(10_000)
            .arg(FENCE_TTL_MS)
            .invoke_async(&mut conn)
            .await
            .unwrap();
        let permit = &permits[index as usize - 1];
        let _: i64 = release
            .key(permit.lock())
            .arg(&token)
            .arg(permit.released())
            .invoke_async(&mut conn)
            .await
            .unwrap();
        samples.push(started.elapsed());
    }
    samples
}

/// A permit's acquire + release, from a guest and by raw redis-rs.
pub(crate) fn b9(redis: &RedisServer) {
    const ROUNDS: usize = 10;
    const PAIRS: usize = 1000;
    println!(
        "\n## B9 semaphores and elections\n\n\
         Acquire-permit (limit {LIMIT}) + release, one instance, uncontended \
         ({ROUNDS} interleaved rounds of {PAIRS} pairs each):\n"
    );
    pairs_table();
    let runtime = single_threaded();
    runtime.block_on(async {
        let conn = connection(redis).await;
        let store = redis_store(&redis.url(), Duration::from_secs(2));
        guest_permit_pairs(&store, 500, "warm").await;
        raw_permit_pairs(&conn, 500, "warm").await;
        let (mut guest, mut raw) = (vec![], vec![]);
        for round in 0..ROUNDS {
            // ABBA, as B1.
            if round % 2 == 0 {
                guest.extend(guest_permit_pairs(&store, PAIRS, "b9").await);
                raw.extend(raw_permit_pairs(&conn, PAIRS, "b9").await);
            } else {
                raw.extend(raw_permit_pairs(&conn, PAIRS, "b9").await);
                guest.extend(guest_permit_pairs(&store, PAIRS, "b9").await);
            }
        }
        row(
            "redis",
            &Stats::of(guest),
            "redis-rs scripts",
            &Stats::of(raw),
        );
    });
}

/// A permit of limit 1 handed between 8 waiting guests for 5 s.
pub(crate) async fn b9_hand_off(redis: &RedisServer, conn: &ConnectionManager) {
    println!("\nA permit (limit 1) handed between 8 waiting instances for 5 s:\n");
    let rtt = round_trip(conn).await.p50;
    hand_off_table();
    for (kind, store) in [
        ("redis", redis_store(&redis.url(), Duration::from_secs(5))),
        ("memory", LockStore::memory("lockstore")),
    ] {
        let handed = hand_offs(&store, 8, &["handoff", "5000", "b9-permit", "1"]).await;
        handed.row(kind, rtt);
    }
}

/// A leader's failover after its host is killed, 5 times.
pub(crate) fn b9_failover(redis: &RedisServer) {
    const TRIALS: usize = 5;
    const LEASE_MS: u32 = 1000;
    println!(
        "\nLeader failover: 3 hosts, a {LEASE_MS} ms lease kept alive, the leader's host \
         SIGKILLed ({TRIALS} trials):\n"
    );
    println!("| trial | lease left at the kill | kill → next leader | lease end → next leader |");
    println!("|---|---|---|---|");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let key = LockKey::of_kind(None, "app", "leader", GrantKind::Leadership);
    for trial in 1..=TRIALS {
        let hosts = LeaderHosts::start(&format!("lockstore={}", redis.url()), 3, LEASE_MS);
        let (first, _) = hosts.hear(|_, line| line.starts_with("lead "));
        // Past a renewal or two, as a leader in its stride.
        std::thread::sleep(Duration::from_millis(1200));
        hosts.kill(first);
        let killed_at = now_us();
        let left: i64 = redis::cmd("PTTL").arg(key.lock()).query(&mut conn).unwrap();
        let (_, line) = hosts.hear(|i, line| i != first && line.starts_with("lead "));
        let after_kill = Duration::from_micros(field(&line, 2).saturating_sub(killed_at));
        let left = Duration::from_millis(left.max(0) as u64);
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {trial} | {} | {} | {} |",
            ms(left),
            ms(after_kill),
            ms(after_kill.saturating_sub(left))
        );
        drop(hosts);
        // The next trial starts on an empty election.
        let _: () = redis::cmd("DEL").arg(key.lock()).query(&mut conn).unwrap();
    }
}
