//! # latchkey: distributed locks for WebAssembly components
//!
//! This crate is the host side of the `latchkey:lock` WIT interface: named, lease-based locks
//! (Dapr's distributed lock building block) that sandboxed guests take by resource id while
//! the host keeps the store's address and credentials, scopes every id to the guest's app,
//! and makes every owner token itself.
//!
//! Stores are the in-process [`LockStore::memory`] (zero set-up, one host) and
//! [`LockStore::redis`], shared by every host that uses it: one Redis server, a Redis
//! Cluster, a primary found through Redis Sentinel, or Redlock over independent masters.
//!
//! ## Embedding
//!
//! Like `wasmtime-wasi`: keep a [`LockCtx`] and a `ResourceTable` in your store data,
//! implement [`LockView`], and call [`add_to_linker`].
//!
//! ```no_run
//! use latchkey_host::{LockCtx, LockCtxBuilder, LockCtxView, LockStore, LockView};
//! use wasmtime::component::{Linker, ResourceTable};
//! use wasmtime::{Config, Engine};
//!
//! struct MyState {
//!     locks: LockCtx,
//!     table: ResourceTable,
//! }
//!
//! impl LockView for MyState {
//!     fn locks(&mut self) -> LockCtxView<'_> {
//!         LockCtxView { ctx: &mut self.locks, table: &mut self.table }
//!     }
//! }
//!
//! # fn main() -> wasmtime::Result<()> {
//! let mut config = Config::new();
//! config.wasm_component_model(true);
//! let engine = Engine::new(&config)?;
//! let mut linker = Linker::<MyState>::new(&engine);
//! latchkey_host::add_to_linker(&mut linker)?;
//!
//! // One builder per app; every instance built from it shares its stores.
//! let mut app = LockCtxBuilder::new("billing");
//! app.store("lockstore", LockStore::memory());
//! let state = MyState { locks: app.build(), table: ResourceTable::new() };
//! // ... instantiate and run the guest with `state`, then:
//! // store.data_mut().locks.release_all().await;
//! # let _ = state;
//! # Ok(())
//! # }
//! ```
//!
//! [`Runner`] does all of that for `wasi:cli` commands, as the `latchkey` CLI does.
//!
//! # Layout
//!
//! - [`config`]: the operator's TOML file: stores, per-app policy and limits.
//! - [`ctx`]: [`LockCtx`] (one instance's state), its builder, and the borrowed view.
//! - `host`: the WIT functions, implemented on [`LockCtxView`].
//! - [`store`]: [`LockStore`], what every backend shares: owner tokens, timeouts, waiting.
//! - [`backend`]: the [`Backend`] trait and its implementations: `memory`, and `redis`
//!   (one server, Cluster or Sentinel, by its connection) with `redis::redlock` on top.
//! - [`key`]: the key layout of a lock in a store, and its escaping.
//! - [`limits`]: the bounds every argument is checked against.
//! - [`policy`]: which resource ids an app may lock.
//! - [`error`]: [`LockError`] and its one mapping onto the WIT `error`.
//! - [`run`]: [`Runner`], which runs command components with WASI and locks linked in.

#![deny(missing_docs)]

pub mod backend;
pub mod config;
pub mod ctx;
pub mod error;
mod host;
pub mod key;
pub mod limits;
pub mod policy;
pub mod run;
pub mod store;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "latchkey:lock/imports",
        imports: { default: async | trappable },
        with: {
            "latchkey:lock/locks.store": crate::host::StoreHandle,
            "latchkey:lock/locks.lock": crate::host::LockHandle,
        },
        trappable_error_type: {
            "latchkey:lock/locks.error" => crate::LockError,
        },
    });
}

pub use backend::redis::RedisConfig;
pub use backend::{Backend, UnlockStatus};
pub use ctx::{LockCtx, LockCtxBuilder, LockCtxView, LockView};
pub use error::{LockError, StoreError};
pub use host::{LockHandle, StoreHandle};
pub use limits::Limits;
pub use policy::ResourcePolicy;
pub use run::{Exit, GuestLimits, Runner, RunnerOptions};
pub use store::LockStore;

use wasmtime::component::{HasData, Linker};

/// Adds `latchkey:lock/locks` to `linker`, served from each instance's [`LockView`].
///
/// The functions are async: instantiate and call guests with the `_async` methods.
pub fn add_to_linker<T: LockView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    generated::latchkey::lock::locks::add_to_linker::<T, HasLocks>(linker, T::locks)
}

struct HasLocks;

impl HasData for HasLocks {
    type Data<'a> = LockCtxView<'a>;
}
