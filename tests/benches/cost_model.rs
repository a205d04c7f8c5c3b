//! `cost-model`: what one request costs `latchkey serve` and `wasmtime serve` 48 in
//! instructions, counted by valgrind's callgrind — the same count for the same binary and
//! input whatever else the machine does, where wall clock moves ±10 % run to run.
//!
//! Each server runs under callgrind, on demand memory (under valgrind neither can reserve a
//! pooling allocator's address space), with the same component. After a warm-up the count
//! is zeroed, `REQUESTS` requests go one after another on one keep-alive connection, and the
//! count is dumped; then it is zeroed again, the server idles as long as the requests took,
//! and that count is dumped too. A request costs `(load − idle) / REQUESTS`: what the
//! server does per request, without what it does per second (an epoch ticker, timers).
//! The top functions of each are printed per request, and, for the first row, the
//! functions whose cost differs most between the two servers.
//!
//! Only when named (`cargo bench -p latchkey-tests -- cost-model`): it takes minutes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{RedisServer, free_port, guest, latchkey_path};

use crate::serve::wait_until_listening;

/// Requests counted per server.
const REQUESTS: usize = 500;

/// Requests before the count starts: the first instance, lazily made tables, warm caches.
const WARM_UP: usize = 50;

/// How long a server under valgrind may take to listen: it may compile the component
/// there, fifty times slower than natively.
const START_PATIENCE: Duration = Duration::from_secs(600);

/// The `wasmtime serve` flags of each world, as B6 and P11 run it, on demand memory.
const WASMTIME_P2: [&str; 3] = ["-Scli", "-O", "pooling-allocator=n"];
const WASMTIME_P3: [&str; 5] = [
    "-Scli",
    "-Sp3",
    "-Wcomponent-model-async",
    "-O",
    "pooling-allocator=n",
];

/// One server process under callgrind, and where its counts go.
struct Counted {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Counted {
    /// `program ARGS... --addr 127.0.0.1:PORT HANDLER` under callgrind, once it accepts
    /// connections; `handler` names a guest.
    fn start(dir: &Path, name: &str, program: &Path, args: &[&str], handler: &str) -> Self {
        let port = free_port();
        let out = dir.join(format!("{name}.callgrind"));
        let child = callgrind(&out)
            .arg(program)
            .args(args)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg(guest(handler))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("valgrind runs (Debian's valgrind package)");
        wait_until_listening(port, START_PATIENCE, name);
        Counted { child, port, out }
    }

    fn control(&self, flag: &str) {
        control(self.child.id(), flag);
    }

    fn dump(&self, nth: usize) -> Profile {
        dump(&self.out, self.child.id(), nth)
    }

    /// Serves `requests` of `path`, one after another, on one keep-alive connection; how
    /// long they took.
    fn load(&self, agent: &ureq::Agent, path: &str, requests: usize, first: usize) -> Duration {
        let started = Instant::now();
        for n in first..first + requests {
            let url = format!(
                "http://127.0.0.1:{}{}",
                self.port,
                path.replace("{n}", &n.to_string())
            );
            let mut answer = agent.post(&url).send_empty().expect("the server answers");
            assert_eq!(answer.status(), 200, "{url}");
            answer.body_mut().read_to_string().unwrap();
        }
        started.elapsed()
    }

    /// Instructions per request of `path`, with the top functions: the load's counts less
    /// an idle stretch as long as the load.
    fn per_request(&self, path: &str) -> Profile {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        self.load(&agent, path, WARM_UP, 0);
        self.control("-z");
        let took = self.load(&agent, path, REQUESTS, WARM_UP);
        self.control("-d");
        self.control("-z");
        std::thread::sleep(took);
        self.control("-d");
        let load = self.dump(1);
        let idle = self.dump(2);
        load.less(&idle).per(REQUESTS)
    }
}

/// `valgrind --tool=callgrind`, writing to `out.PID` (and its dumps to `out.PID.N`), with
/// function names in full; the program and its arguments are the caller's.
fn callgrind(out: &Path) -> Command {
    let mut valgrind = Command::new("valgrind");
    valgrind
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}.%p", out.display()))
        .args(["--dump-instr=no", "--compress-strings=no"]);
    valgrind
}

/// `callgrind_control` on process `pid`: `-z` zeroes its counts, `-d` dumps them.
fn control(pid: u32, flag: &str) {
    let status = Command::new("callgrind_control")
        .arg(flag)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("callgrind_control runs");
    assert!(status.success(), "callgrind_control {flag} failed");
}

/// The counts of process `pid`'s `nth` dump (1-based) into `out`, once callgrind has
/// written it.
fn dump(out: &Path, pid: u32, nth: usize) -> Profile {
    let file = PathBuf::from(format!("{}.{pid}.{nth}", out.display()));
    let started = Instant::now();
    while !file.exists() {
        assert!(
            started.elapsed() < START_PATIENCE,
            "no dump {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A dump is written, then named: once it is there it is whole.
    Profile::read(&file)
}

impl Drop for Counted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Instructions in all, and by function.
struct Profile {
    total: f64,
    functions: BTreeMap<String, f64>,
}

impl Profile {
    /// A callgrind dump: `fn=` lines name the function the cost lines under them belong to
    /// (`--compress-strings=no`: names in full); a cost line is `LINE COST`, and the costs
    /// of calls (`calls=` then one line) are inclusive, so they are skipped.
    fn read(file: &Path) -> Profile {
        let text = std::fs::read_to_string(file).unwrap();
        let mut functions = BTreeMap::new();
        let mut current = String::new();
        let mut after_call = false;
        let mut total = 0.0;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("fn=") {
                // Compiled guest code has no symbols, only addresses, and the two servers
                // lay it out differently: one bucket for all of it.
                current = match name.starts_with("0x") {
                    true => "[compiled guest code]".to_owned(),
                    false => name.to_owned(),
                };
            } else if line.starts_with("calls=") {
                after_call = true;
            } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
                let cost: f64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0.0);
                if after_call {
                    after_call = false;
                } else {
                    *functions.entry(current.clone()).or_insert(0.0) += cost;
                    total += cost;
                }
            } else if let Some(summary) = line.strip_prefix("summary: ") {
                total = summary.trim().parse().unwrap_or(total);
            }
        }
        Profile { total, functions }
    }

    fn less(&self, other: &Profile) -> Profile {
        let mut functions = self.functions.clone();
        for (name, cost) in &other.functions {
            *functions.entry(name.clone()).or_insert(0.0) -= cost;
        }
        Profile {
            total: self.total - other.total,
            functions,
        }
    }

    fn per(&self, requests: usize) -> Profile {
        let n = requests as f64;
        Profile {
            total: self.total / n,
            functions: self
                .functions
                .iter()
                .map(|(k, v)| (k.clone(), v / n))
                .collect(),
        }
    }

    /// The `n` functions that cost most.
    fn top(&self, n: usize) -> Vec<(&str, f64)> {
        let mut all: Vec<(&str, f64)> = self
            .functions
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(n);
        all
    }
}

/// A function name as a table shows it: without its argument list and crate hash, cut to
/// a width.
fn short(name: &str) -> String {
    let name = name.split('(').next().unwrap_or(name);
    let name = match name.rfind("::h") {
        Some(at) if name[at + 3..].chars().all(|c| c.is_ascii_hexdigit()) => &name[..at],
        _ => name,
    };
    let chars: Vec<char> = name.chars().collect();
    if chars.len() > 90 {
        format!("…{}", chars[chars.len() - 89..].iter().collect::<String>())
    } else {
        name.to_owned()
    }
}

fn thousands(n: f64) -> String {
    format!("{:.1}k", n / 1000.0)
}

/// The wasmtime-cli 48 of the baseline, as B6 finds it.
fn wasmtime() -> PathBuf {
    crate::serve::wasmtime()
}

pub fn cost_model(redis: &RedisServer) {
    println!(
        "\n## Cost model: instructions per request under callgrind, {REQUESTS} requests in \
         a row on one keep-alive connection, less an idle stretch as long\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let latchkey = latchkey_path();
    let wasmtime = wasmtime();
    let on_demand = ["serve", "--max-concurrent-requests", "1001"];
    let redis_store = format!("lockstore={}", redis.url());
    for name in ["http_nolock_p3", "http_demo_p3", "http_nolock", "http_demo"] {
        harness::warm(&guest(name));
    }
    // One server under callgrind, counted on one kind of request, then stopped.
    let count = |name: &str, program: &Path, args: &[&str], handler: &str, path: &str| {
        Counted::start(dir.path(), name, program, args, handler).per_request(path)
    };
    let nolock = "/jobs/cm-{n}";
    let locked = "/jobs/cm-{n}?ms=0";

    println!("| handler | server | instructions / request | against |");
    println!("|---|---|---|---|");
    let row = |handler: &str, server: &str, profile: &Profile, against: Option<&Profile>| {
        let ratio = against
            .map(|b| format!("{:.3}×", profile.total / b.total))
            .unwrap_or_default();
        println!(
            "| {handler} | {server} | {} | {ratio} |",
            thousands(profile.total)
        );
    };

    // (a) WASI 0.3, no lock, instance reuse: the row every request of every user pays.
    let p3_latchkey = count(
        "latchkey-p3",
        &latchkey,
        &on_demand,
        "http_nolock_p3",
        nolock,
    );
    let mut p3_flags = vec!["serve"];
    p3_flags.extend(WASMTIME_P3);
    let p3_wasmtime = count(
        "wasmtime-p3",
        &wasmtime,
        &p3_flags,
        "http_nolock_p3",
        nolock,
    );
    let mut timed_flags = p3_flags.clone();
    timed_flags.extend(["-W", "timeout=30s"]);
    let p3_wasmtime_timed = count(
        "wasmtime-p3-timeout",
        &wasmtime,
        &timed_flags,
        "http_nolock_p3",
        nolock,
    );
    row("0.3 no lock, reused", "wasmtime serve", &p3_wasmtime, None);
    row(
        "0.3 no lock, reused",
        "wasmtime serve -W timeout=30s",
        &p3_wasmtime_timed,
        None,
    );
    row(
        "0.3 no lock, reused",
        "latchkey serve",
        &p3_latchkey,
        Some(&p3_wasmtime),
    );

    // (b) the same with a memory-store lock, against no lock.
    let p3_memory = count(
        "latchkey-p3-memory",
        &latchkey,
        &on_demand,
        "http_demo_p3",
        locked,
    );
    row(
        "0.3 memory lock, reused",
        "latchkey serve",
        &p3_memory,
        Some(&p3_latchkey),
    );

    // (c) WASI 0.2, a fresh instance per request.
    let p2_latchkey = count("latchkey-p2", &latchkey, &on_demand, "http_nolock", nolock);
    let mut p2_flags = vec!["serve"];
    p2_flags.extend(WASMTIME_P2);
    let p2_wasmtime = count("wasmtime-p2", &wasmtime, &p2_flags, "http_nolock", nolock);
    row("0.2 no lock, fresh", "wasmtime serve", &p2_wasmtime, None);
    row(
        "0.2 no lock, fresh",
        "latchkey serve",
        &p2_latchkey,
        Some(&p2_wasmtime),
    );

    // (d) a lock on Redis: the host's side of it (Redis' own work is not counted).
    let mut redis_flags = on_demand.to_vec();
    redis_flags.extend(["--store", &redis_store]);
    let p2_redis = count(
        "latchkey-p2-redis",
        &latchkey,
        &redis_flags,
        "http_demo",
        locked,
    );
    row(
        "0.2 Redis lock, fresh",
        "latchkey serve",
        &p2_redis,
        Some(&p2_latchkey),
    );

    println!("\nTop functions per request, WASI 0.3 no lock (self cost):\n");
    for (server, profile) in [
        ("latchkey serve", &p3_latchkey),
        ("wasmtime serve", &p3_wasmtime),
    ] {
        println!("{server}:");
        for (name, cost) in profile.top(12) {
            println!("  {:>8}  {}", thousands(cost), short(name));
        }
    }
    println!("\nWhere latchkey serve spends more per request than wasmtime serve (WASI 0.3):\n");
    let difference = p3_latchkey.less(&p3_wasmtime);
    for (name, cost) in difference.top(15) {
        println!("  {:>8}  {}", thousands(cost), short(name));
    }
}

/// Pairs counted per row: the difference of a long and a short run, so that what a run
/// costs once (instantiating the guest, opening the store) cancels out.
const PAIRS: (usize, usize) = (200, 1200);

/// The ways of taking a pair that [`pairs`] counts: a guest's, the host library's, and
/// raw redis-rs running the same scripts.
const PAIR_MODES: [(&str, &str); 4] = [
    ("raw", "raw redis-rs, the same two scripts"),
    ("host", "the host library (LockStore), no Wasm"),
    ("guest", "a WASI 0.2 guest (bench)"),
    ("guest-p3", "a WASI 0.3 guest (lockctl_p3)"),
];

/// The environment variable that makes the benchmark program a [`pairs_worker`].
pub const PAIRS_WORKER: &str = "LATCHKEY_BENCH_COUNTED_PAIRS";

/// B1's and P10's pairs counted the same way: this program again, as a worker under
/// callgrind, runs a mode's pairs on Redis when told to; instructions per pair are
/// `(long − short − idle) / (long pairs − short pairs)`, the idle part at the rate an idle
/// second of the worker costs.
pub fn pairs(redis: &RedisServer) {
    println!(
        "\n## Cost model: instructions per try-lock + unlock pair on Redis, under callgrind \
         ({} pairs less {}, one after another)\n",
        PAIRS.1, PAIRS.0
    );
    println!("| pairs by | instructions / pair | against raw redis-rs |");
    println!("|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut raw = None;
    let mut profiles = BTreeMap::new();
    for (mode, label) in PAIR_MODES {
        // Natively first, so that the guest's compilation is in the disk cache when the
        // worker starts under valgrind.
        Worker::start(None, &exe, mode, redis).run(1);
        let mut worker = Worker::start(Some(dir.path()), &exe, mode, redis);
        worker.run(50);
        worker.control("-z");
        let short = worker.run(PAIRS.0);
        worker.control("-d");
        worker.control("-z");
        let long = worker.run(PAIRS.1);
        worker.control("-d");
        worker.control("-z");
        std::thread::sleep(Duration::from_secs(1));
        worker.control("-d");
        let (c1, c2, idle) = (worker.dump(1), worker.dump(2), worker.dump(3));
        let idle_per_second = idle.total;
        let per_pair = ((c2.total - idle_per_second * long.as_secs_f64())
            - (c1.total - idle_per_second * short.as_secs_f64()))
            / (PAIRS.1 - PAIRS.0) as f64;
        let against = raw
            .map(|raw: f64| format!("{:.3}×", per_pair / raw))
            .unwrap_or_default();
        println!("| {label} | {} | {against} |", thousands(per_pair));
        raw.get_or_insert(per_pair);
        // By function, the idle second's share is left in: it is spread thin.
        profiles.insert(mode, c2.less(&c1).per(PAIRS.1 - PAIRS.0));
    }
    for (more, less) in [("guest", "host"), ("guest-p3", "guest")] {
        println!("\nWhere a pair by `{more}` spends more than by `{less}`, per pair:\n");
        for (name, cost) in profiles[more].less(&profiles[less]).top(12) {
            println!("  {:>8}  {}", thousands(cost), short(name));
        }
    }
}

/// This program as a pairs worker, natively or under callgrind, fed commands on stdin.
struct Worker {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    /// Where callgrind writes, when the worker runs under it.
    out: Option<PathBuf>,
}

impl Worker {
    fn start(counted_in: Option<&Path>, exe: &Path, mode: &str, redis: &RedisServer) -> Self {
        use std::io::BufRead;
        let out = counted_in.map(|dir| dir.join(format!("pairs-{mode}.callgrind")));
        let mut command = match &out {
            Some(out) => {
                let mut valgrind = callgrind(out);
                valgrind.arg(exe);
                valgrind
            }
            None => Command::new(exe),
        };
        let mut child = command
            .env(PAIRS_WORKER, format!("{mode},{}", redis.url()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the worker starts");
        let stdin = child.stdin.take().unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(
            lines.next().and_then(Result::ok).as_deref(),
            Some("ready"),
            "the {mode} worker did not start"
        );
        Worker {
            child,
            stdin,
            lines,
            out,
        }
    }

    /// Zeroes or dumps the counts (valgrind runs the worker in its own process).
    fn control(&self, flag: &str) {
        control(self.child.id(), flag);
    }

    fn dump(&self, nth: usize) -> Profile {
        dump(self.out.as_ref().expect("counted"), self.child.id(), nth)
    }

    /// Runs `pairs` pairs; how long they took.
    fn run(&mut self, pairs: usize) -> Duration {
        use std::io::Write;
        let started = Instant::now();
        writeln!(self.stdin, "{pairs}").unwrap();
        assert_eq!(
            self.lines.next().and_then(Result::ok).as_deref(),
            Some("done")
        );
        started.elapsed()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The worker's side: `MODE,REDIS_URL` in [`PAIRS_WORKER`]; says `ready`, then runs as many
/// pairs as each line of stdin says and answers `done`, until stdin closes.
pub async fn pairs_worker(spec: &str) {
    use std::io::BufRead;
    let (mode, url) = spec.split_once(',').expect("MODE,URL");
    let store = latchkey_host::open("lockstore", &latchkey_host::StoreSettings::new(url)).unwrap();
    let conn = crate::setup::connection_to(url).await;
    // On demand memory (valgrind cannot reserve a pool's address space), compiled
    // components from the disk cache.
    let mut options = latchkey_host::EngineOptions::default();
    options.pooled_instances = None;
    options.disk_cache = true;
    let runner = latchkey_host::Runner::with_options(options).unwrap();
    let guest_name = match mode {
        "guest-p3" => "lockctl_p3",
        _ => "bench",
    };
    let program = runner.load(&guest(guest_name)).unwrap();
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let count: usize = line.unwrap().trim().parse().unwrap();
        match mode {
            "raw" => drop(crate::setup::raw_pairs(&conn, count, "counted").await),
            "host" => drop(crate::setup::direct_pairs(&store, count, "counted").await),
            _ => {
                let n = count.to_string();
                let args: Vec<&str> = match mode {
                    "guest-p3" => vec![guest_name, "open", "lockstore", "pairs", &n, "counted"],
                    _ => vec![guest_name, "pairs", &n, "counted"],
                };
                let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
                wasi.args(&args)
                    .stdout(wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 20));
                let exit = runner
                    .run(
                        &program,
                        wasi.build(),
                        crate::setup::app(&store).build(),
                        latchkey_host::GuestLimits::default(),
                    )
                    .await;
                assert!(matches!(exit, latchkey_host::Exit::Status(0)), "{exit:?}");
            }
        }
        println!("done");
    }
}
