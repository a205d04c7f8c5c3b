//! `lockctl` (`guest/demos/src/bin/lockctl.rs`) for WASI 0.3: the same steps print the same
//! lines, so that a test can hold the two versions of the interface to one answer.
//!
//! ```text
//! p3ctl open lockstore  try job 5000  extend 10000  unlock
//! ```
//!
//! Steps shared with lockctl: `open NAME`, `try ID LEASE_MS`, `try-long BYTES LEASE_MS`,
//! `lock ID LEASE_MS WAIT_MS`, `extend LEASE_MS`, `fence`, `unlock`, `keepalive`, `held`,
//! `lost` (without waiting), `drop`, `sleep MS`, `trap`. And the steps of WASI 0.3:
//!
//! | step                            | prints                                             |
//! |---------------------------------|----------------------------------------------------|
//! | `cancel ID LEASE_MS WAIT_MS MS` | `lock ID` waiting at most `WAIT_MS`, dropped after `MS` if still pending: `cancelled ID` or `granted ID fence=F` |
//! | `race ID N SPREAD`              | N rounds: a task unlocks ID while another's `lock` of ID is cancelled up to SPREAD µs after; then ID must be free: `race ID free=K of N` |
//! | `await-lost`                    | waits for the top lock to be lost: `lost` |
//! | `pairs N ID`                    | N try-lock + unlock pairs; each pair's ns, one per line |
//! | `fenced-write ADDR VALUE`       | writes VALUE with the top lock's fence to the fenced store at ADDR (needs `--allow-network`): `fenced-write VALUE accepted` or `refused` |
//! | `await-file PATH`               | waits until PATH exists (a test's signal to go on): `file PATH` |
//! | `env NAME`                      | the variable through WASI 0.3: `env NAME=VALUE` or `env NAME unset` |
//! | `dirs`                          | the preopened directories through WASI 0.3's filesystem: `dirs NAME:TYPE ...` |
//!
//! Semaphores and elections (`latchkey:lock@0.3.1`), on stacks of their own:
//!
//! | step                                 | prints                                      |
//! |--------------------------------------|---------------------------------------------|
//! | `permit ID LIMIT LEASE_MS WAIT_MS`   | `granted ID fence=F after=MS` or `held ID after=MS` |
//! | `release`                            | releases the top permit: `unlocked STATUS`  |
//! | `campaign ID VALUE LEASE_MS WAIT_MS` | `leading ID fence=F after=MS` or `led ID after=MS` |
//! | `resign`                             | resigns the top leadership: `unlocked STATUS` |
//! | `leader ID`                          | `leader VALUE fence=F` or `leader none`, and remembers the fence |
//! | `leader-change ID`                   | waits for another leader than the one remembered: `changed VALUE fence=F after=MS` or `changed none after=MS` |
//! | `flood-watch N ID`                   | N `leader-change` calls of ID pending at once, from the leader now, until one fails: `flood-watch first-error=E` |
//!
//! A failed step prints `error KIND: MESSAGE` and the script goes on.

use std::time::{Duration, Instant};

use futures::FutureExt as _;
use latchkey::p3::{Leadership, Lock, Permit, Store};
use wasip3::clocks::monotonic_clock::wait_for;

struct P3ctl;

wasip3::cli::command::export!(P3ctl);

impl wasip3::exports::cli::run::Guest for P3ctl {
    async fn run() -> Result<(), ()> {
        let args: Vec<String> = wasip3::cli::environment::get_arguments()
            .into_iter()
            .skip(1)
            .collect();
        let mut args = args.iter().map(String::as_str);
        let mut store: Option<Store> = None;
        let mut locks: Vec<Lock> = Vec::new();
        let mut permits: Vec<Permit> = Vec::new();
        let mut leaderships: Vec<Leadership> = Vec::new();
        // The fence of the leader last seen, for `leader-change`.
        let mut seen: Option<u64> = None;
        let ms = |s: Option<&str>| -> u64 { s.and_then(|s| s.parse().ok()).expect("a number") };
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
                        store.lock(&id, lease, wait).await
                    } else {
                        store.try_lock(&id, lease).await
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
                            locks.push(lock);
                            line
                        }
                        None => format!("held {shown}{after}"),
                    })
                }
                "extend" => {
                    let lease = Duration::from_millis(ms(args.next()));
                    top(&locks)
                        .extend(lease)
                        .await
                        .map(|ok| format!("extended {ok}"))
                }
                "fence" => Ok(format!("fence {}", top(&locks).fence())),
                "keepalive" => top(&locks)
                    .keep_alive()
                    .map(|()| "keeping alive".to_owned()),
                "held" => top(&locks).held().await.map(|held| format!("held {held}")),
                "lost" => Ok(format!(
                    "lost {}",
                    top(&locks).lost().now_or_never().is_some()
                )),
                "await-lost" => {
                    top(&locks).lost().await;
                    Ok("lost".to_owned())
                }
                "unlock" => {
                    let lock = locks.pop().expect("a lock to unlock");
                    lock.unlock()
                        .await
                        .map(|status| format!("unlocked {status}"))
                }
                "drop" => {
                    drop(locks.pop().expect("a lock to drop"));
                    Ok("dropped".into())
                }
                "sleep" => {
                    sleep(ms(args.next())).await;
                    continue;
                }
                "trap" => std::process::abort(),
                "cancel" => {
                    let id = args.next().expect("a resource id");
                    let lease = Duration::from_millis(ms(args.next()));
                    let wait = Duration::from_millis(ms(args.next()));
                    let after = ms(args.next());
                    let store = store.as_ref().expect("open before locking");
                    futures::select_biased! {
                        outcome = store.lock(id, lease, wait).fuse() => outcome.map(|lock| match lock {
                            Some(lock) => {
                                let line = format!("granted {id} fence={}", lock.fence());
                                locks.push(lock);
                                line
                            }
                            None => format!("held {id}"),
                        }),
                        () = sleep(after).fuse() => Ok(format!("cancelled {id}")),
                    }
                }
                "race" => {
                    let id = args.next().expect("a resource id");
                    let rounds = ms(args.next());
                    let after = ms(args.next());
                    let store = store.as_ref().expect("open before locking");
                    race(store, id, rounds, after).await
                }
                "env" => {
                    let name = args.next().expect("a variable's name");
                    let environment = wasip3::cli::environment::get_environment();
                    Ok(match environment.iter().find(|(key, _)| key == name) {
                        Some((_, value)) => format!("env {name}={value}"),
                        None => format!("env {name} unset"),
                    })
                }
                "dirs" => {
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
                    let fence = match step {
                        "permit" => store
                            .acquire_permit(id, limit, lease, wait)
                            .await
                            .map(|p| p.map(|p| (p.fence(), permits.push(p)).0)),
                        _ => store
                            .campaign(id, value, lease, wait)
                            .await
                            .map(|l| l.map(|l| (l.fence(), leaderships.push(l)).0)),
                    };
                    let after = started.elapsed().as_millis();
                    let (yes, no) = match step {
                        "permit" => ("granted", "held"),
                        _ => ("leading", "led"),
                    };
                    fence.map(|fence| match fence {
                        Some(fence) => format!("{yes} {id} fence={fence} after={after}"),
                        None => format!("{no} {id} after={after}"),
                    })
                }
                "release" => {
                    let permit = permits.pop().expect("a permit to release");
                    permit
                        .release()
                        .await
                        .map(|status| format!("unlocked {status}"))
                }
                "resign" => {
                    let leadership = leaderships.pop().expect("a leadership to resign");
                    leadership
                        .resign()
                        .await
                        .map(|status| format!("unlocked {status}"))
                }
                "leader" | "leader-change" => {
                    let id = args.next().expect("an election id");
                    let store = store.as_ref().expect("open before asking");
                    let started = Instant::now();
                    let (word, leader) = match step {
                        "leader" => ("leader", store.leader(id).await),
                        _ => ("changed", store.leader_change(id, seen).await),
                    };
                    let after = match step {
                        "leader" => String::new(),
                        _ => format!(" after={}", started.elapsed().as_millis()),
                    };
                    leader.map(|leader| {
                        seen = leader.as_ref().map(|l| l.fence);
                        match leader {
                            Some(l) => format!("{word} {} fence={}{after}", l.value, l.fence),
                            None => format!("{word} none{after}"),
                        }
                    })
                }
                "flood-watch" => {
                    let count = ms(args.next()) as usize;
                    let id = args.next().expect("an election id");
                    let store = store.as_ref().expect("open before watching");
                    flood_watch(store, count, id).await
                }
                "fenced-write" => {
                    let addr = args.next().expect("an address");
                    let value = args.next().expect("a value");
                    Ok(fenced_write(addr, top(&locks).fence(), value))
                }
                "await-file" => {
                    let path = args.next().expect("a path");
                    while std::fs::metadata(path).is_err() {
                        sleep(10).await;
                    }
                    Ok(format!("file {path}"))
                }
                "pairs" => {
                    let count = ms(args.next()) as usize;
                    let id = args.next().expect("a resource id");
                    let store = store.as_ref().expect("open before locking");
                    pairs(store, count, id).await
                }
                other => panic!("unknown step {other}"),
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

fn top(locks: &[Lock]) -> &Lock {
    locks.last().expect("a lock")
}

async fn sleep(ms: u64) {
    wait_for(ms.saturating_mul(1_000_000)).await;
}
