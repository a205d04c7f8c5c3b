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
    self as wit, HostLeadership, HostLeadershipWithStore, HostLock, HostLockWithStore, HostPermit,
    HostPermitWithStore, HostStore, HostStoreWithStore,
};
use crate::ctx::{LockCtxView, PendingCall, TaskId};
use crate::error::{FromLockError, LockError};
use crate::host::{
    Asked, GrantHandle, LeadershipHandle, LockHandle, PermitHandle, StoreHandle, finish_extend,
    finish_held,
};
use crate::telemetry::Op;

/// The guest task a call comes from: the root of its component-model call stack, which for
/// a `wasi:http` handler is the request's.
fn calling_task<T>(access: &mut Access<'_, T, HasLocks>) -> Option<TaskId> {
    let mut store = wasmtime::AsContextMut::as_context_mut(access);
    store.async_call_stack().ok()?.last()
}

/// Counts the call as pending until the returned guard is dropped: see
/// [`LockCtxView::begin_pending`].
fn pending<T>(accessor: &Accessor<T, HasLocks>) -> Result<PendingCall, LockError> {
    accessor.with(|mut access| access.get().begin_pending())
}

/// `try-lock` or, with `wait_ms`, `lock`, by the calling task.
async fn take<T>(
    accessor: &Accessor<T, HasLocks>,
    store: Resource<StoreHandle>,
    resource_id: String,
    lease_ms: u32,
    wait_ms: Option<u32>,
) -> Result<Option<Resource<LockHandle>>, LockError> {
    take_asked(accessor, store, Asked::Lock, resource_id, lease_ms, wait_ms).await
}

/// A take of what is `asked`, by the calling task: its grant is the task's.
async fn take_asked<T, H: GrantHandle>(
    accessor: &Accessor<T, HasLocks>,
    store: Resource<StoreHandle>,
    asked: Asked,
    id: String,
    lease_ms: u32,
    wait_ms: Option<u32>,
) -> Result<Option<Resource<H>>, LockError> {
    let _pending = pending(accessor)?;
    let take = accessor.with(|mut access| {
        let task = calling_task(&mut access);
        access
            .get()
            .begin(&store, asked, id, lease_ms, wait_ms, task)
    })?;
    let granted = take.run().await;
    accessor.with(|mut access| access.get().finish_take(take, granted))
}

/// `extend` of a grant of any kind.
async fn extend<T, H: GrantHandle>(
    accessor: &Accessor<T, HasLocks>,
    grant: Resource<H>,
    lease_ms: u32,
) -> Result<bool, LockError> {
    let _pending = pending(accessor)?;
    let (on, lease) = accessor.with(|mut access| access.get().begin_extend(&grant, lease_ms))?;
    let extended = on.run(on.held.store.extend(&on.held.grant, lease)).await;
    finish_extend(on, extended)
}

/// `unlock`, `release` or `resign` (`op`) of a grant of any kind.
async fn let_go<T, H: GrantHandle>(
    accessor: &Accessor<T, HasLocks>,
    op: Op,
    grant: Resource<H>,
) -> Result<wit::UnlockStatus, LockError> {
    let _pending = pending(accessor)?;
    let on = accessor.with(|mut access| access.get().begin_on_lock(op, &grant))?;
    let status = on.run(on.held.release()).await;
    let status = accessor.with(|mut access| access.get().finish_unlock(on, status))?;
    Ok(status.into())
}

/// `held` of a grant of any kind.
async fn held<T, H: GrantHandle>(
    accessor: &Accessor<T, HasLocks>,
    grant: Resource<H>,
) -> Result<bool, LockError> {
    let _pending = pending(accessor)?;
    let on = accessor.with(|mut access| access.get().begin_on_lock(Op::Held, &grant))?;
    let held = on.run(on.held.store.held(&on.held.grant)).await;
    finish_held(on, held)
}

/// `lost` of a grant of any kind.
async fn lost<T, H: GrantHandle>(
    accessor: &Accessor<T, HasLocks>,
    grant: Resource<H>,
) -> wasmtime::Result<()> {
    // No error to return: past the cap, a trap.
    let _pending = pending(accessor).map_err(|err| wasmtime::format_err!("{err}"))?;
    let mut lost = accessor.with(|mut access| access.get().lost_signal(&grant))?;
    lost.wait().await;
    Ok(())
}

/// The drop of a grant's handle of any kind.
fn drop_grant<T, H: GrantHandle>(
    mut access: Access<'_, T, HasLocks>,
    grant: Resource<H>,
) -> wasmtime::Result<()> {
    // A drop cannot wait: the release goes on in the background, and the instance
    // forgets the grant once the store has confirmed it.
    if let Some((held, serial)) = access.get().drop_lock_handle(grant)? {
        tokio::spawn(held.release_dropped(serial));
    }
    Ok(())
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

    async fn acquire_permit(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        semaphore_id: String,
        limit: u32,
        lease_ms: u32,
        wait_ms: u32,
    ) -> Result<Option<Resource<PermitHandle>>, LockError> {
        let asked = Asked::Permit { limit };
        take_asked(
            accessor,
            store,
            asked,
            semaphore_id,
            lease_ms,
            Some(wait_ms),
        )
        .await
    }

    async fn campaign(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        election_id: String,
        value: String,
        lease_ms: u32,
        wait_ms: u32,
    ) -> Result<Option<Resource<LeadershipHandle>>, LockError> {
        let asked = Asked::Leadership { value };
        take_asked(accessor, store, asked, election_id, lease_ms, Some(wait_ms)).await
    }

    async fn leader(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        election_id: String,
    ) -> Result<Option<wit::Leader>, LockError> {
        let _pending = pending(accessor)?;
        let on = accessor.with(|mut access| {
            access
                .get()
                .begin_on_election(Op::Leader, &store, &election_id)
        })?;
        let leader = on.run(on.store.leader(&on.key)).await;
        Ok(on.finish_leader(leader)?.map(Into::into))
    }

    async fn leader_change(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        election_id: String,
        seen: Option<u64>,
    ) -> Result<Option<wit::Leader>, LockError> {
        let _pending = pending(accessor)?;
        let on = accessor.with(|mut access| {
            access
                .get()
                .begin_on_election(Op::WatchLeader, &store, &election_id)
        })?;
        let leader = on.run(on.store.leader_change(on.key.clone(), seen)).await;
        Ok(on.finish_leader(leader)?.map(Into::into))
    }
}

/// The 0.3 host traits of a grant's WIT resource (`lock`, `permit`, `leadership`): the
/// calls that answer at once on the view, those that wait on an `Accessor`; the same for
/// every kind but for the names of its id and of how it is let go.
macro_rules! grant_resource {
    ($sync:ident, $waits:ident for $handle:ty: $id:ident, $let_go:ident as $op:expr) => {
        impl $sync for LockCtxView<'_> {
            fn $id(&mut self, grant: Resource<$handle>) -> wasmtime::Result<String> {
                self.lock_resource_id(&grant)
            }

            fn fence(&mut self, grant: Resource<$handle>) -> wasmtime::Result<u64> {
                self.lock_fence(&grant)
            }

            fn keep_alive(&mut self, grant: Resource<$handle>) -> Result<(), LockError> {
                self.keep_lock_alive(&grant)
            }
        }

        impl<T> $waits<T> for HasLocks {
            async fn extend(
                accessor: &Accessor<T, Self>,
                grant: Resource<$handle>,
                lease_ms: u32,
            ) -> Result<bool, LockError> {
                extend(accessor, grant, lease_ms).await
            }

            async fn $let_go(
                accessor: &Accessor<T, Self>,
                grant: Resource<$handle>,
            ) -> Result<wit::UnlockStatus, LockError> {
                let_go(accessor, $op, grant).await
            }

            async fn held(
                accessor: &Accessor<T, Self>,
                grant: Resource<$handle>,
            ) -> Result<bool, LockError> {
                held(accessor, grant).await
            }

            async fn lost(
                accessor: &Accessor<T, Self>,
                grant: Resource<$handle>,
            ) -> wasmtime::Result<()> {
                lost(accessor, grant).await
            }

            fn drop(access: Access<'_, T, Self>, grant: Resource<$handle>) -> wasmtime::Result<()> {
                drop_grant(access, grant)
            }
        }
    };
}

grant_resource!(HostLock, HostLockWithStore for LockHandle: resource_id, unlock as Op::Unlock);
grant_resource!(HostPermit, HostPermitWithStore for PermitHandle: semaphore_id, release as Op::Release);
grant_resource!(HostLeadership, HostLeadershipWithStore for LeadershipHandle: election_id, resign as Op::Resign);
