//! Read-modify-write of a number in a shared file, under the lock, M times.
//!
//! `counter [--iterations M] [--file PATH] [--pause-ms N] [--no-lock]`
//!
//! Each step reads the number, pauses (as real work would), and writes it + 1. With the
//! lock no step is lost however many instances run; `--no-lock` is the control that shows
//! concurrent instances overwriting each other.

use std::time::Duration;

use latchkey::p2::Store;

struct Options {
    iterations: u32,
    file: String,
    pause: Duration,
    locked: bool,
}

fn options() -> Options {
    let mut options = Options {
        iterations: 10,
        file: "/data/counter".into(),
        pause: Duration::from_millis(1),
        locked: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match arg.as_str() {
            "--iterations" => options.iterations = value().parse().expect("a number"),
            "--file" => options.file = value(),
            "--pause-ms" => options.pause = Duration::from_millis(value().parse().expect("ms")),
            "--no-lock" => options.locked = false,
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

fn increment(file: &str, pause: Duration) -> u64 {
    let value = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0u64);
    std::thread::sleep(pause);
    std::fs::write(file, format!("{}\n", value + 1)).expect("the counter file is writable");
    value + 1
}

fn main() -> Result<(), latchkey::Error> {
    let options = options();
    let store = Store::open("lockstore")?;
    let mut last = 0;
    for _ in 0..options.iterations {
        if options.locked {
            let lease = Duration::from_secs(10);
            let lock = store
                .lock("counter", lease, Duration::from_secs(120))?
                .expect("the lock within two minutes");
            last = increment(&options.file, options.pause);
            lock.unlock()?;
        } else {
            last = increment(&options.file, options.pause);
        }
    }
    println!("{} increments, last wrote {last}", options.iterations);
    Ok(())
}
