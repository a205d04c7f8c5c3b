//! `dapr` (B11): try-lock + unlock through `latchkey dapr` — gRPC from a tonic client and
//! HTTP from a keep-alive ureq client, both as a Dapr application's SDK would call it —
//! against the same two calls from inside a guest, on the same Redis, in the same run.

use std::time::{Duration, Instant};

use harness::dapr::DaprProcess;
use harness::dapr::proto::{TryLockRequest, UnlockRequest, dapr_client::DaprClient};
use harness::{RedisServer, redis_store};
use tonic::transport::Channel;

use crate::setup::{Stats, connection, guest_pairs, ratio, round_trip, single_threaded, us};

/// The goal: a gRPC pair at most this many times a guest's, p50.
const GOAL: f64 = 1.2;

pub(crate) fn b11(redis: &RedisServer) {
    const ROUNDS: usize = 6;
    const PAIRS: usize = 500;
    println!(
        "\n## B11 Dapr's lock API: try-lock + unlock through `latchkey dapr` against a guest's \
         ({ROUNDS} interleaved rounds of {PAIRS} pairs each)\n"
    );
    let store = format!("lockstore={}", redis.url());
    let endpoint = DaprProcess::start(&["--app-id", "bench", "--store", &store], &[]);
    let runtime = single_threaded();
    let guest_store = redis_store(&redis.url(), Duration::from_secs(2));
    let channel = runtime
        .block_on(
            Channel::from_shared(format!("http://127.0.0.1:{}", endpoint.grpc_port))
                .unwrap()
                .connect(),
        )
        .expect("the endpoint's gRPC port answers");
    let http = Http::new(&endpoint);
    // Each call of a Dapr client adds one loopback round trip to the guest's call: the
    // floor of a pair is the guest's pair and two of them.
    let rtt = runtime.block_on(async { round_trip(&connection(redis).await).await });

    runtime.block_on(guest_pairs(&guest_store, 200, "b11-warm"));
    runtime.block_on(grpc_pairs(&channel, 200));
    http.pairs(200);
    let (mut guest, mut grpc, mut over_http) = (vec![], vec![], vec![]);
    // Taking turns in an order that flips every round (ABBA), as B1 does.
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            guest.extend(runtime.block_on(guest_pairs(&guest_store, PAIRS, "b11")));
            grpc.extend(runtime.block_on(grpc_pairs(&channel, PAIRS)));
            over_http.extend(http.pairs(PAIRS));
        } else {
            over_http.extend(http.pairs(PAIRS));
            grpc.extend(runtime.block_on(grpc_pairs(&channel, PAIRS)));
            guest.extend(runtime.block_on(guest_pairs(&guest_store, PAIRS, "b11")));
        }
    }
    let guest = Stats::of(guest);
    println!("| client | p50 | p99 | guest p50 | guest p99 | ratio p50 | ratio p99 |");
    println!("|---|---|---|---|---|---|---|");
    for (client, stats) in [
        ("gRPC (tonic)", Stats::of(grpc)),
        ("HTTP/1.1 keep-alive (ureq)", Stats::of(over_http)),
    ] {
        println!(
            "| {client} | {} | {} | {} | {} | {:.2} | {:.2} |",
            us(stats.p50),
            us(stats.p99),
            us(guest.p50),
            us(guest.p99),
            ratio(stats.p50, guest.p50),
            ratio(stats.p99, guest.p99)
        );
    }
    let floor = guest.p50 + 2 * rtt.p50;
    println!(
        "\nfloor of a Dapr client's pair: the guest's and two round trips, p50 {} ({:.2}× the \
         guest's); goal: the gRPC pair ≤ {GOAL}× the guest's, p50",
        us(floor),
        ratio(floor, guest.p50)
    );
}

/// `count` pairs over gRPC, each timed from the TryLock's sending to the Unlock's answer.
async fn grpc_pairs(channel: &Channel, count: usize) -> Vec<Duration> {
    let mut client = DaprClient::new(channel.clone());
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let taken = client
            .try_lock_alpha1(TryLockRequest {
                store_name: "lockstore".into(),
                resource_id: "b11-grpc".into(),
                lock_owner: "bench".into(),
                expiry_in_seconds: 60,
            })
            .await
            .expect("TryLock answers");
        assert!(taken.into_inner().success, "the lock is free");
        let freed = client
            .unlock_alpha1(UnlockRequest {
                store_name: "lockstore".into(),
                resource_id: "b11-grpc".into(),
                lock_owner: "bench".into(),
            })
            .await
            .expect("Unlock answers");
        assert_eq!(freed.into_inner().status, 0);
        samples.push(started.elapsed());
    }
    samples
}

/// The endpoint's HTTP API on one keep-alive connection.
struct Http {
    agent: ureq::Agent,
    lock: String,
    unlock: String,
}

impl Http {
    fn new(endpoint: &DaprProcess) -> Self {
        Http {
            agent: ureq::Agent::new_with_defaults(),
            lock: endpoint.url("/v1.0-alpha1/lock/lockstore"),
            unlock: endpoint.url("/v1.0-alpha1/unlock/lockstore"),
        }
    }

    /// `count` pairs, each timed from the lock's sending to the unlock's answer.
    fn pairs(&self, count: usize) -> Vec<Duration> {
        let lock = r#"{"resourceId":"b11-http","lockOwner":"bench","expiryInSeconds":60}"#;
        let unlock = r#"{"resourceId":"b11-http","lockOwner":"bench"}"#;
        (0..count)
            .map(|_| {
                let started = Instant::now();
                let taken = self.call(&self.lock, lock);
                assert!(taken.contains("true"), "{taken}");
                let freed = self.call(&self.unlock, unlock);
                assert!(freed.contains(":0"), "{freed}");
                started.elapsed()
            })
            .collect()
    }

    fn call(&self, url: &str, body: &str) -> String {
        let mut answer = self
            .agent
            .post(url)
            .send(body)
            .expect("the endpoint answers");
        answer.body_mut().read_to_string().unwrap()
    }
}
