//! B1's anatomy (`cargo bench -p latchkey-tests -- b1-anatomy`): where a guest's extra time
//! per lock + unlock pair goes, next to the same `LockStore` called from Rust.
//!
//! Every store call is cut at five instants: its first poll (the request is queued on the
//! connection), the runtime's thread going to sleep, the thread waking, the reply reaching
//! the call's waker, and the call being polled again to finish. Beside those: the thread's
//! CPU time per pair (`/proc/thread-self/schedstat`) and Redis' own time per script call
//! (`INFO commandstats`). Both paths run through the same store, on the same connection,
//! in alternating rounds; the probes cost both the same.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use harness::{RedisServer, redis_store};
use latchkey_host::LockStore;
use latchkey_host::backend::{BackendResult, Intercepted, Interceptor, Step, StepCall};

use crate::setup::{Stats, direct_pairs, guest_pairs};

/// Nanoseconds since the first call: a clock the runtime's hooks and the probes share.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// When the runtime's thread last went to sleep, and last woke.
static PARKED_AT: AtomicU64 = AtomicU64::new(0);
static UNPARKED_AT: AtomicU64 = AtomicU64::new(0);

/// Per-call sums of each stretch, in ns, over the calls that slept exactly once.
#[derive(Default)]
struct Segments {
    calls: AtomicU64,
    queue: AtomicU64,
    to_sleep: AtomicU64,
    asleep: AtomicU64,
    to_reply: AtomicU64,
    to_resume: AtomicU64,
}

impl Segments {
    fn record(&self, started: u64, queued: u64, woken: u64, resumed: u64) {
        let (parked, unparked) = (PARKED_AT.load(Relaxed), UNPARKED_AT.load(Relaxed));
        // Only a call the thread slept through once has the five instants in order.
        if !(started <= queued && queued <= parked && parked <= unparked && unparked <= woken) {
            return;
        }
        self.calls.fetch_add(1, Relaxed);
        self.queue.fetch_add(queued - started, Relaxed);
        self.to_sleep.fetch_add(parked - queued, Relaxed);
        self.asleep.fetch_add(unparked - parked, Relaxed);
        self.to_reply.fetch_add(woken - unparked, Relaxed);
        self.to_resume.fetch_add(resumed - woken, Relaxed);
    }

    /// The mean of each stretch per call, in ns, and resets the sums.
    fn take(&self) -> [f64; 5] {
        let calls = self.calls.swap(0, Relaxed).max(1) as f64;
        [
            &self.queue,
            &self.to_sleep,
            &self.asleep,
            &self.to_reply,
            &self.to_resume,
        ]
        .map(|sum| sum.swap(0, Relaxed) as f64 / calls)
    }
}

/// Notes when a call's waker fires, then passes the wake on.
struct WakeTime {
    inner: Mutex<Waker>,
    at: AtomicU64,
}

impl Wake for WakeTime {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.at.store(now_ns(), Relaxed);
        self.inner.lock().unwrap().wake_by_ref();
    }
}

/// A store call, timed at its instants.
struct Probed<'a, F> {
    call: F,
    segments: &'a Segments,
    waker: Option<Arc<WakeTime>>,
    started: u64,
    queued: u64,
}

impl<F: Future + Unpin> Future for Probed<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let entered = now_ns();
        if self.started == 0 {
            self.started = entered;
        }
        let waker = self
            .waker
            .get_or_insert_with(|| {
                Arc::new(WakeTime {
                    inner: Mutex::new(cx.waker().clone()),
                    at: AtomicU64::new(0),
                })
            })
            .clone();
        waker.inner.lock().unwrap().clone_from(cx.waker());
        let woken = waker.at.load(Relaxed);
        let waker = Waker::from(waker);
        match Pin::new(&mut self.call).poll(&mut Context::from_waker(&waker)) {
            Poll::Pending => {
                if self.queued == 0 {
                    self.queued = now_ns();
                }
                Poll::Pending
            }
            Poll::Ready(output) => {
                if self.queued != 0 && woken != 0 {
                    self.segments
                        .record(self.started, self.queued, woken, entered);
                }
                Poll::Ready(output)
            }
        }
    }
}

/// Times a Redis store's acquires and releases.
#[derive(Default)]
struct Probe {
    segments: Segments,
}

#[async_trait]
impl Interceptor for Probe {
    async fn around<T: Send>(&self, step: Step, call: StepCall<'_, T>) -> BackendResult<T> {
        if !matches!(step, Step::TryAcquire | Step::Release) {
            return call.await;
        }
        Probed {
            call,
            segments: &self.segments,
            waker: None,
            started: 0,
            queued: 0,
        }
        .await
    }
}

/// CPU time this thread has run, in ns.
fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    stat.split_whitespace().next().unwrap().parse().unwrap()
}

/// Redis' own time per `EVALSHA` since the last `CONFIG RESETSTAT`, in µs.
fn redis_us_per_call(redis: &RedisServer) -> f64 {
    let info: String = redis.cmd(&["INFO", "commandstats"]);
    let line = info
        .lines()
        .find(|line| line.starts_with("cmdstat_evalsha:"))
        .expect("EVALSHA calls");
    let field = |name: &str| -> f64 {
        line.split([':', ','])
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap()
            .parse()
            .unwrap()
    };
    field("usec") / field("calls")
}

/// What one path measured over its rounds.
#[derive(Default)]
struct Path {
    pairs: Vec<Duration>,
    cpu_ns: u64,
    redis_us: Vec<f64>,
    segments: Vec<[f64; 5]>,
}

impl Path {
    fn row(&self, name: &str) -> [f64; 9] {
        let pairs = self.pairs.len() as f64;
        let rounds = self.segments.len() as f64;
        let mean = |i: usize| self.segments.iter().map(|s| s[i]).sum::<f64>() / rounds / 1000.0;
        let mean_pair = self.pairs.iter().sum::<Duration>().as_nanos() as f64 / pairs / 1000.0;
        let in_calls: f64 = (0..5).map(mean).sum();
        let row = [
            Stats::of(self.pairs.clone()).p50.as_nanos() as f64 / 1000.0,
            self.cpu_ns as f64 / pairs / 1000.0,
            // A pair is two store calls; the rest is the caller's own work between them.
            mean_pair - 2.0 * in_calls,
            self.redis_us.iter().sum::<f64>() / rounds,
            mean(0),
            mean(1),
            mean(2),
            mean(3),
            mean(4),
        ];
        print_row(name, &row);
        row
    }
}

fn print_row(name: &str, row: &[f64; 9]) {
    let cells: Vec<String> = row.iter().map(|v| format!("{v:.1}")).collect();
    println!("| {name} | {} |", cells.join(" | "));
}

/// Runs B1's pairs through a probed Redis store, from a guest and from Rust in turn, and
/// prints the mean of each stretch (the pair's median too).
pub fn b1_anatomy(redis: &RedisServer) {
    const ROUNDS: usize = 10;
    const PAIRS: usize = 1000;
    println!(
        "\n## B1 anatomy: where a guest's pair spends its time \
         ({ROUNDS} interleaved rounds of {PAIRS} pairs; µs, per call unless per pair)\n"
    );
    println!(
        "| path | pair p50 | thread CPU per pair | outside the calls, per pair | Redis per call \
         | queue the request | queued → thread asleep | asleep | woke → reply to the call \
         | reply → call resumed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .on_thread_park(|| PARKED_AT.store(now_ns(), Relaxed))
        .on_thread_unpark(|| UNPARKED_AT.store(now_ns(), Relaxed))
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let timeout = Duration::from_secs(2);
        let redis_backend = redis_store(&redis.url(), timeout).backend().clone();
        let backend = Arc::new(Intercepted::new(redis_backend, Probe::default()));
        let store = LockStore::new("lockstore", backend.clone(), timeout);
        guest_pairs(&store, 500, "warm").await;
        direct_pairs(&store, 500, "warm").await;
        backend.interceptor().segments.take();
        let (mut guest, mut rust) = (Path::default(), Path::default());
        for round in 0..ROUNDS {
            // ABBA, as in B1: what ran just before changes a round trip's cost here.
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for from_guest in order {
                let _: String = redis.cmd(&["CONFIG", "RESETSTAT"]);
                let cpu = thread_cpu_ns();
                let pairs = if from_guest {
                    guest_pairs(&store, PAIRS, "b1").await
                } else {
                    direct_pairs(&store, PAIRS, "b1").await
                };
                let cpu = thread_cpu_ns() - cpu;
                let path = if from_guest { &mut guest } else { &mut rust };
                path.pairs.extend(pairs);
                path.cpu_ns += cpu;
                path.redis_us.push(redis_us_per_call(redis));
                path.segments.push(backend.interceptor().segments.take());
            }
        }
        let rust = rust.row("host library from Rust");
        let guest = guest.row("from a guest");
        let extra: Vec<f64> = guest.iter().zip(rust).map(|(g, r)| g - r).collect();
        print_row("guest − Rust", &extra.try_into().unwrap());
    });
    println!(
        "\nThread CPU includes the kernel's work on the thread's behalf: sending on loopback \
         TCP runs the receiver's side of the stack too."
    );
}
