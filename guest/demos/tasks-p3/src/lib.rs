//! Three tasks of one WASI 0.3 instance, one lock: `latchkey run tasks_demo_p3.wasm`.
//!
//! The writer takes the lock `ledger` and works for 300 ms; the reader asks for the same
//! lock and waits for it; the ticker takes no lock and ticks every 50 ms. Each line says
//! when it happened, in ms from the start:
//!
//! ```text
//!    0 writer: granted ledger fence 1
//!    0 reader: waiting for ledger
//!   50 ticker: tick 1
//!  ...
//!  300 writer: unlocked success
//!  300 reader: granted ledger fence 2 after 300 ms
//!  ...
//! ```
//!
//! The ticks between the writer's grant and the reader's show what `latchkey:lock@0.3.0`
//! changes: a wait suspends the waiting task alone, where a 0.2 `lock` blocked the whole
//! instance.

use std::time::{Duration, Instant};

use latchkey::p3::Store;
use wasip3::clocks::monotonic_clock::wait_for;

struct Demo;

wasip3::cli::command::export!(Demo);

impl wasip3::exports::cli::run::Guest for Demo {
    async fn run() -> Result<(), ()> {
        let start = Instant::now();
        let say = |who: &str, what: String| {
            println!("{:4} {who}: {what}", start.elapsed().as_millis());
        };
        let store = Store::open("lockstore").map_err(|err| eprintln!("{err}"))?;
        let lease = Duration::from_secs(10);

        let writer = async {
            let Ok(Some(lock)) = store.try_lock("ledger", lease).await else {
                return say("writer", "ledger is taken".into());
            };
            say("writer", format!("granted ledger fence {}", lock.fence()));
            sleep(Duration::from_millis(300)).await;
            match lock.unlock().await {
                Ok(status) => say("writer", format!("unlocked {status}")),
                Err(err) => say("writer", format!("{err}")),
            }
        };
        let reader = async {
            say("reader", "waiting for ledger".into());
            let asked = Instant::now();
            match store.lock("ledger", lease, Duration::from_secs(5)).await {
                Ok(Some(lock)) => say(
                    "reader",
                    format!(
                        "granted ledger fence {} after {} ms",
                        lock.fence(),
                        asked.elapsed().as_millis()
                    ),
                ),
                Ok(None) => say("reader", "ledger stayed taken".into()),
                Err(err) => say("reader", format!("{err}")),
            }
        };
        let ticker = async {
            for tick in 1..=8 {
                sleep(Duration::from_millis(50)).await;
                say("ticker", format!("tick {tick}"));
            }
        };
        futures::join!(writer, reader, ticker);
        Ok(())
    }
}

async fn sleep(how_long: Duration) {
    wait_for(how_long.as_nanos().try_into().unwrap_or(u64::MAX)).await;
}
