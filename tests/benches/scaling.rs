//! `scaling` (B5): 1, 2 and 4 host processes (this program, re-run as workers) on one
//! Redis, against Redis' own ceiling for the same scripts (`redis-benchmark`, pipelined).

use std::time::{Duration, Instant};

use harness::{RedisServer, redis_store};
use redis::aio::ConnectionManager;

use crate::setup::{ACQUIRE, FENCE_TTL_MS, RELEASE, guest_pairs};

/// Instances per host process in B5, and pairs per instance.
pub(crate) const B5_INSTANCES: usize = 64;

pub(crate) const B5_PAIRS: usize = 400;

/// A B5 worker: one host process running `B5_INSTANCES` guests against the Redis at `url`.
pub(crate) async fn b5_worker(url: &str) {
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

pub(crate) async fn b5(redis: &RedisServer, conn: &ConnectionManager) {
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

/// Pairs per second Redis itself sustains for the acquire and release scripts, from
/// `redis-benchmark` runs of each: one pair costs one of each.
pub(crate) async fn redis_ceiling(redis: &RedisServer, conn: &ConnectionManager) -> f64 {
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
