//! # latchkey: distributed locks for WebAssembly components
//!
//! This crate is the host side of the `latchkey:lock` WIT interface: named, lease-based locks
//! (Dapr's distributed lock building block) that sandboxed guests take by resource id while
//! the host keeps the store's address and credentials, scopes every id to the guest's app,
//! and makes every owner token itself — and, made of the same leases, counting semaphores
//! and leader elections.
//!
//! Lock stores are opened by [`open()`] from a URL: `memory` (zero set-up, one host), or
//! Redis, shared by every host that uses it — one server, a Redis Cluster, a primary found
//! through Redis Sentinel, or Redlock over independent masters.
//!
//! ## Embedding
//!
//! Like `wasmtime-wasi`: keep a [`LockCtx`] and a `ResourceTable` in your guest state,
//! implement [`LockView`], and call [`add_to_linker`].
//!
//! ```no_run
//! use latchkey_host::{LockCtx, LockCtxBuilder, LockCtxView, LockView, StoreSettings};
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
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = Config::new();
//! config.wasm_component_model(true);
//! let engine = Engine::new(&config)?;
//! let mut linker = Linker::<MyState>::new(&engine);
//! latchkey_host::add_to_linker(&mut linker)?;
//!
//! // One builder per app; every instance built from it shares its stores.
//! let mut app = LockCtxBuilder::new("billing");
//! app.store(latchkey_host::open("lockstore", &StoreSettings::new("memory"))?);
//! let state = MyState { locks: app.build(), table: ResourceTable::new() };
//! // ... instantiate and run the guest with `state`, then:
//! // store.data_mut().locks.release_all().await;
//! # let _ = state;
//! # Ok(())
//! # }
//! ```
//!
//! [`Runner`] does all of that for whole components, as the `latchkey` CLI does: it runs
//! `wasi:cli` commands of WASI 0.2 and 0.3 ([`Runner::run`], `latchkey run`) and serves
//! `wasi:http` handlers ([`Runner::handler`] and [`serve::serve`], `latchkey serve`): a
//! WASI 0.2 proxy with one instance per request, a WASI 0.3 handler with instance reuse.
//!
//! ## WASI 0.3: locks owned by the task
//!
//! `latchkey:lock@0.3.0` makes every call that may wait an `async func`, and gives each
//! lock to the guest **task** that took it. An embedder that runs several tasks in one
//! instance — requests of a reused instance, say — brackets each with
//! [`LockCtx::begin_task`] and [`TaskLocks::end`]: the end releases whatever that task still
//! holds, and the task's handles go inert. Either way, [`LockCtx::release_all`] at the
//! instance's end releases every lock of every task, as in 0.2.
//!
//! # Glossary
//!
//! One word, one meaning, in the code and in its docs:
//!
//! - **app**: the tenant a guest runs as, chosen by the operator; every lock belongs to one
//!   app, and apps never share locks.
//! - **lock store** ([`LockStore`]): a place locks live, under the name guests open it by
//!   (`lockstore`), opened by [`open()`] from its [`StoreSettings`]. A guest's handle on one
//!   is a **store handle** (the WIT `store`, [`StoreHandle`]).
//! - **backend** ([`Backend`]): what performs a lock store's atomic steps — memory, one Redis
//!   server, a Cluster, Sentinel, Redlock.
//! - **wasmtime store** (`wasmtime::Store<GuestState>`): the runtime's container of one
//!   instance; never just "store". Its data is the **guest state** ([`GuestState`]).
//! - **lock**: one app's lock on one **resource id** in one lock store (and namespace); its
//!   **key** ([`key::LockKey`]) is where it lives in the store.
//! - **grant** ([`Grant`]): the lock given to this host once: an **owner token** (`Token`,
//!   made by the host), a **fence** (rising with every grant), and a **lease**. A guest's
//!   handle on a grant is a **lock handle** (the WIT `lock`, [`LockHandle`]).
//! - **holder**: the grant a store has for a lock now. A lock is **held** by an instance that
//!   holds its grant (the WIT `held`, [`LockCtx::held_count`]); a lock another grant holds is
//!   **busy** (`Attempt::Busy`).
//! - **lease**: how long the store keeps a grant: its **length**, last asked for, and its
//!   **end** by the host's clock.
//! - **extend**: the guest sets a new lease once. **renew**: the host's keep-alive loop
//!   extends a lease. **keep alive**: the guest asks the host to renew.
//! - **gone**: the store said the grant no longer holds the lock, or it was released.
//!   **lost**: gone, or past its lease's end by the host's clock — the grant may no longer
//!   hold the lock.
//! - **release**: tell the store to free a lock — by `unlock`, a dropped lock handle, or the
//!   instance's end. **forget**: an instance stops tracking a grant once its release is
//!   confirmed.
//! - **evict**: free a lock whoever holds it — the operator's forced release (`latchkey
//!   locks release`, [`LockStore::evict`]); the evicted grant finds the lock gone. The locks
//!   a store holds now, as an operator lists them, are its **holders** ([`Holder`]).
//! - **semaphore**: `limit` locks of [`key::Kind::Permit`] on one semaphore id, each a
//!   **permit**; a guest's handle on a permit's grant is a **permit handle** (the WIT
//!   `permit`, [`PermitHandle`]). Taken first free first ([`Backend::try_acquire_any`]).
//! - **election**: one lock of [`key::Kind::Leadership`], the **leadership**; its holder is
//!   the **leader**, whose owner token carries the **value** it published
//!   ([`backend::Token::with_value`]). A guest's handle on it is a **leadership handle** (the
//!   WIT `leadership`, [`LeadershipHandle`]). **campaign**: take it; **resign**: release it.
//!   **announce**: wake an election's watchers without a release — a new leader
//!   ([`Backend::announce`]). A **leader watch** ([`LeaderWatch`]) wakes when the leader
//!   differs from the one it read.
//! - **grant** of any kind: a lock's, a permit's or a leadership's — they share every call
//!   but the one that names them and the one that lets them go (`unlock`, `release`,
//!   `resign`).
//! - **wait**: how long `lock` waits for a busy lock. **watch** (`ReleaseWatch`): a
//!   subscription to a lock's releases that wakes a waiter.
//! - **timeout**: how long one store call may take before it is `unavailable`.
//!   **deadline**: how long an instance may run.
//! - **limits** ([`Limits`]): bounds on what a guest asks for. **guest limits**
//!   ([`GuestLimits`]): bounds on an instance (deadline, memory, fuel). **policy**
//!   ([`ResourcePolicy`]): the resource ids an app may lock.
//! - **program** ([`Program`]): a component compiled and pre-instantiated, with its
//!   **world** ([`World`]): a command or an HTTP handler, of WASI 0.2 or 0.3 (**p2**, **p3**).
//!   **instance**: one running copy.
//! - **task**: one async call into a WASI 0.3 instance and what it spawns — for `serve`, one
//!   request. In 0.3 a lock is **owned** by the task that took it ([`TaskLocks`]), and the
//!   task's **end** releases it. **cancel**: the guest drops a pending call.
//! - **reuse**: one p3 instance serving many requests, one after another and at once
//!   ([`serve::InstanceReuse`]). **retire**: take no more requests into an instance and
//!   drop it once its requests are over (a trap, a deadline).
//!
//! # Layout
//!
//! - [`open`](mod@open): [`open`](fn@open), the one table of URL forms, [`StoreSettings`].
//! - [`store`]: [`LockStore`], what every backend shares: owner tokens, timeouts, waiting,
//!   keep-alive.
//! - [`backend`]: the [`Backend`] trait; its implementations are private: `memory`, and
//!   `redis` (one server, Cluster or Sentinel, by its connection; `settings` for multi-host
//!   URLs and connection set-up; `channels` for pub/sub) with `redis::redlock` on top.
//! - `grant`: [`Grant`], a lock held, and what the host knows of its lease.
//! - `keepalive`: the renewal loop of each store.
//! - [`key`]: the key layout of a lock in a store, and its escaping.
//! - [`limits`]: the bounds every argument is checked against.
//! - [`policy`]: which resource ids an app may lock.
//! - [`config`]: the operator's TOML file: stores, per-app policy and limits.
//! - [`ctx`]: [`LockCtx`] (one instance's locks), its builder, and the borrowed view.
//! - `host`: the WIT functions, implemented on [`LockCtxView`], as halves the versions
//!   share; `coordination`: the semaphore and election calls of 0.2.1 and who leads;
//!   `compat`: 0.1.0's; `host_p3`: 0.3.1's async functions, run on an `Accessor`.
//! - [`error`]: [`LockError`], the errors of configuring a store, and the one mapping onto
//!   the WIT `error` of every version.
//! - [`sandbox`]: what every guest shares: the engine and its instance pool, the limits on
//!   one instance, its [`GuestState`], and running it to an end that releases its locks.
//! - [`runner`]: [`Runner`], which loads and prepares components of every world on one
//!   linker.
//! - [`run`]: commands on a [`Runner`]. [`serve`]: HTTP handlers on a [`Runner`], and the
//!   accept loop; `serve::fresh` gives each p2 request an instance, `serve::reused` gives
//!   p3 requests reused instances and ends each request's task.
//! - [`bindings`]: the generated host bindings of `latchkey:lock`.
//! - [`telemetry`]: the metrics and spans of every lock operation.

#![deny(missing_docs)]

pub mod backend;
mod compat;
pub mod config;
mod coordination;
pub mod ctx;
pub mod error;
mod grant;
mod host;
mod host_p3;
mod keepalive;
pub mod key;
pub mod limits;
pub mod open;
pub mod policy;
mod readings;
pub mod run;
pub mod runner;
pub mod sandbox;
pub mod serve;
pub mod store;
pub mod telemetry;
mod waiting;

/// The host bindings of `latchkey:lock`, generated by `wasmtime::component::bindgen!`.
///
/// Public so that an embedder whose own `bindgen!` world imports `latchkey:lock` can reuse
/// these types with `with: { "latchkey:lock/locks": latchkey_host::bindings::latchkey::lock::locks }`.
pub mod bindings {
    #![allow(missing_docs)] // `bindgen!`'s own items; the WIT's docs carry over.
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "latchkey:lock/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "latchkey:lock/locks.store": crate::host::StoreHandle,
            "latchkey:lock/locks.lock": crate::host::LockHandle,
            "latchkey:lock/locks.permit": crate::host::PermitHandle,
            "latchkey:lock/locks.leadership": crate::host::LeadershipHandle,
        },
        trappable_error_type: {
            "latchkey:lock/locks.error" => crate::LockError,
        },
    });

    /// The host bindings of `latchkey:lock@0.3.1` (which 0.3.0 guests link to unchanged),
    /// for WASI 0.3 guests: the same handles, every call that may wait an `async func` run
    /// on an `Accessor`, so that it holds no borrow of the instance while it waits.
    pub mod v0_3 {
        wasmtime::component::bindgen!({
            path: "../wit/v0.3.1",
            world: "latchkey:lock/imports@0.3.1",
            imports: {
                "latchkey:lock/locks.[method]store.try-lock": store | trappable,
                "latchkey:lock/locks.[method]store.lock": store | trappable,
                "latchkey:lock/locks.[method]store.acquire-permit": store | trappable,
                "latchkey:lock/locks.[method]store.campaign": store | trappable,
                "latchkey:lock/locks.[method]store.leader": store | trappable,
                "latchkey:lock/locks.[method]store.leader-change": store | trappable,
                "latchkey:lock/locks.[method]lock.extend": store | trappable,
                "latchkey:lock/locks.[method]lock.unlock": store | trappable,
                "latchkey:lock/locks.[method]lock.held": store | trappable,
                "latchkey:lock/locks.[method]lock.lost": store | trappable,
                "latchkey:lock/locks.[drop]lock": store | trappable,
                "latchkey:lock/locks.[method]permit.extend": store | trappable,
                "latchkey:lock/locks.[method]permit.release": store | trappable,
                "latchkey:lock/locks.[method]permit.held": store | trappable,
                "latchkey:lock/locks.[method]permit.lost": store | trappable,
                "latchkey:lock/locks.[drop]permit": store | trappable,
                "latchkey:lock/locks.[method]leadership.extend": store | trappable,
                "latchkey:lock/locks.[method]leadership.resign": store | trappable,
                "latchkey:lock/locks.[method]leadership.held": store | trappable,
                "latchkey:lock/locks.[method]leadership.lost": store | trappable,
                "latchkey:lock/locks.[drop]leadership": store | trappable,
                default: trappable,
            },
            with: {
                "latchkey:lock/locks.store": crate::host::StoreHandle,
                "latchkey:lock/locks.lock": crate::host::LockHandle,
                "latchkey:lock/locks.permit": crate::host::PermitHandle,
                "latchkey:lock/locks.leadership": crate::host::LeadershipHandle,
            },
            trappable_error_type: {
                "latchkey:lock/locks.error" => crate::LockError,
            },
        });
    }

    /// The host bindings of `latchkey:lock@0.1.0`, which the host keeps serving: the same
    /// store and lock handles, without keep-alive.
    pub mod v0_1 {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "latchkey:lock/imports@0.1.0",
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
}

pub use backend::{Backend, BackendError, BackendErrorKind, Holder, Listing, UnlockStatus};
pub use ctx::{LockCtx, LockCtxBuilder, LockCtxView, LockView, TaskId, TaskLocks};
pub use error::{ErrorKind, LockError, StoreConfigError, StoreError};
pub use host::{LeadershipHandle, LockHandle, PermitHandle, StoreHandle};
pub use limits::Limits;
pub use open::{StoreSettings, open};
pub use policy::{PatternError, ResourcePolicy};
pub use run::Exit;
pub use runner::{Program, Runner, World};
pub use sandbox::{DEFAULT_MAX_HANDLES, EngineOptions, GuestLimits, GuestState};
pub use store::{Grant, LeaderWatch, LockStore};

use wasmtime::component::{HasData, Linker};

/// Adds `latchkey:lock/locks` to `linker`, served from each instance's [`LockView`]: 0.2.1
/// (which 0.2.0 guests link to), 0.1.0 for guests built against it, and 0.3.1 (which 0.3.0
/// guests link to) for WASI 0.3 guests.
///
/// The functions are async: instantiate and call guests with the `_async` methods. Version
/// 0.2.0's `subscribe-lost` returns a `wasi:io/poll` pollable: link `wasi:io` too (any of
/// `wasmtime_wasi`'s `add_to_linker` functions does). 0.3.0's functions need an engine with
/// `Config::wasm_component_model_async`, and guests called with `run_concurrent`.
pub fn add_to_linker<T: LockView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    bindings::latchkey::lock::locks::add_to_linker::<T, HasLocks>(linker, T::locks)?;
    bindings::v0_1::latchkey::lock::locks::add_to_linker::<T, HasLocks>(linker, T::locks)?;
    bindings::v0_3::latchkey::lock::locks::add_to_linker::<T, HasLocks>(linker, T::locks)
}

/// The [`HasData`] marker of `latchkey:lock`: its host functions run on a [`LockCtxView`].
/// Name it when calling the generated `add_to_linker` of [`bindings`] yourself.
pub struct HasLocks;

impl HasData for HasLocks {
    type Data<'a> = LockCtxView<'a>;
}
