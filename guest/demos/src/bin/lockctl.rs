//! A scripted lock client: each argument group is one step, each step prints one line.
//!
//! ```text
//! lockctl open lockstore  try job 5000  extend 10000  unlock
//! ```
//!
//! Steps (locks are kept in a stack; `extend`, `fence`, `unlock` and `drop` act on the top):
//!
//! | step                      | prints                                          |
//! |---------------------------|-------------------------------------------------|
//! | `open NAME`               | `opened NAME`                                   |
//! | `try ID LEASE_MS`         | `granted ID fence=F` or `held ID`               |
//! | `try-long BYTES LEASE_MS` | the same, for an id of BYTES `x`s               |
//! | `lock ID LEASE_MS WAIT_MS`| `granted ID fence=F after=MS` or `held ID after=MS` |
//! | `extend LEASE_MS`         | `extended true` or `extended false`             |
//! | `fence`                   | `fence F`                                       |
//! | `unlock`                  | `unlocked STATUS`                               |
//! | `keepalive`               | `keeping alive`: the host renews the lease      |
//! | `held`                    | `held true` or `held false` (asks the store)    |
//! | `lost`                    | `lost true` or `lost false` (without waiting)   |
//! | `drop`                    | `dropped`                                       |
//! | `swap`                    | nothing: the top two locks change places        |
//! | `env`                     | `env NAME=VALUE` for each variable the guest has |
//! | `sleep MS`                | nothing                                         |
//! | `print BYTES`             | BYTES of output, in lines of 100 bytes: 99 `x`s and a newline |
//! | `trap`                    | nothing: the instance traps                     |
//!
//! Semaphores and elections (`latchkey:lock@0.2.1`); a permit or a leadership joins the
//! stack, and `extend`, `fence`, `keepalive`, `held`, `lost`, `drop` act on it as on a lock
//! (`unlock` releases a permit, resigns a leadership):
//!
//! | step                              | prints                                  |
//! |-----------------------------------|-----------------------------------------|
//! | `permit ID LIMIT LEASE_MS WAIT_MS`| `granted ID fence=F after=MS` or `held ID after=MS` |
//! | `campaign ID VALUE LEASE_MS WAIT_MS` | `leading ID fence=F after=MS` or `led ID after=MS` |
//! | `leader ID`                       | `leader VALUE fence=F` or `leader none`  |
//! | `watch ID`                        | `watching ID`: a leader-change pollable joins a list |
//! | `changed`                         | `changed true` or `changed false`: the last watch, without waiting |
//! | `await-change`                    | `changed after=MS`: waits on the last watch |
//!
//! And steps a hostile guest would take, for the sandbox tests:
//!
//! | step                      | does                                            |
//! |---------------------------|-------------------------------------------------|
//! | `spin`                    | loops forever                                   |
//! | `bomb`                    | allocates memory until something stops it       |
//! | `many N LEASE_MS`         | tries N distinct ids; prints `many granted=G` and the first error |
//! | `forge HANDLE`            | unlocks a lock handle it made up (the host traps it) |
//! | `flood-open N`            | opens the store N times, keeping every handle: `flood-open opened=K` and the first error |
//! | `flood-lost N`            | takes N `lost` pollables of the top lock, keeping them: `flood-lost taken=N` |
//! | `flood-timers N`          | takes N WASI timer pollables, keeping them: `flood-timers taken=N` |
//! | `flood-watch N ID`        | takes N leader-change pollables of election ID, keeping them: `flood-watch taken=K` and the first error |
//! | `connect ADDR`            | opens a TCP connection: `connect ok` or `connect error ...` |
//! | `read PATH`               | reads a file: `read N bytes` or `read error ...` |
//!
//! A failed step prints `error KIND: MESSAGE` and the script goes on.

use std::time::{Duration, Instant};

use latchkey::{Leadership, Lock, Permit, Pollable, Store, UnlockStatus};

/// A grant of any kind on the stack.
enum Held {
    Lock(Lock),
    Permit(Permit),
    Leadership(Leadership),
}

/// `$call` on whichever grant `$held` is.
macro_rules! on_any {
    ($held:expr, $grant:ident => $call:expr) => {
        match $held {
            Held::Lock($grant) => $call,
            Held::Permit($grant) => $call,
            Held::Leadership($grant) => $call,
        }
    };
}

impl Held {
    fn fence(&self) -> u64 {
        on_any!(self, g => g.fence())
    }
    fn extend(&self, lease: Duration) -> Result<bool, latchkey::Error> {
        on_any!(self, g => g.extend(lease))
    }
    fn keep_alive(&self) -> Result<(), latchkey::Error> {
        on_any!(self, g => g.keep_alive())
    }
    fn held(&self) -> Result<bool, latchkey::Error> {
        on_any!(self, g => g.held())
    }
    fn is_lost(&self) -> bool {
        on_any!(self, g => g.is_lost())
    }
    fn let_go(self) -> Result<UnlockStatus, latchkey::Error> {
        match self {
            Held::Lock(lock) => lock.unlock(),
            Held::Permit(permit) => permit.release(),
            Held::Leadership(leadership) => leadership.resign(),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args = args.iter().map(String::as_str);
    let mut store: Option<Store> = None;
    let mut locks: Vec<Held> = Vec::new();
    let mut watches: Vec<Pollable> = Vec::new();
    // What the flood steps took, kept until the end.
    let mut hoard: Vec<Box<dyn std::any::Any>> = Vec::new();
    let ms = |s: Option<&str>| -> u64 { s.and_then(|s| s.parse().ok()).expect("a number of ms") };
    while let Some(step) = args.next() {
        let result = match step {
            "open" => {
                let name = args.next().expect("a store name");
                Store::open(name).map(|s| {
                    store = Some(s);
                    format!("opened {name}")
                })
            }
            "try" | "try-long" | "lock" => {
                let id = match step {
                    "try-long" => "x".repeat(ms(args.next()) as usize),
                    _ => args.next().expect("a resource id").to_owned(),
                };
                let lease = Duration::from_millis(ms(args.next()));
                let store = store.as_ref().expect("open before locking");
                let started = Instant::now();
                let outcome = if step == "lock" {
                    let wait = Duration::from_millis(ms(args.next()));
                    store.lock(&id, lease, wait)
                } else {
                    store.try_lock(&id, lease)
                };
                let after = match step {
                    "lock" => format!(" after={}", started.elapsed().as_millis()),
                    _ => String::new(),
                };
                let shown = if id.len() > 64 {
                    format!("<{} bytes>", id.len())
                } else {
                    id
                };
                outcome.map(|lock| match lock {
                    Some(lock) => {
                        let line = format!("granted {shown} fence={}{after}", lock.fence());
                        locks.push(Held::Lock(lock));
                        line
                    }
                    None => format!("held {shown}{after}"),
                })
            }
            "permit" | "campaign" => {
                let id = args.next().expect("an id");
                let (limit, value) = match step {
                    "permit" => (ms(args.next()) as u32, ""),
                    _ => (0, args.next().expect("a value")),
                };
                let lease = Duration::from_millis(ms(args.next()));
                let wait = Duration::from_millis(ms(args.next()));
                let store = store.as_ref().expect("open before taking");
                let started = Instant::now();
                let taken = match step {
                    "permit" => store
                        .acquire_permit(id, limit, lease, wait)
                        .map(|p| p.map(Held::Permit)),
                    _ => store
                        .campaign(id, value, lease, wait)
                        .map(|l| l.map(Held::Leadership)),
                };
                let after = started.elapsed().as_millis();
                let (yes, no) = match step {
                    "permit" => ("granted", "held"),
                    _ => ("leading", "led"),
                };
                taken.map(|held| match held {
                    Some(held) => {
                        let line = format!("{yes} {id} fence={} after={after}", held.fence());
                        locks.push(held);
                        line
                    }
                    None => format!("{no} {id} after={after}"),
                })
            }
            "leader" => {
                let id = args.next().expect("an election id");
                let store = store.as_ref().expect("open before asking");
                store.leader(id).map(|leader| match leader {
                    Some(l) => format!("leader {} fence={}", l.value, l.fence),
                    None => "leader none".to_owned(),
                })
            }
            "watch" => {
                let id = args.next().expect("an election id");
                let store = store.as_ref().expect("open before watching");
                store.leader_changes(id).map(|watch| {
                    watches.push(watch);
                    format!("watching {id}")
                })
            }
            "changed" => Ok(format!(
                "changed {}",
                watches.last().expect("a watch").ready()
            )),
            "await-change" => {
                let started = Instant::now();
                watches.last().expect("a watch").block();
                Ok(format!("changed after={}", started.elapsed().as_millis()))
            }
            "extend" => {
                let lease = Duration::from_millis(ms(args.next()));
                top(&locks).extend(lease).map(|ok| format!("extended {ok}"))
            }
            "fence" => Ok(format!("fence {}", top(&locks).fence())),
            "keepalive" => top(&locks)
                .keep_alive()
                .map(|()| "keeping alive".to_owned()),
            "held" => top(&locks).held().map(|held| format!("held {held}")),
            "lost" => Ok(format!("lost {}", top(&locks).is_lost())),
            "unlock" => {
                let lock = locks.pop().expect("a lock to unlock");
                lock.let_go().map(|status| format!("unlocked {status}"))
            }
            "drop" => {
                drop(locks.pop().expect("a lock to drop"));
                Ok("dropped".into())
            }
            "swap" => {
                let n = locks.len();
                locks.swap(n - 1, n - 2);
                continue;
            }
            "env" => {
                for (name, value) in std::env::vars() {
                    println!("env {name}={value}");
                }
                continue;
            }
            "print" => {
                use std::io::Write as _;
                let bytes = ms(args.next()) as usize;
                let lines = "x".repeat(99) + "\n";
                let block = lines.repeat(1000);
                let mut out = std::io::stdout().lock();
                for _ in 0..bytes / block.len() {
                    out.write_all(block.as_bytes()).expect("stdout takes it");
                }
                out.write_all(&block.as_bytes()[..bytes % block.len()])
                    .expect("stdout takes it");
                continue;
            }
            "sleep" => {
                std::thread::sleep(Duration::from_millis(ms(args.next())));
                continue;
            }
            "trap" => std::process::abort(),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "many" => {
                let count = ms(args.next());
                let lease = Duration::from_millis(ms(args.next()));
                let store = store.as_ref().expect("open before locking");
                let mut first_error = None;
                for i in 0..count {
                    match store.try_lock(&format!("id-{i}"), lease) {
                        Ok(Some(lock)) => locks.push(Held::Lock(lock)),
                        Ok(None) => {}
                        Err(err) => {
                            first_error.get_or_insert(err);
                        }
                    }
                }
                let error = first_error.map_or(String::new(), |e| format!(" first-error={e}"));
                Ok(format!("many granted={}{error}", locks.len()))
            }
            "flood-open" => {
                let count = ms(args.next());
                let mut opened = Vec::new();
                let mut error = String::new();
                for _ in 0..count {
                    match Store::open("lockstore") {
                        Ok(store) => opened.push(store),
                        Err(err) => {
                            error = format!(" first-error={err}");
                            break;
                        }
                    }
                }
                let line = format!("flood-open opened={}{error}", opened.len());
                hoard.push(Box::new(opened));
                Ok(line)
            }
            "flood-lost" => {
                let count = ms(args.next());
                let Held::Lock(lock) = top(&locks) else {
                    panic!("flood-lost takes the lost pollables of a lock")
                };
                let taken: Vec<_> = (0..count).map(|_| lock.as_raw().subscribe_lost()).collect();
                let line = format!("flood-lost taken={}", taken.len());
                hoard.push(Box::new(taken));
                Ok(line)
            }
            "flood-timers" => {
                let count = ms(args.next());
                let taken: Vec<_> = (0..count)
                    .map(|_| wasip2::clocks::monotonic_clock::subscribe_duration(1 << 40))
                    .collect();
                let line = format!("flood-timers taken={}", taken.len());
                hoard.push(Box::new(taken));
                Ok(line)
            }
            "flood-watch" => {
                let count = ms(args.next());
                let id = args.next().expect("an election id");
                let store = store.as_ref().expect("open before watching");
                let mut taken = Vec::new();
                let mut error = String::new();
                for _ in 0..count {
                    match store.leader_changes(id) {
                        Ok(watch) => taken.push(watch),
                        Err(err) => {
                            error = format!(" first-error={err}");
                            break;
                        }
                    }
                }
                let line = format!("flood-watch taken={}{error}", taken.len());
                hoard.push(Box::new(taken));
                Ok(line)
            }
            "forge" => {
                let handle: u32 = ms(args.next()) as u32;
                // SAFETY: deliberately unsound; the host must refuse a handle it never gave.
                let forged = unsafe { latchkey::wit::Lock::from_handle(handle) };
                forged
                    .unlock()
                    .map(|status| format!("unlocked {status:?}"))
                    .map_err(Into::into)
            }
            "connect" => {
                let addr = args.next().expect("an address");
                Ok(match std::net::TcpStream::connect(addr) {
                    Ok(_) => "connect ok".to_owned(),
                    Err(err) => format!("connect error {err}"),
                })
            }
            "read" => {
                let path = args.next().expect("a path");
                Ok(match std::fs::read(path) {
                    Ok(bytes) => format!("read {} bytes", bytes.len()),
                    Err(err) => format!("read error {err}"),
                })
            }
            other => panic!("unknown step {other}"),
        };
        match result {
            Ok(line) => println!("{line}"),
            Err(err) => println!("error {err}"),
        }
    }
}

fn top(locks: &[Held]) -> &Held {
    locks.last().expect("a lock")
}
