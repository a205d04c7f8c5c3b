//! The guests of `guest/`, built for wasm32-wasip2 by `build.rs`, and running them through
//! the real host library with their output captured.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use latchkey_host::{Exit, GuestLimits, LockCtxBuilder, Program, Runner};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

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

    /// How long the first `await-change` step waited (`changed after=MS`).
    pub fn waited_for_change(&self) -> Duration {
        let ms = self
            .lines()
            .into_iter()
            .find_map(|line| line.strip_prefix("changed after="))
            .expect("an await-change step in the output");
        Duration::from_millis(ms.parse().unwrap())
    }
}

type Host = (Runner, HashMap<&'static str, Program>);

/// The command guests of `guest/demos`: WASI 0.2 (of `latchkey:lock` 0.1.0, 0.2.0 and 0.2.1),
/// and WASI 0.3 (`lockctl_p3`, `tasks_demo_p3`).
const GUESTS: [&str; 11] = [
    "lockctl",
    "counter",
    "leader",
    "limited",
    "try-lock",
    "bench",
    "long-job",
    "lock-v0-1",
    "lock-v0-2-0",
    "lockctl_p3",
    "tasks_demo_p3",
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
        .run(&program, wasi.build(), app.build(), limits)
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
