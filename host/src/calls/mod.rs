//! Every `latchkey:lock` call, written once for every WIT version: the guest's handles, and
//! each call that reaches a store cut in three — **begun** against the instance's state
//! (arguments, policy and budgets checked, nothing touched yet), **asked** of the store
//! (holding no borrow of the instance, so that a WASI 0.3 guest's other tasks go on
//! meanwhile), and **finished** against the instance's state again. Each is timed and
//! counted by outcome, in a span of its own ([`telemetry`](crate::telemetry)).
//!
//! The adapters (`p2`, `p3`) only give these calls their binding's shape: a [`Caller`] is
//! how a call reaches the instance's state — the view itself for the whole call in WASI
//! 0.2, an `Accessor` that lends it for each half in 0.3.
//!
//! - `take`: `try-lock`, `lock`, `acquire-permit`, `campaign`.
//! - `grant`: what every grant's handle shares: `extend`, the let-go (`unlock`, `release`,
//!   `resign`), `held`, `keep-alive`, the lost signal, the handle's drop.
//! - `election`: `leader` and the wait for a change of leader.

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable, ResourceTableError};

use crate::ctx::{LockCtxView, OwnedGrant, PendingCall, TaskId};
use crate::error::LockError;
use crate::store::LockStore;
use crate::telemetry::{Call, Instruments, Op, Outcome};

mod election;
mod grant;
mod take;

pub(crate) use election::{leader, leader_change, watch};
pub(crate) use grant::{confirm, extend, let_go};
pub(crate) use take::{Asked, take};

/// How a call reaches the instance's lock state, in one binding's shape.
pub(crate) trait Caller: Send {
    /// Runs `f` on the instance's lock state: a begin or a finish, never a wait.
    fn with<R>(&mut self, f: impl FnOnce(&mut LockCtxView<'_>) -> R) -> R;

    /// The guest task the call comes from, if the guest has tasks (WASI 0.3).
    fn task(&mut self) -> Option<TaskId>;

    /// Counts the call as pending while it waits, where a pending call holds handles of
    /// the guest's (WASI 0.3: its subtask's) — past the cap, `limit-exceeded`.
    fn pending(&mut self) -> Result<Option<PendingCall>, LockError>;
}

/// A guest's handle on a lock store (the WIT `store`).
pub struct StoreHandle {
    pub(crate) store: LockStore,
    /// The app's series on the store.
    pub(crate) instruments: Arc<Instruments>,
}

/// A guest's handle on a grant (the WIT `lock`).
pub struct LockHandle {
    serial: u64,
    resource_id: String,
    owned: OwnedGrant,
}

/// A guest's handle on a permit of a semaphore (the WIT `permit`): a grant, as a lock's.
pub struct PermitHandle(LockHandle);

/// A guest's handle on the leadership of an election (the WIT `leadership`): a grant, as
/// a lock's.
pub struct LeadershipHandle(LockHandle);

/// A guest's handle on a grant of any kind: what the calls every kind shares (`fence`,
/// `extend`, `held`, `keep-alive`, the lost signal, the let-go) work on.
pub(crate) trait GrantHandle: Send + Sized + 'static {
    /// The grant's handle.
    fn grant(&self) -> &LockHandle;
    /// Wraps a new grant's handle.
    fn wrap(handle: LockHandle) -> Self;
}

impl GrantHandle for LockHandle {
    fn grant(&self) -> &LockHandle {
        self
    }
    fn wrap(handle: LockHandle) -> Self {
        handle
    }
}

impl GrantHandle for PermitHandle {
    fn grant(&self) -> &LockHandle {
        &self.0
    }
    fn wrap(handle: LockHandle) -> Self {
        PermitHandle(handle)
    }
}

impl GrantHandle for LeadershipHandle {
    fn grant(&self) -> &LockHandle {
        &self.0
    }
    fn wrap(handle: LockHandle) -> Self {
        LeadershipHandle(handle)
    }
}

impl LockCtxView<'_> {
    /// `open`: a handle on the store `name`, if the app was offered one.
    pub(crate) fn open_store(&mut self, name: String) -> Result<Resource<StoreHandle>, LockError> {
        let offered = self.ctx.stores.get(&name);
        // A name nobody configured is the guest's, not a label.
        let instruments = offered.map_or(&self.ctx.unknown_store, |o| &o.instruments);
        let call = Call::start(Op::Open, instruments.clone());
        let opened = match offered {
            Some(offered) => {
                let handle = StoreHandle {
                    store: offered.store.clone(),
                    instruments: offered.instruments.clone(),
                };
                push(self.table, handle)
            }
            None => Err(LockError::NoSuchStore(format!(
                "no lock store named {:?} is configured for app {:?}",
                abbreviated(&name),
                &*self.ctx.app_id
            ))),
        };
        let _entered = call.span().entered();
        finish(call, opened, |_| Outcome::Opened)
    }

    /// The store handle's drop.
    pub(crate) fn drop_store(&mut self, store: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

/// Counts `result` as `call`'s outcome: the one `outcome` gives a success, or the error's
/// kind.
pub(crate) fn finish<T>(
    call: Call,
    result: Result<T, LockError>,
    outcome: impl FnOnce(&T) -> Outcome,
) -> Result<T, LockError> {
    call.finish(match &result {
        Ok(value) => outcome(value),
        Err(err) => Outcome::of_error(err),
    });
    result
}

/// Counts `call` as refused with `err`, and gives `err` back.
pub(crate) fn refuse(call: Call, err: LockError) -> LockError {
    call.finish(Outcome::of_error(&err));
    err
}

/// Puts `value` in the instance's table: past the instance's cap on handles, that is
/// `limit-exceeded`, saying so.
pub(crate) fn push<T: Send + 'static>(
    table: &mut ResourceTable,
    value: T,
) -> Result<Resource<T>, LockError> {
    table.push(value).map_err(|err| match err {
        ResourceTableError::Full => handles_exhausted(table),
        other => LockError::from(other),
    })
}

/// The refusal of a handle past the instance's cap.
pub(crate) fn handles_exhausted(table: &ResourceTable) -> LockError {
    LockError::LimitExceeded(format!(
        "this instance holds {} handles (stores, locks, pollables and WASI's own), \
         the most it may",
        table.max_capacity()
    ))
}

/// An id short enough to quote in a message.
pub(crate) fn abbreviated(id: &str) -> String {
    match id.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &id[..end]),
        None => id.to_owned(),
    }
}

/// What a guest sees of an internal error, in one version's generated types. `Trap` is not
/// the guest's to see: it ends the instance.
pub(crate) trait FromLockError: Sized {
    fn from_lock_error(err: LockError) -> wasmtime::Result<Self>;
}

/// The one mapping of internal errors, unlock statuses and (with `leader`) who leads onto
/// a version of `latchkey:lock`, named by the module of its bindings: every version has
/// the same cases in types of its own. Each adapter's `error` module runs it on its
/// versions.
macro_rules! wit_mapping {
    (leader: $($wit:ident)::+) => {
        impl From<$crate::backend::Holder> for $($wit)::+::Leader {
            fn from(holder: $crate::backend::Holder) -> Self {
                Self {
                    value: holder.value.unwrap_or_default(),
                    fence: holder.fence,
                    lease_left_ms: holder.lease_left.as_millis().try_into().unwrap_or(u32::MAX),
                }
            }
        }
    };
    ($($wit:ident)::+) => {
        impl $crate::calls::FromLockError for $($wit)::+::Error {
            fn from_lock_error(err: $crate::LockError) -> wasmtime::Result<Self> {
                use $crate::LockError;
                Ok(match err {
                    LockError::NoSuchStore(m) => Self::NoSuchStore(m),
                    LockError::InvalidArgument(m) => Self::InvalidArgument(m),
                    LockError::AccessDenied(m) => Self::AccessDenied(m),
                    LockError::LimitExceeded(m) => Self::LimitExceeded(m),
                    LockError::Unavailable(m) => Self::Unavailable(m.to_string()),
                    LockError::Trap(trap) => return Err(trap),
                })
            }
        }

        impl From<$crate::backend::UnlockStatus> for $($wit)::+::UnlockStatus {
            fn from(status: $crate::backend::UnlockStatus) -> Self {
                use $crate::backend::UnlockStatus;
                match status {
                    UnlockStatus::Success => Self::Success,
                    UnlockStatus::LockDoesNotExist => Self::LockDoesNotExist,
                    UnlockStatus::LockBelongsToOthers => Self::LockBelongsToOthers,
                }
            }
        }
    };
}
pub(crate) use wit_mapping;

/// The host traits of a grant's WIT resource (`lock`, `permit`, `leadership`) in one
/// adapter's shape: the same calls for every kind but for the names of its id and of how
/// it is let go. WASI 0.2's are one trait on the view, every call awaited in place; WASI
/// 0.3's two — the calls that answer at once on the view, those that wait on an
/// `Accessor`. The lost signal and the drop differ by more than shape (a pollable or a
/// future; a drop that can wait or one that cannot): each adapter brings its own.
macro_rules! grant_resource {
    (wasi 0.2: $trait:ident for $handle:ty: $id:ident, $let_go:ident as $op:expr) => {
        impl $trait for $crate::ctx::LockCtxView<'_> {
            async fn $id(&mut self, grant: Resource<$handle>) -> wasmtime::Result<String> {
                self.grant_id(&grant)
            }

            async fn fence(&mut self, grant: Resource<$handle>) -> wasmtime::Result<u64> {
                self.grant_fence(&grant)
            }

            async fn extend(
                &mut self,
                grant: Resource<$handle>,
                lease_ms: u32,
            ) -> Result<bool, LockError> {
                calls::extend(self, grant, lease_ms).await
            }

            async fn $let_go(
                &mut self,
                grant: Resource<$handle>,
            ) -> Result<wit::UnlockStatus, LockError> {
                Ok(calls::let_go(self, $op, grant).await?.into())
            }

            async fn keep_alive(&mut self, grant: Resource<$handle>) -> Result<(), LockError> {
                self.keep_alive(&grant)
            }

            async fn held(&mut self, grant: Resource<$handle>) -> Result<bool, LockError> {
                calls::confirm(self, grant).await
            }

            async fn subscribe_lost(
                &mut self,
                grant: Resource<$handle>,
            ) -> wasmtime::Result<Resource<DynPollable>> {
                subscribe_lost(self, grant)
            }

            async fn drop(&mut self, grant: Resource<$handle>) -> wasmtime::Result<()> {
                drop_grant(self, grant).await
            }
        }
    };
    (wasi 0.3: $sync:ident, $waits:ident for $handle:ty: $id:ident, $let_go:ident as $op:expr) => {
        impl $sync for $crate::ctx::LockCtxView<'_> {
            fn $id(&mut self, grant: Resource<$handle>) -> wasmtime::Result<String> {
                self.grant_id(&grant)
            }

            fn fence(&mut self, grant: Resource<$handle>) -> wasmtime::Result<u64> {
                self.grant_fence(&grant)
            }

            fn keep_alive(&mut self, grant: Resource<$handle>) -> Result<(), LockError> {
                self.keep_alive(&grant)
            }
        }

        impl<T> $waits<T> for HasLocks {
            async fn extend(
                accessor: &Accessor<T, Self>,
                grant: Resource<$handle>,
                lease_ms: u32,
            ) -> Result<bool, LockError> {
                calls::extend(&mut { accessor }, grant, lease_ms).await
            }

            async fn $let_go(
                accessor: &Accessor<T, Self>,
                grant: Resource<$handle>,
            ) -> Result<wit::UnlockStatus, LockError> {
                Ok(calls::let_go(&mut { accessor }, $op, grant).await?.into())
            }

            async fn held(
                accessor: &Accessor<T, Self>,
                grant: Resource<$handle>,
            ) -> Result<bool, LockError> {
                calls::confirm(&mut { accessor }, grant).await
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
pub(crate) use grant_resource;
