//! A scripted lock client for WASI 0.2 guests (`latchkey:lock@0.2.1`), for the tests and
//! benchmarks: the step language of `latchkey_steps`, whose docs list each step and the line
//! it prints; `lockctl-p3` speaks it for WASI 0.3.
//!
//! ```text
//! lockctl open lockstore  try job 5000  extend 10000  unlock
//! ```

use std::time::{Duration, Instant};

use latchkey::UnlockStatus;
use latchkey::p2::{Leadership, Lock, Permit, Pollable, Store};
use latchkey_steps::{Asked, Step};

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
    let mut store: Option<Store> = None;
    let mut grants: Vec<Held> = Vec::new();
    let mut watches: Vec<Pollable> = Vec::new();
    // What the flood steps took, kept until the end.
    let mut hoard: Vec<Box<dyn std::any::Any>> = Vec::new();
    for step in latchkey_steps::parse(&args) {
        let result = match step {
            Step::Open(name) => Store::open(&name).map(|s| {
                store = Some(s);
                format!("opened {name}")
            }),
            Step::Take { id, lease, wait } => {
                let store = store.as_ref().expect("open before locking");
                let started = Instant::now();
                let outcome = match wait {
                    Some(wait) => store.lock(&id, lease, wait),
                    None => store.try_lock(&id, lease),
                };
                let after = wait.map(|_| started.elapsed());
                outcome.map(|lock| {
                    let line = latchkey_steps::taken(
                        Asked::Lock,
                        &id,
                        lock.as_ref().map(Lock::fence),
                        after,
                    );
                    grants.extend(lock.map(Held::Lock));
                    line
                })
            }
            Step::Permit {
                id,
                limit,
                lease,
                wait,
            } => {
                let store = store.as_ref().expect("open before taking");
                let started = Instant::now();
                store.acquire_permit(&id, limit, lease, wait).map(|permit| {
                    let fence = permit.as_ref().map(Permit::fence);
                    grants.extend(permit.map(Held::Permit));
                    latchkey_steps::taken(Asked::Permit, &id, fence, Some(started.elapsed()))
                })
            }
            Step::Campaign {
                id,
                value,
                lease,
                wait,
            } => {
                let store = store.as_ref().expect("open before taking");
                let started = Instant::now();
                store.campaign(&id, &value, lease, wait).map(|leadership| {
                    let fence = leadership.as_ref().map(Leadership::fence);
                    grants.extend(leadership.map(Held::Leadership));
                    latchkey_steps::taken(Asked::Leadership, &id, fence, Some(started.elapsed()))
                })
            }
            Step::Leader(id) => {
                let store = store.as_ref().expect("open before asking");
                store
                    .leader(&id)
                    .map(|leader| latchkey_steps::leader("leader", leader.as_ref(), None))
            }
            Step::Watch(id) => {
                let store = store.as_ref().expect("open before watching");
                store.leader_changes(&id).map(|watch| {
                    watches.push(watch);
                    format!("watching {id}")
                })
            }
            Step::Changed => Ok(format!(
                "changed {}",
                watches.last().expect("a watch").ready()
            )),
            Step::AwaitChange => {
                let started = Instant::now();
                watches.last().expect("a watch").block();
                Ok(format!("changed after={}", started.elapsed().as_millis()))
            }
            Step::Extend(lease) => top(&grants)
                .extend(lease)
                .map(|ok| format!("extended {ok}")),
            Step::Fence => Ok(format!("fence {}", top(&grants).fence())),
            Step::KeepAlive => top(&grants)
                .keep_alive()
                .map(|()| "keeping alive".to_owned()),
            Step::Held => top(&grants).held().map(|held| format!("held {held}")),
            Step::Lost => Ok(format!("lost {}", top(&grants).is_lost())),
            Step::Unlock => {
                let grant = grants.pop().expect("a grant to let go");
                grant.let_go().map(latchkey_steps::unlocked)
            }
            Step::Drop => {
                drop(grants.pop().expect("a grant to drop"));
                Ok("dropped".into())
            }
            Step::Swap => {
                let n = grants.len();
                grants.swap(n - 1, n - 2);
                continue;
            }
            Step::Env => {
                for line in latchkey_steps::env(std::env::vars().collect()) {
                    println!("{line}");
                }
                continue;
            }
            Step::Print(bytes) => {
                use std::io::Write as _;
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
            Step::Sleep(length) => {
                std::thread::sleep(length);
                continue;
            }
            Step::Trap => std::process::abort(),
            Step::Spin => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Step::Bomb => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            Step::Many { count, lease } => {
                let store = store.as_ref().expect("open before locking");
                let mut first_error = None;
                for i in 0..count {
                    match store.try_lock(&format!("id-{i}"), lease) {
                        Ok(Some(lock)) => grants.push(Held::Lock(lock)),
                        Ok(None) => {}
                        Err(err) => {
                            first_error.get_or_insert(err);
                        }
                    }
                }
                let error = first_error.map_or(String::new(), |e| format!(" first-error={e}"));
                Ok(format!("many granted={}{error}", grants.len()))
            }
            Step::FloodOpen(count) => {
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
            Step::FloodLost(count) => {
                let Held::Lock(lock) = top(&grants) else {
                    panic!("flood-lost takes the lost pollables of a lock")
                };
                let taken: Vec<_> = (0..count).map(|_| lock.as_raw().subscribe_lost()).collect();
                let line = format!("flood-lost taken={}", taken.len());
                hoard.push(Box::new(taken));
                Ok(line)
            }
            Step::FloodTimers(count) => {
                let taken: Vec<_> = (0..count)
                    .map(|_| wasip2::clocks::monotonic_clock::subscribe_duration(1 << 40))
                    .collect();
                let line = format!("flood-timers taken={}", taken.len());
                hoard.push(Box::new(taken));
                Ok(line)
            }
            Step::FloodWatch { count, id } => {
                let store = store.as_ref().expect("open before watching");
                let mut taken = Vec::new();
                let mut error = String::new();
                for _ in 0..count {
                    match store.leader_changes(&id) {
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
            Step::Forge(handle) => {
                // SAFETY: deliberately unsound; the host must refuse a handle it never gave.
                let forged = unsafe { latchkey::p2::wit::Lock::from_handle(handle) };
                forged
                    .unlock()
                    .map(|status| format!("unlocked {status:?}"))
                    .map_err(Into::into)
            }
            Step::Connect(addr) => Ok(match std::net::TcpStream::connect(&addr) {
                Ok(_) => "connect ok".to_owned(),
                Err(err) => format!("connect error {err}"),
            }),
            Step::Read(path) => Ok(match std::fs::read(&path) {
                Ok(bytes) => format!("read {} bytes", bytes.len()),
                Err(err) => format!("read error {err}"),
            }),
            other => latchkey_steps::unsupported(&other, "0.2"),
        };
        match result {
            Ok(line) => println!("{line}"),
            Err(err) => println!("error {err}"),
        }
    }
}

fn top(grants: &[Held]) -> &Held {
    grants.last().expect("a grant")
}
