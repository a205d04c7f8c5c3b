//! `metrics`: latency and throughput with a metrics recorder installed against none, in
//! the same run ([`RecorderSwitch`]).

use std::time::{Duration, Instant};

use harness::{RedisServer, redis_store};

use crate::setup::{Stats, guest_pairs, ratio, single_threaded, us};

/// The global metrics recorder of this program: Prometheus' when on, none in effect when
/// off. A global recorder is installed once per process, so B1 and B2 switch it to compare
/// the two in one run.
pub(crate) struct RecorderSwitch {
    on: std::sync::atomic::AtomicBool,
    prometheus: metrics_exporter_prometheus::PrometheusRecorder,
}

pub(crate) static RECORDER: std::sync::OnceLock<&'static RecorderSwitch> =
    std::sync::OnceLock::new();

impl RecorderSwitch {
    pub(crate) fn install() {
        let switch: &'static RecorderSwitch = Box::leak(Box::new(RecorderSwitch {
            on: false.into(),
            prometheus: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
        }));
        metrics::set_global_recorder(switch).expect("the only recorder");
        RECORDER.set(switch).ok();
    }

    fn set(on: bool) {
        RECORDER
            .get()
            .expect("installed")
            .on
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn on(&self) -> bool {
        self.on.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl metrics::Recorder for RecorderSwitch {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.prometheus.describe_counter(key, unit, text);
    }

    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.prometheus.describe_gauge(key, unit, text);
    }

    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.prometheus.describe_histogram(key, unit, text);
    }

    // The host keeps each handle from its first use, so every handle checks the switch.
    fn register_counter(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        let inner = self.prometheus.register_counter(key, meta);
        metrics::Counter::from_arc(std::sync::Arc::new(Switched(inner)))
    }

    fn register_gauge(&self, key: &metrics::Key, meta: &metrics::Metadata<'_>) -> metrics::Gauge {
        let inner = self.prometheus.register_gauge(key, meta);
        metrics::Gauge::from_arc(std::sync::Arc::new(Switched(inner)))
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        let inner = self.prometheus.register_histogram(key, meta);
        metrics::Histogram::from_arc(std::sync::Arc::new(Switched(inner)))
    }
}

/// A handle that records only while the switch is on.
pub(crate) struct Switched<T>(T);

pub(crate) fn switched_on() -> bool {
    RECORDER.get().is_some_and(|switch| switch.on())
}

impl metrics::CounterFn for Switched<metrics::Counter> {
    fn increment(&self, value: u64) {
        if switched_on() {
            self.0.increment(value);
        }
    }

    fn absolute(&self, value: u64) {
        if switched_on() {
            self.0.absolute(value);
        }
    }
}

impl metrics::GaugeFn for Switched<metrics::Gauge> {
    fn increment(&self, value: f64) {
        if switched_on() {
            self.0.increment(value);
        }
    }

    fn decrement(&self, value: f64) {
        if switched_on() {
            self.0.decrement(value);
        }
    }

    fn set(&self, value: f64) {
        if switched_on() {
            self.0.set(value);
        }
    }
}

impl metrics::HistogramFn for Switched<metrics::Histogram> {
    fn record(&self, value: f64) {
        if switched_on() {
            self.0.record(value);
        }
    }
}

/// B1 and B2 with the metrics recorder on against off, taking turns (ABBA) in one run.
pub(crate) fn metrics_overhead(redis: &RedisServer) {
    const ROUNDS: usize = 10;
    const PAIRS: usize = 1000;
    const INSTANCES: usize = 64;
    println!(
        "\n## Metrics overhead: B1 and B2 with a Prometheus recorder installed against none \
         ({ROUNDS} interleaved rounds)\n"
    );
    let runtime = single_threaded();
    let (off, on) = runtime.block_on(async {
        let store = redis_store(&redis.url(), Duration::from_secs(2));
        guest_pairs(&store, 500, "warm").await;
        let (mut off, mut on) = (vec![], vec![]);
        for round in 0..ROUNDS {
            for recording in if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            } {
                RecorderSwitch::set(recording);
                let pairs = guest_pairs(&store, PAIRS, "metrics").await;
                if recording {
                    on.extend(pairs)
                } else {
                    off.extend(pairs)
                }
            }
        }
        (Stats::of(off), Stats::of(on))
    });
    drop(runtime);
    println!("| run | recorder p50 | none p50 | ratio p50 | recorder p99 | none p99 |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| B1 redis, one guest | {} | {} | {:.3} | {} | {} |",
        us(on.p50),
        us(off.p50),
        ratio(on.p50, off.p50),
        us(on.p99),
        us(off.p99)
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (off, on) = runtime.block_on(async {
        let store = redis_store(&redis.url(), Duration::from_secs(5));
        let (mut off, mut on) = (0.0, 0.0);
        for round in 0..ROUNDS {
            for recording in if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            } {
                RecorderSwitch::set(recording);
                let per = 40_000 / INSTANCES / ROUNDS * 2;
                let started = Instant::now();
                let tasks: Vec<_> = (0..INSTANCES)
                    .map(|i| {
                        let store = store.clone();
                        tokio::spawn(
                            async move { guest_pairs(&store, per, &format!("m-{i}")).await },
                        )
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                let rate = (per * INSTANCES) as f64 / started.elapsed().as_secs_f64();
                if recording { on += rate } else { off += rate }
            }
        }
        (off / ROUNDS as f64, on / ROUNDS as f64)
    });
    RecorderSwitch::set(false);
    println!("\n| run | recorder pairs/s | none pairs/s | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| B2 redis, {INSTANCES} guests | {on:.0} | {off:.0} | {:.3} |",
        on / off
    );
}
