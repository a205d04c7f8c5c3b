//! Several `latchkey` host processes sharing one Redis: locks, fences and wake-ups cross
//! processes, and a host killed with SIGKILL keeps its locks until their leases end — never
//! less.

use std::process::Child;
use std::time::{Duration, Instant};

use harness::{RedisServer, host_process, lines};

/// Starts `latchkey run lockctl STEPS` as a process of its own on `redis`.
fn host(redis: &RedisServer, steps: &str) -> Child {
    host_naming_the_store("lockstore", redis, steps)
}

/// [`host`], offering `redis` to the guest as store `name`.
fn host_naming_the_store(name: &str, redis: &RedisServer, steps: &str) -> Child {
    let store = format!("{name}={}", redis.url());
    let steps: Vec<&str> = steps.split_whitespace().collect();
    host_process("shared", &store, &[], "lockctl", &steps)
}

fn field(line: &str, name: &str) -> u64 {
    let value = line.split(&format!("{name}=")).nth(1).expect(name);
    value.split_whitespace().next().unwrap().parse().unwrap()
}

const LOCK: &str = "latchkey:{shared:x}:lock";

/// A waiter in one process is woken by an unlock in another, before the lease would have
/// ended, and gets a greater fence.
#[test]
fn locks_fences_and_wakeups_cross_processes() {
    let redis = RedisServer::start();
    let holder = host(&redis, "open lockstore try x 60000 sleep 800 unlock");
    redis.wait_for_key(LOCK);
    let waiter = host(&redis, "open lockstore lock x 60000 20000");
    let (holder, waiter) = (
        holder.wait_with_output().unwrap(),
        waiter.wait_with_output().unwrap(),
    );
    let (holder, waiter) = (lines(&holder), lines(&waiter));
    assert_eq!(holder[2], "unlocked success", "{holder:?}");
    assert!(waiter[1].starts_with("granted x"), "{waiter:?}");
    assert!(
        field(&waiter[1], "after") < 10_000,
        "not woken by the unlock: {waiter:?}"
    );
    assert!(field(&waiter[1], "fence") > field(&holder[1], "fence"));
}

/// SIGKILL of a host holding a lock: no one else gets it while the lease runs, and the next
/// taker gets it once the lease has run out, without waiting for its own wait to end.
#[test]
fn killed_hosts_locks_end_with_their_lease() {
    let redis = RedisServer::start();
    let mut doomed = host(&redis, "open lockstore try x 2000 sleep 60000");
    redis.wait_for_key(LOCK);
    doomed.kill().unwrap();
    let killed_at = Instant::now();
    doomed.wait().unwrap();
    let left: i64 = redis.cmd(&["PTTL", LOCK]);
    assert!(left > 0, "the lease should outlive its host's death");

    let out = host(&redis, "open lockstore try x 60000 lock x 60000 20000")
        .wait_with_output()
        .unwrap();
    let out = lines(&out);
    assert_eq!(
        out[1], "held x",
        "taken while the dead host's lease ran: {out:?}"
    );
    assert!(out[2].starts_with("granted x"), "{out:?}");
    let granted_after = killed_at.elapsed();
    let lease_end = Duration::from_millis(left as u64);
    assert!(
        granted_after >= lease_end,
        "granted {granted_after:?} after the kill, lease had {lease_end:?}"
    );
    assert!(
        granted_after < lease_end + Duration::from_secs(3),
        "{granted_after:?}"
    );
}

/// A lock is the app's lock on a resource in one physical store, whatever each host calls
/// that store: two hosts that name the same Redis `lockstore` and `locks` (a rename in a
/// rolling deploy, say) still exclude each other.
#[test]
fn hosts_naming_one_store_differently_share_its_locks() {
    let redis = RedisServer::start();
    let holder = host(&redis, "open lockstore try x 60000 sleep 1000 unlock");
    redis.wait_for_key("latchkey:{shared:x}:lock");
    let renamed = host_naming_the_store("locks", &redis, "open locks try x 60000")
        .wait_with_output()
        .unwrap();
    let holder = holder.wait_with_output().unwrap();
    assert_eq!(lines(&holder)[2], "unlocked success", "{holder:?}");
    assert_eq!(
        lines(&renamed)[1],
        "held x",
        "granted to two hosts at once: {renamed:?}"
    );
}
