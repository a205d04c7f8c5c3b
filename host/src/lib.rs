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
//! `wasi:http` handlers ([`Runner::handler`] and [`runtime::serve::serve`], `latchkey serve`): a
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
//!   **key** ([`key::LockKey`]) is where it lives in the store, by the store's **key layout**
//!   ([`key::KeySpace`]): latchkey's, or daprd's (`key-layout=dapr`).
//! - **grant** ([`Grant`]): the lock given to this host once: an **owner token** (`Token`,
//!   made by the host), a **fence** (rising with every grant), and a **lease**. A guest's
//!   handle on a grant is a **lock handle** (the WIT `lock`, [`LockHandle`]).
//! - **holder**: the grant a store has for a lock now. A grant is **owned** by the instance
//!   that took it (and, in 0.3, its task), which keeps it as an `OwnedGrant` among its
//!   `Grants` until its release is confirmed. A lock is **held** by the instance that owns
//!   its grant ([`LockCtx::held_count`]); a lock another grant holds is **busy**
//!   (`Attempt::Busy`). **confirm**: ask the store whether a grant still holds its lock — the
//!   WIT `held` ([`LockStore::holds`], [`Backend::holds`]).
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
//! - **semaphore**: `limit` locks of [`key::GrantKind::Permit`] on one semaphore id, each a
//!   **permit**; a guest's handle on a permit's grant is a **permit handle** (the WIT
//!   `permit`, [`PermitHandle`]). Taken first free first ([`Backend::try_acquire_any`]).
//! - **election**: one lock of [`key::GrantKind::Leadership`], the **leadership**; its holder is
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
//!   **instance**: one running copy. **run**: a command's instance called to its end
//!   (`latchkey run`, [`Runner::run`]); **serve**: an HTTP handler's instances given
//!   requests (`latchkey serve`); the **runtime** is what does both.
//! - **store kind** (`StoreKind`): what a store URL names — memory, one Redis server, a
//!   Cluster, Sentinel, Redlock. **grant kind** ([`key::GrantKind`]): a lock, a permit or a
//!   leadership. **settings** ([`StoreSettings`]): what a store is opened with, and nothing
//!   else is called so; a store that cannot be opened so is an [`OpenError`].
//! - **call**: one WIT function called by a guest, **begun** against the instance's state
//!   (checked), **asked** of the store, and **finished** against the instance's state
//!   again; the **adapter** of a WASI version (`p2`, `p3`) gives the calls its binding's
//!   shape.
//! - **task**: one async call into a WASI 0.3 instance and what it spawns — for `serve`, one
//!   request. In 0.3 a lock is **owned** by the task that took it ([`TaskLocks`]), and the
//!   task's **end** releases it; the host knows a task as running or ended (`TaskState`).
//!   **cancel**: the guest drops a pending call.
//! - **owner** (Dapr): the name a Dapr client gives the holder of its lock (`lockOwner`);
//!   its owner token is made from it. An owner's locks count against its **budget** as an
//!   instance's do (`max-held`), and the endpoint's against its own.
//! - **reuse**: one p3 instance serving many requests, one after another and at once
//!   ([`runtime::serve::InstanceReuse`]). **retire**: take no more requests into an instance and
//!   drop it once its requests are over (a trap, a deadline).
//!
//! # Layout
//!
//! The folders are the layers, from the guest's call down to the store:
//!
//! - [`p2`], [`p3`]: the **adapters** — each WASI version's bindings (0.2.1 with 0.1.0; 0.3.1),
//!   its host traits, its waits (pollables in 0.2, futures in 0.3) and its one error
//!   mapping. Neither imports the other.
//! - `calls`: every WIT call written once, for both adapters: the guest's handles
//!   ([`StoreHandle`], [`LockHandle`], ...), taking, the calls every grant shares, elections.
//! - [`ctx`]: [`LockCtx`] (one instance's app, stores and grants), its builder, the borrowed
//!   view the calls run on, and the tasks of 0.3.
//! - [`store`]: [`LockStore`] — owner tokens, timeouts, waiting, keep-alive, leader watches —
//!   with [`open()`] and its [`StoreSettings`] (the URL forms and redaction, a leaf).
//! - [`backend`]: the [`Backend`] trait; its implementations are private: `memory`, and
//!   `redis` (one server, Cluster or Sentinel, by its connection; `setup` for multi-host URLs
//!   and connection set-up; `channels` for pub/sub) with `redis::redlock` on top.
//! - [`runtime`]: running guests whole — the [`sandbox`](runtime::sandbox) (engine, pool,
//!   limits, [`GuestState`]), the [`Runner`], commands run, and HTTP handlers served
//!   ([`runtime::serve`]: the handler, with `fresh` instances for 0.2 and `reused` ones for
//!   0.3, apart from the accept loop, `listen`).
//! - [`dapr`]: Dapr's lock API for Dapr's own clients ([`dapr::DaprApi`]), over HTTP and
//!   gRPC, on the same stores and policy as the app's guests — a third adapter, beside the
//!   WIT ones.
//! - Beside them, what every layer may use: [`error`] (the errors, in the host's words),
//!   [`key`] (the key layout of a lock, and its escaping), [`limits`], [`policy`],
//!   [`config`] (the operator's TOML file), [`telemetry`] (metrics and spans of every call).

#![deny(missing_docs)]

pub mod backend;
mod calls;
pub mod config;
pub mod ctx;
pub mod dapr;
pub mod error;
pub mod key;
pub mod limits;
pub mod p2;
pub mod p3;
pub mod policy;
pub mod runtime;
pub mod store;
pub mod telemetry;

pub use backend::{Backend, Holder, Listing, UnlockStatus};
pub use calls::{LeadershipHandle, LockHandle, PermitHandle, StoreHandle};
pub use ctx::{HasLocks, LockCtx, LockCtxBuilder, LockCtxView, LockView, TaskId, TaskLocks};
pub use error::{BackendError, BackendErrorKind, ErrorKind, LockError, OpenError, StoreError};
pub use limits::Limits;
pub use policy::{PatternError, ResourcePolicy};
pub use runtime::sandbox::{DEFAULT_MAX_HANDLES, EngineOptions, GuestLimits, GuestState};
pub use runtime::{Exit, Program, Runner, World};
pub use store::{Grant, LeaderWatch, LockStore, StoreSettings, open};

use wasmtime::component::Linker;

/// Adds `latchkey:lock/locks` to `linker`, served from each instance's [`LockView`]: 0.2.1
/// (which 0.2.0 guests link to), 0.1.0 for guests built against it ([`p2::add_to_linker`]),
/// and 0.3.1 (which 0.3.0 guests link to) for WASI 0.3 guests ([`p3::add_to_linker`]).
///
/// The functions are async: instantiate and call guests with the `_async` methods. Version
/// 0.2's `subscribe-lost` returns a `wasi:io/poll` pollable: link `wasi:io` too (any of
/// `wasmtime_wasi`'s `add_to_linker` functions does). 0.3's functions need an engine with
/// `Config::wasm_component_model_async`, and guests called with `run_concurrent`.
pub fn add_to_linker<T: LockView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    p2::add_to_linker(linker)?;
    p3::add_to_linker(linker)
}
