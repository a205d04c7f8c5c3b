//! What the benchmarks share: statistics, the baselines every figure is set beside (raw
//! redis-rs running latchkey's own scripts, the store called from Rust without Wasm), the
//! guests' pairs, and the tables they print.

use std::time::{Duration, Instant};

use harness::{RedisServer, run};
use latchkey_host::key::LockKey;
use latchkey_host::{LockCtxBuilder, LockStore};
use redis::aio::ConnectionManager;

/// latchkey's own acquire and release scripts, for the baselines that run them without it.
pub(crate) const ACQUIRE: &str = include_str!("../../host/src/backend/redis/scripts/acquire.lua");

pub(crate) const RELEASE: &str = include_str!("../../host/src/backend/redis/scripts/release.lua");

/// How long latchkey keeps a fence key after the last grant (a day), passed to `ACQUIRE`.
pub(crate) const FENCE_TTL_MS: u64 = 86_400_000;

/// Medians and tails of a set of durations.
pub(crate) struct Stats {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

impl Stats {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
        Stats {
            p50: at(50),
            p99: at(99),
        }
    }
}

/// Times `runs` calls of `call`, one after another.
pub(crate) async fn timed<F, Fut>(runs: usize, mut call: F) -> Stats
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        call().await;
        samples.push(started.elapsed());
    }
    Stats::of(samples)
}

pub(crate) fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_nanos() as f64 / 1000.0)
}

pub(crate) fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_nanos() as f64 / b.as_nanos() as f64
}

pub(crate) fn app(store: &LockStore) -> LockCtxBuilder {
    let mut app = LockCtxBuilder::new("bench");
    app.store(store.clone());
    app
}

/// Runs the bench guest `pairs` and reads back the latency of each pair.
pub(crate) async fn guest_pairs(store: &LockStore, count: usize, id: &str) -> Vec<Duration> {
    bench_pairs(store, &["pairs", &count.to_string(), id]).await
}

/// Runs the bench guest with `args`, a `pairs` of some kind, and reads back the latency of
/// each pair, one per line in ns.
pub(crate) async fn bench_pairs(store: &LockStore, args: &[&str]) -> Vec<Duration> {
    let run = run(&app(store), "bench", args).await;
    run.stdout
        .lines()
        .map(|ns| Duration::from_nanos(ns.parse().unwrap()))
        .collect()
}

/// Runs `lockctl_p3`'s `pairs` — the same pairs from an async WASI 0.3 guest — and reads back the
/// latency of each pair.
pub(crate) async fn p3_guest_pairs(store: &LockStore, count: usize, id: &str) -> Vec<Duration> {
    let args = ["open", "lockstore", "pairs", &count.to_string(), id];
    let run = run(&app(store), "lockctl_p3", &args).await;
    // The first line says the store opened; each of the rest is one pair's ns.
    run.stdout
        .lines()
        .filter_map(|ns| ns.parse().ok())
        .map(Duration::from_nanos)
        .collect()
}

/// The baseline of B1 and B2: the same scripts, by raw redis-rs.
pub(crate) async fn raw_pairs(conn: &ConnectionManager, count: usize, id: &str) -> Vec<Duration> {
    let (acquire, release) = (redis::Script::new(ACQUIRE), redis::Script::new(RELEASE));
    let key = LockKey::new(None, "raw", id);
    let (lock, fence, channel) = (key.lock(), key.fence(), key.released());
    let mut conn = conn.clone();
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let token = format!("{i:032x}");
        let started = Instant::now();
        let (granted, _): (i64, i64) = acquire
            .key(lock)
            .key(fence)
            .arg(&token)
            .arg(10_000)
            .arg(FENCE_TTL_MS)
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(granted, 1);
        let _: i64 = release
            .key(lock)
            .arg(&token)
            .arg(channel)
            .invoke_async(&mut conn)
            .await
            .unwrap();
        samples.push(started.elapsed());
    }
    samples
}

/// The p50 of raw redis-rs pairs with `tasks` of them in flight at once on one connection:
/// what a lock + unlock round-trip pair costs at that concurrency (B6's budget for (c)).
pub(crate) async fn raw_pair_p50_at(conn: &ConnectionManager, tasks: u32) -> Duration {
    let mut loops = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let conn = conn.clone();
        loops.spawn(async move { raw_pairs(&conn, 300, &format!("b6-pair-{task}")).await });
    }
    Stats::of(loops.join_all().await.concat()).p50
}

/// The baseline of B1 on memory: the store called from Rust, without Wasm.
pub(crate) async fn direct_pairs(store: &LockStore, count: usize, id: &str) -> Vec<Duration> {
    let lease = Duration::from_secs(10);
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let key = LockKey::new(None, "direct", id);
        let grant = store.try_lock(key, lease).await.unwrap().unwrap();
        store.unlock(&grant).await.unwrap();
        samples.push(started.elapsed());
    }
    samples
}

/// The baseline's connection, set up as latchkey sets up its own: RESP3 (so it could carry
/// subscriptions too), the same timeouts and retries, a push handler.
pub(crate) async fn connection(redis: &RedisServer) -> ConnectionManager {
    connection_to(&redis.url()).await
}

/// [`connection`] to the Redis at `url`.
pub(crate) async fn connection_to(url: &str) -> ConnectionManager {
    let url = format!("{url}?protocol=resp3");
    let client = redis::Client::open(url).unwrap();
    let timeout = Some(Duration::from_secs(2));
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_number_of_retries(1)
        .set_automatic_resubscription()
        .set_push_sender(|_: redis::PushInfo| Ok::<(), std::convert::Infallible>(()));
    ConnectionManager::new_with_config(client, config)
        .await
        .unwrap()
}

/// A runtime on this thread alone, for the benchmarks that time a call against its
/// baseline (see [`b1`]).
pub(crate) fn single_threaded() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The header of a table of [`row`]s.
pub(crate) fn pairs_table() {
    println!(
        "| store | guest p50 | guest p99 | baseline | base p50 | base p99 | ratio p50 | ratio p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
}

pub(crate) fn row(store: &str, guest: &Stats, baseline: &str, base: &Stats) {
    println!(
        "| {store} | {} | {} | {baseline} | {} | {} | {:.2} | {:.2} |",
        us(guest.p50),
        us(guest.p99),
        us(base.p50),
        us(base.p99),
        ratio(guest.p50, base.p50),
        ratio(guest.p99, base.p99)
    );
}

/// The round trip of a `PING` by redis-rs, printed.
pub(crate) async fn round_trip(conn: &ConnectionManager) -> Stats {
    let rtt = timed(2000, || {
        let mut ping = conn.clone();
        async move {
            let () = redis::cmd("PING").query_async(&mut ping).await.unwrap();
        }
    })
    .await;
    println!(
        "Round trip (PING by redis-rs): p50 {}, p99 {}\n",
        us(rtt.p50),
        us(rtt.p99)
    );
    rtt
}
