//! B6 and P11: `latchkey serve` under HTTP load.
//!
//! The load generator is `wrk` (Debian's package; keep-alive connections, two threads),
//! run for each server and each concurrency in turn. Three handlers, each beside a
//! baseline from the same run:
//!
//! - (a) `POST /jobs/{id}` of `http_nolock` — the demo's jobs handler without its lock —
//!   against the same component under `wasmtime serve -Scli` 48 (built once into
//!   `target/tools` by `make bench`);
//! - (b) `POST /jobs/{id}?ms=0` of `http_demo` — the same, with try-lock + unlock — on the
//!   memory store, against (a);
//! - (c) the same on Redis, against (a) plus one lock + unlock pair of raw redis-rs
//!   scripts at the same concurrency (that many pairs in flight on one connection),
//!   measured in the same run.
//!
//! P11 does the same for WASI 0.3 handlers, which `latchkey serve` runs with instance reuse:
//! `http_nolock_p3` against `wasmtime serve` 48 running it with its own reuse (the same
//! defaults: 128 requests per instance, 16 at once); `http_demo_p3`'s locked job on the
//! memory store against it; the no-lock handler with reuse against a fresh instance per
//! request (`--max-instance-reuse 1`); and Python's locked jobs handler
//! (`guest/python/demos/http_jobs_p3.py`) with reuse, against itself fresh and against the
//! Rust one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{RedisServer, ServeProcess, free_port, guest, polyglot_guest};

/// Connections at once, as the issue asks.
pub const CONCURRENCY: [u32; 3] = [1, 16, 128];

/// How long `wrk` loads each server at each concurrency.
const DURATION: &str = "5s";

/// What one `wrk` run measured.
pub(crate) struct Load {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// The `wasmtime` binary of the baseline: `$LATCHKEY_WASMTIME`, or the one `make bench`
/// installs into `target/tools`.
pub(crate) fn wasmtime() -> PathBuf {
    if let Some(path) = std::env::var_os("LATCHKEY_WASMTIME") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    let path = target.join("tools/bin/wasmtime");
    assert!(
        path.exists(),
        "{} is missing: run `make bench`, which builds wasmtime-cli 48 there once \
         (or set LATCHKEY_WASMTIME)",
        path.display()
    );
    path
}

/// Waits, at most `patience`, for a server (`what`) to accept connections on `port`.
pub(crate) fn wait_until_listening(port: u16, patience: Duration, what: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < patience, "{what} did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `wasmtime serve -Scli` of `component` on a free port, once it accepts connections.
struct WasmtimeServe {
    child: Child,
    port: u16,
}

impl WasmtimeServe {
    /// `wasmtime serve` with `flags` besides the address.
    fn start(component: &str, flags: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(wasmtime())
            .arg("serve")
            .args(flags)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg(guest(component))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wasmtime starts");
        wait_until_listening(port, Duration::from_secs(60), "wasmtime serve");
        WasmtimeServe { child, port }
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `wrk` script that POSTs to a job id no other request uses, so that every request is
/// granted its lock: try-lock + unlock, uncontended.
const UNIQUE_JOBS: &str = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
wrk.method = "POST"
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, "/jobs/b6-" .. tid .. "-" .. n .. "?ms=0")
end
"#;

/// [`UNIQUE_JOBS`] in a file for `wrk -s`, in a folder removed when dropped.
pub(crate) fn unique_jobs_script() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("unique-jobs.lua");
    std::fs::write(&script, UNIQUE_JOBS).unwrap();
    (dir, script)
}

/// Loads `url` with `wrk` at `connections`; with `script`, its requests are the script's.
pub(crate) fn wrk(url: &str, connections: u32, script: Option<&std::path::Path>) -> Load {
    let threads = connections.min(2);
    let mut command = Command::new("wrk");
    command.args([
        &format!("-t{threads}"),
        &format!("-c{connections}"),
        &format!("-d{DURATION}"),
        "--latency",
    ]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let out = command
        .arg(url)
        .output()
        .expect("wrk runs (make bench installs it: apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "requests failed under load: {text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output: {text}"))
            .trim()
            .to_owned()
    };
    Load {
        rps: field("Requests/sec:").parse().unwrap(),
        p50: wrk_duration(&field("50%")),
        p99: wrk_duration(&field("99%")),
    }
}

/// `wrk`'s `74.00us`, `1.23ms`, `2.00s`.
fn wrk_duration(text: &str) -> Duration {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().unwrap();
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        other => panic!("unknown unit {other} in wrk's {text}"),
    };
    Duration::from_secs_f64(seconds)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// B6. `pairs` holds, for each concurrency, the p50 of a raw redis-rs lock + unlock pair
/// with that many in flight on the same Redis.
pub fn b6(redis: &RedisServer, pairs: &[(u32, Duration)]) {
    println!(
        "\n## B6 serve: requests/s and latency under wrk, {DURATION} per row, \
         keep-alive connections\n"
    );
    let (_script_dir, unique_jobs) = unique_jobs_script();
    let nolock = guest("http_nolock");
    let demo = guest("http_demo");
    let redis_store = format!("lockstore={}", redis.url());

    let wasmtime = WasmtimeServe::start("http_nolock", &["-Scli"]);
    let latchkey_nolock = ServeProcess::start(&[nolock.to_str().unwrap()]);
    let memory = ServeProcess::start(&[demo.to_str().unwrap()]);
    let on_redis = ServeProcess::start(&["--store", &redis_store, demo.to_str().unwrap()]);
    let wasmtime_url = format!("http://127.0.0.1:{}/", wasmtime.port);

    println!(
        "| handler | conns | req/s | p50 | p99 | baseline | base req/s | base p50 | \
         ratio req/s | ratio p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for connections in CONCURRENCY {
        let base = wrk(&wasmtime_url, connections, Some(&unique_jobs));
        let a = wrk(&latchkey_nolock.url("/"), connections, Some(&unique_jobs));
        let b = wrk(&memory.url("/"), connections, Some(&unique_jobs));
        let c = wrk(&on_redis.url("/"), connections, Some(&unique_jobs));
        let row = |name: &str, load: &Load, baseline: &str, base: &Load| {
            print_row(name, connections, load, baseline, base);
        };
        row("(a) no lock", &a, "wasmtime serve", &base);
        row("(b) lock, memory", &b, "(a)", &a);
        row("(c) lock, Redis", &c, "(a)", &a);
        let pair = pairs
            .iter()
            .find_map(|&(at, pair)| (at == connections).then_some(pair))
            .expect("a pair measured at every concurrency");
        let budget = a.p50 + pair;
        println!(
            "| (c) p50 − (a) p50 = {} | {connections} | | | | one redis-rs pair | | {} | | {} |",
            ms(c.p50.saturating_sub(a.p50)),
            ms(pair),
            if c.p50 <= budget { "within" } else { "over" },
        );
    }
}

/// `wasmtime serve`'s flags for a WASI 0.3 handler that also imports WASI 0.2's
/// `wasi:cli` (as a Rust `cdylib` built with std does).
const WASMTIME_P3: [&str; 3] = ["-Scli", "-Sp3", "-Wcomponent-model-async"];

/// P11: WASI 0.3 handlers served with instance reuse.
pub fn p11() {
    println!(
        "\n## P11 serve, WASI 0.3: requests/s and latency under wrk, {DURATION} per row, \
         keep-alive connections, instance reuse (128 requests, 16 at once)\n"
    );
    let (_script_dir, unique_jobs) = unique_jobs_script();
    let nolock = guest("http_nolock_p3");
    let demo = guest("http_demo_p3");

    let wasmtime = WasmtimeServe::start("http_nolock_p3", &WASMTIME_P3);
    let reused = ServeProcess::start(&[nolock.to_str().unwrap()]);
    let locked = ServeProcess::start(&[demo.to_str().unwrap()]);
    let fresh = ServeProcess::start(&["--max-instance-reuse", "1", nolock.to_str().unwrap()]);
    let python = polyglot_guest("python-p3", "http_jobs");
    let python_reused = ServeProcess::start(&[python.to_str().unwrap()]);
    let python_fresh =
        ServeProcess::start(&["--max-instance-reuse", "1", python.to_str().unwrap()]);
    let wasmtime_url = format!("http://127.0.0.1:{}/", wasmtime.port);

    println!(
        "| handler | conns | req/s | p50 | p99 | baseline | base req/s | base p50 | \
         ratio req/s | ratio p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for connections in CONCURRENCY {
        let base = wrk(&wasmtime_url, connections, Some(&unique_jobs));
        let a = wrk(&reused.url("/"), connections, Some(&unique_jobs));
        let b = wrk(&locked.url("/"), connections, Some(&unique_jobs));
        let f = wrk(&fresh.url("/"), connections, Some(&unique_jobs));
        let p = wrk(&python_reused.url("/"), connections, Some(&unique_jobs));
        let pf = wrk(&python_fresh.url("/"), connections, Some(&unique_jobs));
        let row = |name: &str, load: &Load, baseline: &str, base: &Load| {
            print_row(name, connections, load, baseline, base);
        };
        row("(a) no lock, reuse", &a, "wasmtime serve", &base);
        row("(b) lock, memory, reuse", &b, "(a)", &a);
        row("(a) with reuse", &a, "(f) no lock, fresh", &f);
        row("(p) Python, lock, memory, reuse", &p, "(p) fresh", &pf);
        row("(p) Python, lock, memory, reuse", &p, "(b)", &b);
    }
}

/// One row of a serve table: `load` beside `base`.
pub(crate) fn print_row(name: &str, connections: u32, load: &Load, baseline: &str, base: &Load) {
    println!(
        "| {name} | {connections} | {:.0} | {} | {} | {baseline} | {:.0} | {} | {:.2} | {:.2} |",
        load.rps,
        ms(load.p50),
        ms(load.p99),
        base.rps,
        ms(base.p50),
        load.rps / base.rps,
        load.p50.as_secs_f64() / base.p50.as_secs_f64(),
    );
}
