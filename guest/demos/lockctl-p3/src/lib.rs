//! `lockctl` for WASI 0.3 guests (`latchkey:lock@0.3.1`): the step language of
//! `latchkey_steps` — the same steps print the same lines as `lockctl`'s, so that a test can
//! hold the two versions of the interface to one answer — and the steps of WASI 0.3 (tasks,
//! cancellation, its own interfaces), which `latchkey_steps` lists.
//!
//! ```text
//! lockctl_p3 open lockstore  try job 5000  extend 10000  unlock
//! ```

use std::time::{Duration, Instant};

use futures::FutureExt as _;
use latchkey::UnlockStatus;
use latchkey::p3::{Leadership, Lock, Permit, Store};
use latchkey_steps::{Asked, Step};
use wasip3::clocks::monotonic_clock::wait_for;

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
    async fn extend(&self, lease: Duration) -> Result<bool, latchkey::Error> {
        on_any!(self, g => g.extend(lease).await)
    }
    fn keep_alive(&self) -> Result<(), latchkey::Error> {
        on_any!(self, g => g.keep_alive())
    }
    async fn held(&self) -> Result<bool, latchkey::Error> {
        on_any!(self, g => g.held().await)
    }
    async fn lost(&self) {
        on_any!(self, g => g.lost().await)
    }
    async fn let_go(self) -> Result<UnlockStatus, latchkey::Error> {
        match self {
            Held::Lock(lock) => lock.unlock().await,
            Held::Permit(permit) => permit.release().await,
            Held::Leadership(leadership) => leadership.resign().await,
        }
    }
}

struct LockctlP3;

wasip3::cli::command::export!(LockctlP3);

impl wasip3::exports::cli::run::Guest for LockctlP3 {
    async fn run() -> Result<(), ()> {
        let args: Vec<String> = wasip3::cli::environment::get_arguments()
            .into_iter()
            .skip(1)
            .collect();
        let mut store: Option<Store> = None;
        let mut grants: Vec<Held> = Vec::new();
        // The fence of the leader last seen, for `leader-change`.
        let mut seen: Option<u64> = None;
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
                        Some(wait) => store.lock(&id, lease, wait).await,
                        None => store.try_lock(&id, lease).await,
                    };
                    let after = wait.map(|_| started.elapsed());
                    outcome.map(|lock| {
                        let fence = lock.as_ref().map(Lock::fence);
                        grants.extend(lock.map(Held::Lock));
                        latchkey_steps::taken(Asked::Lock, &id, fence, after)
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
                    let permit = store.acquire_permit(&id, limit, lease, wait).await;
                    permit.map(|permit| {
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
                    let leadership = store.campaign(&id, &value, lease, wait).await;
                    leadership.map(|leadership| {
                        let fence = leadership.as_ref().map(Leadership::fence);
                        grants.extend(leadership.map(Held::Leadership));
                        let after = Some(started.elapsed());
                        latchkey_steps::taken(Asked::Leadership, &id, fence, after)
                    })
                }
                Step::Leader(id) => {
                    let store = store.as_ref().expect("open before asking");
                    store.leader(&id).await.map(|leader| {
                        seen = leader.as_ref().map(|l| l.fence);
                        latchkey_steps::leader("leader", leader.as_ref(), None)
                    })
                }
                Step::LeaderChange(id) => {
                    let store = store.as_ref().expect("open before asking");
                    let started = Instant::now();
                    store.leader_change(&id, seen).await.map(|leader| {
                        seen = leader.as_ref().map(|l| l.fence);
                        let after = Some(started.elapsed());
                        latchkey_steps::leader("changed", leader.as_ref(), after)
                    })
                }
                Step::Extend(lease) => top(&grants)
                    .extend(lease)
                    .await
                    .map(|ok| format!("extended {ok}")),
                Step::Fence => Ok(format!("fence {}", top(&grants).fence())),
                Step::KeepAlive => top(&grants)
                    .keep_alive()
                    .map(|()| "keeping alive".to_owned()),
                Step::Held => top(&grants).held().await.map(|held| format!("held {held}")),
                Step::Lost => Ok(format!(
                    "lost {}",
                    top(&grants).lost().now_or_never().is_some()
                )),
                Step::AwaitLost => {
                    top(&grants).lost().await;
                    Ok("lost".to_owned())
                }
                Step::Unlock => {
                    let grant = grants.pop().expect("a grant to let go");
                    grant.let_go().await.map(latchkey_steps::unlocked)
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
                    let vars = wasip3::cli::environment::get_environment();
                    for line in latchkey_steps::env(vars) {
                        println!("{line}");
                    }
                    continue;
                }
                Step::Sleep(length) => {
                    sleep(length.as_millis() as u64).await;
                    continue;
                }
                Step::Trap => std::process::abort(),
                Step::Cancel {
                    id,
                    lease,
                    wait,
                    after,
                } => {
                    let store = store.as_ref().expect("open before locking");
                    futures::select_biased! {
                        outcome = store.lock(&id, lease, wait).fuse() => outcome.map(|lock| {
                            let fence = lock.as_ref().map(Lock::fence);
                            grants.extend(lock.map(Held::Lock));
                            latchkey_steps::taken(Asked::Lock, &id, fence, None)
                        }),
                        () = sleep(after.as_millis() as u64).fuse() => Ok(format!("cancelled {id}")),
                    }
                }
                Step::Race { id, rounds, spread } => {
                    let store = store.as_ref().expect("open before locking");
                    race(store, &id, rounds, spread).await
                }
                Step::Dirs => {
                    let mut said = String::from("dirs");
                    for (dir, name) in wasip3::filesystem::preopens::get_directories() {
                        let kind = dir.get_type().await.map(|kind| format!("{kind:?}"));
                        said.push_str(&format!(
                            " {name}:{}",
                            kind.unwrap_or_else(|e| format!("{e:?}"))
                        ));
                    }
                    Ok(said)
                }
                Step::FloodWatch { count, id } => {
                    let store = store.as_ref().expect("open before watching");
                    flood_watch(store, count as usize, &id).await
                }
                Step::FencedWrite { addr, value } => {
                    Ok(fenced_write(&addr, top(&grants).fence(), &value))
                }
                Step::AwaitFile(path) => {
                    while std::fs::metadata(&path).is_err() {
                        sleep(10).await;
                    }
                    Ok(format!("file {path}"))
                }
                Step::Pairs { count, id } => {
                    let store = store.as_ref().expect("open before locking");
                    pairs(store, count, &id).await
                }
                other => latchkey_steps::unsupported(&other, "0.3"),
            };
            match result {
                Ok(line) => println!("{line}"),
                Err(err) => println!("error {err}"),
            }
        }
        Ok(())
    }
}

/// `race`: each round, one task holds `id` and unlocks it while another waits for `id` with
/// `lock`, dropped a little after the unlock returns — from 0 to `spread` µs, in steps over
/// the rounds — so that the cancel lands before, during and after the grant the wait is
/// woken to make. Whatever won, `id` must then be free.
async fn race(
    store: &Store,
    id: &str,
    rounds: u64,
    spread: u64,
) -> Result<String, latchkey::Error> {
    let lease = Duration::from_secs(30);
    let mut free = 0;
    for round in 0..rounds {
        let Some(holder) = store.try_lock(id, lease).await? else {
            return Ok(format!(
                "race {id} taken at round {round}: free={free} of {rounds}"
            ));
        };
        let (unlocked, cancel) = futures::channel::oneshot::channel::<()>();
        let release = async {
            // Time for the waiter to start waiting.
            sleep(2).await;
            let status = holder.unlock().await;
            wait_for(round % 20 * spread * 50).await;
            let _ = unlocked.send(());
            status
        };
        let waiter = async {
            futures::select_biased! {
                lock = store.lock(id, lease, Duration::from_secs(10)).fuse() => lock.map(|lock| lock.is_some()),
                _ = cancel.fuse() => Ok(false),
            }
        };
        let (released, won) = futures::join!(release, waiter);
        released?;
        let _ = won?;
        // A grant the waiter won was dropped with it: gone once the host has released it,
        // which it may still be doing.
        for _ in 0..100 {
            if let Some(lock) = store.try_lock(id, lease).await? {
                lock.unlock().await?;
                free += 1;
                break;
            }
            sleep(1).await;
        }
    }
    Ok(format!("race {id} free={free} of {rounds}"))
}

/// `flood-watch`: `count` calls waiting at once for a change of leader of `id`, until one
/// of them fails (none is expected to complete: the leader stays).
async fn flood_watch(store: &Store, count: usize, id: &str) -> Result<String, latchkey::Error> {
    use futures::StreamExt as _;
    let seen = store.leader(id).await?.map(|leader| leader.fence);
    let mut pending: futures::stream::FuturesUnordered<_> =
        (0..count).map(|_| store.leader_change(id, seen)).collect();
    while let Some(changed) = pending.next().await {
        if let Err(err) = changed {
            return Ok(format!("flood-watch first-error={err}"));
        }
    }
    Ok("flood-watch all changed".to_owned())
}

/// `fenced-write`: `value` with `fence`, to the fenced store at `addr`, and its answer.
fn fenced_write(addr: &str, fence: u64, value: &str) -> String {
    use std::io::{BufRead as _, Write as _};
    let answer = std::net::TcpStream::connect(addr).and_then(|mut stream| {
        stream.write_all(format!("{fence} {value}\n").as_bytes())?;
        let mut answer = String::new();
        std::io::BufReader::new(stream).read_line(&mut answer)?;
        Ok(answer)
    });
    match answer {
        Ok(answer) => format!("fenced-write {value} {}", answer.trim_end()),
        Err(err) => format!("fenced-write {value} error {err}"),
    }
}

/// `pairs`: `count` uncontended try-lock + unlock pairs on `id`, each timed from inside.
async fn pairs(store: &Store, count: usize, id: &str) -> Result<String, latchkey::Error> {
    let lease = Duration::from_secs(10);
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let pair = Instant::now();
        let lock = store.try_lock(id, lease).await?.expect("uncontended");
        lock.unlock().await?;
        latencies.push(pair.elapsed().as_nanos().to_string());
    }
    // Printed after the loop, so that printing is not measured.
    Ok(latencies.join("\n"))
}

fn top(grants: &[Held]) -> &Held {
    grants.last().expect("a grant")
}

async fn sleep(ms: u64) {
    wait_for(ms.saturating_mul(1_000_000)).await;
}
