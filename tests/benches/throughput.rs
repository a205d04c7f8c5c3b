//! `throughput` (B2): 1 to 512 concurrent guest instances on distinct ids.

use std::time::{Duration, Instant};

use harness::{RedisServer, redis_store};
use latchkey_host::LockStore;
use redis::aio::ConnectionManager;

use crate::setup::{direct_pairs, guest_pairs, raw_pairs};

pub(crate) async fn b2(redis: &RedisServer, conn: &ConnectionManager) {
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
