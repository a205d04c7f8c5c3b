//! The `latchkey:lock/locks` functions, implemented on [`LockCtxView`].

use std::sync::Arc;

use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynPollable, Pollable};

use crate::backend::UnlockStatus;
use crate::bindings::latchkey::lock::locks::{self as wit, HostLock, HostStore};
use crate::ctx::{Held, LockCtxView};
use crate::error::LockError;
use crate::store::{LockStore, LostSignal};

/// A store handle of a guest.
pub struct StoreHandle {
    name: Arc<str>,
    store: LockStore,
}

/// A lock handle of a guest.
pub struct LockHandle {
    serial: u64,
    resource_id: String,
    held: Held,
}

impl wit::Host for LockCtxView<'_> {
    async fn open(&mut self, name: String) -> Result<Resource<StoreHandle>, LockError> {
        let Some(store) = self.ctx.stores.get(&name) else {
            return Err(LockError::NoSuchStore(format!(
                "no lock store named {:?} is configured for app {:?}",
                abbreviated(&name),
                &*self.ctx.app_id
            )));
        };
        let handle = StoreHandle {
            name: name.into(),
            store: store.clone(),
        };
        Ok(self.table.push(handle)?)
    }

    fn convert_error(&mut self, err: LockError) -> wasmtime::Result<wit::Error> {
        crate::error::to_wit(err)
    }
}

impl LockCtxView<'_> {
    /// Checks the arguments, the app's policy and the instance's budget — all before the
    /// store is touched — then takes the lock (waiting if `wait_ms` is given) and turns the
    /// grant into a guest handle.
    pub(crate) async fn take(
        &mut self,
        handle: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
        wait_ms: Option<u32>,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        let limits = self.ctx.limits;
        limits.check_id(&resource_id)?;
        let lease = limits.check_lease(lease_ms)?;
        let wait = wait_ms.map(|ms| limits.check_wait(ms)).transpose()?;
        if !self.ctx.resources.allows(&resource_id) {
            return Err(LockError::AccessDenied(format!(
                "app {:?} may not lock resource id {:?}",
                &*self.ctx.app_id,
                abbreviated(&resource_id)
            )));
        }
        if self.ctx.held.len() >= limits.max_held {
            return Err(LockError::LimitExceeded(format!(
                "this instance already holds {} locks, the most it may hold",
                limits.max_held
            )));
        }
        let handle = self.table.get(&handle)?;
        let (store_name, lock_store) = (handle.name.clone(), handle.store.clone());
        let key = lock_store.key(&self.ctx.app_id, &resource_id);
        let grant = match wait {
            None => lock_store.try_lock(&store_name, key, lease).await?,
            Some(wait) => lock_store.lock(&store_name, key, lease, wait).await?,
        };
        let Some(grant) = grant else {
            return Ok(None);
        };
        let held = Held {
            store_name,
            store: lock_store,
            grant: Arc::new(grant),
        };
        let serial = self.ctx.remember(held.clone());
        let handle = LockHandle {
            serial,
            resource_id,
            held,
        };
        Ok(Some(self.table.push(handle)?))
    }
}

/// An id short enough to quote in a message.
fn abbreviated(id: &str) -> String {
    match id.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &id[..end]),
        None => id.to_owned(),
    }
}

impl HostStore for LockCtxView<'_> {
    async fn try_lock(
        &mut self,
        store: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        self.take(store, resource_id, lease_ms, None).await
    }

    async fn lock(
        &mut self,
        store: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
        wait_ms: u32,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        self.take(store, resource_id, lease_ms, Some(wait_ms)).await
    }

    async fn drop(&mut self, store: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl HostLock for LockCtxView<'_> {
    async fn resource_id(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&lock)?.resource_id.clone())
    }

    async fn fence(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&lock)?.held.grant.fence)
    }

    async fn extend(
        &mut self,
        lock: Resource<LockHandle>,
        lease_ms: u32,
    ) -> Result<bool, LockError> {
        let lease = self.ctx.limits.check_lease(lease_ms)?;
        let held = &self.table.get(&lock)?.held;
        Ok(held
            .store
            .extend(&held.store_name, &held.grant, lease)
            .await?)
    }

    async fn unlock(&mut self, lock: Resource<LockHandle>) -> Result<wit::UnlockStatus, LockError> {
        Ok(match self.release(lock).await? {
            UnlockStatus::Success => wit::UnlockStatus::Success,
            UnlockStatus::LockDoesNotExist => wit::UnlockStatus::LockDoesNotExist,
            UnlockStatus::LockBelongsToOthers => wit::UnlockStatus::LockBelongsToOthers,
        })
    }

    async fn keep_alive(&mut self, lock: Resource<LockHandle>) -> Result<(), LockError> {
        let held = &self.table.get(&lock)?.held;
        held.store
            .keep_alive(&held.grant, self.ctx.limits.max_keep_alive);
        Ok(())
    }

    async fn held(&mut self, lock: Resource<LockHandle>) -> Result<bool, LockError> {
        let held = &self.table.get(&lock)?.held;
        Ok(held.store.held(&held.store_name, &held.grant).await?)
    }

    async fn subscribe_lost(
        &mut self,
        lock: Resource<LockHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let lost = self.table.get(&lock)?.held.grant.lost();
        let signal = self.table.push(LostPollable(lost))?;
        wasmtime_wasi::p2::subscribe(self.table, signal)
    }

    async fn drop(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<()> {
        self.forget(lock).await
    }
}

impl LockCtxView<'_> {
    /// `unlock`: frees the lock and says what the store found. The instance forgets the
    /// lock only once the store answered: if it could not be reached, the lock stays on the
    /// list for the instance's final release.
    pub(crate) async fn release(
        &mut self,
        lock: Resource<LockHandle>,
    ) -> Result<UnlockStatus, LockError> {
        let handle = self.table.get(&lock)?;
        let status = handle.held.unlock().await?;
        self.ctx.held.remove(&handle.serial);
        Ok(status)
    }

    /// A dropped lock handle: the lock is released, and forgotten only once the store has
    /// answered — if the release fails, or is cut short by the instance's deadline,
    /// `release_all` still knows the lock.
    pub(crate) async fn forget(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<()> {
        let handle = self.table.delete(lock)?;
        if let Some(held) = self.ctx.held.get(&handle.serial) {
            match held.unlock().await {
                Ok(_) => {
                    self.ctx.held.remove(&handle.serial);
                }
                Err(err) => {
                    tracing::warn!(%err, "could not release a dropped lock; trying again when the instance ends");
                }
            }
        }
        Ok(())
    }
}

/// The `pollable` of `subscribe-lost`: ready once the grant is lost.
struct LostPollable(LostSignal);

#[async_trait::async_trait]
impl Pollable for LostPollable {
    async fn ready(&mut self) {
        self.0.wait().await;
    }
}
