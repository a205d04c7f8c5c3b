//! B7: guests in Python and JavaScript beside the Rust guest — component size, cold
//! compile time, cached start time, memory per running instance, and B1's lock + unlock
//! p50 from a guest of each language, all in one run on one Redis.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::{RedisServer, guest, latchkey, polyglot_guest, redis_store};
use latchkey_host::Program;
use latchkey_host::{EngineOptions, Exit, LockCtxBuilder, LockStore, Runner};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

struct Language {
    name: &'static str,
    dir: &'static str,
}

const LANGUAGES: [Language; 3] = [
    Language {
        name: "Rust",
        dir: "rust",
    },
    Language {
        name: "Python (componentize-py 0.25.1)",
        dir: "python",
    },
    Language {
        name: "JavaScript (componentize-js 0.23.0)",
        dir: "js",
    },
];

impl Language {
    fn guest(&self, name: &str) -> PathBuf {
        match self.dir {
            "rust" => guest(name),
            dir => polyglot_guest(dir, name),
        }
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// How long compiling `path` takes on an engine like the CLI's, without the disk cache.
fn cold_compile(path: &Path) -> Duration {
    let mut options = EngineOptions::default();
    options.disk_cache = false;
    let runner = Runner::with_options(options).unwrap();
    let started = Instant::now();
    runner.load(path).unwrap();
    started.elapsed()
}

/// The median wall time of `latchkey run GUEST open lockstore` once its compiled code is in
/// the cache: a whole short command, process start to exit.
fn cached_start(path: &Path) -> Duration {
    let run = || {
        let started = Instant::now();
        let status = latchkey()
            .arg("run")
            .arg(path)
            .args(["open", "lockstore"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        started.elapsed()
    };
    run();
    median((0..5).map(|_| run()).collect())
}

/// Resident memory of a host running `instances` instances of `lockctl` that sleep, read
/// once they all run.
fn rss_with(path: &Path, instances: u32) -> u64 {
    let mut child = latchkey()
        .args(["run", "--instances", &instances.to_string()])
        .arg(path)
        .args(["open", "lockstore", "sleep", "4000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024
}

/// `count` lock + unlock pairs timed inside one language's `bench` guest, run by the
/// host library on this thread's runtime, as B1 runs the Rust guest.
async fn pairs(
    runner: &Runner,
    program: &Program,
    store: &LockStore,
    count: usize,
) -> Vec<Duration> {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(&["bench", "pairs", &count.to_string(), "b7"])
        .stdout(stdout.clone());
    let mut app = LockCtxBuilder::new("b7");
    app.store(store.clone());
    let exit = runner
        .run(program, wasi.build(), app.build(), Default::default())
        .await;
    assert!(matches!(exit, Exit::Status(0)), "{exit:?}");
    String::from_utf8(stdout.contents().to_vec())
        .unwrap()
        .lines()
        .map(|ns| Duration::from_nanos(ns.parse().unwrap()))
        .collect()
}

/// B7.
pub fn b7(redis: &RedisServer) {
    const INSTANCES: u32 = 21;
    println!("\n## B7 guests in other languages, beside Rust\n");
    println!(
        "| language | component | cold compile | cached start | memory per instance | \
         lock + unlock p50 (Redis) | p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    // Pairs first, like B1: on one thread, 10 rounds of 1,000 per language, the order of the
    // languages flipping every round so that none always follows the same one.
    let runner = Runner::with_options({
        let mut options = EngineOptions::default();
        options.disk_cache = true;
        options
    })
    .unwrap();
    let programs: Vec<Program> = LANGUAGES
        .iter()
        .map(|language| runner.load(&language.guest("bench")).unwrap())
        .collect();
    let runtime = crate::setup::single_threaded();
    let samples = runtime.block_on(async {
        let store = redis_store(&redis.url(), Duration::from_secs(2));
        let mut samples = vec![Vec::new(); LANGUAGES.len()];
        for program in &programs {
            pairs(&runner, program, &store, 300).await;
        }
        for round in 0..10 {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..LANGUAGES.len()).collect()
            } else {
                (0..LANGUAGES.len()).rev().collect()
            };
            for i in order {
                samples[i].extend(pairs(&runner, &programs[i], &store, 1000).await);
            }
        }
        samples
    });
    for (language, pairs) in LANGUAGES.iter().zip(samples) {
        let lockctl = language.guest("lockctl");
        let size = std::fs::metadata(&lockctl).unwrap().len();
        let compile = cold_compile(&lockctl);
        let start = cached_start(&lockctl);
        let one = rss_with(&lockctl, 1);
        let many = rss_with(&lockctl, INSTANCES);
        let per_instance = many.saturating_sub(one) / u64::from(INSTANCES - 1);
        let mut pairs = pairs;
        pairs.sort_unstable();
        let at = |q: usize| pairs[pairs.len() * q / 100].as_nanos() as f64 / 1e3;
        println!(
            "| {} | {:.1} MB | {:.2} s | {:.0} ms | {:.2} MiB | {:.1} µs | {:.1} µs |",
            language.name,
            size as f64 / 1e6,
            compile.as_secs_f64(),
            start.as_secs_f64() * 1e3,
            per_instance as f64 / (1 << 20) as f64,
            at(50),
            at(99),
        );
    }
}
