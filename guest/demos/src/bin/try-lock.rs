//! The Dapr sample, in Rust: lock `my_file_name` in `lockstore` for 60 s, or say who won.
//!
//! `try-lock [--hold-ms N]`: while it holds the lock it works on the file for N ms
//! (default 1000), so that concurrent instances meet.

use std::time::Duration;

use latchkey::p2::Store;

fn main() -> Result<(), latchkey::Error> {
    let hold_ms = std::env::args()
        .skip_while(|a| a != "--hold-ms")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let store = Store::open("lockstore")?;
    match store.try_lock("my_file_name", Duration::from_secs(60))? {
        Some(_lock) => {
            println!("Success");
            std::thread::sleep(Duration::from_millis(hold_ms));
        }
        None => println!("Failed to lock my_file_name."),
    }
    Ok(())
}
