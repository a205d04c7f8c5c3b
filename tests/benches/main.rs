//! latchkey's benchmarks: `cargo bench -p latchkey-tests [-- NAME...]` (see BENCHMARKS.md).
//!
//! Every figure is printed beside a baseline measured in the same run, on the same
//! `redis-server` (started here on a free port) and the same kind of connection: the same
//! Lua scripts issued by raw redis-rs from Rust, or the store called from Rust without Wasm.
//! Each benchmark is named by what it measures; its B-number, as BENCHMARKS.md has it, names
//! it too (`-- latency` or `-- b1`).
//!
//! One file per benchmark, named by it; what they share is in `setup`:
//!
//! - `latency` (B1): try-lock + unlock from inside one guest, uncontended.
//! - `throughput` (B2): 1 to 512 concurrent guest instances on distinct ids.
//! - `hand_off` (B3): one id, many waiters: unlock-to-next-grant time, and fairness.
//! - `per_invocation` (B4): instantiate → open → lock → unlock → drop, and instantiation
//!   alone.
//! - `scaling` (B5): 1, 2 and 4 host processes (this program, re-run as workers) on one
//!   Redis, against Redis' own ceiling for the same scripts (`redis-benchmark`, pipelined).
//! - `serve` (B6, P11): `latchkey serve` under `wrk`, against `wasmtime serve`; P11 a WASI
//!   0.3 handler with instance reuse, with a lock, and against a fresh instance per request.
//! - `proxy_handler` (`proxy-handler`): a WASI 0.2 proxy through wasmtime-wasi-http's
//!   `ProxyHandler` with a reuse count of 1, as `wasmtime serve` 48 serves one, against
//!   `fresh.rs`, both in this process.
//! - `metrics_overhead` (`metrics`): latency and throughput with a metrics recorder
//!   installed against none, in the same run.
//! - `languages` (B7): Python and JavaScript guests beside the Rust guest (needs `make
//!   polyglot-guests`).
//! - `keep_alive` (B8): 10,000 locks kept alive with 3 s leases on one host, against the
//!   floor of one compare-and-expire per lock per lease-third.
//! - `p3_latency` (P10): B1's pairs from an async WASI 0.3 guest, beside raw redis-rs and
//!   beside the 0.2 guest.
//! - `coordination` (B9): a permit's acquire + release from a guest against the same
//!   scripts by raw redis-rs; a permit's hand-off between waiters; a leader's failover
//!   after its host is killed.
//! - `dapr` (B11): try-lock + unlock through `latchkey dapr`, over gRPC and HTTP, against
//!   a guest's pair.
//! - `anatomy` (`latency-anatomy`, `b1-anatomy`), only when named: B1's pairs cut into the
//!   stretches of each store call.
//! - `cost_model` (`cost-model`), only when named: instructions per request of `latchkey
//!   serve` and `wasmtime serve` under callgrind, with the functions that differ.

mod anatomy;
mod coordination;
mod cost_model;
mod dapr;
mod hand_off;
mod keep_alive;
mod languages;
mod latency;
mod metrics_overhead;
mod p3_latency;
mod per_invocation;
mod proxy_handler;
mod scaling;
mod serve;
mod setup;
mod throughput;

use harness::RedisServer;

/// Each benchmark's B-number, the name BENCHMARKS.md's tables and older commands use.
const ALIASES: [(&str, &str); 13] = [
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
    ("dapr", "b11"),
];

fn main() {
    metrics_overhead::RecorderSwitch::install();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(url) = std::env::var("LATCHKEY_BENCH_WORKER") {
        runtime.block_on(scaling::b5_worker(&url));
        return;
    }
    if let Ok(spec) = std::env::var(cost_model::PAIRS_WORKER) {
        // Single-threaded, as B1 and P10 time their pairs.
        setup::single_threaded().block_on(cost_model::pairs_worker(&spec));
        return;
    }
    runtime.block_on(async {
        let redis = RedisServer::start();
        let conn = setup::connection(&redis).await;
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
            tokio::task::block_in_place(|| latency::b1(&redis));
        }
        // A diagnosis, not a benchmark: only when asked for.
        if named("latency-anatomy") {
            tokio::task::block_in_place(|| anatomy::b1_anatomy(&redis));
        }
        // Minutes under valgrind: only when asked for.
        if named("cost-model") {
            tokio::task::block_in_place(|| cost_model::cost_model(&redis));
            tokio::task::block_in_place(|| cost_model::pairs(&redis));
        }
        if wanted("throughput") {
            throughput::b2(&redis, &conn).await;
        }
        if wanted("metrics") {
            tokio::task::block_in_place(|| metrics_overhead::metrics_overhead(&redis));
        }
        if wanted("hand-off") {
            hand_off::b3(&redis, &conn).await;
        }
        if wanted("per-invocation") {
            per_invocation::b4(&redis).await;
        }
        if wanted("scaling") {
            scaling::b5(&redis, &conn).await;
        }
        if wanted("languages") {
            tokio::task::block_in_place(|| languages::b7(&redis));
        }
        if wanted("keep-alive") {
            keep_alive::b8(&redis).await;
        }
        if wanted("dapr") {
            tokio::task::block_in_place(|| dapr::b11(&redis));
        }
        if wanted("p3-latency") {
            tokio::task::block_in_place(|| p3_latency::p10(&redis));
        }
        if wanted("serve") {
            let mut pairs = Vec::new();
            for connections in serve::CONCURRENCY {
                pairs.push((
                    connections,
                    setup::raw_pair_p50_at(&conn, connections).await,
                ));
            }
            tokio::task::block_in_place(|| serve::b6(&redis, &pairs));
        }
        if wanted("proxy-handler") {
            tokio::task::block_in_place(|| proxy_handler::proxy_handler(&serve::CONCURRENCY));
        }
        if wanted("p3-serve") {
            tokio::task::block_in_place(serve::p11);
        }
        if wanted("coordination") {
            tokio::task::block_in_place(|| coordination::b9(&redis));
            coordination::b9_hand_off(&redis, &conn).await;
            tokio::task::block_in_place(|| coordination::b9_failover(&redis));
        }
    });
}
