//! The host state of one guest instance: [`LockCtx`], its builder, and the borrowed view
//! that the WIT functions are implemented on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use wasmtime::component::ResourceTable;

use crate::backend::UnlockStatus;
use crate::error::StoreError;
use crate::limits::Limits;
use crate::policy::ResourcePolicy;
use crate::store::{Grant, LockStore};

/// Builds a [`LockCtx`] for each instance of one app.
///
/// The builder is reusable: every context built from it shares the same stores, so the
/// instances compete for the same locks.
#[derive(Clone)]
pub struct LockCtxBuilder {
    app_id: Arc<str>,
    /// Shared with every context built: building one per request copies nothing.
    stores: Arc<BTreeMap<String, LockStore>>,
    limits: Limits,
    resources: ResourcePolicy,
}

impl LockCtxBuilder {
    /// Starts a context for the app `app_id`. Locks are scoped to it: two apps that lock the
    /// same resource id never meet.
    pub fn new(app_id: impl Into<Arc<str>>) -> Self {
        LockCtxBuilder {
            app_id: app_id.into(),
            stores: Arc::default(),
            limits: Limits::default(),
            resources: ResourcePolicy::any(),
        }
    }

    /// Offers `store` to guests under `name` (what they pass to `open`).
    pub fn store(&mut self, name: impl Into<String>, store: LockStore) -> &mut Self {
        Arc::make_mut(&mut self.stores).insert(name.into(), store);
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

    /// The stores offered, by name.
    pub fn stores(&self) -> impl Iterator<Item = (&str, &LockStore)> {
        self.stores
            .iter()
            .map(|(name, store)| (name.as_str(), store))
    }

    /// A fresh context for one instance.
    pub fn build(&self) -> LockCtx {
        LockCtx {
            app_id: self.app_id.clone(),
            stores: self.stores.clone(),
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
    pub(crate) stores: Arc<BTreeMap<String, LockStore>>,
    pub(crate) limits: Limits,
    pub(crate) resources: ResourcePolicy,
    /// Every grant not yet unlocked, so that none outlives the instance.
    pub(crate) held: HashMap<u64, Held>,
    next_serial: u64,
}

/// A grant as the host keeps it: what `unlock` and `release_all` need.
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) store_name: Arc<str>,
    pub(crate) store: LockStore,
    pub(crate) grant: Arc<Grant>,
}

impl Held {
    /// Frees the lock if this grant still holds it.
    pub(crate) async fn unlock(&self) -> Result<UnlockStatus, StoreError> {
        self.store.unlock(&self.store_name, &self.grant).await
    }

    /// Frees the lock where nobody can be told the outcome (an ended instance): a failure
    /// is logged, and the lease ends the lock.
    pub(crate) async fn release(self) {
        if let Err(err) = self.unlock().await {
            tracing::warn!(%err, "could not release a lock; its lease will end it");
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
        let mut releases = tokio::task::JoinSet::new();
        for (_, held) in self.held.drain() {
            releases.spawn(held.release());
        }
        releases.join_all().await;
    }

    pub(crate) fn remember(&mut self, held: Held) -> u64 {
        self.next_serial += 1;
        self.held.insert(self.next_serial, held);
        self.next_serial
    }
}

impl Drop for LockCtx {
    /// A safety net for embedders that drop an instance without `release_all`: the releases
    /// are sent from a background task if a tokio runtime is at hand.
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for (_, held) in self.held.drain() {
                runtime.spawn(held.release());
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
