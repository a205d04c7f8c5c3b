//! One real `redis-server` of a test's own: started on a free loopback port (or in a network
//! namespace of the test's, [`crate::netns`]), stopped when dropped, and crashed, restarted,
//! paused or queried when a test needs it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::PATIENCE;
use crate::netns::Node;

/// A `redis-server` of the test's own, without persistence, on a free loopback port or in a
/// node of the test's.
pub struct RedisServer {
    /// The address it listens on.
    host: String,
    port: u16,
    /// The network namespace it runs in, if not the test's.
    netns: Option<String>,
    child: Child,
    dir: tempfile::TempDir,
    /// A configuration file to start from (a sentinel's, which Sentinel rewrites).
    config_file: Option<PathBuf>,
    extra: Vec<String>,
    /// The file that shifts its wall clock, if it has a clock that jumps.
    clock: Option<PathBuf>,
}

impl RedisServer {
    /// Starts a server. Panics with a clear message if there is no `redis-server` to run.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments, such as `--requirepass x`.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self::start_in(Place::Loopback, dir, None, extra, None)
    }

    /// Starts a server whose wall clock a test can move ([`RedisServer::shift_clock`]):
    /// `harness/clock_shift.c` preloaded into it. Its keys' expiry and its `TIME` — what a
    /// lease and a fence are measured by — follow that clock.
    pub fn start_with_clock() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let clock = clock_in(&dir);
        Self::start_in(Place::Loopback, dir, None, &[], Some(clock))
    }

    /// [`RedisServer::start_on`], with a clock a test can move.
    pub fn start_on_with_clock(node: &Node, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let clock = clock_in(&dir);
        Self::start_in(Place::node(node, 6379), dir, None, extra, Some(clock))
    }

    /// Shifts the server's wall clock to `seconds` (negative: back) from the true time, at
    /// once — a clock that steps, as NTP or an operator steps one.
    pub fn shift_clock(&self, seconds: i64) {
        let clock = self.clock.as_ref().expect("a server started with_clock");
        let ns = i128::from(seconds) * 1_000_000_000;
        std::fs::write(clock, ns.to_string()).expect("the clock's shift is written");
    }

    /// Starts a server in `node`, on port 6379 of its address, with `extra` arguments.
    pub fn start_on(node: &Node, extra: &[&str]) -> Self {
        Self::start_on_port(node, 6379, extra)
    }

    /// Starts a server in `node` on `port` (for several servers in one node).
    pub fn start_on_port(node: &Node, port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self::start_in(Place::node(node, port), dir, None, extra, None)
    }

    /// A replica of this server, in sync before it returns.
    pub fn start_replica(&self) -> Self {
        let port = self.port.to_string();
        let replica = Self::start_with(&["--replicaof", &self.host, &port]);
        replica.wait_for_reply(&["INFO", "replication"], "master_link_status:up");
        replica
    }

    /// A replica of this server in `node`, in sync before it returns.
    pub fn start_replica_on(&self, node: &Node) -> Self {
        let port = self.port.to_string();
        let replica = Self::start_on(node, &["--replicaof", &self.host, &port]);
        replica.wait_for_reply(&["INFO", "replication"], "master_link_status:up");
        replica
    }

    /// [`RedisServer::start_replica_on`], with a clock a test can move.
    pub fn start_replica_on_with_clock(&self, node: &Node) -> Self {
        let port = self.port.to_string();
        let replica = Self::start_on_with_clock(node, &["--replicaof", &self.host, &port]);
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
        Self::start_sentinel_in(Place::Loopback, service, primary, quorum, down_after)
    }

    /// [`RedisServer::start_sentinel`], in `node` on `port`.
    pub fn start_sentinel_on(
        node: &Node,
        port: u16,
        service: &str,
        primary: &RedisServer,
        quorum: u32,
        down_after: Duration,
    ) -> Self {
        let place = Place::node(node, port);
        Self::start_sentinel_in(place, service, primary, quorum, down_after)
    }

    fn start_sentinel_in(
        place: Place,
        service: &str,
        primary: &RedisServer,
        quorum: u32,
        down_after: Duration,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config_file = dir.path().join("sentinel.conf");
        let config = format!(
            "sentinel monitor {service} {host} {port} {quorum}\n\
             sentinel down-after-milliseconds {service} {down_after}\n\
             sentinel failover-timeout {service} {failover_timeout}\n",
            host = primary.host,
            port = primary.port,
            down_after = down_after.as_millis(),
            failover_timeout = 3 * down_after.as_millis(),
        );
        std::fs::write(&config_file, config).expect("the sentinel's config is written");
        Self::start_in(place, dir, Some(config_file), &["--sentinel"], None)
    }

    fn start_in(
        place: Place,
        dir: tempfile::TempDir,
        config_file: Option<PathBuf>,
        extra: &[&str],
        clock: Option<PathBuf>,
    ) -> Self {
        let (host, port, netns) = match place {
            Place::Loopback => ("127.0.0.1".to_owned(), free_port(), None),
            Place::Node { netns, ip, port } => (ip, port, Some(netns)),
        };
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut server = RedisServer {
            child: spawn_redis(
                &host,
                port,
                netns.as_deref(),
                &dir,
                config_file.as_deref(),
                &extra,
                clock.as_deref(),
            ),
            host,
            port,
            netns,
            dir,
            config_file,
            extra,
            clock,
        };
        // A port found free can be taken before redis-server binds it — and a cluster node
        // binds the port 10000 above too — while many tests start servers at once: one that
        // exits at once is started again on another port.
        for _ in 0..5 {
            if server.wait_ready() {
                return server;
            }
            server.port = free_port();
            server.child = server.spawn();
        }
        panic!("redis-server exited at once five times: no free port for it?");
    }

    /// The URL the host uses (no password: see [`RedisServer::start_with`]).
    pub fn url(&self) -> String {
        format!("redis://{}", self.address())
    }

    /// `HOST:PORT`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
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

    /// Starts a crashed server again, empty, on the same port, as a replica of the server at
    /// `primary` (`HOST:PORT`).
    pub fn restart_as_replica_of(&mut self, primary: &str) {
        let (host, port) = primary.rsplit_once(':').expect("HOST:PORT");
        self.extra = ["--replicaof", host, port].map(str::to_owned).to_vec();
        self.restart();
    }

    /// Starts a crashed server again, empty, on the same port and with the same arguments.
    pub fn restart(&mut self) {
        self.child = self.spawn();
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

    /// Runs one command with `redis-cli`, as a program other than latchkey would (daprd
    /// here): its reply as `redis-cli` prints it, trimmed (`""` for nil).
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs (it comes with redis-server)");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// How many times the server has run `command` (lowercase, as `INFO commandstats`
    /// names it: `evalsha`, `publish`) since it started or its stats were reset.
    pub fn calls(&self, command: &str) -> u64 {
        let stats: String = self.cmd(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
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
        while started.elapsed() < PATIENCE {
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
            "redis-server on port {} did not answer within {PATIENCE:?}",
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

impl RedisServer {
    fn spawn(&self) -> Child {
        spawn_redis(
            &self.host,
            self.port,
            self.netns.as_deref(),
            &self.dir,
            self.config_file.as_deref(),
            &self.extra,
            self.clock.as_deref(),
        )
    }
}

/// Where a server runs.
enum Place {
    /// On the test's loopback, at a free port.
    Loopback,
    /// In a node of the test's, at `ip:port`.
    Node {
        netns: String,
        ip: String,
        port: u16,
    },
}

impl Place {
    fn node(node: &Node, port: u16) -> Self {
        Place::Node {
            netns: node.netns.clone(),
            ip: node.ip.clone(),
            port,
        }
    }
}

fn spawn_redis(
    host: &str,
    port: u16,
    netns: Option<&str>,
    dir: &tempfile::TempDir,
    config_file: Option<&std::path::Path>,
    extra: &[String],
    clock: Option<&std::path::Path>,
) -> Child {
    let mut command = match netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns, "redis-server"]);
            command
        }
        None => Command::new("redis-server"),
    };
    command
        .args(config_file)
        .args(["--bind", host, "--port", &port.to_string()])
        // Reached from other hosts (namespaces) without a password: the test's own network.
        .args(["--protected-mode", "no"])
        .args(["--save", "", "--appendonly", "no"])
        // A primary would otherwise wait 5 s for more replicas before it sends its data.
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::null());
    if let Some(clock) = clock {
        command
            .env("LD_PRELOAD", env!("LATCHKEY_CLOCK_SHIFT_LIB"))
            .env("LATCHKEY_CLOCK_SHIFT", clock);
    }
    command.spawn().unwrap_or_else(|err| {
        panic!(
            "cannot start redis-server ({err}): the tests need a real Redis. \
                 Install it (apt-get install -y redis-server) or run `make test`."
        )
    })
}

/// A loopback port nobody listens on right now, and never handed out before in this
/// process: a crashed server's port stays its own until it restarts there, so that no other
/// test's server takes it meanwhile and the crashed server's clients reach a stranger.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

impl RedisServer {
    /// Waits up to [`PATIENCE`] until the reply to `args` contains `needle`: until a replica is in
    /// sync, say, or a cluster is up.
    pub fn wait_for_reply(&self, args: &[&str], needle: &str) {
        let started = Instant::now();
        while !self.cmd::<String>(args).contains(needle) {
            assert!(started.elapsed() < PATIENCE, "{args:?} never said {needle}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to [`PATIENCE`] until `key` exists: until a guest has taken a lock, say.
    pub fn wait_for_key(&self, key: &str) {
        let started = Instant::now();
        while self.cmd::<i64>(&["EXISTS", key]) == 0 {
            assert!(started.elapsed() < PATIENCE, "{key} never appeared");
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
                started.elapsed() < PATIENCE,
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

/// The file in `dir` that shifts a server's clock, unshifted for now.
fn clock_in(dir: &tempfile::TempDir) -> PathBuf {
    let clock = dir.path().join("clock-shift");
    std::fs::write(&clock, "0").expect("the clock's shift is written");
    clock
}
