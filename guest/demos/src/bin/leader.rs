//! Leader election: instances campaign for one election; one leads and works, the others
//! watch and print each change, and campaign again when the leader goes.
//!
//! `leader [--election ID] [--value V] [--lease-ms N] [--lead-ms N] [--tick-ms N] [--ignore-lost]`
//!
//! A leader keeps its (short) lease alive and works in ticks, printing `tick FENCE T_US`
//! before each; it stops at once if it learns its leadership is lost. After `--lead-ms`
//! (0: never) it resigns and exits, handing over at once. A follower prints the leader it
//! sees, `follow FENCE VALUE` (or `follow none`), each time it changes.
//!
//! Lines carry the wall clock in µs (`T_US`), so that the lines of many instances merge
//! into one history: every tick of a leader comes before the first tick of the next, or
//! two led at once. `--ignore-lost` is the control that breaks this: a leader that neither
//! keeps its lease alive nor heeds its loss, and works on past its leadership.

use std::time::{Duration, Instant, SystemTime};

use latchkey::p2::Store;

struct Options {
    election: String,
    value: String,
    lease: Duration,
    lead_for: Option<Duration>,
    tick: Duration,
    ignore_lost: bool,
}

fn options() -> Options {
    let mut options = Options {
        election: "leader".into(),
        value: "replica".into(),
        lease: Duration::from_secs(1),
        lead_for: None,
        tick: Duration::from_millis(20),
        ignore_lost: false,
    };
    let mut args = std::env::args().skip(1);
    let ms = |text: String| Duration::from_millis(text.parse().expect("a number of ms"));
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match arg.as_str() {
            "--election" => options.election = value(),
            "--value" => options.value = value(),
            "--lease-ms" => options.lease = ms(value()),
            "--lead-ms" => options.lead_for = Some(ms(value())).filter(|d| !d.is_zero()),
            "--tick-ms" => options.tick = ms(value()),
            "--ignore-lost" => options.ignore_lost = true,
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

/// The wall clock in µs: the lines of every instance on one machine share it.
fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros()
}

fn main() -> Result<(), latchkey::Error> {
    let options = options();
    let store = Store::open("lockstore")?;
    let election = options.election.as_str();
    loop {
        // Watch before campaigning: a change between a lost campaign and the watch is not
        // missed.
        let changes = store.leader_changes(election)?;
        let Some(leadership) =
            store.campaign(election, &options.value, options.lease, Duration::ZERO)?
        else {
            match store.leader(election)? {
                Some(leader) => println!("follow {} {}", leader.fence, leader.value),
                None => println!("follow none"),
            }
            changes.block();
            continue;
        };
        let fence = leadership.fence();
        println!("lead {fence} {}", now_us());
        if !options.ignore_lost {
            leadership.keep_alive()?;
        }
        let started = Instant::now();
        loop {
            if leadership.is_lost() && !options.ignore_lost {
                println!("lost {fence} {}", now_us());
                break;
            }
            if options.lead_for.is_some_and(|d| started.elapsed() >= d) {
                let status = leadership.resign()?;
                println!("resign {fence} {status} {}", now_us());
                return Ok(());
            }
            println!("tick {fence} {}", now_us());
            std::thread::sleep(options.tick);
        }
    }
}
