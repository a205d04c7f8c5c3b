//! The step language of `lockctl` (WASI 0.2) and `lockctl-p3` (WASI 0.3): scripted lock
//! clients for the tests and benchmarks. Each argument group is one step, each step prints
//! one line, and a step both clients have prints the same line in both — so that a test
//! holds the two versions of the interface to one answer.
//!
//! ```text
//! lockctl open lockstore  try job 5000  extend 10000  unlock
//! ```
//!
//! Grants — locks, permits, leaderships — are kept on one stack; `extend`, `fence`,
//! `keepalive`, `held`, `lost`, `unlock` and `drop` act on the top one (`unlock` releases a
//! permit and resigns a leadership).
//!
//! | step                                 | prints                                          |
//! |--------------------------------------|-------------------------------------------------|
//! | `open NAME`                          | `opened NAME`                                   |
//! | `try ID LEASE_MS`                    | `granted ID fence=F` or `held ID`               |
//! | `try-long BYTES LEASE_MS`            | the same, for an id of BYTES `x`s               |
//! | `lock ID LEASE_MS WAIT_MS`           | `granted ID fence=F after=MS` or `held ID after=MS` |
//! | `permit ID LIMIT LEASE_MS WAIT_MS`   | `granted ID fence=F after=MS` or `held ID after=MS` |
//! | `campaign ID VALUE LEASE_MS WAIT_MS` | `leading ID fence=F after=MS` or `led ID after=MS` |
//! | `leader ID`                          | `leader VALUE fence=F` or `leader none`         |
//! | `extend LEASE_MS`                    | `extended true` or `extended false`             |
//! | `fence`                              | `fence F`                                       |
//! | `unlock`                             | `unlocked STATUS`                               |
//! | `keepalive`                          | `keeping alive`: the host renews the lease      |
//! | `held`                               | `held true` or `held false` (asks the store)    |
//! | `lost`                               | `lost true` or `lost false` (without waiting)   |
//! | `drop`                               | `dropped`                                       |
//! | `swap`                               | nothing: the top two grants change places       |
//! | `env`                                | `env NAME=VALUE` for each variable the guest has |
//! | `sleep MS`                           | nothing                                         |
//! | `trap`                               | nothing: the instance traps                     |
//!
//! Steps of WASI 0.2 only (`lockctl`): watching an election with a pollable, and what a
//! hostile guest would do, for the sandbox tests:
//!
//! | step                      | prints                                                 |
//! |---------------------------|--------------------------------------------------------|
//! | `watch ID`                | `watching ID`: a leader-change pollable joins a list   |
//! | `changed`                 | `changed true` or `changed false`: the last watch, without waiting |
//! | `await-change`            | `changed after=MS`: waits on the last watch            |
//! | `print BYTES`             | BYTES of output, in lines of 100 bytes: 99 `x`s and a newline |
//! | `spin`                    | loops forever                                          |
//! | `bomb`                    | allocates memory until something stops it              |
//! | `many N LEASE_MS`         | tries N distinct ids: `many granted=G` and the first error |
//! | `forge HANDLE`            | unlocks a lock handle it made up (the host traps it)   |
//! | `flood-open N`            | opens the store N times, keeping every handle: `flood-open opened=K` and the first error |
//! | `flood-lost N`            | takes N `lost` pollables of the top lock: `flood-lost taken=N` |
//! | `flood-timers N`          | takes N WASI timer pollables: `flood-timers taken=N`   |
//! | `flood-watch N ID`        | N leader-change pollables of ID: `flood-watch taken=K` and the first error |
//! | `connect ADDR`            | opens a TCP connection: `connect ok` or `connect error ...` |
//! | `read PATH`               | reads a file: `read N bytes` or `read error ...`       |
//!
//! Steps of WASI 0.3 only (`lockctl-p3`): tasks, cancellation, and its own interfaces:
//!
//! | step                            | prints                                             |
//! |---------------------------------|----------------------------------------------------|
//! | `leader-change ID`              | waits for another leader than the one `leader` or `leader-change` last saw: `changed VALUE fence=F after=MS` or `changed none after=MS` |
//! | `flood-watch N ID`              | N `leader-change` calls of ID pending at once, until one fails: `flood-watch first-error=E` |
//! | `cancel ID LEASE_MS WAIT_MS MS` | `lock ID` dropped after `MS` if still pending: `cancelled ID` or `granted ID fence=F` |
//! | `race ID N SPREAD`              | N rounds: a task unlocks ID while another's `lock` of ID is cancelled up to SPREAD µs after; then ID must be free: `race ID free=K of N` |
//! | `await-lost`                    | waits for the top grant to be lost: `lost`         |
//! | `pairs N ID`                    | N try-lock + unlock pairs; each pair's ns, one per line |
//! | `fenced-write ADDR VALUE`       | writes VALUE with the top grant's fence to the fenced store at ADDR (needs `--allow-network`): `fenced-write VALUE accepted` or `refused` |
//! | `await-file PATH`               | waits until PATH exists (a test's signal to go on): `file PATH` |
//! | `dirs`                          | the preopened directories: `dirs NAME:TYPE ...`    |
//!
//! A failed step prints `error KIND: MESSAGE` and the script goes on; a step the client's
//! WASI version lacks stops it, naming the step.

use std::time::Duration;

use latchkey::{Leader, UnlockStatus};

/// One step of a script.
#[derive(Debug)]
pub enum Step {
    Open(String),
    /// `try`, `try-long` (`wait` none) or `lock`.
    Take {
        id: String,
        lease: Duration,
        wait: Option<Duration>,
    },
    Permit {
        id: String,
        limit: u32,
        lease: Duration,
        wait: Duration,
    },
    Campaign {
        id: String,
        value: String,
        lease: Duration,
        wait: Duration,
    },
    Leader(String),
    Extend(Duration),
    Fence,
    Unlock,
    KeepAlive,
    Held,
    Lost,
    Drop,
    Swap,
    Env,
    Sleep(Duration),
    Trap,
    // WASI 0.2 only.
    Watch(String),
    Changed,
    AwaitChange,
    Print(usize),
    Spin,
    Bomb,
    Many {
        count: u64,
        lease: Duration,
    },
    Forge(u32),
    FloodOpen(u64),
    FloodLost(u64),
    FloodTimers(u64),
    // Both, with each version's meaning.
    FloodWatch {
        count: u64,
        id: String,
    },
    Connect(String),
    Read(String),
    // WASI 0.3 only.
    LeaderChange(String),
    Cancel {
        id: String,
        lease: Duration,
        wait: Duration,
        after: Duration,
    },
    Race {
        id: String,
        rounds: u64,
        spread: u64,
    },
    AwaitLost,
    Pairs {
        count: usize,
        id: String,
    },
    FencedWrite {
        addr: String,
        value: String,
    },
    AwaitFile(String),
    Dirs,
}

/// The steps of `args`, in order. A malformed script is the test's mistake: it panics,
/// naming what is missing.
pub fn parse(args: &[String]) -> Vec<Step> {
    let mut args = args.iter().map(String::as_str);
    let mut steps = Vec::new();
    while let Some(step) = args.next() {
        let mut next = Next {
            step,
            args: &mut args,
        };
        steps.push(match step {
            "open" => Step::Open(next.text("a store name")),
            "try" => Step::Take {
                id: next.text("a resource id"),
                lease: next.ms("a lease"),
                wait: None,
            },
            "try-long" => {
                let bytes = next.number("a length") as usize;
                Step::Take {
                    id: "x".repeat(bytes),
                    lease: next.ms("a lease"),
                    wait: None,
                }
            }
            "lock" => Step::Take {
                id: next.text("a resource id"),
                lease: next.ms("a lease"),
                wait: Some(next.ms("a wait")),
            },
            "permit" => Step::Permit {
                id: next.text("a semaphore id"),
                limit: next.number("a limit") as u32,
                lease: next.ms("a lease"),
                wait: next.ms("a wait"),
            },
            "campaign" => Step::Campaign {
                id: next.text("an election id"),
                value: next.text("a value"),
                lease: next.ms("a lease"),
                wait: next.ms("a wait"),
            },
            "leader" => Step::Leader(next.text("an election id")),
            "extend" => Step::Extend(next.ms("a lease")),
            "fence" => Step::Fence,
            "unlock" => Step::Unlock,
            "keepalive" => Step::KeepAlive,
            "held" => Step::Held,
            "lost" => Step::Lost,
            "drop" => Step::Drop,
            "swap" => Step::Swap,
            "env" => Step::Env,
            "sleep" => Step::Sleep(next.ms("a length")),
            "trap" => Step::Trap,
            "watch" => Step::Watch(next.text("an election id")),
            "changed" => Step::Changed,
            "await-change" => Step::AwaitChange,
            "print" => Step::Print(next.number("a length") as usize),
            "spin" => Step::Spin,
            "bomb" => Step::Bomb,
            "many" => Step::Many {
                count: next.number("a count"),
                lease: next.ms("a lease"),
            },
            "forge" => Step::Forge(next.number("a handle") as u32),
            "flood-open" => Step::FloodOpen(next.number("a count")),
            "flood-lost" => Step::FloodLost(next.number("a count")),
            "flood-timers" => Step::FloodTimers(next.number("a count")),
            "flood-watch" => Step::FloodWatch {
                count: next.number("a count"),
                id: next.text("an election id"),
            },
            "connect" => Step::Connect(next.text("an address")),
            "read" => Step::Read(next.text("a path")),
            "leader-change" => Step::LeaderChange(next.text("an election id")),
            "cancel" => Step::Cancel {
                id: next.text("a resource id"),
                lease: next.ms("a lease"),
                wait: next.ms("a wait"),
                after: next.ms("a delay"),
            },
            "race" => Step::Race {
                id: next.text("a resource id"),
                rounds: next.number("a count"),
                spread: next.number("a spread"),
            },
            "await-lost" => Step::AwaitLost,
            "pairs" => Step::Pairs {
                count: next.number("a count") as usize,
                id: next.text("a resource id"),
            },
            "fenced-write" => Step::FencedWrite {
                addr: next.text("an address"),
                value: next.text("a value"),
            },
            "await-file" => Step::AwaitFile(next.text("a path")),
            "dirs" => Step::Dirs,
            other => panic!("unknown step {other}"),
        });
    }
    steps
}

/// The arguments of one step, taken in turn.
struct Next<'a, 'b, I: Iterator<Item = &'a str>> {
    step: &'a str,
    args: &'b mut I,
}

impl<'a, I: Iterator<Item = &'a str>> Next<'a, '_, I> {
    fn text(&mut self, what: &str) -> String {
        let step = self.step;
        self.args
            .next()
            .unwrap_or_else(|| panic!("{step} needs {what}"))
            .to_owned()
    }

    fn number(&mut self, what: &str) -> u64 {
        let text = self.text(what);
        text.parse()
            .unwrap_or_else(|_| panic!("{} needs {what}, a number, not {text:?}", self.step))
    }

    fn ms(&mut self, what: &str) -> Duration {
        Duration::from_millis(self.number(what))
    }
}

/// What a take asked for, as its lines name it.
#[derive(Clone, Copy)]
pub enum Asked {
    Lock,
    Permit,
    Leadership,
}

/// The line of a take of `id`: granted (with its fence) or not; `after`, how long it took,
/// if it could wait.
pub fn taken(asked: Asked, id: &str, fence: Option<u64>, after: Option<Duration>) -> String {
    let (yes, no) = match asked {
        Asked::Lock | Asked::Permit => ("granted", "held"),
        Asked::Leadership => ("leading", "led"),
    };
    let shown = if id.len() > 64 {
        format!("<{} bytes>", id.len())
    } else {
        id.to_owned()
    };
    let after = after.map_or(String::new(), |after| {
        format!(" after={}", after.as_millis())
    });
    match fence {
        Some(fence) => format!("{yes} {shown} fence={fence}{after}"),
        None => format!("{no} {shown}{after}"),
    }
}

/// The line of `leader` (`word` "leader") or of a change of leader (`word` "changed").
pub fn leader(word: &str, leader: Option<&Leader>, after: Option<Duration>) -> String {
    let after = after.map_or(String::new(), |after| {
        format!(" after={}", after.as_millis())
    });
    match leader {
        Some(l) => format!("{word} {} fence={}{after}", l.value, l.fence),
        None => format!("{word} none{after}"),
    }
}

/// The line of an `unlock`.
pub fn unlocked(status: UnlockStatus) -> String {
    format!("unlocked {status}")
}

/// The lines of `env`: every variable, sorted.
pub fn env(mut vars: Vec<(String, String)>) -> Vec<String> {
    vars.sort();
    vars.into_iter()
        .map(|(name, value)| format!("env {name}={value}"))
        .collect()
}

/// Stops a script at a step its client's WASI version lacks.
pub fn unsupported(step: &Step, version: &str) -> ! {
    panic!("{step:?} is not a step of lockctl for WASI {version}")
}
