//! The WASI 0.3 adapter: `latchkey:lock@0.3.1` (which 0.3.0 guests link to unchanged). Every
//! call that may wait is an `async func` run on an [`Accessor`], which lends the instance's
//! state only to begin and to finish the call — so only the calling task waits — and every
//! grant is owned by the guest task that took it.
//!
//! A guest that drops a pending call cancels it: the host future is dropped at its await,
//! where a grant not yet handed out is released by the store's own guard
//! ([`crate::LockStore`]'s acquire); nothing is left half-recorded, since beginning and
//! finishing are never interrupted.

use wasmtime::component::{Access, Accessor, Linker, Resource};

use crate::calls::{self, Asked, Caller, FromLockError, GrantHandle};
use crate::calls::{LeadershipHandle, LockHandle, PermitHandle, StoreHandle};
use crate::ctx::HasLocks;
use crate::ctx::{LockCtxView, LockView, PendingCall, TaskId};
use crate::error::LockError;
use crate::telemetry::Op;
use bindings::latchkey::lock::locks::{
    self as wit, HostLeadership, HostLeadershipWithStore, HostLock, HostLockWithStore, HostPermit,
    HostPermitWithStore, HostStore, HostStoreWithStore,
};

mod error;

/// The host bindings of `latchkey:lock@0.3.1`: the same handles as 0.2's, every call that
/// may wait an `async func` run on an `Accessor`, so that it holds no borrow of the instance
/// while it waits.
pub mod bindings {
    #![allow(missing_docs)] // `bindgen!`'s own items; the WIT's docs carry over.
    wasmtime::component::bindgen!({
        path: "wit/v0.3.1",
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
            "latchkey:lock/locks.store": crate::calls::StoreHandle,
            "latchkey:lock/locks.lock": crate::calls::LockHandle,
            "latchkey:lock/locks.permit": crate::calls::PermitHandle,
            "latchkey:lock/locks.leadership": crate::calls::LeadershipHandle,
        },
        trappable_error_type: {
            "latchkey:lock/locks.error" => crate::error::LockError,
        },
    });
}

/// Adds `latchkey:lock/locks` 0.3.1 (which 0.3.0 guests link to) to `linker`, served from
/// each instance's [`LockView`]. Its functions need an engine with
/// `Config::wasm_component_model_async`, and guests called with `run_concurrent`.
pub fn add_to_linker<T: LockView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    bindings::latchkey::lock::locks::add_to_linker::<T, HasLocks>(linker, T::locks)
}

/// A WASI 0.3 call lends the view for each half only: between them the instance's other
/// tasks run.
impl<T> Caller for &Accessor<T, HasLocks> {
    fn with<R>(&mut self, f: impl FnOnce(&mut LockCtxView<'_>) -> R) -> R {
        Accessor::with(self, |mut access| f(&mut access.get()))
    }

    /// The root of the calling component-model call stack, which for a `wasi:http` handler
    /// is the request's.
    fn task(&mut self) -> Option<TaskId> {
        Accessor::with(self, |mut access| {
            let mut store = wasmtime::AsContextMut::as_context_mut(&mut access);
            store.async_call_stack().ok()?.last()
        })
    }

    fn pending(&mut self) -> Result<Option<PendingCall>, LockError> {
        Accessor::with(self, |mut access| access.get().begin_pending()).map(Some)
    }
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
        self.drop_store(store)
    }
}

impl<T> HostStoreWithStore<T> for HasLocks {
    async fn try_lock(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        calls::take(
            &mut { accessor },
            store,
            Asked::Lock,
            resource_id,
            lease_ms,
            None,
        )
        .await
    }

    async fn lock(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
        wait_ms: u32,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        let wait = Some(wait_ms);
        calls::take(
            &mut { accessor },
            store,
            Asked::Lock,
            resource_id,
            lease_ms,
            wait,
        )
        .await
    }

    async fn acquire_permit(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        semaphore_id: String,
        limit: u32,
        lease_ms: u32,
        wait_ms: u32,
    ) -> Result<Option<Resource<PermitHandle>>, LockError> {
        let (asked, wait) = (Asked::Permit { limit }, Some(wait_ms));
        calls::take(
            &mut { accessor },
            store,
            asked,
            semaphore_id,
            lease_ms,
            wait,
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
        let (asked, wait) = (Asked::Leadership { value }, Some(wait_ms));
        calls::take(&mut { accessor }, store, asked, election_id, lease_ms, wait).await
    }

    async fn leader(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        election_id: String,
    ) -> Result<Option<wit::Leader>, LockError> {
        let leader = calls::leader(&mut { accessor }, store, election_id).await?;
        Ok(leader.map(Into::into))
    }

    async fn leader_change(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        election_id: String,
        seen: Option<u64>,
    ) -> Result<Option<wit::Leader>, LockError> {
        let leader = calls::leader_change(&mut { accessor }, store, election_id, seen).await?;
        Ok(leader.map(Into::into))
    }
}

calls::grant_resource!(wasi 0.3: HostLock, HostLockWithStore for LockHandle: resource_id, unlock as Op::Unlock);
calls::grant_resource!(wasi 0.3: HostPermit, HostPermitWithStore for PermitHandle: semaphore_id, release as Op::Release);
calls::grant_resource!(wasi 0.3: HostLeadership, HostLeadershipWithStore for LeadershipHandle: election_id, resign as Op::Resign);

/// `lost` of a grant of any kind: a wait, where 0.2 has a pollable.
async fn lost<T, H: GrantHandle>(
    mut accessor: &Accessor<T, HasLocks>,
    grant: Resource<H>,
) -> wasmtime::Result<()> {
    // No error to return: past the cap, a trap.
    let _pending = accessor
        .pending()
        .map_err(|err| wasmtime::format_err!("{err}"))?;
    let mut lost = Caller::with(&mut accessor, |view| view.lost_signal(&grant))?;
    lost.wait().await;
    Ok(())
}

/// The drop of a grant's handle: a 0.3 drop cannot wait, so the release goes on in the
/// background, and the instance forgets the grant once the store has confirmed it.
fn drop_grant<T, H: GrantHandle>(
    mut access: Access<'_, T, HasLocks>,
    grant: Resource<H>,
) -> wasmtime::Result<()> {
    if let Some(release) = access.get().drop_grant(grant)? {
        tokio::spawn(release);
    }
    Ok(())
}
