//! Taking a grant: `try-lock`, `lock`, `acquire-permit` and `campaign`, one call with what
//! it asks for ([`Asked`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument as _;
use wasmtime::component::Resource;

use super::{Caller, GrantHandle, LockHandle, StoreHandle, abbreviated, finish, push, refuse};
use crate::backend::{BackendError, BackendErrorKind};
use crate::ctx::{LockCtxView, OwnedGrant, Task, TaskId};
use crate::error::{LockError, StoreError};
use crate::key::LockKey;
use crate::store::{Grant, LockStore};
use crate::telemetry::{Call, Instruments, Op, Outcome};

/// A take of what is `asked` on `id` — a `try-lock`, or a `lock` if `wait_ms` is given; an
/// `acquire-permit`; a `campaign` — by the caller's task, if it has tasks: its grant is the
/// task's, and the instance's.
pub(crate) async fn take<H: GrantHandle>(
    caller: &mut impl Caller,
    store: Resource<StoreHandle>,
    asked: Asked,
    id: String,
    lease_ms: u32,
    wait_ms: Option<u32>,
) -> Result<Option<Resource<H>>, LockError> {
    let _pending = caller.pending()?;
    let task = caller.task();
    let take = caller.with(|view| view.begin_take(&store, asked, id, lease_ms, wait_ms, task))?;
    let granted = take.ask().await;
    caller.with(|view| view.finish_take(take, granted))
}

/// What a take asks for: a lock, a permit of a semaphore of `limit`, or a leadership
/// published as `value`.
pub(crate) enum Asked {
    Lock,
    Permit { limit: u32 },
    Leadership { value: String },
}

impl Asked {
    /// What its id names.
    fn names(&self) -> Named {
        match self {
            Asked::Lock => Named::Resource,
            Asked::Permit { .. } => Named::Semaphore,
            Asked::Leadership { .. } => Named::Election,
        }
    }
}

/// What an id names: a resource to lock, a semaphore, an election.
#[derive(Clone, Copy)]
pub(crate) enum Named {
    Resource,
    Semaphore,
    Election,
}

impl Named {
    /// The WIT name of the argument that carries the id.
    fn argument(self) -> &'static str {
        match self {
            Named::Resource => "resource-id",
            Named::Semaphore => "semaphore-id",
            Named::Election => "election-id",
        }
    }

    /// What a refusal says the app may not do with it.
    fn denied(self) -> &'static str {
        match self {
            Named::Resource => "lock resource id",
            Named::Semaphore => "use semaphore",
            Named::Election => "use election",
        }
    }
}

/// A take begun: checked, and ready to ask the store.
pub(crate) struct Take {
    call: Call,
    store: LockStore,
    instruments: Arc<Instruments>,
    keys: Vec<LockKey>,
    /// A leader's value.
    value: Option<String>,
    resource_id: String,
    lease: Duration,
    wait: Option<Duration>,
    task: Option<Task>,
    started: Instant,
}

impl Take {
    /// Asks the store, waiting if the take may wait.
    pub(crate) async fn ask(&self) -> Result<Option<Grant>, StoreError> {
        let (store, lease, wait) = (&self.store, self.lease, self.wait.unwrap_or_default());
        let work = async {
            match (&self.value, &self.keys[..]) {
                (Some(value), [key]) => store.campaign(key.clone(), value, lease, wait).await,
                (None, [key]) => store.lock(key.clone(), lease, wait).await,
                (_, permits) => store.acquire_permit(permits.to_vec(), lease, wait).await,
            }
        };
        work.instrument(self.call.span()).await
    }
}

impl LockCtxView<'_> {
    /// Begins a take by `task`: checks the arguments, the app's policy and the budgets, all
    /// before the store is touched. A refusal is counted here.
    pub(crate) fn begin_take(
        &mut self,
        handle: &Resource<StoreHandle>,
        asked: Asked,
        id: String,
        lease_ms: u32,
        wait_ms: Option<u32>,
        task: Option<TaskId>,
    ) -> Result<Take, LockError> {
        let handle = self.table.get(handle)?;
        let (store, instruments) = (handle.store.clone(), handle.instruments.clone());
        let op = match (&asked, wait_ms) {
            (Asked::Lock, Some(_)) => Op::Lock,
            (Asked::Lock, None) => Op::TryLock,
            (Asked::Permit { .. }, _) => Op::AcquirePermit,
            (Asked::Leadership { .. }, _) => Op::Campaign,
        };
        let call = Call::start(op, instruments.clone());
        let task = task.map(|id| self.ctx.grants.task(id));
        let checked = self.check_take(&store, &asked, &id, lease_ms, wait_ms, task);
        let (lease, wait) = match checked {
            Ok(checked) => checked,
            Err(err) => return Err(refuse(call, err)),
        };
        let app = &self.ctx.app_id;
        let (keys, value) = match asked {
            Asked::Lock => (vec![store.key(app, &id)], None),
            Asked::Permit { limit } => (store.permits(app, &id, limit), None),
            Asked::Leadership { value } => (vec![store.leadership(app, &id)], Some(value)),
        };
        Ok(Take {
            call,
            keys,
            value,
            store,
            instruments,
            resource_id: id,
            lease,
            wait,
            task,
            started: Instant::now(),
        })
    }

    /// Checks an id — resource, semaphore or election — against the limits and the app's
    /// policy.
    pub(crate) fn check_id(&self, named: Named, id: &str) -> Result<(), LockError> {
        self.ctx.limits.check_named_id(named.argument(), id)?;
        self.check_allowed(named, id)
    }

    /// Checks the app's policy on an id.
    fn check_allowed(&self, named: Named, id: &str) -> Result<(), LockError> {
        if self.ctx.resources.allows(id) {
            return Ok(());
        }
        Err(LockError::AccessDenied(format!(
            "app {:?} may not {} {:?}",
            &*self.ctx.app_id,
            named.denied(),
            abbreviated(id)
        )))
    }

    fn check_take(
        &self,
        store: &LockStore,
        asked: &Asked,
        id: &str,
        lease_ms: u32,
        wait_ms: Option<u32>,
        task: Option<Task>,
    ) -> Result<(Duration, Option<Duration>), LockError> {
        let limits = self.ctx.limits;
        limits.check_named_id(asked.names().argument(), id)?;
        store
            .check_names(&self.ctx.app_id, asked.names().argument(), id)
            .map_err(LockError::InvalidArgument)?;
        match asked {
            Asked::Lock => {}
            Asked::Permit { limit } => {
                limits.check_permits(*limit)?;
            }
            Asked::Leadership { value } => limits.check_value(value)?,
        }
        let lease = limits.check_lease(lease_ms)?;
        let wait = wait_ms.map(|ms| limits.check_wait(ms)).transpose()?;
        self.check_allowed(asked.names(), id)?;
        if let Some(task) = task
            && self.ctx.grants.has_ended(task)
        {
            return Err(task_ended(store));
        }
        let (by_instance, by_task) = self.ctx.grants.counts(task);
        if by_instance >= limits.max_held {
            return Err(LockError::LimitExceeded(format!(
                "this instance already holds {} locks, the most it may hold",
                limits.max_held
            )));
        }
        if task.is_some() && by_task >= limits.max_held_per_task {
            return Err(LockError::LimitExceeded(format!(
                "this task already holds {} locks, the most it may hold",
                limits.max_held_per_task
            )));
        }
        Ok((lease, wait))
    }

    /// Finishes a take with what the store answered: a grant becomes the instance's (and
    /// its task's) and a handle of the guest's. A grant that cannot be handed out — its task
    /// ended meanwhile, or the instance has no room for another handle — is released.
    pub(crate) fn finish_take<H: GrantHandle>(
        &mut self,
        take: Take,
        granted: Result<Option<Grant>, StoreError>,
    ) -> Result<Option<Resource<H>>, LockError> {
        let Take {
            call,
            store,
            instruments,
            resource_id,
            wait,
            task,
            started,
            ..
        } = take;
        let _entered = call.span().entered();
        if wait.is_some() && granted.is_ok() {
            instruments.waited(started.elapsed());
        }
        let handle = match granted {
            Err(err) => Err(err.into()),
            Ok(None) => {
                tracing::debug!(resource_id = abbreviated(&resource_id), "held by another");
                Ok(None)
            }
            Ok(Some(grant)) => {
                tracing::debug!(
                    resource_id = abbreviated(&resource_id),
                    fence = grant.fence,
                    "granted"
                );
                let owned = OwnedGrant::new(instruments, store.clone(), grant, task);
                self.hand_out(owned, resource_id, &store).map(Some)
            }
        };
        finish(call, handle, |lock| match (lock, wait) {
            (Some(_), _) => Outcome::Granted,
            (None, None) => Outcome::Busy,
            (None, Some(_)) => Outcome::WaitTimedOut,
        })
    }

    /// Makes `owned` the instance's, and a handle of the guest's.
    fn hand_out<H: GrantHandle>(
        &mut self,
        owned: OwnedGrant,
        resource_id: String,
        store: &LockStore,
    ) -> Result<Resource<H>, LockError> {
        let Some(serial) = self.ctx.grants.remember(&owned) else {
            tokio::spawn(async move {
                let _ = owned.release().await;
            });
            return Err(task_ended(store));
        };
        let handle = H::wrap(LockHandle {
            serial,
            resource_id,
            owned,
        });
        push(self.table, handle).inspect_err(|_| {
            // No handle, so nobody could release it: let it go now.
            tokio::spawn(self.ctx.grants.clone().release_dropped(serial));
        })
    }
}

/// The refusal of a lock to a task that has ended.
fn task_ended(store: &LockStore) -> LockError {
    let error = BackendError::new(
        BackendErrorKind::Failed,
        "takes no lock for a task that has ended",
    );
    LockError::Unavailable(StoreError::new(store.name(), error))
}
