//! # The test harness
//!
//! What every integration test shares. A newcomer reads this file first.
//!
//! # Layout
//!
//! - [`RedisServer`]: a real `redis-server` on a free loopback port, started and stopped by
//!   the test that owns it (and restarted, paused, flushed when a test needs it); also a
//!   replica of one, or a Redis Sentinel.
//! - [`RedisCluster`] (three masters) and [`SentinelSet`] (a primary, two replicas, three
//!   sentinels): Redis' own distributed deployments, started by the tests that need them.
//! - [`Fixture`]: one lock store for a test — in memory, on its own Redis, Cluster,
//!   Sentinel set or Redlock masters ([`Deployment`]) — and the apps built on it.
//!   `on_every_backend!` runs a test on each.
//! - [`run`] / [`run_with`]: run a guest from `guest/` through the real host library and
//!   capture its output.
//! - [`ServeProcess`] / [`post`]: a real `latchkey serve` process on a free port, and a
//!   real HTTP client for it.
//! - The guests (`lockctl`, `counter`, `try-lock`, the HTTP handlers `http_demo` and
//!   `http_nolock`) are built for wasm32-wasip2 by `build.rs`; [`guest`] gives their paths.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use latchkey_host::run::Program;
use latchkey_host::{Exit, GuestLimits, LockCtxBuilder, LockStore, RedisConfig, Runner};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// The `latchkey` binary, built by `cargo test --workspace` next to the test binaries, with
/// no `RUST_LOG` so that its stderr holds only what a user would see.
pub fn latchkey() -> Command {
    let exe = std::env::current_exe().unwrap();
    let path: PathBuf = exe.parent().unwrap().parent().unwrap().join("latchkey");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.env_remove("RUST_LOG");
    cmd
}

/// A `latchkey serve` process of the test's own on a free loopback port, stopped (SIGKILL)
/// when dropped unless the test stopped it.
pub struct ServeProcess {
    child: Child,
    port: u16,
    /// What it wrote to stderr, read by a thread of its own.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServeProcess {
    /// `latchkey serve --addr 127.0.0.1:PORT ARGS...`, once it accepts connections.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`ServeProcess::start`], with `env` set in the server's environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut child = latchkey()
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("latchkey starts");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut buffer) {
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let mut server = ServeProcess {
            child,
            port,
            stderr,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("latchkey serve exited with {status}: {}", server.stderr());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "latchkey serve did not listen within 30 s: {}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits up to 30 s for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "latchkey serve did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer as a test reads it.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body, as text.
    pub body: String,
}

/// `POST url` with an empty body, giving up after `timeout`; an error if the server did
/// not answer in time.
pub fn post(url: &str, timeout: Duration) -> Result<Answer, ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut response = agent.post(url).send_empty()?;
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    Ok(Answer {
        status: response.status().as_u16(),
        retry_after,
        body: response.body_mut().read_to_string()?,
    })
}

/// `latchkey run --app-id APP --store STORE FLAGS... GUEST ARGS...` (`STORE` is `NAME=URL`)
/// as a host process of its own, its stdout piped.
pub fn host_process(
    app_id: &str,
    store: &str,
    flags: &[&str],
    guest_name: &str,
    args: &[&str],
) -> Child {
    latchkey()
        .args(["run", "--app-id", app_id, "--store", store])
        .args(flags)
        .arg(guest(guest_name))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("latchkey starts")
}

/// The path of a guest built from `guest/demos`, such as `guest("lockctl")`.
pub fn guest(name: &str) -> PathBuf {
    PathBuf::from(env!("LATCHKEY_GUESTS")).join(format!("{name}.wasm"))
}

/// The path of a guest in another language, built by `make test` (`polyglot-guests`)
/// into `target/guests/LANGUAGE`: `polyglot_guest("python", "lockctl")`.
pub fn polyglot_guest(language: &str, name: &str) -> PathBuf {
    let path = PathBuf::from(env!("LATCHKEY_GUESTS"))
        .ancestors()
        .nth(2)
        .unwrap()
        .join(language)
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: `make test` builds the Python and JavaScript guests \
         (make polyglot-guests)",
        path.display()
    );
    path
}

/// A `redis-server` of the test's own, without persistence, on a free loopback port.
pub struct RedisServer {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    /// A configuration file to start from (a sentinel's, which Sentinel rewrites).
    config_file: Option<PathBuf>,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server. Panics with a clear message if there is no `redis-server` to run.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments, such as `--requirepass x`.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self::start_in(dir, None, extra)
    }

    /// A replica of this server, in sync before it returns.
    pub fn start_replica(&self) -> Self {
        let replica = Self::start_with(&["--replicaof", "127.0.0.1", &self.port.to_string()]);
        replica.wait_for_reply(&["INFO", "replication"], "master_link_status:up");
        replica
    }

    /// A Redis Sentinel that watches `primary` as service `service`, calling it down after
    /// `down_after` of silence and failing over when `quorum` sentinels agree.
    pub fn start_sentinel(
        service: &str,
        primary: &RedisServer,
        quorum: u32,
        down_after: Duration,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config_file = dir.path().join("sentinel.conf");
        let config = format!(
            "sentinel monitor {service} 127.0.0.1 {port} {quorum}\n\
             sentinel down-after-milliseconds {service} {down_after}\n\
             sentinel failover-timeout {service} {failover_timeout}\n",
            port = primary.port,
            down_after = down_after.as_millis(),
            failover_timeout = 3 * down_after.as_millis(),
        );
        std::fs::write(&config_file, config).expect("the sentinel's config is written");
        Self::start_in(dir, Some(config_file), &["--sentinel"])
    }

    fn start_in(dir: tempfile::TempDir, config_file: Option<PathBuf>, extra: &[&str]) -> Self {
        let port = free_port();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn_redis(port, &dir, config_file.as_deref(), &extra);
        let mut server = RedisServer {
            port,
            child,
            dir,
            config_file,
            extra,
        };
        // A port found free can be taken before redis-server binds it — and a cluster node
        // binds the port 10000 above too — while many tests start servers at once: one that
        // exits at once is started again on another port.
        for _ in 0..5 {
            if server.wait_ready() {
                return server;
            }
            server.port = free_port();
            server.child = spawn_redis(
                server.port,
                &server.dir,
                server.config_file.as_deref(),
                &server.extra,
            );
        }
        panic!("redis-server exited at once five times: no free port for it?");
    }

    /// The URL the host uses (no password: see [`RedisServer::start_with`]).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL and starts a new, empty one on the same port: a crash
    /// of a Redis that does not persist.
    pub fn crash_and_restart(&mut self) {
        self.crash();
        self.restart();
    }

    /// Kills the server with SIGKILL.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a crashed server again, empty, on the same port, as a replica of the server on
    /// `primary`.
    pub fn restart_as_replica_of(&mut self, primary: u16) {
        self.extra = vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.to_string(),
        ];
        self.restart();
    }

    /// Starts a crashed server again, empty, on the same port and with the same arguments.
    pub fn restart(&mut self) {
        let config_file = self.config_file.as_deref();
        self.child = spawn_redis(self.port, &self.dir, config_file, &self.extra);
        assert!(
            self.wait_ready(),
            "redis-server could not restart on port {}: something else took it",
            self.port
        );
    }

    /// Whether it answers PING now.
    pub fn is_up(&self) -> bool {
        self.connection()
            .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn))
            .is_ok()
    }

    /// Stops the process (SIGSTOP): connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Continues a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Runs one command on a fresh connection of the test's own.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut conn = self.connection().expect("the test can reach its Redis");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn).expect("the command succeeds")
    }

    /// Every key in the server, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut conn = self.connection().expect("the test can reach its Redis");
        let mut keys = redis::Commands::scan::<String>(&mut conn)
            .expect("SCAN succeeds")
            .collect::<Result<Vec<String>, _>>()
            .expect("SCAN succeeds");
        keys.sort();
        keys
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(self.url().as_str())?;
        if let Some(at) = self.extra.iter().position(|a| a == "--requirepass") {
            let settings = info
                .redis_settings()
                .clone()
                .set_password(&self.extra[at + 1]);
            info = info.set_redis_settings(settings);
        }
        redis::Client::open(info)?.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// Waits until this server answers on its port; false if it exited first (its port was
    /// taken). The answer must come from this server's process, not from another test's
    /// server that took the port.
    fn wait_ready(&mut self) -> bool {
        let started = Instant::now();
        let pid = format!("process_id:{}", self.child.id());
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut conn) = self.connection()
                && let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut conn)
                && info.lines().any(|line| line.trim() == pid)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        );
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume_quietly();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisServer {
    fn resume_quietly(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn spawn_redis(
    port: u16,
    dir: &tempfile::TempDir,
    config_file: Option<&std::path::Path>,
    extra: &[String],
) -> Child {
    Command::new("redis-server")
        .args(config_file)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        // A primary would otherwise wait 5 s for more replicas before it sends its data.
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot start redis-server ({err}): the tests need a real Redis. \
                 Install it (apt-get install -y redis-server) or run `make test`."
            )
        })
}

/// A Redis Cluster of three masters on loopback, with or without a replica each, made with
/// `redis-cli --cluster create`.
pub struct RedisCluster {
    /// The nodes: masters, then replicas (until a failover changes who is which).
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled masters, joins them, and waits until the cluster is up.
    pub fn start() -> Self {
        Self::start_with(0)
    }

    /// Three masters with a replica each, in sync; a master silent for two seconds is failed
    /// over to its replica.
    pub fn start_with_replicas() -> Self {
        Self::start_with(1)
    }

    fn start_with(replicas_per_master: usize) -> Self {
        // With replicas, fail over after two seconds of silence rather than Redis' 15 s
        // (with one, a loaded machine saw a second, spurious failover; see the README).
        let node_timeout = if replicas_per_master > 0 {
            "2000"
        } else {
            "15000"
        };
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas_per_master))
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    node_timeout,
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes")
            .output()
            .expect("redis-cli runs (it comes with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {out:?}"
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        for replica in &cluster.nodes[3..] {
            replica.wait_for_reply(&["INFO", "replication"], "master_link_status:up");
        }
        // Every node must know who the replicas are (gossip takes a moment), or a store
        // checking the topology through one of them would see none.
        let replicas = 3 * replicas_per_master;
        for node in &cluster.nodes {
            let started = Instant::now();
            while node
                .cmd::<String>(&["CLUSTER", "NODES"])
                .lines()
                .filter(|l| l.contains("slave"))
                .count()
                < replicas
            {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "replicas unknown"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        cluster
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The index of the node that serves `key`'s hash slot, as the first live node sees it.
    pub fn owner_of(&self, key: &str) -> usize {
        let observer = self.nodes.iter().find(|n| n.is_up()).expect("a live node");
        let slot: i64 = observer.cmd(&["CLUSTER", "KEYSLOT", key]);
        let table: String = observer.cmd(&["CLUSTER", "NODES"]);
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let serves = fields[8..].iter().any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                (low.parse::<i64>().unwrap()..=high.parse::<i64>().unwrap()).contains(&slot)
            });
            if serves {
                let port = fields[1].split([':', '@']).nth(1).unwrap();
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port().to_string() == port)
                    .unwrap();
            }
        }
        panic!("no node serves slot {slot}");
    }

    /// Moves `key`'s hash slot, with its keys, from its master to master `to`, as resharding
    /// does. Every master learns the new owner at once; a client's map of slots stays as it
    /// was until a redirect tells it.
    pub fn move_slot_of(&self, key: &str, to: usize) {
        let from = self.owner_of(key);
        let slot = self.nodes[from]
            .cmd::<i64>(&["CLUSTER", "KEYSLOT", key])
            .to_string();
        let id = |node: usize| self.nodes[node].cmd::<String>(&["CLUSTER", "MYID"]);
        let (from_id, to_id) = (id(from), id(to));
        let _: () = self.nodes[to].cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        let _: () = self.nodes[from].cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        loop {
            let keys: Vec<String> =
                self.nodes[from].cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            if keys.is_empty() {
                break;
            }
            let port = self.nodes[to].port().to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            let _: () = self.nodes[from].cmd(&migrate);
        }
        for master in self.masters() {
            let _: () = self.nodes[master].cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
    }

    /// The indexes of the nodes that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&node| {
                self.nodes[node].is_up()
                    && self.nodes[node]
                        .cmd::<String>(&["INFO", "replication"])
                        .contains("role:master")
            })
            .collect()
    }

    /// The index of a replica of master `master`.
    pub fn replica_of(&self, master: usize) -> usize {
        let port = format!("master_port:{}", self.nodes[master].port());
        (0..self.nodes.len())
            .find(|&node| {
                self.nodes[node]
                    .cmd::<String>(&["INFO", "replication"])
                    .contains(&port)
            })
            .expect("a replica")
    }

    /// Waits until every node says the cluster is up.
    pub fn wait_until_ok(&self) {
        for node in &self.nodes {
            node.wait_for_reply(&["CLUSTER", "INFO"], "cluster_state:ok");
        }
    }

    /// Every key on every node, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.nodes.iter().flat_map(RedisServer::keys).collect();
        keys.sort();
        keys
    }
}

/// A primary with two replicas, watched by three Redis Sentinels (quorum 2) as service
/// `latchkey`: the smallest set in which a failover keeps a replica to confirm grants.
pub struct SentinelSet {
    /// The data servers; which is the primary changes on failover.
    pub servers: Vec<RedisServer>,
    /// The sentinels.
    pub sentinels: Vec<RedisServer>,
}

impl SentinelSet {
    /// The service name the sentinels know the primary by.
    pub const SERVICE: &str = "latchkey";

    /// How soon the sentinels of a failover test call a silent primary down. (With less, on
    /// a loaded machine, a just-promoted primary can be called down before the sentinels
    /// reach it, and fail over again.)
    pub const QUICK: Duration = Duration::from_secs(1);

    /// Starts the servers and sentinels, and waits until every sentinel knows both replicas
    /// and the other sentinels. They fail over after `down_after` of silence: [`Self::QUICK`]
    /// for a failover test, long for a test that must not see one.
    pub fn start(down_after: Duration) -> Self {
        let primary = RedisServer::start();
        let replicas = [primary.start_replica(), primary.start_replica()];
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_sentinel(Self::SERVICE, &primary, 2, down_after))
            .collect();
        for sentinel in &sentinels {
            sentinel.wait_for_reply(&["INFO", "sentinel"], "slaves=2,sentinels=3");
        }
        let mut servers = vec![primary];
        servers.extend(replicas);
        SentinelSet { servers, sentinels }
    }

    /// `redis+sentinel://` with every sentinel.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), Self::SERVICE)
    }

    /// The index of the server the sentinels name as primary.
    pub fn primary(&self) -> usize {
        let (_host, port): (String, String) =
            self.sentinels[0].cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::SERVICE]);
        self.servers
            .iter()
            .position(|s| s.port().to_string() == port)
            .expect("the primary is one of the set's servers")
    }

    /// Kills the primary (SIGKILL), waits up to 20 s until the sentinels have promoted a
    /// replica, and restarts the old primary empty as a replica of the new one — as an
    /// operator would, and as the sentinels would themselves some seconds later.
    pub fn fail_over(&mut self) {
        let old = self.primary();
        self.servers[old].crash();
        let started = Instant::now();
        while self.primary() == old {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the sentinels did not fail over within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let new = self.servers[self.primary()].port();
        self.servers[old].restart_as_replica_of(new);
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

/// The lock store of one test, and the deployment behind it.
pub struct Fixture {
    /// The store every app of the test uses.
    pub store: LockStore,
    /// What serves it.
    pub deployment: Deployment,
}

/// The servers behind a [`Fixture`]'s store, started for the test and stopped with it.
pub enum Deployment {
    /// The host's own memory: no server.
    Memory,
    /// One Redis server.
    Redis(RedisServer),
    /// A three-master Redis Cluster.
    Cluster(RedisCluster),
    /// A primary and two replicas behind three sentinels.
    Sentinel(SentinelSet),
    /// Three independent Redlock masters.
    Redlock(Vec<RedisServer>),
}

impl Fixture {
    /// A store in the host's memory.
    pub fn in_memory() -> Self {
        Fixture {
            store: LockStore::memory(),
            deployment: Deployment::Memory,
        }
    }

    /// A store on a Redis server of the test's own.
    pub fn on_redis() -> Self {
        let server = RedisServer::start();
        Fixture {
            store: redis_store(&server.url(), Duration::from_secs(2)),
            deployment: Deployment::Redis(server),
        }
    }

    /// A store on a three-master Redis Cluster of the test's own.
    pub fn on_cluster() -> Self {
        let cluster = RedisCluster::start();
        Fixture {
            store: redis_store(&cluster.url(), Duration::from_secs(2)),
            deployment: Deployment::Cluster(cluster),
        }
    }

    /// A store on a primary and two replicas of the test's own, found through three
    /// sentinels that do not fail over during the test; every grant waits for one replica.
    pub fn on_sentinel() -> Self {
        Self::on_sentinel_failing_over_after(Duration::from_secs(60))
    }

    /// [`Fixture::on_sentinel`], with sentinels that fail over after `down_after` of
    /// silence.
    pub fn on_sentinel_failing_over_after(down_after: Duration) -> Self {
        let set = SentinelSet::start(down_after);
        let mut config = RedisConfig::new(set.url());
        config.wait_replicas = 1;
        let store = LockStore::redis(config).expect("a valid Sentinel URL");
        Fixture {
            store,
            deployment: Deployment::Sentinel(set),
        }
    }

    /// A Redlock store on three independent masters of the test's own.
    pub fn on_redlock() -> Self {
        let masters: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
        Fixture {
            store: redis_store(&redlock_url(&masters), Duration::from_secs(2)),
            deployment: Deployment::Redlock(masters),
        }
    }

    /// The app `app_id`, offered this fixture's store as `lockstore`.
    pub fn app(&self, app_id: &str) -> LockCtxBuilder {
        let mut app = LockCtxBuilder::new(app_id);
        app.store("lockstore", self.store.clone());
        app
    }

    /// The Redis server behind the store; panics for other deployments.
    pub fn redis(&self) -> &RedisServer {
        match &self.deployment {
            Deployment::Redis(server) => server,
            _ => panic!("the fixture is not on one Redis server"),
        }
    }

    /// [`Fixture::redis`], to restart or crash it.
    pub fn redis_mut(&mut self) -> &mut RedisServer {
        match &mut self.deployment {
            Deployment::Redis(server) => server,
            _ => panic!("the fixture is not on one Redis server"),
        }
    }

    /// The Redis Cluster behind the store; panics for other deployments.
    pub fn cluster(&self) -> &RedisCluster {
        match &self.deployment {
            Deployment::Cluster(cluster) => cluster,
            _ => panic!("the fixture is not on a Redis Cluster"),
        }
    }

    /// The Sentinel set behind the store; panics for other deployments.
    pub fn sentinel_mut(&mut self) -> &mut SentinelSet {
        match &mut self.deployment {
            Deployment::Sentinel(set) => set,
            _ => panic!("the fixture is not behind Sentinel"),
        }
    }

    /// The Redlock masters behind the store; panics for other deployments.
    pub fn redlock(&mut self) -> &mut [RedisServer] {
        match &mut self.deployment {
            Deployment::Redlock(masters) => masters,
            _ => panic!("the fixture is not on Redlock masters"),
        }
    }
}

/// `redis+redlock://` over `masters`.
pub fn redlock_url(masters: &[RedisServer]) -> String {
    let hosts: Vec<String> = masters
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.port()))
        .collect();
    format!("redis+redlock://{}", hosts.join(","))
}

/// A Redis store at `url` with the given call timeout.
pub fn redis_store(url: &str, timeout: Duration) -> LockStore {
    let mut config = RedisConfig::new(url);
    config.timeout = timeout;
    LockStore::redis(config).expect("a valid Redis URL")
}

/// Defines each test once and runs it on every backend: `memory::name`, `redis::name`,
/// `cluster::name` (a three-master Redis Cluster), `sentinel::name` (a primary with two
/// replicas behind three sentinels) and `redlock::name` (three independent masters).
#[macro_export]
macro_rules! on_every_backend {
    ($($(#[$doc:meta])* async fn $name:ident($fx:ident: &Fixture) $body:block)*) => {
        $( $(#[$doc])* async fn $name($fx: &$crate::Fixture) $body )*

        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(&$crate::Fixture::in_memory()).await
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(&$crate::Fixture::on_redis()).await
                }
            )*
        }

        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(&$crate::Fixture::on_cluster()).await
                }
            )*
        }

        mod sentinel {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(&$crate::Fixture::on_sentinel()).await
                }
            )*
        }

        mod redlock {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(&$crate::Fixture::on_redlock()).await
                }
            )*
        }
    };
}

/// What a guest did.
#[derive(Debug)]
pub struct Run {
    /// How it ended.
    pub exit: Exit,
    /// What it printed.
    pub stdout: String,
    /// How long it ran, start to end.
    pub elapsed: Duration,
}

impl Run {
    /// The printed lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Panics unless the guest exited with status 0.
    pub fn assert_success(&self) -> &Self {
        assert!(
            matches!(self.exit, Exit::Status(0)),
            "guest failed: {:?}\n{}",
            self.exit,
            self.stdout
        );
        self
    }

    /// The fence of every `granted` line, in order.
    pub fn fences(&self) -> Vec<u64> {
        self.lines()
            .iter()
            .filter_map(|line| line.split("fence=").nth(1))
            .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
            .collect()
    }

    /// The `after=MS` of the first `lock` step.
    pub fn waited(&self) -> Duration {
        let ms = self
            .stdout
            .split("after=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("a lock step in the output");
        Duration::from_millis(ms.parse().unwrap())
    }
}

type Host = (Runner, HashMap<&'static str, Program>);

/// The command guests of `guest/demos`.
const GUESTS: [&str; 6] = [
    "lockctl",
    "counter",
    "try-lock",
    "bench",
    "long-job",
    "lock-v0-1",
];

/// The host shared by the tests of one binary: one engine with every guest compiled up
/// front, so that no test's timing includes a compilation; a second engine that meters
/// fuel, for the tests that set some.
fn runner(fuel: bool) -> &'static Host {
    static PLAIN: OnceLock<Host> = OnceLock::new();
    static FUELLED: OnceLock<Host> = OnceLock::new();
    let cell = if fuel { &FUELLED } else { &PLAIN };
    cell.get_or_init(|| {
        let runner = if fuel {
            Runner::metering_fuel()
        } else {
            Runner::new()
        };
        let runner = runner.expect("an engine");
        let programs = GUESTS
            .into_iter()
            .map(|name| {
                let program = runner
                    .load(&guest(name))
                    .unwrap_or_else(|e| panic!("cannot load guest {name}: {e:?}"));
                (name, program)
            })
            .collect();
        (runner, programs)
    })
}

fn program(name: &str, fuel: bool) -> Program {
    runner(fuel).1[name].clone()
}

/// Runs `guest` with `args` as one instance of `app`.
pub async fn run(app: &LockCtxBuilder, guest: &str, args: &[&str]) -> Run {
    run_with(app, guest, args, GuestLimits::default(), |_| {}).await
}

/// Like [`run`], within `limits`, and with a chance to grant the guest more WASI (a
/// directory, variables, the network).
pub async fn run_with(
    app: &LockCtxBuilder,
    guest: &str,
    args: &[&str],
    limits: GuestLimits,
    grant: impl FnOnce(&mut WasiCtxBuilder),
) -> Run {
    let fuel = limits.fuel.is_some();
    let program = program(guest, fuel);
    let stdout = MemoryOutputPipe::new(64 << 20);
    let mut wasi = WasiCtxBuilder::new();
    wasi.arg(guest)
        .args(args)
        .stdout(stdout.clone())
        .inherit_stderr();
    grant(&mut wasi);
    let started = Instant::now();
    let exit = runner(fuel)
        .0
        .run_limited(&program, wasi.build(), app.build(), limits)
        .await;
    Run {
        exit,
        stdout: String::from_utf8(stdout.contents().to_vec()).expect("UTF-8 output"),
        elapsed: started.elapsed(),
    }
}

/// Splits `"open lockstore try a 100"` into arguments, for readable scripts.
pub fn script(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// Starts `lockctl` with the steps in `steps` as its own task, so that several instances
/// run at once.
pub fn spawn_lockctl(app: &LockCtxBuilder, steps: &str) -> tokio::task::JoinHandle<Run> {
    let (app, steps) = (app.clone(), steps.to_owned());
    tokio::spawn(async move { run(&app, "lockctl", &script(&steps)).await })
}

/// Runs `lockctl` with the steps in `steps` and waits for it.
pub async fn lockctl(app: &LockCtxBuilder, steps: &str) -> Run {
    run(app, "lockctl", &script(steps)).await
}

/// Runs `lockctl` within `limits`.
pub async fn lockctl_limited(app: &LockCtxBuilder, steps: &str, limits: GuestLimits) -> Run {
    run_with(app, "lockctl", &script(steps), limits, |_| {}).await
}

impl RedisServer {
    /// Waits up to 20 s until the reply to `args` contains `needle`: until a replica is in
    /// sync, say, or a cluster is up.
    pub fn wait_for_reply(&self, args: &[&str], needle: &str) {
        let started = Instant::now();
        while !self.cmd::<String>(args).contains(needle) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{args:?} never said {needle}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to 10 s until `key` exists: until a guest has taken a lock, say.
    pub fn wait_for_key(&self, key: &str) {
        let started = Instant::now();
        while self.cmd::<i64>(&["EXISTS", key]) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{key} never appeared"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`RedisServer::wait_for_key`] on a cluster replica, which answers reads only on a
    /// connection that asked with `READONLY`.
    pub fn wait_for_replicated_key(&self, key: &str) {
        let mut conn = self.connection().expect("the test can reach its Redis");
        let () = redis::cmd("READONLY").query(&mut conn).expect("READONLY");
        let started = Instant::now();
        while redis::cmd("EXISTS")
            .arg(key)
            .query::<i64>(&mut conn)
            .expect("EXISTS")
            == 0
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{key} never reached the replica"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The keys of held locks (`...:lock`), sorted: what must be gone once their holders
    /// have ended.
    pub fn lock_keys(&self) -> Vec<String> {
        self.keys()
            .into_iter()
            .filter(|k| k.ends_with(":lock"))
            .collect()
    }
}
