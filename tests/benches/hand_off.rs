//! `hand-off` (B3): one id, many waiters: unlock-to-next-grant time, and fairness.

use std::time::Duration;

use harness::{RedisServer, redis_store, run};
use latchkey_host::LockStore;
use redis::aio::ConnectionManager;

use crate::setup::{Stats, app, round_trip, us};

pub(crate) async fn b3(redis: &RedisServer, conn: &ConnectionManager) {
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
pub(crate) fn hand_off_table() {
    println!(
        "| store | grants | hand-off p50 | hand-off p99 | p50 - RTT | grants per waiter min / max |"
    );
    println!("|---|---|---|---|---|---|");
}

/// What waiters taking one id in turn saw: see [`hand_offs`].
pub(crate) struct HandOffs {
    /// Every grant, as (acquired, unlocking) in Unix-epoch ns.
    grants: Vec<(u128, u128)>,
    /// How many grants each waiter had.
    per_waiter: Vec<usize>,
}

/// Runs `waiters` bench guests with `args` (a `handoff`) on `store` at once; their grants.
pub(crate) async fn hand_offs(store: &LockStore, waiters: usize, args: &[&str]) -> HandOffs {
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
    pub(crate) fn row(&self, kind: &str, rtt: Duration) {
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
