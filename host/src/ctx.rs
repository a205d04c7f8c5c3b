//! The host state of one guest instance: [`LockCtx`], its builder, and the borrowed view
//! that the WIT functions are implemented on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;

use crate::backend::UnlockStatus;
use crate::error::{LockError, StoreError};
use crate::limits::Limits;
use crate::policy::ResourcePolicy;
use crate::store::{Grant, LockStore};
use crate::telemetry::{self, Call, Instruments, Op, Outcome, UNKNOWN_STORE};

/// Builds a [`LockCtx`] for each instance of one app.
///
/// The builder is reusable: every context built from it shares the same stores, so the
/// instances compete for the same locks.
#[derive(Clone)]
pub struct LockCtxBuilder {
    app_id: Arc<str>,
    /// Shared with every context built: building one per request copies nothing.
    stores: Arc<BTreeMap<String, Offered>>,
    /// The series of calls naming a store the app was not offered.
    unknown_store: Arc<Instruments>,
    limits: Limits,
    resources: ResourcePolicy,
}

/// A lock store offered to an app, and the metrics of the app's calls on it.
#[derive(Clone)]
pub(crate) struct Offered {
    pub(crate) store: LockStore,
    pub(crate) instruments: Arc<Instruments>,
}

impl LockCtxBuilder {
    /// Starts a context for the app `app_id`. Locks are scoped to it: two apps that lock the
    /// same resource id never meet.
    pub fn new(app_id: impl Into<Arc<str>>) -> Self {
        let app_id = app_id.into();
        LockCtxBuilder {
            unknown_store: Instruments::new(app_id.clone(), UNKNOWN_STORE.into()),
            app_id,
            stores: Arc::default(),
            limits: Limits::default(),
            resources: ResourcePolicy::any(),
        }
    }

    /// Offers `store` to guests under its name (what they pass to `open`); it replaces a
    /// store of the same name.
    pub fn store(&mut self, store: LockStore) -> &mut Self {
        let name = store.name().to_owned();
        let instruments = Instruments::new(self.app_id.clone(), name.as_str().into());
        Arc::make_mut(&mut self.stores).insert(name, Offered { store, instruments });
        self
    }

    /// Replaces the default [`Limits`].
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.limits = limits;
        self
    }

    /// Restricts the resource ids the app may lock; others are `access-denied`.
    pub fn resources(&mut self, policy: ResourcePolicy) -> &mut Self {
        self.resources = policy;
        self
    }

    /// The app the contexts are for.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The stores offered.
    pub fn stores(&self) -> impl Iterator<Item = &LockStore> {
        self.stores.values().map(|offered| &offered.store)
    }

    /// A fresh context for one instance.
    pub fn build(&self) -> LockCtx {
        telemetry::instances(&self.app_id, 1.0);
        LockCtx {
            app_id: self.app_id.clone(),
            stores: self.stores.clone(),
            unknown_store: self.unknown_store.clone(),
            limits: self.limits,
            resources: self.resources.clone(),
            held: HashMap::new(),
            next_serial: 0,
        }
    }
}

/// The lock state of one guest instance: its app, the stores it may open, and the locks it
/// holds. Call [`LockCtx::release_all`] when the instance ends, however it ends.
pub struct LockCtx {
    pub(crate) app_id: Arc<str>,
    pub(crate) stores: Arc<BTreeMap<String, Offered>>,
    pub(crate) unknown_store: Arc<Instruments>,
    pub(crate) limits: Limits,
    pub(crate) resources: ResourcePolicy,
    /// Every grant the instance holds, until its release is confirmed: none outlives the
    /// instance.
    pub(crate) held: HashMap<u64, HeldLock>,
    next_serial: u64,
}

/// A grant the instance holds, as the host keeps it: what `unlock` and `release_all` need.
#[derive(Clone)]
pub(crate) struct HeldLock {
    /// The app's series on the store.
    pub(crate) instruments: Arc<Instruments>,
    pub(crate) store: LockStore,
    pub(crate) grant: Arc<Grant>,
    granted: Instant,
}

impl HeldLock {
    pub(crate) fn new(instruments: Arc<Instruments>, store: LockStore, grant: Grant) -> Self {
        HeldLock {
            instruments,
            store,
            grant: Arc::new(grant),
            granted: Instant::now(),
        }
    }

    /// Releases the lock if this grant still holds it.
    pub(crate) async fn release(&self) -> Result<UnlockStatus, StoreError> {
        self.store.unlock(&self.grant).await
    }

    /// Releases the lock where nobody can be told the outcome (an ended instance): a
    /// failure is logged, and the lease ends the lock.
    async fn release_on_exit(self) {
        let call = Call::start(Op::ReleaseOnExit, self.instruments.clone());
        match self.release().await {
            Ok(status) => call.finish(status.into()),
            Err(err) => {
                tracing::warn!(%err, "could not release a lock; its lease will end it");
                call.finish(Outcome::of_error(&LockError::Unavailable(err)));
            }
        }
    }
}

impl LockCtx {
    /// How many locks the instance holds now.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Releases every lock the instance still holds, all at once, and waits for the stores
    /// to answer. A store that cannot be reached leaves its locks to their leases.
    pub async fn release_all(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut releases = tokio::task::JoinSet::new();
        for held in self.let_go_of_all() {
            releases.spawn(held.release_on_exit());
        }
        releases.join_all().await;
    }

    pub(crate) fn remember(&mut self, held: HeldLock) -> u64 {
        held.instruments.lock_taken();
        self.next_serial += 1;
        self.held.insert(self.next_serial, held);
        self.next_serial
    }

    /// The lock `serial` is released, and the store confirmed it: the instance forgets it.
    pub(crate) fn forget(&mut self, serial: u64) {
        if let Some(held) = self.held.remove(&serial) {
            held.instruments.lock_let_go(held.granted.elapsed());
        }
    }

    /// Every lock the instance holds, taken off its list for a final release.
    fn let_go_of_all(&mut self) -> Vec<HeldLock> {
        let all: Vec<HeldLock> = self.held.drain().map(|(_, held)| held).collect();
        for held in &all {
            held.instruments.lock_let_go(held.granted.elapsed());
        }
        all
    }
}

impl Drop for LockCtx {
    /// A safety net for embedders that drop an instance without `release_all`: the releases
    /// are sent from a background task if a tokio runtime is at hand.
    fn drop(&mut self) {
        telemetry::instances(&self.app_id, -1.0);
        if self.held.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for held in self.let_go_of_all() {
                runtime.spawn(held.release_on_exit());
            }
        }
    }
}

/// A [`LockCtx`] together with the instance's resource table, borrowed for one call.
pub struct LockCtxView<'a> {
    /// The instance's lock state.
    pub ctx: &'a mut LockCtx,
    /// Where the guest's `store` and `lock` handles live.
    pub table: &'a mut ResourceTable,
}

/// Implemented by an embedder's store data to give the lock host its state, like
/// `wasmtime_wasi::WasiView`.
pub trait LockView: Send {
    /// The lock state and resource table of this instance.
    fn locks(&mut self) -> LockCtxView<'_>;
}
