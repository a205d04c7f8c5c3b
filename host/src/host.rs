//! The `latchkey:lock/locks` functions of 0.2.0, implemented on [`LockCtxView`], and the
//! halves every version shares: each call that reaches a store is cut in three — checked
//! and started against the instance's state, run against the store (holding no borrow of
//! the instance, so that a 0.3.0 guest's other tasks go on meanwhile), and finished
//! against the instance's state again. Each is timed and counted by outcome, in a span of
//! its own ([`telemetry`](crate::telemetry)).

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;
use wasmtime::component::{Resource, ResourceTable, ResourceTableError};
use wasmtime_wasi::p2::{DynPollable, Pollable};

use crate::backend::{BackendError, BackendErrorKind, UnlockStatus};
use crate::bindings::latchkey::lock::locks::{self as wit, HostLock, HostStore};
use crate::ctx::{HeldLock, Holdings, LockCtxView, Task, TaskId};
use crate::error::{FromLockError, LockError, StoreError};
use crate::key::LockKey;
use crate::store::{Grant, LockStore, LostSignal};
use crate::telemetry::{Call, Instruments, Op, Outcome};

/// A guest's handle on a lock store (the WIT `store`).
pub struct StoreHandle {
    store: LockStore,
    /// The app's series on the store.
    instruments: Arc<Instruments>,
}

/// A guest's handle on a grant (the WIT `lock`).
pub struct LockHandle {
    serial: u64,
    resource_id: String,
    held: HeldLock,
}

/// A `try-lock` or `lock` checked and ready for the store.
pub(crate) struct Take {
    call: Call,
    store: LockStore,
    instruments: Arc<Instruments>,
    key: LockKey,
    resource_id: String,
    lease: Duration,
    wait: Option<Duration>,
    task: Option<Task>,
    started: std::time::Instant,
}

impl Take {
    /// Asks the store, waiting if the take is a `lock`.
    pub(crate) async fn run(&self) -> Result<Option<Grant>, StoreError> {
        let work = async {
            match self.wait {
                None => self.store.try_lock(self.key.clone(), self.lease).await,
                Some(wait) => self.store.lock(self.key.clone(), self.lease, wait).await,
            }
        };
        work.instrument(self.call.span()).await
    }
}

/// A call on a lock handle, ready for the store: the grant it is about, and its call.
pub(crate) struct OnLock {
    call: Call,
    serial: u64,
    pub(crate) held: HeldLock,
}

impl OnLock {
    /// Runs `work` on the grant, in the call's span.
    pub(crate) async fn run<T>(&self, work: impl Future<Output = T>) -> T {
        work.instrument(self.call.span()).await
    }
}

/// Counts `result` as `call`'s outcome: the one `outcome` gives a success, or the error's
/// kind.
fn finish<T>(
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
fn refuse(call: Call, err: LockError) -> LockError {
    call.finish(Outcome::of_error(&err));
    err
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

    /// Starts a `try-lock`, or a `lock` if `wait_ms` is given, by `task` (if the guest has
    /// tasks): checks the arguments, the app's policy and the budgets — all before the store
    /// is touched. A refusal is counted here.
    pub(crate) fn begin_take(
        &mut self,
        handle: &Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
        wait_ms: Option<u32>,
        task: Option<TaskId>,
    ) -> Result<Take, LockError> {
        let handle = self.table.get(handle)?;
        let (store, instruments) = (handle.store.clone(), handle.instruments.clone());
        let op = if wait_ms.is_some() {
            Op::Lock
        } else {
            Op::TryLock
        };
        let call = Call::start(op, instruments.clone());
        let task = task.map(|id| self.ctx.held.task(id));
        let checked = self.check_take(&store, &resource_id, lease_ms, wait_ms, task);
        let (lease, wait) = match checked {
            Ok(checked) => checked,
            Err(err) => return Err(refuse(call, err)),
        };
        Ok(Take {
            call,
            key: store.key(&self.ctx.app_id, &resource_id),
            store,
            instruments,
            resource_id,
            lease,
            wait,
            task,
            started: std::time::Instant::now(),
        })
    }

    fn check_take(
        &self,
        store: &LockStore,
        resource_id: &str,
        lease_ms: u32,
        wait_ms: Option<u32>,
        task: Option<Task>,
    ) -> Result<(Duration, Option<Duration>), LockError> {
        let limits = self.ctx.limits;
        limits.check_id(resource_id)?;
        let lease = limits.check_lease(lease_ms)?;
        let wait = wait_ms.map(|ms| limits.check_wait(ms)).transpose()?;
        if !self.ctx.resources.allows(resource_id) {
            return Err(LockError::AccessDenied(format!(
                "app {:?} may not lock resource id {:?}",
                &*self.ctx.app_id,
                abbreviated(resource_id)
            )));
        }
        if let Some(task) = task
            && self.ctx.held.has_ended(task)
        {
            return Err(task_ended(store));
        }
        let (by_instance, by_task) = self.ctx.held.counts(task);
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
    pub(crate) fn finish_take(
        &mut self,
        take: Take,
        granted: Result<Option<Grant>, StoreError>,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
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
                let held = HeldLock::new(instruments, store.clone(), grant, task);
                self.hand_out(held, resource_id, &store).map(Some)
            }
        };
        finish(call, handle, |lock| match (lock, wait) {
            (Some(_), _) => Outcome::Granted,
            (None, None) => Outcome::Busy,
            (None, Some(_)) => Outcome::WaitTimedOut,
        })
    }

    /// Makes `held` the instance's, and a handle of the guest's.
    fn hand_out(
        &mut self,
        held: HeldLock,
        resource_id: String,
        store: &LockStore,
    ) -> Result<Resource<LockHandle>, LockError> {
        let Some(serial) = self.ctx.held.remember(&held) else {
            tokio::spawn(async move {
                let _ = held.release().await;
            });
            return Err(task_ended(store));
        };
        let handle = LockHandle {
            serial,
            resource_id,
            held,
        };
        push(self.table, handle).inspect_err(|_| {
            // No handle, so nobody could release it: let it go now.
            tokio::spawn(self.ctx.held.clone().release_dropped(serial));
        })
    }

    /// Starts a call `op` on the lock behind `lock`.
    pub(crate) fn begin_on_lock(
        &self,
        op: Op,
        lock: &Resource<LockHandle>,
    ) -> Result<OnLock, LockError> {
        let handle = self.table.get(lock)?;
        Ok(OnLock {
            call: Call::start(op, handle.held.instruments.clone()),
            serial: handle.serial,
            held: handle.held.clone(),
        })
    }

    /// Starts an `extend`; a bad lease is refused, and counted, here.
    pub(crate) fn begin_extend(
        &self,
        lock: &Resource<LockHandle>,
        lease_ms: u32,
    ) -> Result<(OnLock, Duration), LockError> {
        let on = self.begin_on_lock(Op::Extend, lock)?;
        match self.ctx.limits.check_lease(lease_ms) {
            Ok(lease) => Ok((on, lease)),
            Err(err) => Err(refuse(on.call, err)),
        }
    }

    /// Finishes an `unlock`: the instance forgets the lock once the store answered; if it
    /// could not be reached, the lock stays on the list for the instance's final release.
    pub(crate) fn finish_unlock(
        &mut self,
        on: OnLock,
        status: Result<UnlockStatus, StoreError>,
    ) -> Result<UnlockStatus, LockError> {
        let _entered = on.call.span().entered();
        if let Ok(status) = &status {
            tracing::debug!(?status, "unlocked");
            self.ctx.held.forget(on.serial);
        }
        finish(on.call, status.map_err(LockError::from), |&status| {
            status.into()
        })
    }

    /// Forgets the handle `lock`; its grant, if the instance still holds it, is released —
    /// `serial` and what holds it are returned for that.
    pub(crate) fn drop_lock_handle(
        &mut self,
        lock: Resource<LockHandle>,
    ) -> wasmtime::Result<Option<(Arc<Holdings>, u64)>> {
        let handle = self.table.delete(lock)?;
        let held = self.ctx.held.clone();
        Ok(held
            .get(handle.serial)
            .is_some()
            .then_some((held, handle.serial)))
    }

    /// The `lost` signal of the grant behind `lock`.
    pub(crate) fn lost_signal(&self, lock: &Resource<LockHandle>) -> wasmtime::Result<LostSignal> {
        Ok(self.table.get(lock)?.held.grant.lost())
    }

    /// `keep-alive`.
    pub(crate) fn keep_lock_alive(&mut self, lock: &Resource<LockHandle>) -> Result<(), LockError> {
        let on = self.begin_on_lock(Op::KeepAlive, lock)?;
        on.held
            .store
            .keep_alive(&on.held.grant, self.ctx.limits.max_keep_alive);
        finish(on.call, Ok(()), |()| Outcome::KeepingAlive)
    }

    /// `resource-id`.
    pub(crate) fn lock_resource_id(&self, lock: &Resource<LockHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(lock)?.resource_id.clone())
    }

    /// `fence`.
    pub(crate) fn lock_fence(&self, lock: &Resource<LockHandle>) -> wasmtime::Result<u64> {
        Ok(self.table.get(lock)?.held.grant.fence)
    }

    /// `try-lock`, or `lock` if `wait_ms` is given, of a guest without tasks (0.1.0, 0.2.0).
    pub(crate) async fn take(
        &mut self,
        handle: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
        wait_ms: Option<u32>,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        let take = self.begin_take(&handle, resource_id, lease_ms, wait_ms, None)?;
        let granted = take.run().await;
        self.finish_take(take, granted)
    }

    /// `unlock`, awaited in place.
    pub(crate) async fn release(
        &mut self,
        lock: Resource<LockHandle>,
    ) -> Result<UnlockStatus, LockError> {
        let on = self.begin_on_lock(Op::Unlock, &lock)?;
        let status = on.run(on.held.release()).await;
        self.finish_unlock(on, status)
    }

    /// `extend`, awaited in place.
    pub(crate) async fn extend_lock(
        &mut self,
        lock: Resource<LockHandle>,
        lease_ms: u32,
    ) -> Result<bool, LockError> {
        let (on, lease) = self.begin_extend(&lock, lease_ms)?;
        let extended = on.run(on.held.store.extend(&on.held.grant, lease)).await;
        finish_extend(on, extended)
    }

    /// `held`, awaited in place.
    pub(crate) async fn ask_held(&mut self, lock: Resource<LockHandle>) -> Result<bool, LockError> {
        let on = self.begin_on_lock(Op::Held, &lock)?;
        let held = on.run(on.held.store.held(&on.held.grant)).await;
        finish_held(on, held)
    }

    /// A dropped lock handle: the lock is released, and forgotten only once the store has
    /// answered — if the release fails, or is cut short by the instance's deadline,
    /// `release_all` still knows the lock.
    pub(crate) async fn drop_lock(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<()> {
        if let Some((held, serial)) = self.drop_lock_handle(lock)? {
            held.release_dropped(serial).await;
        }
        Ok(())
    }
}

/// Finishes an `extend` with what the store answered.
pub(crate) fn finish_extend(
    on: OnLock,
    extended: Result<bool, StoreError>,
) -> Result<bool, LockError> {
    finish(on.call, extended.map_err(LockError::from), |&extended| {
        if extended {
            Outcome::Extended
        } else {
            Outcome::LeaseLost
        }
    })
}

/// Finishes a `held` with what the store answered.
pub(crate) fn finish_held(on: OnLock, held: Result<bool, StoreError>) -> Result<bool, LockError> {
    finish(on.call, held.map_err(LockError::from), |&held| {
        if held {
            Outcome::Held
        } else {
            Outcome::LeaseLost
        }
    })
}

/// The refusal of a lock to a task that has ended.
fn task_ended(store: &LockStore) -> LockError {
    let error = BackendError::new(
        BackendErrorKind::Failed,
        "takes no lock for a task that has ended",
    );
    LockError::Unavailable(StoreError::new(store.name(), error))
}

/// Puts `value` in the instance's table: past the instance's cap on handles, that is
/// `limit-exceeded`, saying so.
fn push<T: Send + 'static>(table: &mut ResourceTable, value: T) -> Result<Resource<T>, LockError> {
    table.push(value).map_err(|err| match err {
        ResourceTableError::Full => LockError::LimitExceeded(format!(
            "this instance holds {} handles (stores, locks, pollables and WASI's own), \
             the most it may",
            table.max_capacity()
        )),
        other => LockError::from(other),
    })
}

/// An id short enough to quote in a message.
fn abbreviated(id: &str) -> String {
    match id.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &id[..end]),
        None => id.to_owned(),
    }
}

impl wit::Host for LockCtxView<'_> {
    async fn open(&mut self, name: String) -> Result<Resource<StoreHandle>, LockError> {
        self.open_store(name)
    }

    fn convert_error(&mut self, err: LockError) -> wasmtime::Result<wit::Error> {
        wit::Error::from_lock_error(err)
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
        self.lock_resource_id(&lock)
    }

    async fn fence(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<u64> {
        self.lock_fence(&lock)
    }

    async fn extend(
        &mut self,
        lock: Resource<LockHandle>,
        lease_ms: u32,
    ) -> Result<bool, LockError> {
        self.extend_lock(lock, lease_ms).await
    }

    async fn unlock(&mut self, lock: Resource<LockHandle>) -> Result<wit::UnlockStatus, LockError> {
        Ok(self.release(lock).await?.into())
    }

    async fn keep_alive(&mut self, lock: Resource<LockHandle>) -> Result<(), LockError> {
        self.keep_lock_alive(&lock)
    }

    async fn held(&mut self, lock: Resource<LockHandle>) -> Result<bool, LockError> {
        self.ask_held(lock).await
    }

    async fn subscribe_lost(
        &mut self,
        lock: Resource<LockHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let lost = self.lost_signal(&lock)?;
        // No error to return here: a handle past the cap ends the instance.
        let signal = push(self.table, LostPollable(lost)).map_err(|err| match err {
            LockError::Trap(trap) => trap,
            other => wasmtime::format_err!("{other}"),
        })?;
        wasmtime_wasi::p2::subscribe(self.table, signal)
    }

    async fn drop(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<()> {
        self.drop_lock(lock).await
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
