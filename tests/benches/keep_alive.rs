//! `keep-alive` (B8): 10,000 locks kept alive with 3 s leases on one host, against the
//! floor of one compare-and-expire per lock per lease-third.

use std::sync::Arc;
use std::time::Duration;

use harness::{RedisServer, redis_store};
use latchkey_host::LockStore;

/// B8: keep-alive at scale. 10,000 grants on one host are kept alive with 3 s leases;
/// after one lease of warm-up, 12 s are measured: renewals (`PEXPIRE`s run by the renewal
/// scripts) and round trips (script runs) per second from Redis' own command counts, Redis'
/// CPU from `INFO cpu`, and this process's CPU, which then does nothing but renew.
pub(crate) async fn b8(redis: &RedisServer) {
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

pub(crate) const B8_LEASE: Duration = Duration::from_secs(3);

pub(crate) const B8_WINDOW: Duration = Duration::from_secs(12);

/// Keeps `locks` locks alive on `store` (served by `redis`) and prints what renewing them
/// costs, as a row of B8.
pub(crate) async fn keep_alive_row(
    label: &str,
    store: &LockStore,
    redis: &RedisServer,
    locks: usize,
) {
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
pub(crate) struct RedisCounters {
    evalsha: u64,
    pexpire: u64,
    cpu: f64,
}

pub(crate) fn redis_counters(redis: &RedisServer) -> RedisCounters {
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
pub(crate) fn process_cpu() -> f64 {
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
