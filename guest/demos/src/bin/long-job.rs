//! A job several times longer than its lease, whose lock the host keeps alive, and which
//! stops cleanly the moment the lock is lost.
//!
//! `long-job [--id ID] [--lease-ms N] [--steps N] [--step-ms N]` (defaults `report`, 2000,
//! 10, 1000: ten seconds of work on a two-second lease).
//!
//! It takes the lock with a short lease and asks the host to keep it alive. Between steps
//! it waits on a timer and on the lock's `lost` pollable at once, so a loss wakes it at
//! once; before each step's write it checks the lock again. It prints one line per step,
//! `step N fence F at MS` (Unix time in ms), and at the end `done N steps; held=true`. If
//! the lock is lost it writes nothing more: it prints `lost the lock before step N at MS;
//! held=H` (H is what `held` answered: `false`, or the error's kind if the store could not
//! say) and exits with status 3.

use std::time::{Duration, SystemTime};

use latchkey::p2::Store;
use wasip2::clocks::monotonic_clock;
use wasip2::io::poll::poll;

struct Options {
    id: String,
    lease: Duration,
    steps: u32,
    step: Duration,
}

fn options() -> Options {
    let mut options = Options {
        id: "report".into(),
        lease: Duration::from_millis(2000),
        steps: 10,
        step: Duration::from_millis(1000),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        let ms = |v: String| Duration::from_millis(v.parse().expect("a number of ms"));
        match flag.as_str() {
            "--id" => options.id = value(),
            "--lease-ms" => options.lease = ms(value()),
            "--steps" => options.steps = value().parse().expect("a number"),
            "--step-ms" => options.step = ms(value()),
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn main() -> Result<(), latchkey::Error> {
    let options = options();
    let store = Store::open("lockstore")?;
    let lock = store
        .lock(&options.id, options.lease, Duration::from_secs(60))?
        .expect("the lock within a minute");
    lock.keep_alive()?;
    for step in 1..=options.steps {
        if lock.is_lost() {
            let lost_at = now_ms();
            let held = match lock.held() {
                Ok(held) => held.to_string(),
                Err(err) => err.kind().to_owned(),
            };
            println!("lost the lock before step {step} at {lost_at}; held={held}");
            std::process::exit(3);
        }
        // The work of this step, done under the lock: here, saying so.
        println!("step {step} fence {} at {}", lock.fence(), now_ms());
        let timer = monotonic_clock::subscribe_duration(options.step.as_nanos() as u64);
        poll(&[&timer, lock.lost()]);
    }
    println!("done {} steps; held={}", options.steps, lock.held()?);
    Ok(())
}
