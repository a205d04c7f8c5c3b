//! `per-invocation` (B4): instantiate → open → lock → unlock → drop, and instantiation
//! alone.

use std::time::{Duration, Instant};

use harness::{RedisServer, redis_store};
use latchkey_host::{LockStore, Runner};
use wasmtime_wasi::WasiCtxBuilder;

use crate::setup::{Stats, app, timed, us};

pub(crate) async fn b4(redis: &RedisServer) {
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
