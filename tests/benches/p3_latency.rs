//! `p3-latency` (P10): B1's pairs from an async WASI 0.3 guest, beside raw redis-rs and
//! beside the 0.2 guest.

use std::time::Duration;

use harness::{RedisServer, redis_store};
use latchkey_host::LockStore;

use crate::setup::{
    Stats, connection, direct_pairs, guest_pairs, p3_guest_pairs, pairs_table, raw_pairs, row,
    single_threaded, us,
};

/// P10: B1's pairs from an async WASI 0.3 guest (`latchkey:lock@0.3.0`), beside raw
/// redis-rs and beside the same pairs from the 0.2 guest. Single-threaded, ABBA, as B1.
pub(crate) fn p10(redis: &RedisServer) {
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
