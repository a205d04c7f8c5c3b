//! A guest built against `latchkey:lock@0.1.0` (`wit/v0.1.0`), from before keep-alive, with
//! the raw bindings: it must keep running on hosts that serve 0.2.0.
//!
//! `lock-v0-1 ID`: try-lock ID for 60 s, extend it, unlock it; one line per step.

wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    world: "latchkey:lock/imports@0.1.0",
});

use latchkey::lock::locks::{Store, open};

fn main() {
    let id = std::env::args().nth(1).expect("a resource id");
    let store: Store = open("lockstore").expect("the store opens");
    match store.try_lock(&id, 60_000).expect("a try-lock") {
        Some(lock) => {
            println!("granted {} fence={}", lock.resource_id(), lock.fence());
            println!("extended {}", lock.extend(30_000).expect("an extend"));
            println!("unlocked {:?}", lock.unlock().expect("an unlock"));
        }
        None => println!("held {id}"),
    }
}
