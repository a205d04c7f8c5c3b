//! A guest built against `latchkey:lock@0.2.0` (`wit/v0.2.0`), from before semaphores and
//! elections, with the raw bindings: it must keep linking to hosts that serve 0.2.1.
//!
//! `lock-v0-2-0 ID HOLD_MS`: try-lock ID for 60 s, keep it alive, hold it HOLD_MS, ask the
//! store whether it still holds it, unlock it; one line per step.

wit_bindgen::generate!({
    path: "../../../wit/v0.2.0",
    world: "latchkey:lock/imports@0.2.0",
    generate_all,
});

use latchkey::lock::locks::{Store, open};

fn main() {
    let mut args = std::env::args().skip(1);
    let id = args.next().expect("a resource id");
    let hold: u64 = args.next().and_then(|ms| ms.parse().ok()).expect("HOLD_MS");
    let store: Store = open("lockstore").expect("the store opens");
    match store.try_lock(&id, 60_000).expect("a try-lock") {
        Some(lock) => {
            println!("granted {} fence={}", lock.resource_id(), lock.fence());
            lock.keep_alive().expect("a keep-alive");
            println!("keeping alive");
            std::thread::sleep(std::time::Duration::from_millis(hold));
            println!("held {}", lock.held().expect("a held"));
            println!("unlocked {:?}", lock.unlock().expect("an unlock"));
        }
        None => println!("held {id}"),
    }
}
