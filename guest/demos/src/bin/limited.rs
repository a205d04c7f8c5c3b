//! A leased counting semaphore: each round takes a permit of `--limit`, and counts itself
//! in and out of a shared file while it holds it.
//!
//! `limited [--semaphore ID] [--limit N] [--rounds N] [--work-ms N] [--file PATH] [--no-permit]`
//!
//! The file holds how many instances are inside now; each instance updates it under a
//! lock and prints `inside N` as it enters. However many instances run, no line says more
//! than the limit. `--no-permit` is the control: it enters without a permit, and the count
//! goes past the limit.

use std::time::Duration;

use latchkey::p2::Store;

struct Options {
    semaphore: String,
    limit: u32,
    rounds: u32,
    work: Duration,
    file: String,
    permit: bool,
}

fn options() -> Options {
    let mut options = Options {
        semaphore: "limited".into(),
        limit: 3,
        rounds: 3,
        work: Duration::from_millis(30),
        file: "/data/inside".into(),
        permit: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match arg.as_str() {
            "--semaphore" => options.semaphore = value(),
            "--limit" => options.limit = value().parse().expect("a number"),
            "--rounds" => options.rounds = value().parse().expect("a number"),
            "--work-ms" => options.work = Duration::from_millis(value().parse().expect("ms")),
            "--file" => options.file = value(),
            "--no-permit" => options.permit = false,
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

/// Adds `change` to the count in `file`, under a lock: the new count.
fn count(store: &Store, file: &str, change: i64) -> Result<i64, latchkey::Error> {
    let wait = Duration::from_secs(60);
    let _lock = store
        .lock("inside-count", Duration::from_secs(10), wait)?
        .expect("the count's lock within a minute");
    let inside = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0i64)
        + change;
    std::fs::write(file, format!("{inside}\n")).expect("the count file is writable");
    Ok(inside)
}

fn main() -> Result<(), latchkey::Error> {
    let options = options();
    let store = Store::open("lockstore")?;
    let (lease, wait) = (Duration::from_secs(10), Duration::from_secs(120));
    for _ in 0..options.rounds {
        let permit = match options.permit {
            true => Some(
                store
                    .acquire_permit(&options.semaphore, options.limit, lease, wait)?
                    .expect("a permit within two minutes"),
            ),
            false => None,
        };
        let fence = permit.as_ref().map_or(0, |p| p.fence());
        println!("inside {} fence={fence}", count(&store, &options.file, 1)?);
        std::thread::sleep(options.work);
        count(&store, &options.file, -1)?;
        if let Some(permit) = permit {
            permit.release()?;
        }
    }
    Ok(())
}
