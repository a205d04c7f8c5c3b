//! Real `latchkey` processes: `latchkey run` as a host of its own, `latchkey serve` on a
//! free port with a real HTTP client for it, and what tests read of a process.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::PATIENCE;
use crate::guests::guest;
use crate::servers::free_port;

/// Where the `latchkey` binary is: built by `cargo test --workspace` next to the test
/// binaries.
pub fn latchkey_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path: PathBuf = exe.parent().unwrap().parent().unwrap().join("latchkey");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// The `latchkey` binary, with no `RUST_LOG` so that its stderr holds only what a user
/// would see.
pub fn latchkey() -> Command {
    let mut cmd = Command::new(latchkey_path());
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Compiles `component` into the cache of compiled components the `latchkey` processes of
/// the tests share (`latchkey check`), once per test binary, before a test starts a process
/// on it: so that no test's timing includes a compilation, however cold the cache and
/// loaded the machine (a Python guest takes seconds).
pub fn warm(component: &Path) {
    static WARMED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let mut warmed = WARMED.lock().unwrap_or_else(|e| e.into_inner());
    if warmed.contains(component) {
        return;
    }
    let out = latchkey()
        .arg("check")
        .arg(component)
        .output()
        .expect("latchkey starts");
    assert!(out.status.success(), "latchkey check failed: {out:?}");
    warmed.insert(component.to_owned());
}

/// The components among a command line's arguments, warmed: see [`warm`].
fn warm_components(args: &[&str]) {
    for arg in args.iter().filter(|arg| arg.ends_with(".wasm")) {
        warm(Path::new(arg));
    }
}

/// A `latchkey serve` process of the test's own on a free loopback port, stopped (SIGKILL)
/// when dropped unless the test stopped it.
pub struct ServeProcess {
    child: Child,
    port: u16,
    /// What it wrote to stderr, read by a thread of its own.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// Its stderr, when nobody reads it.
    _unread: Option<std::process::ChildStderr>,
}

impl ServeProcess {
    /// `latchkey serve --addr 127.0.0.1:PORT ARGS...`, once it accepts connections.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`ServeProcess::start`], with `env` set in the server's environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(args, env, true)
    }

    /// [`ServeProcess::start`], its stderr a pipe that nobody reads: once the pipe's buffer
    /// is full, every write to it blocks.
    pub fn start_unread(args: &[&str]) -> Self {
        Self::spawn(args, &[], false)
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], read_stderr: bool) -> Self {
        warm_components(args);
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
        let mut unread = None;
        if read_stderr {
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
        } else {
            unread = Some(pipe);
        }
        let mut server = ServeProcess {
            child,
            port,
            stderr,
            _unread: unread,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("latchkey serve exited with {status}: {}", server.stderr());
            }
            assert!(
                started.elapsed() < PATIENCE,
                "latchkey serve did not listen within {PATIENCE:?}: {}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address())
    }

    /// `127.0.0.1:PORT`, for a test that speaks HTTP over a socket of its own.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A field of the server's `/proc/PID/status`, in kB: `VmRSS`, `VmHWM`.
    pub fn status_field(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in the server's status"))
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
            assert!(started.elapsed() < PATIENCE, "latchkey serve did not exit");
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
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// The value of header `name` (lower case), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
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
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    Ok(Answer {
        status: response.status().as_u16(),
        retry_after,
        headers,
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
    warm(&guest(guest_name));
    latchkey()
        .args(["run", "--app-id", app_id, "--store", store])
        .args(flags)
        .arg(guest(guest_name))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("latchkey starts")
}

/// The lines a process printed on its stdout.
pub fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, ...) to `child`.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} failed");
}
