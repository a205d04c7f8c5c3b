//! latchkey's benchmarks: `cargo bench -p latchkey-tests [-- NAME...]` (see BENCHMARKS.md).
//!
//! Every figure is printed beside a baseline measured in the same run, on the same
//! `redis-server` (started here on a free port) and the same kind of connection: the same
//! Lua scripts issued by raw redis-rs from Rust, or the store called from Rust without Wasm.
//! Each benchmark is named by what it measures; its B-number, as BENCHMARKS.md has it, names
//! it too (`-- latency` or `-- b1`).
//!
//! - `latency` (B1): try-lock + unlock from inside one guest, uncontended.
//! - `throughput` (B2): 1 to 512 concurrent guest instances on distinct ids.
//! - `hand-off` (B3): one id, many waiters: unlock-to-next-grant time, and fairness.
//! - `per-invocation` (B4): instantiate → open → lock → unlock → drop, and instantiation
//!   alone.
//! - `scaling` (B5): 1, 2 and 4 host processes (this program, re-run as workers) on one
//!   Redis, against Redis' own ceiling for the same scripts (`redis-benchmark`, pipelined).
//! - `serve` (B6): `latchkey serve` under `wrk`, against `wasmtime serve` ([`serve_bench`]).
//! - `metrics`: latency and throughput with a metrics recorder installed against none, in
//!   the same run ([`RecorderSwitch`]).
//! - `languages` (B7): Python and JavaScript guests beside the Rust guest
//!   ([`languages_bench`]; needs `make polyglot-guests`).
//! - `keep-alive` (B8): 10,000 locks kept alive with 3 s leases on one host, against the
//!   floor of one compare-and-expire per lock per lease-third.
//! - `p3-latency` (P10): B1's pairs from an async WASI 0.3 guest, beside raw redis-rs and
//!   beside the 0.2 guest.
//! - `p3-serve` (P11): a WASI 0.3 handler under `latchkey serve` with instance reuse, against
//!   `wasmtime serve`; with a lock; and against a fresh instance per request
//!   ([`serve_bench`]).
//! - `coordination` (B9): a permit's acquire + release from a guest against the same
//!   scripts by raw redis-rs; a permit's hand-off between waiters; a leader's failover
//!   after its host is killed ([`coordination_bench`]).
//! - `latency-anatomy` (`b1-anatomy`), only when named: B1's pairs cut into the stretches
//!   of each store call ([`anatomy`]).

mod anatomy;
mod coordination_bench;
mod languages_bench;
mod serve_bench;

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{RedisServer, redis_store, run};
use latchkey_host::backend::{BackendResult, Intercepted, Interceptor, Step, StepCall};
use latchkey_host::key::LockKey;
use latchkey_host::{LockCtxBuilder, LockStore, Runner};
use redis::aio::ConnectionManager;
use wasmtime_wasi::WasiCtxBuilder;

/// latchkey's own acquire and release scripts, for the baselines that run them without it.
const ACQUIRE: &str = include_str!("../host/src/backend/redis/scripts/acquire.lua");
const RELEASE: &str = include_str!("../host/src/backend/redis/scripts/release.lua");

/// How long latchkey keeps a fence key after the last grant (a day), passed to `ACQUIRE`.
const FENCE_TTL_MS: u64 = 86_400_000;

/// Medians and tails of a set of durations.
struct Stats {
    p50: Duration,
    p99: Duration,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
        Stats {
            p50: at(50),
            p99: at(99),
        }
    }
}

/// Times `runs` calls of `call`, one after another.
async fn timed<F, Fut>(runs: usize, mut call: F) -> Stats
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

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_nanos() as f64 / 1000.0)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_nanos() as f64 / b.as_nanos() as f64
}

fn app(store: &LockStore) -> LockCtxBuilder {
    let mut app = LockCtxBuilder::new("bench");
    app.store(store.clone());
    app
}

/// Runs the bench guest `pairs` and reads back the latency of each pair.
async fn guest_pairs(store: &LockStore, count: usize, id: &str) -> Vec<Duration> {
    bench_pairs(store, &["pairs", &count.to_string(), id]).await
}

/// Runs the bench guest with `args`, a `pairs` of some kind, and reads back the latency of
/// each pair, one per line in ns.
async fn bench_pairs(store: &LockStore, args: &[&str]) -> Vec<Duration> {
    let run = run(&app(store), "bench", args).await;
    run.stdout
        .lines()
        .map(|ns| Duration::from_nanos(ns.parse().unwrap()))
        .collect()
}

/// Runs `p3ctl`'s `pairs` — the same pairs from an async WASI 0.3 guest — and reads back the
/// latency of each pair.
async fn p3_guest_pairs(store: &LockStore, count: usize, id: &str) -> Vec<Duration> {
    let args = ["open", "lockstore", "pairs", &count.to_string(), id];
    let run = run(&app(store), "p3ctl", &args).await;
    // The first line says the store opened; each of the rest is one pair's ns.
    run.stdout
        .lines()
        .filter_map(|ns| ns.parse().ok())
        .map(Duration::from_nanos)
        .collect()
}

/// The baseline of B1 and B2: the same scripts, by raw redis-rs.
async fn raw_pairs(conn: &ConnectionManager, count: usize, id: &str) -> Vec<Duration> {
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
async fn raw_pair_p50_at(conn: &ConnectionManager, tasks: u32) -> Duration {
    let mut loops = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let conn = conn.clone();
        loops.spawn(async move { raw_pairs(&conn, 300, &format!("b6-pair-{task}")).await });
    }
    Stats::of(loops.join_all().await.concat()).p50
}

/// The baseline of B1 on memory: the store called from Rust, without Wasm.
async fn direct_pairs(store: &LockStore, count: usize, id: &str) -> Vec<Duration> {
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

/// Answers every acquire and release of a memory store from another thread, ~70 µs later:
/// a store as far away as Redis, but with nothing of Redis or redis-rs in the path. B1 runs
/// it to tell the cost of the guest waiting on *something* from the cost of it waiting on
/// Redis.
struct Hop {
    server: std::sync::Mutex<std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>>,
}

impl Hop {
    /// The memory store behind the hop.
    fn store() -> LockStore {
        let (requests, served) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
        std::thread::spawn(move || {
            for reply in served {
                // Spins, as a busy server would: a sleep would add the kernel's wake-up.
                let until = Instant::now() + Duration::from_micros(70);
                while Instant::now() < until {}
                let _ = reply.send(());
            }
        });
        let hop = Hop {
            server: std::sync::Mutex::new(requests),
        };
        let memory = LockStore::memory("lockstore").backend().clone();
        let backend = Arc::new(Intercepted::new(memory, hop));
        LockStore::new("lockstore", backend, Duration::from_secs(2))
    }
}

#[async_trait::async_trait]
impl Interceptor for Hop {
    async fn around<T: Send>(&self, step: Step, call: StepCall<'_, T>) -> BackendResult<T> {
        if matches!(step, Step::TryAcquire | Step::Release) {
            let (reply, answered) = tokio::sync::oneshot::channel();
            self.server.lock().unwrap().send(reply).unwrap();
            answered.await.unwrap();
        }
        call.await
    }
}

/// The baseline's connection, set up as latchkey sets up its own: RESP3 (so it could carry
/// subscriptions too), the same timeouts and retries, a push handler.
async fn connection(redis: &RedisServer) -> ConnectionManager {
    let url = format!("{}?protocol=resp3", redis.url());
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

/// B1 runs on a single-threaded runtime of its own, with its own connections: the reply
/// to a call then wakes the thread that waits for it, with no hand-over between threads,
/// whose cost on this VM swings between runs and would drown the difference measured.
fn b1(redis: &RedisServer) {
    const ROUNDS: usize = 10;
    const PAIRS: usize = 1000;
    println!(
        "\n## B1 latency: try-lock + unlock, one instance, uncontended \
         ({ROUNDS} interleaved rounds of {PAIRS} pairs each)\n"
    );
    pairs_table();
    let runtime = single_threaded();
    runtime.block_on(async {
        let conn = connection(redis).await;
        let redis_store = redis_store(&redis.url(), Duration::from_secs(2));
        let memory = LockStore::memory("lockstore");
        let hop = Hop::store();
        guest_pairs(&redis_store, 500, "warm").await;
        raw_pairs(&conn, 500, "warm").await;
        guest_pairs(&memory, 500, "warm").await;
        guest_pairs(&hop, 500, "warm").await;
        // Guest and baseline take turns, in an order that flips every round (ABBA): on this
        // VM a round trip's cost depends on what ran just before (idle cores wake slowly),
        // and a fixed order would hand that bias to one side.
        let (mut guest, mut raw, mut guest_memory, mut direct) = (vec![], vec![], vec![], vec![]);
        let (mut host, mut guest_hop, mut direct_hop) = (vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                guest.extend(guest_pairs(&redis_store, PAIRS, "b1").await);
                raw.extend(raw_pairs(&conn, PAIRS, "b1").await);
                host.extend(direct_pairs(&redis_store, PAIRS, "b1").await);
            } else {
                host.extend(direct_pairs(&redis_store, PAIRS, "b1").await);
                raw.extend(raw_pairs(&conn, PAIRS, "b1").await);
                guest.extend(guest_pairs(&redis_store, PAIRS, "b1").await);
            }
            guest_memory.extend(guest_pairs(&memory, PAIRS, "b1").await);
            direct.extend(direct_pairs(&memory, PAIRS, "b1").await);
        }
        // Apart, since a busy hop thread speeds up whatever follows it.
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                guest_hop.extend(guest_pairs(&hop, PAIRS, "b1").await);
                direct_hop.extend(direct_pairs(&hop, PAIRS, "b1").await);
            } else {
                direct_hop.extend(direct_pairs(&hop, PAIRS, "b1").await);
                guest_hop.extend(guest_pairs(&hop, PAIRS, "b1").await);
            }
        }
        let raw = Stats::of(raw);
        row("redis", &Stats::of(guest), "redis-rs scripts", &raw);
        // The same pairs through the host library without Wasm: how the overhead splits.
        row(
            "redis, host library from Rust",
            &Stats::of(host),
            "redis-rs scripts",
            &raw,
        );
        row(
            "memory",
            &Stats::of(guest_memory),
            "LockStore from Rust",
            &Stats::of(direct),
        );
        // Waiting ~70 µs on another thread instead of on Redis: what waiting itself costs.
        row(
            "memory behind a 70 µs thread hop",
            &Stats::of(guest_hop),
            "LockStore from Rust",
            &Stats::of(direct_hop),
        );
    });
}

/// P10: B1's pairs from an async WASI 0.3 guest (`latchkey:lock@0.3.0`), beside raw
/// redis-rs and beside the same pairs from the 0.2 guest. Single-threaded, ABBA, as B1.
fn p10(redis: &RedisServer) {
    const ROUNDS: usize = 10;
    const PAIRS: usize = 1000;
    println!(
        "\n## P10 latency from a WASI 0.3 guest: try-lock + unlock, one task, uncontended \
         ({ROUNDS} interleaved rounds of {PAIRS} pairs each)\n"
    );
    pairs_table();
    let runtime = single_threaded();
    runtime.block_on(async {
        let conn = connection(redis).await;
        let redis_store = redis_store(&redis.url(), Duration::from_secs(2));
        let memory = LockStore::memory("lockstore");
        p3_guest_pairs(&redis_store, 500, "warm").await;
        guest_pairs(&redis_store, 500, "warm").await;
        raw_pairs(&conn, 500, "warm").await;
        p3_guest_pairs(&memory, 500, "warm").await;
        guest_pairs(&memory, 500, "warm").await;
        let (mut p3, mut p2, mut raw) = (vec![], vec![], vec![]);
        let (mut p3_memory, mut p2_memory, mut direct) = (vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                p3.extend(p3_guest_pairs(&redis_store, PAIRS, "p10").await);
                raw.extend(raw_pairs(&conn, PAIRS, "p10").await);
                p2.extend(guest_pairs(&redis_store, PAIRS, "p10").await);
                p3_memory.extend(p3_guest_pairs(&memory, PAIRS, "p10").await);
                p2_memory.extend(guest_pairs(&memory, PAIRS, "p10").await);
                direct.extend(direct_pairs(&memory, PAIRS, "p10").await);
            } else {
                p2.extend(guest_pairs(&redis_store, PAIRS, "p10").await);
                raw.extend(raw_pairs(&conn, PAIRS, "p10").await);
                p3.extend(p3_guest_pairs(&redis_store, PAIRS, "p10").await);
                direct.extend(direct_pairs(&memory, PAIRS, "p10").await);
                p2_memory.extend(guest_pairs(&memory, PAIRS, "p10").await);
                p3_memory.extend(p3_guest_pairs(&memory, PAIRS, "p10").await);
            }
        }
        let raw = Stats::of(raw);
        let (p3_memory, p2_memory) = (Stats::of(p3_memory), Stats::of(p2_memory));
        let direct = Stats::of(direct);
        row("redis, 0.3 guest", &Stats::of(p3), "redis-rs scripts", &raw);
        row("redis, 0.2 guest", &Stats::of(p2), "redis-rs scripts", &raw);
        row(
            "memory, 0.3 guest",
            &p3_memory,
            "memory, 0.2 guest",
            &p2_memory,
        );
        row(
            "memory, 0.3 guest",
            &p3_memory,
            "LockStore from Rust",
            &direct,
        );
        row(
            "memory, 0.2 guest",
            &p2_memory,
            "LockStore from Rust",
            &direct,
        );
        // What one call across the boundary costs, beyond the store's own work: half of
        // a pair's p50 over the same pair from Rust.
        let per_call = |guest: &Stats| us(guest.p50.saturating_sub(direct.p50) / 2);
        println!(
            "\nPer call over Rust, memory store (p50): 0.3 {}, 0.2 {}",
            per_call(&p3_memory),
            per_call(&p2_memory)
        );
    });
}

/// A runtime on this thread alone, for the benchmarks that time a call against its
/// baseline (see [`b1`]).
fn single_threaded() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The header of a table of [`row`]s.
fn pairs_table() {
    println!(
        "| store | guest p50 | guest p99 | baseline | base p50 | base p99 | ratio p50 | ratio p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
}

fn row(store: &str, guest: &Stats, baseline: &str, base: &Stats) {
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

async fn b2(redis: &RedisServer, conn: &ConnectionManager) {
    const TOTAL: usize = 40_000;
    println!("\n## B2 throughput: concurrent instances on distinct ids ({TOTAL} pairs per row)\n");
    println!("| store | instances | guest pairs/s | baseline pairs/s | ratio |");
    println!("|---|---|---|---|---|");
    let store = redis_store(&redis.url(), Duration::from_secs(5));
    for store_kind in ["redis", "memory"] {
        let store = if store_kind == "redis" {
            store.clone()
        } else {
            LockStore::memory("lockstore")
        };
        for instances in [1usize, 8, 64, 512] {
            let per = TOTAL / instances;
            let started = Instant::now();
            let tasks: Vec<_> = (0..instances)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move { guest_pairs(&store, per, &format!("b2-{i}")).await })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            let guest = (per * instances) as f64 / started.elapsed().as_secs_f64();

            let started = Instant::now();
            let tasks: Vec<_> = (0..instances)
                .map(|i| {
                    let (conn, store) = (conn.clone(), store.clone());
                    let kind = store_kind;
                    tokio::spawn(async move {
                        if kind == "redis" {
                            raw_pairs(&conn, per, &format!("b2-{i}")).await;
                        } else {
                            direct_pairs(&store, per, &format!("b2-{i}")).await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            let base = (per * instances) as f64 / started.elapsed().as_secs_f64();
            println!(
                "| {store_kind} | {instances} | {guest:.0} | {base:.0} | {:.2} |",
                guest / base
            );
        }
    }
}

async fn b3(redis: &RedisServer, conn: &ConnectionManager) {
    const WAITERS: usize = 8;
    const RUN_MS: u64 = 5000;
    println!(
        "\n## B3 hand-off: {WAITERS} instances taking one id in turn for {} s\n",
        RUN_MS / 1000
    );
    let rtt = round_trip(conn).await;
    hand_off_table();
    for (kind, store) in [
        ("redis", redis_store(&redis.url(), Duration::from_secs(5))),
        ("memory", LockStore::memory("lockstore")),
    ] {
        let args = ["handoff", &RUN_MS.to_string(), "b3"];
        let handed = hand_offs(&store, WAITERS, &args).await;
        handed.row(kind, rtt.p50);
    }
}

/// The header of a table of [`HandOffs::row`]s.
fn hand_off_table() {
    println!(
        "| store | grants | hand-off p50 | hand-off p99 | p50 - RTT | grants per waiter min / max |"
    );
    println!("|---|---|---|---|---|---|");
}

/// What waiters taking one id in turn saw: see [`hand_offs`].
struct HandOffs {
    /// Every grant, as (acquired, unlocking) in Unix-epoch ns.
    grants: Vec<(u128, u128)>,
    /// How many grants each waiter had.
    per_waiter: Vec<usize>,
}

/// Runs `waiters` bench guests with `args` (a `handoff`) on `store` at once; their grants.
async fn hand_offs(store: &LockStore, waiters: usize, args: &[&str]) -> HandOffs {
    let tasks: Vec<_> = (0..waiters)
        .map(|_| {
            let store = store.clone();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            tokio::spawn(async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run(&app(&store), "bench", &args).await
            })
        })
        .collect();
    let mut grants: Vec<(u128, u128)> = Vec::new();
    let mut per_waiter = Vec::new();
    for task in tasks {
        let out = task.await.unwrap();
        let mine: Vec<(u128, u128)> = out
            .stdout
            .lines()
            .map(|l| {
                let f: Vec<u128> = l
                    .split_whitespace()
                    .skip(1)
                    .map(|f| f.parse().unwrap())
                    .collect();
                (f[0], f[1])
            })
            .collect();
        per_waiter.push(mine.len());
        grants.extend(mine);
    }
    grants.sort_unstable();
    HandOffs { grants, per_waiter }
}

impl HandOffs {
    /// A row of B3's table: the time from one grant's unlock to the next grant, against
    /// the round trip `rtt`.
    fn row(&self, kind: &str, rtt: Duration) {
        let handoffs: Vec<Duration> = self
            .grants
            .windows(2)
            .map(|w| Duration::from_nanos(w[1].0.saturating_sub(w[0].1) as u64))
            .collect();
        let stats = Stats::of(handoffs);
        let over = stats.p50.as_nanos() as f64 / 1000.0 - rtt.as_nanos() as f64 / 1000.0;
        println!(
            "| {kind} | {} | {} | {} | {over:.1} µs | {} / {} |",
            self.grants.len(),
            us(stats.p50),
            us(stats.p99),
            self.per_waiter.iter().min().unwrap(),
            self.per_waiter.iter().max().unwrap()
        );
    }
}

/// The round trip of a `PING` by redis-rs, printed.
async fn round_trip(conn: &ConnectionManager) -> Stats {
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

async fn b4(redis: &RedisServer) {
    const RUNS: usize = 300;
    println!("\n## B4 per-invocation: a short-lived guest ({RUNS} runs)\n");
    println!("| what | p50 | p99 |");
    println!("|---|---|---|");
    let runner = Runner::new().unwrap();
    let program = runner.load(&harness::guest("bench")).unwrap();
    let memory = LockStore::memory("lockstore");
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let wasi = WasiCtxBuilder::new().arg("bench").build();
        let (mut store, _command) = runner
            .instantiate(&program, wasi, app(&memory).build())
            .await
            .unwrap();
        samples.push(started.elapsed());
        store.data_mut().locks_mut().release_all().await;
    }
    let s = Stats::of(samples);
    println!("| instantiation alone | {} | {} |", us(s.p50), us(s.p99));
    for (kind, store) in [
        ("memory", memory.clone()),
        ("redis", redis_store(&redis.url(), Duration::from_secs(2))),
    ] {
        let s = timed(RUNS, || async {
            let wasi = WasiCtxBuilder::new().args(&["bench", "once"]).build();
            let exit = runner
                .run(&program, wasi, app(&store).build(), Default::default())
                .await;
            assert!(matches!(exit, latchkey_host::Exit::Status(0)), "{exit:?}");
        })
        .await;
        println!(
            "| instantiate → open → lock → unlock → drop, {kind} | {} | {} |",
            us(s.p50),
            us(s.p99)
        );
    }
}

/// Instances per host process in B5, and pairs per instance.
const B5_INSTANCES: usize = 64;
const B5_PAIRS: usize = 400;

/// A B5 worker: one host process running `B5_INSTANCES` guests against the Redis at `url`.
async fn b5_worker(url: &str) {
    let store = redis_store(url, Duration::from_secs(5));
    let tasks: Vec<_> = (0..B5_INSTANCES)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { guest_pairs(&store, B5_PAIRS, "b5-*").await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn b5(redis: &RedisServer, conn: &ConnectionManager) {
    println!(
        "\n## B5 scaling: host processes on one Redis ({B5_INSTANCES} instances × {B5_PAIRS} pairs each)\n"
    );
    let ceiling = redis_ceiling(redis, conn).await;
    println!(
        "Redis' ceiling for these scripts (redis-benchmark, 64 clients, pipeline 16): {ceiling:.0} pairs/s\n"
    );
    println!("| host processes | pairs/s | of the ceiling |");
    println!("|---|---|---|");
    let exe = std::env::current_exe().unwrap();
    for processes in [1, 2, 4] {
        let started = Instant::now();
        let children: Vec<_> = (0..processes)
            .map(|_| {
                std::process::Command::new(&exe)
                    .env("LATCHKEY_BENCH_WORKER", redis.url())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        let rate = (processes * B5_INSTANCES * B5_PAIRS) as f64 / started.elapsed().as_secs_f64();
        println!("| {processes} | {rate:.0} | {:.2} |", rate / ceiling);
    }
}

/// B8: keep-alive at scale. 10,000 grants on one host are kept alive with 3 s leases;
/// after one lease of warm-up, 12 s are measured: renewals (`PEXPIRE`s run by the renewal
/// scripts) and round trips (script runs) per second from Redis' own command counts, Redis'
/// CPU from `INFO cpu`, and this process's CPU, which then does nothing but renew.
async fn b8(redis: &RedisServer) {
    const LOCKS: usize = 10_000;
    println!(
        "\n## B8 keep-alive: {LOCKS} locks kept alive with {} s leases, {} s measured\n",
        B8_LEASE.as_secs(),
        B8_WINDOW.as_secs()
    );
    println!(
        "| store | renewals/s | against the floor | round trips/s | renewals per round trip \
         | Redis CPU | host CPU (renewing only) | grants lost |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let store = redis_store(&redis.url(), Duration::from_secs(2));
    keep_alive_row("one server", &store, redis, LOCKS).await;
    // Every renewal batch then waits for the replica, as grants do.
    let primary = RedisServer::start();
    let _replica = primary.start_replica();
    let mut settings = latchkey_host::StoreSettings::new(primary.url());
    settings.wait_replicas = 1;
    let replicated = latchkey_host::open("lockstore", &settings).unwrap();
    keep_alive_row(
        "primary + replica, wait-replicas 1",
        &replicated,
        &primary,
        LOCKS,
    )
    .await;
}

const B8_LEASE: Duration = Duration::from_secs(3);
const B8_WINDOW: Duration = Duration::from_secs(12);

/// Keeps `locks` locks alive on `store` (served by `redis`) and prints what renewing them
/// costs, as a row of B8.
async fn keep_alive_row(label: &str, store: &LockStore, redis: &RedisServer, locks: usize) {
    let mut grants = Vec::with_capacity(locks);
    for chunk in (0..locks).collect::<Vec<_>>().chunks(500) {
        let taken = futures_util::future::join_all(chunk.iter().map(|i| {
            let key = store.key("b8", &format!("lock-{i}"));
            store.try_lock(key, B8_LEASE)
        }))
        .await;
        for grant in taken {
            let grant = Arc::new(grant.unwrap().expect("a free lock"));
            store.keep_alive(&grant, Duration::from_secs(3600));
            grants.push(grant);
        }
    }
    tokio::time::sleep(B8_LEASE).await;
    let before = (redis_counters(redis), process_cpu());
    tokio::time::sleep(B8_WINDOW).await;
    let after = (redis_counters(redis), process_cpu());
    let seconds = B8_WINDOW.as_secs_f64();
    let renewals = (after.0.pexpire - before.0.pexpire) as f64 / seconds;
    let round_trips = (after.0.evalsha - before.0.evalsha) as f64 / seconds;
    let redis_cpu = (after.0.cpu - before.0.cpu) / seconds;
    let host_cpu = (after.1 - before.1) / seconds;
    let floor = locks as f64 / (B8_LEASE.as_secs_f64() / 3.0);
    let lost = grants.iter().filter(|grant| grant.is_lost()).count();
    println!(
        "| {label} | {renewals:.0} | {:.2}× of {floor:.0}/s | {round_trips:.1} | {:.0} \
         | {:.1} % of a core | {:.2} % of a core | {lost} of {locks} |",
        renewals / floor,
        renewals / round_trips,
        redis_cpu * 100.0,
        host_cpu * 100.0,
    );
    for grant in &grants {
        let _ = store.unlock(grant).await;
    }
}

/// What Redis has counted so far: script runs, `PEXPIRE`s, and its CPU seconds.
struct RedisCounters {
    evalsha: u64,
    pexpire: u64,
    cpu: f64,
}

fn redis_counters(redis: &RedisServer) -> RedisCounters {
    let calls = |command: &str| redis.calls(command);
    let cpu_info: String = redis.cmd(&["INFO", "cpu"]);
    let seconds = |field: &str| -> f64 {
        cpu_info
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    };
    RedisCounters {
        evalsha: calls("evalsha"),
        pexpire: calls("pexpire"),
        cpu: seconds("used_cpu_user") + seconds("used_cpu_sys"),
    }
}

/// This process's CPU time so far, in seconds (`/proc/self/stat`, in clock ticks of 10 ms).
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Pairs per second Redis itself sustains for the acquire and release scripts, from
/// `redis-benchmark` runs of each: one pair costs one of each.
async fn redis_ceiling(redis: &RedisServer, conn: &ConnectionManager) -> f64 {
    let mut conn = conn.clone();
    let mut ceiling = 0.0;
    for (script, args) in [
        (
            ACQUIRE,
            &[
                "2",
                "lk:{__rand_int__}",
                "fk:{__rand_int__}",
                "tok",
                "10000",
                &FENCE_TTL_MS.to_string(),
            ][..],
        ),
        (RELEASE, &["1", "lk:{__rand_int__}", "tok", "ch"][..]),
    ] {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script)
            .query_async(&mut conn)
            .await
            .unwrap();
        let out = std::process::Command::new("redis-benchmark")
            .args([
                "-p",
                &redis.port().to_string(),
                "-c",
                "64",
                "-P",
                "16",
                "-n",
                "400000",
            ])
            .args(["-r", "1000000", "--csv", "EVALSHA", &sha])
            .args(args)
            .output()
            .expect("redis-benchmark runs (it comes with redis-server)");
        let csv = String::from_utf8(out.stdout).unwrap();
        // A header line, then "test","rps",...
        let line = csv.lines().nth(1).expect("a result line");
        let rps: f64 = line
            .split(',')
            .nth(1)
            .unwrap()
            .trim_matches('"')
            .parse()
            .unwrap();
        ceiling += 1.0 / rps;
    }
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    1.0 / ceiling
}

/// The global metrics recorder of this program: Prometheus' when on, none in effect when
/// off. A global recorder is installed once per process, so B1 and B2 switch it to compare
/// the two in one run.
struct RecorderSwitch {
    on: std::sync::atomic::AtomicBool,
    prometheus: metrics_exporter_prometheus::PrometheusRecorder,
}

static RECORDER: std::sync::OnceLock<&'static RecorderSwitch> = std::sync::OnceLock::new();

impl RecorderSwitch {
    fn install() {
        let switch: &'static RecorderSwitch = Box::leak(Box::new(RecorderSwitch {
            on: false.into(),
            prometheus: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
        }));
        metrics::set_global_recorder(switch).expect("the only recorder");
        RECORDER.set(switch).ok();
    }

    fn set(on: bool) {
        RECORDER
            .get()
            .expect("installed")
            .on
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn on(&self) -> bool {
        self.on.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl metrics::Recorder for RecorderSwitch {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.prometheus.describe_counter(key, unit, text);
    }

    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.prometheus.describe_gauge(key, unit, text);
    }

    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.prometheus.describe_histogram(key, unit, text);
    }

    // The host keeps each handle from its first use, so every handle checks the switch.
    fn register_counter(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        let inner = self.prometheus.register_counter(key, meta);
        metrics::Counter::from_arc(std::sync::Arc::new(Switched(inner)))
    }

    fn register_gauge(&self, key: &metrics::Key, meta: &metrics::Metadata<'_>) -> metrics::Gauge {
        let inner = self.prometheus.register_gauge(key, meta);
        metrics::Gauge::from_arc(std::sync::Arc::new(Switched(inner)))
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        let inner = self.prometheus.register_histogram(key, meta);
        metrics::Histogram::from_arc(std::sync::Arc::new(Switched(inner)))
    }
}

/// A handle that records only while the switch is on.
struct Switched<T>(T);

fn switched_on() -> bool {
    RECORDER.get().is_some_and(|switch| switch.on())
}

impl metrics::CounterFn for Switched<metrics::Counter> {
    fn increment(&self, value: u64) {
        if switched_on() {
            self.0.increment(value);
        }
    }

    fn absolute(&self, value: u64) {
        if switched_on() {
            self.0.absolute(value);
        }
    }
}

impl metrics::GaugeFn for Switched<metrics::Gauge> {
    fn increment(&self, value: f64) {
        if switched_on() {
            self.0.increment(value);
        }
    }

    fn decrement(&self, value: f64) {
        if switched_on() {
            self.0.decrement(value);
        }
    }

    fn set(&self, value: f64) {
        if switched_on() {
            self.0.set(value);
        }
    }
}

impl metrics::HistogramFn for Switched<metrics::Histogram> {
    fn record(&self, value: f64) {
        if switched_on() {
            self.0.record(value);
        }
    }
}

/// B1 and B2 with the metrics recorder on against off, taking turns (ABBA) in one run.
fn metrics_overhead(redis: &RedisServer) {
    const ROUNDS: usize = 10;
    const PAIRS: usize = 1000;
    const INSTANCES: usize = 64;
    println!(
        "\n## Metrics overhead: B1 and B2 with a Prometheus recorder installed against none \
         ({ROUNDS} interleaved rounds)\n"
    );
    let runtime = single_threaded();
    let (off, on) = runtime.block_on(async {
        let store = redis_store(&redis.url(), Duration::from_secs(2));
        guest_pairs(&store, 500, "warm").await;
        let (mut off, mut on) = (vec![], vec![]);
        for round in 0..ROUNDS {
            for recording in if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            } {
                RecorderSwitch::set(recording);
                let pairs = guest_pairs(&store, PAIRS, "metrics").await;
                if recording {
                    on.extend(pairs)
                } else {
                    off.extend(pairs)
                }
            }
        }
        (Stats::of(off), Stats::of(on))
    });
    drop(runtime);
    println!("| run | recorder p50 | none p50 | ratio p50 | recorder p99 | none p99 |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| B1 redis, one guest | {} | {} | {:.3} | {} | {} |",
        us(on.p50),
        us(off.p50),
        ratio(on.p50, off.p50),
        us(on.p99),
        us(off.p99)
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (off, on) = runtime.block_on(async {
        let store = redis_store(&redis.url(), Duration::from_secs(5));
        let (mut off, mut on) = (0.0, 0.0);
        for round in 0..ROUNDS {
            for recording in if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            } {
                RecorderSwitch::set(recording);
                let per = 40_000 / INSTANCES / ROUNDS * 2;
                let started = Instant::now();
                let tasks: Vec<_> = (0..INSTANCES)
                    .map(|i| {
                        let store = store.clone();
                        tokio::spawn(
                            async move { guest_pairs(&store, per, &format!("m-{i}")).await },
                        )
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                let rate = (per * INSTANCES) as f64 / started.elapsed().as_secs_f64();
                if recording { on += rate } else { off += rate }
            }
        }
        (off / ROUNDS as f64, on / ROUNDS as f64)
    });
    RecorderSwitch::set(false);
    println!("\n| run | recorder pairs/s | none pairs/s | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| B2 redis, {INSTANCES} guests | {on:.0} | {off:.0} | {:.3} |",
        on / off
    );
}

/// Each benchmark's B-number, the name BENCHMARKS.md's tables and older commands use.
const ALIASES: [(&str, &str); 12] = [
    ("latency", "b1"),
    ("latency-anatomy", "b1-anatomy"),
    ("throughput", "b2"),
    ("hand-off", "b3"),
    ("per-invocation", "b4"),
    ("scaling", "b5"),
    ("serve", "b6"),
    ("languages", "b7"),
    ("keep-alive", "b8"),
    ("p3-latency", "p10"),
    ("p3-serve", "p11"),
    ("coordination", "b9"),
];

fn main() {
    RecorderSwitch::install();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(url) = std::env::var("LATCHKEY_BENCH_WORKER") {
        runtime.block_on(b5_worker(&url));
        return;
    }
    runtime.block_on(async {
        let redis = RedisServer::start();
        let conn = connection(&redis).await;
        println!("# latchkey benchmarks\n");
        println!(
            "redis-server on 127.0.0.1:{}, loopback TCP; {} cores",
            redis.port(),
            std::thread::available_parallelism().unwrap()
        );
        // `cargo bench -p latchkey-tests -- latency hand-off` (or `-- b1 b3`) runs only those.
        let chosen: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        let named = |name: &str| {
            let alias = ALIASES.iter().find(|(n, _)| *n == name).map(|(_, a)| *a);
            chosen
                .iter()
                .any(|c| c == name || Some(c.as_str()) == alias)
        };
        let wanted = |name: &str| chosen.is_empty() || named(name);
        if wanted("latency") {
            tokio::task::block_in_place(|| b1(&redis));
        }
        // A diagnosis, not a benchmark: only when asked for.
        if named("latency-anatomy") {
            tokio::task::block_in_place(|| anatomy::b1_anatomy(&redis));
        }
        if wanted("throughput") {
            b2(&redis, &conn).await;
        }
        if wanted("metrics") {
            tokio::task::block_in_place(|| metrics_overhead(&redis));
        }
        if wanted("hand-off") {
            b3(&redis, &conn).await;
        }
        if wanted("per-invocation") {
            b4(&redis).await;
        }
        if wanted("scaling") {
            b5(&redis, &conn).await;
        }
        if wanted("languages") {
            tokio::task::block_in_place(|| languages_bench::b7(&redis));
        }
        if wanted("keep-alive") {
            b8(&redis).await;
        }
        if wanted("p3-latency") {
            tokio::task::block_in_place(|| p10(&redis));
        }
        if wanted("serve") {
            let mut pairs = Vec::new();
            for connections in serve_bench::CONCURRENCY {
                pairs.push((connections, raw_pair_p50_at(&conn, connections).await));
            }
            tokio::task::block_in_place(|| serve_bench::b6(&redis, &pairs));
        }
        if wanted("p3-serve") {
            tokio::task::block_in_place(serve_bench::p11);
        }
        if wanted("coordination") {
            tokio::task::block_in_place(|| coordination_bench::b9(&redis));
            coordination_bench::b9_hand_off(&redis, &conn).await;
            tokio::task::block_in_place(|| coordination_bench::b9_failover(&redis));
        }
    });
}
