//! `latchkey:lock@0.1.0`, still served: the calls of 0.2 without keep-alive, on the same
//! store and lock handles.

use wasmtime::component::Resource;

use crate::calls::{self, Asked, FromLockError, LockHandle, StoreHandle};
use crate::ctx::LockCtxView;
use crate::error::LockError;
use crate::telemetry::Op;
use bindings::latchkey::lock::locks::{self as v0_1, Host, HostLock, HostStore};

/// The host bindings of `latchkey:lock@0.1.0`: the same store and lock handles as 0.2.1's.
pub mod bindings {
    #![allow(missing_docs)] // `bindgen!`'s own items; the WIT's docs carry over.
    wasmtime::component::bindgen!({
        path: "wit/v0.1.0",
        world: "latchkey:lock/imports@0.1.0",
        imports: { default: async | trappable },
        with: {
            "latchkey:lock/locks.store": crate::calls::StoreHandle,
            "latchkey:lock/locks.lock": crate::calls::LockHandle,
        },
        trappable_error_type: {
            "latchkey:lock/locks.error" => crate::error::LockError,
        },
    });
}

impl Host for LockCtxView<'_> {
    async fn open(&mut self, name: String) -> Result<Resource<StoreHandle>, LockError> {
        self.open_store(name)
    }

    fn convert_error(&mut self, err: LockError) -> wasmtime::Result<v0_1::Error> {
        v0_1::Error::from_lock_error(err)
    }
}

// The bodies below are 0.2.1's on 0.1.0's traits: the two versions' generated traits are
// distinct, and a call's body is already one line into `calls`.
impl HostStore for LockCtxView<'_> {
    async fn try_lock(
        &mut self,
        store: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        calls::take(self, store, Asked::Lock, resource_id, lease_ms, None).await
    }

    async fn lock(
        &mut self,
        store: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
        wait_ms: u32,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        calls::take(
            self,
            store,
            Asked::Lock,
            resource_id,
            lease_ms,
            Some(wait_ms),
        )
        .await
    }

    async fn drop(&mut self, store: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.drop_store(store)
    }
}

impl HostLock for LockCtxView<'_> {
    async fn resource_id(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<String> {
        self.grant_id(&lock)
    }

    async fn fence(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<u64> {
        self.grant_fence(&lock)
    }

    async fn extend(
        &mut self,
        lock: Resource<LockHandle>,
        lease_ms: u32,
    ) -> Result<bool, LockError> {
        calls::extend(self, lock, lease_ms).await
    }

    async fn unlock(
        &mut self,
        lock: Resource<LockHandle>,
    ) -> Result<v0_1::UnlockStatus, LockError> {
        Ok(calls::let_go(self, Op::Unlock, lock).await?.into())
    }

    async fn drop(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<()> {
        super::drop_grant(self, lock).await
    }
}
