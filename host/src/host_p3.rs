//! `latchkey:lock@0.3.0`, for WASI 0.3 guests: the calls of 0.2.0 on the same handles, each
//! that may wait an `async func` that holds no borrow of the instance while it waits — so
//! only the calling task waits — and every grant owned by the guest task that took it.
//!
//! A call is started and finished against the instance's state inside `Accessor::with`,
//! and runs against the store in between, outside it. A guest that drops a pending call
//! cancels it: the host future is dropped at its await, where a grant not yet handed out is
//! released by the store's own guard ([`crate::LockStore`]'s acquire); nothing is left
//! half-recorded, since starting and finishing are never interrupted.

use wasmtime::component::{Access, Accessor, Resource};

use crate::HasLocks;
use crate::bindings::v0_3::latchkey::lock::locks::{
    self as wit, HostLock, HostLockWithStore, HostStore, HostStoreWithStore,
};
use crate::ctx::{LockCtxView, TaskId};
use crate::error::{FromLockError, LockError};
use crate::host::{LockHandle, StoreHandle, finish_extend, finish_held};
use crate::telemetry::Op;

/// The guest task a call comes from: the root of its component-model call stack, which for
/// a `wasi:http` handler is the request's.
fn calling_task<T>(access: &mut Access<'_, T, HasLocks>) -> Option<TaskId> {
    let mut store = wasmtime::AsContextMut::as_context_mut(access);
    store.async_call_stack().ok()?.last()
}

/// `try-lock` or, with `wait_ms`, `lock`, by the calling task.
async fn take<T>(
    accessor: &Accessor<T, HasLocks>,
    store: Resource<StoreHandle>,
    resource_id: String,
    lease_ms: u32,
    wait_ms: Option<u32>,
) -> Result<Option<Resource<LockHandle>>, LockError> {
    let take = accessor.with(|mut access| {
        let task = calling_task(&mut access);
        access
            .get()
            .begin_take(&store, resource_id, lease_ms, wait_ms, task)
    })?;
    let granted = take.run().await;
    accessor.with(|mut access| access.get().finish_take(take, granted))
}

impl wit::Host for LockCtxView<'_> {
    fn open(&mut self, name: String) -> Result<Resource<StoreHandle>, LockError> {
        self.open_store(name)
    }

    fn convert_error(&mut self, err: LockError) -> wasmtime::Result<wit::Error> {
        wit::Error::from_lock_error(err)
    }
}

impl HostStore for LockCtxView<'_> {
    fn drop(&mut self, store: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl<T> HostStoreWithStore<T> for HasLocks {
    async fn try_lock(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        take(accessor, store, resource_id, lease_ms, None).await
    }

    async fn lock(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
        wait_ms: u32,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        take(accessor, store, resource_id, lease_ms, Some(wait_ms)).await
    }
}

impl HostLock for LockCtxView<'_> {
    fn resource_id(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<String> {
        self.lock_resource_id(&lock)
    }

    fn fence(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<u64> {
        self.lock_fence(&lock)
    }

    fn keep_alive(&mut self, lock: Resource<LockHandle>) -> Result<(), LockError> {
        self.keep_lock_alive(&lock)
    }
}

impl<T> HostLockWithStore<T> for HasLocks {
    async fn extend(
        accessor: &Accessor<T, Self>,
        lock: Resource<LockHandle>,
        lease_ms: u32,
    ) -> Result<bool, LockError> {
        let (on, lease) = accessor.with(|mut access| access.get().begin_extend(&lock, lease_ms))?;
        let extended = on.run(on.held.store.extend(&on.held.grant, lease)).await;
        finish_extend(on, extended)
    }

    async fn unlock(
        accessor: &Accessor<T, Self>,
        lock: Resource<LockHandle>,
    ) -> Result<wit::UnlockStatus, LockError> {
        let on = accessor.with(|mut access| access.get().begin_on_lock(Op::Unlock, &lock))?;
        let status = on.run(on.held.release()).await;
        let status = accessor.with(|mut access| access.get().finish_unlock(on, status))?;
        Ok(status.into())
    }

    async fn held(
        accessor: &Accessor<T, Self>,
        lock: Resource<LockHandle>,
    ) -> Result<bool, LockError> {
        let on = accessor.with(|mut access| access.get().begin_on_lock(Op::Held, &lock))?;
        let held = on.run(on.held.store.held(&on.held.grant)).await;
        finish_held(on, held)
    }

    async fn lost(
        accessor: &Accessor<T, Self>,
        lock: Resource<LockHandle>,
    ) -> wasmtime::Result<()> {
        let mut lost = accessor.with(|mut access| access.get().lost_signal(&lock))?;
        lost.wait().await;
        Ok(())
    }

    fn drop(mut access: Access<'_, T, Self>, lock: Resource<LockHandle>) -> wasmtime::Result<()> {
        // A drop cannot wait: the release goes on in the background, and the instance
        // forgets the lock once the store has confirmed it.
        if let Some((held, serial)) = access.get().drop_lock_handle(lock)? {
            tokio::spawn(held.release_dropped(serial));
        }
        Ok(())
    }
}
