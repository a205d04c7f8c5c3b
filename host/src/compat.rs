//! `latchkey:lock@0.1.0`, still served: the same functions as 0.2.0 without keep-alive,
//! on the same store and lock handles.

use wasmtime::component::Resource;

use crate::bindings::v0_1::latchkey::lock::locks::{self as v0_1, Host, HostLock, HostStore};
use crate::ctx::LockCtxView;
use crate::error::{FromLockError, LockError};
use crate::host::{LockHandle, StoreHandle};

impl Host for LockCtxView<'_> {
    async fn open(&mut self, name: String) -> Result<Resource<StoreHandle>, LockError> {
        crate::bindings::latchkey::lock::locks::Host::open(self, name).await
    }

    fn convert_error(&mut self, err: LockError) -> wasmtime::Result<v0_1::Error> {
        v0_1::Error::from_lock_error(err)
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
        crate::bindings::latchkey::lock::locks::HostLock::resource_id(self, lock).await
    }

    async fn fence(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<u64> {
        crate::bindings::latchkey::lock::locks::HostLock::fence(self, lock).await
    }

    async fn extend(
        &mut self,
        lock: Resource<LockHandle>,
        lease_ms: u32,
    ) -> Result<bool, LockError> {
        crate::bindings::latchkey::lock::locks::HostLock::extend(self, lock, lease_ms).await
    }

    async fn unlock(
        &mut self,
        lock: Resource<LockHandle>,
    ) -> Result<v0_1::UnlockStatus, LockError> {
        Ok(self.release(lock).await?.into())
    }

    async fn drop(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<()> {
        self.drop_lock(lock).await
    }
}
