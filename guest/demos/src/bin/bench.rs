//! The guest side of latchkey's benchmarks (`cargo bench -p latchkey-tests`).
//!
//! - `bench pairs N ID [LIMIT]`: N uncontended try-lock + unlock pairs on ID — or, with
//!   LIMIT, acquire-permit + release pairs on a semaphore of LIMIT; prints the latency of
//!   each pair seen from inside the guest, in ns, one per line. An ID
//!   ending in `*` gets a random suffix, so that instances started alike use distinct ids.
//! - `bench handoff MS ID [LIMIT]`: for MS milliseconds, lock ID (waiting) — or take a
//!   permit of it — note the time, let go; prints `grant ACQUIRED_NS UNLOCKING_NS` per grant,
//!   in Unix-epoch nanoseconds.
//! - `bench once`: open, lock, unlock, return: one short-lived request.
//! - `bench history MS ID`: for MS milliseconds, lock ID (500 ms lease), add one to the number
//!   in `/data/counter` (read, pause 5 ms, write), unlock; prints `grant FENCE ACQUIRED_NS
//!   RELEASED_NS` per grant (and `outlived` if the host's clock said its lease had ended by
//!   then), for the fault tests' history checker. `unavailable` is waited out.

use std::time::{Duration, Instant, SystemTime};

use latchkey::p2::{Lock, Permit, Store};

const LEASE: Duration = Duration::from_secs(10);

/// What `pairs` and `handoff` take: a lock, or a permit of a semaphore of a limit.
#[derive(Clone, Copy)]
enum Kind {
    Lock,
    Permit(u32),
}

enum Grant {
    Lock(Lock),
    Permit(Permit),
}

impl Kind {
    /// `args[at]`, if there: a permit of that limit.
    fn from_args(args: &[String], at: usize) -> Kind {
        args.get(at).map_or(Kind::Lock, |limit| {
            Kind::Permit(limit.parse().expect("a limit"))
        })
    }

    /// Takes one, waiting up to `wait`.
    fn take(
        self,
        store: &Store,
        id: &str,
        wait: Duration,
    ) -> Result<Option<Grant>, latchkey::Error> {
        Ok(match self {
            Kind::Lock if wait.is_zero() => store.try_lock(id, LEASE)?.map(Grant::Lock),
            Kind::Lock => store.lock(id, LEASE, wait)?.map(Grant::Lock),
            Kind::Permit(limit) => store
                .acquire_permit(id, limit, LEASE, wait)?
                .map(Grant::Permit),
        })
    }
}

impl Grant {
    fn let_go(self) -> Result<(), latchkey::Error> {
        match self {
            Grant::Lock(lock) => lock.unlock()?,
            Grant::Permit(permit) => permit.release()?,
        };
        Ok(())
    }
}

fn main() -> Result<(), latchkey::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let store = Store::open("lockstore")?;
    match args.first().map(String::as_str) {
        Some("pairs") => pairs(
            &store,
            args[1].parse().expect("a count"),
            &distinct(&args[2]),
            Kind::from_args(&args, 3),
        ),
        Some("handoff") => handoff(
            &store,
            args[1].parse().expect("ms"),
            &args[2],
            Kind::from_args(&args, 3),
        ),
        Some("history") => history(&store, args[1].parse().expect("ms"), &args[2]),
        Some("once") => {
            let lock = store.try_lock("once", LEASE)?.expect("uncontended");
            lock.unlock()?;
            Ok(())
        }
        _ => {
            panic!("usage: bench pairs N ID [LIMIT] | handoff MS ID [LIMIT] | once | history MS ID")
        }
    }
}

fn distinct(id: &str) -> String {
    match id.strip_suffix('*') {
        Some(prefix) => {
            use std::hash::BuildHasher;
            // RandomState is seeded from WASI's random source.
            let suffix = std::collections::hash_map::RandomState::new().hash_one(0u8);
            format!("{prefix}{suffix:016x}")
        }
        None => id.to_owned(),
    }
}

fn pairs(store: &Store, count: usize, id: &str, kind: Kind) -> Result<(), latchkey::Error> {
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let pair = Instant::now();
        let grant = kind.take(store, id, Duration::ZERO)?.expect("uncontended");
        grant.let_go()?;
        latencies.push(pair.elapsed().as_nanos());
    }
    // Printed after the loop, so that printing is not measured.
    let lines: Vec<String> = latencies.iter().map(u128::to_string).collect();
    println!("{}", lines.join("\n"));
    Ok(())
}

fn handoff(store: &Store, ms: u64, id: &str, kind: Kind) -> Result<(), latchkey::Error> {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        let Some(grant) = kind.take(store, id, Duration::from_secs(30))? else {
            continue;
        };
        let acquired = epoch_ns();
        let unlocking = epoch_ns();
        grant.let_go()?;
        println!("grant {acquired} {unlocking}");
    }
    Ok(())
}

fn history(store: &Store, ms: u64, id: &str) -> Result<(), latchkey::Error> {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        let lock = match store.lock(id, Duration::from_millis(500), Duration::from_secs(5)) {
            Ok(Some(lock)) => lock,
            Ok(None) => continue,
            Err(latchkey::Error::Unavailable(_)) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(err) => return Err(err),
        };
        let acquired = epoch_ns();
        let count: u64 = std::fs::read_to_string("/data/counter")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(5));
        std::fs::write("/data/counter", format!("{}\n", count + 1)).expect("a writable /data");
        let released = epoch_ns();
        // A holder that ran past its lease (descheduled on a loaded machine, say) is what
        // no lease can cover; the history marks it rather than charge the store with it.
        let outlived = if lock.is_lost() { " outlived" } else { "" };
        println!("grant {} {acquired} {released}{outlived}", lock.fence());
        // The lease may have ended meanwhile (a fault); the history says what was held.
        let _ = lock.unlock();
    }
    Ok(())
}

fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
