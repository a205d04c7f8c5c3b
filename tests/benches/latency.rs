//! `latency` (B1): try-lock + unlock from inside one guest, uncontended, against raw
//! redis-rs running the same scripts and the store called from Rust without Wasm.

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{RedisServer, redis_store};
use latchkey_host::LockStore;
use latchkey_host::backend::{BackendResult, Intercepted, Interceptor, Step, StepCall};

use crate::setup::{
    Stats, connection, direct_pairs, guest_pairs, pairs_table, raw_pairs, row, single_threaded,
};

/// Answers every acquire and release of a memory store from another thread, ~70 µs later:
/// a store as far away as Redis, but with nothing of Redis or redis-rs in the path. B1 runs
/// it to tell the cost of the guest waiting on *something* from the cost of it waiting on
/// Redis.
pub(crate) struct Hop {
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

/// B1 runs on a single-threaded runtime of its own, with its own connections: the reply
/// to a call then wakes the thread that waits for it, with no hand-over between threads,
/// whose cost on this VM swings between runs and would drown the difference measured.
pub(crate) fn b1(redis: &RedisServer) {
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
