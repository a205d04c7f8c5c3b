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
use crate::bindings::latchkey::lock::locks::{
    self as wit, HostLeadership, HostLock, HostPermit, HostStore,
};
use crate::ctx::{HeldLock, Holdings, LockCtxView, Task, TaskId};
use crate::error::{FromLockError, LockError, StoreError};
use crate::key::LockKey;
use crate::store::{Grant, LockStore, LostSignal};
use crate::telemetry::{Call, Instruments, Op, Outcome};

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
    held: HeldLock,
}

/// A guest's handle on a permit of a semaphore (the WIT `permit`): a grant, as a lock's.
pub struct PermitHandle(LockHandle);

/// A guest's handle on the leadership of an election (the WIT `leadership`): a grant, as
/// a lock's.
pub struct LeadershipHandle(LockHandle);

/// A guest's handle on a grant of any kind: what the calls every kind shares (`fence`,
/// `extend`, `held`, `keep-alive`, the lost signal, the release) work on.
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

/// A `try-lock`, `lock`, `acquire-permit` or `campaign` checked and ready for the store.
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
    started: std::time::Instant,
}

impl Take {
    /// Asks the store, waiting if the take may wait.
    pub(crate) async fn run(&self) -> Result<Option<Grant>, StoreError> {
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

    /// Starts a take of what is `asked` on `id` — a `try-lock`, or a `lock` if `wait_ms` is
    /// given; an `acquire-permit`; a `campaign` — by `task` (if the guest has tasks): checks
    /// the arguments, the app's policy and the budgets, all before the store is touched. A
    /// refusal is counted here.
    pub(crate) fn begin(
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
        let task = task.map(|id| self.ctx.held.task(id));
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
            started: std::time::Instant::now(),
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
    fn hand_out<H: GrantHandle>(
        &mut self,
        held: HeldLock,
        resource_id: String,
        store: &LockStore,
    ) -> Result<Resource<H>, LockError> {
        let Some(serial) = self.ctx.held.remember(&held) else {
            tokio::spawn(async move {
                let _ = held.release().await;
            });
            return Err(task_ended(store));
        };
        let handle = H::wrap(LockHandle {
            serial,
            resource_id,
            held,
        });
        push(self.table, handle).inspect_err(|_| {
            // No handle, so nobody could release it: let it go now.
            tokio::spawn(self.ctx.held.clone().release_dropped(serial));
        })
    }

    /// Starts a call `op` on the lock behind `lock`.
    pub(crate) fn begin_on_lock<H: GrantHandle>(
        &self,
        op: Op,
        lock: &Resource<H>,
    ) -> Result<OnLock, LockError> {
        let handle = self.table.get(lock)?.grant();
        Ok(OnLock {
            call: Call::start(op, handle.held.instruments.clone()),
            serial: handle.serial,
            held: handle.held.clone(),
        })
    }

    /// Starts an `extend`; a bad lease is refused, and counted, here.
    pub(crate) fn begin_extend<H: GrantHandle>(
        &self,
        lock: &Resource<H>,
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
    pub(crate) fn drop_lock_handle<H: GrantHandle>(
        &mut self,
        lock: Resource<H>,
    ) -> wasmtime::Result<Option<(Arc<Holdings>, u64)>> {
        let handle = self.table.delete(lock)?;
        let held = self.ctx.held.clone();
        Ok(held
            .get(handle.grant().serial)
            .is_some()
            .then_some((held, handle.grant().serial)))
    }

    /// The `lost` signal of the grant behind `lock`.
    pub(crate) fn lost_signal<H: GrantHandle>(
        &self,
        lock: &Resource<H>,
    ) -> wasmtime::Result<LostSignal> {
        Ok(self.table.get(lock)?.grant().held.grant.lost())
    }

    /// `keep-alive`.
    pub(crate) fn keep_lock_alive<H: GrantHandle>(
        &mut self,
        lock: &Resource<H>,
    ) -> Result<(), LockError> {
        let on = self.begin_on_lock(Op::KeepAlive, lock)?;
        on.held
            .store
            .keep_alive(&on.held.grant, self.ctx.limits.max_keep_alive);
        finish(on.call, Ok(()), |()| Outcome::KeepingAlive)
    }

    /// `resource-id`.
    pub(crate) fn lock_resource_id<H: GrantHandle>(
        &self,
        lock: &Resource<H>,
    ) -> wasmtime::Result<String> {
        Ok(self.table.get(lock)?.grant().resource_id.clone())
    }

    /// `fence`.
    pub(crate) fn lock_fence<H: GrantHandle>(&self, lock: &Resource<H>) -> wasmtime::Result<u64> {
        Ok(self.table.get(lock)?.grant().held.grant.fence)
    }

    /// `try-lock`, or `lock` if `wait_ms` is given, of a guest without tasks (0.1.0, 0.2.x).
    pub(crate) async fn take(
        &mut self,
        handle: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
        wait_ms: Option<u32>,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        self.take_asked(handle, Asked::Lock, resource_id, lease_ms, wait_ms)
            .await
    }

    /// A take of what is `asked`, of a guest without tasks.
    pub(crate) async fn take_asked<H: GrantHandle>(
        &mut self,
        handle: Resource<StoreHandle>,
        asked: Asked,
        id: String,
        lease_ms: u32,
        wait_ms: Option<u32>,
    ) -> Result<Option<Resource<H>>, LockError> {
        let take = self.begin(&handle, asked, id, lease_ms, wait_ms, None)?;
        let granted = take.run().await;
        self.finish_take(take, granted)
    }

    /// `unlock` (or a permit's `release`, a leadership's `resign`: `op`), awaited in place.
    pub(crate) async fn release_as<H: GrantHandle>(
        &mut self,
        op: Op,
        lock: Resource<H>,
    ) -> Result<UnlockStatus, LockError> {
        let on = self.begin_on_lock(op, &lock)?;
        let status = on.run(on.held.release()).await;
        self.finish_unlock(on, status)
    }

    /// `unlock`, awaited in place.
    pub(crate) async fn release(
        &mut self,
        lock: Resource<LockHandle>,
    ) -> Result<UnlockStatus, LockError> {
        self.release_as(Op::Unlock, lock).await
    }

    /// `extend`, awaited in place.
    pub(crate) async fn extend_lock<H: GrantHandle>(
        &mut self,
        lock: Resource<H>,
        lease_ms: u32,
    ) -> Result<bool, LockError> {
        let (on, lease) = self.begin_extend(&lock, lease_ms)?;
        let extended = on.run(on.held.store.extend(&on.held.grant, lease)).await;
        finish_extend(on, extended)
    }

    /// `held`, awaited in place.
    pub(crate) async fn ask_held<H: GrantHandle>(
        &mut self,
        lock: Resource<H>,
    ) -> Result<bool, LockError> {
        let on = self.begin_on_lock(Op::Held, &lock)?;
        let held = on.run(on.held.store.held(&on.held.grant)).await;
        finish_held(on, held)
    }

    /// A dropped lock handle: the lock is released, and forgotten only once the store has
    /// answered — if the release fails, or is cut short by the instance's deadline,
    /// `release_all` still knows the lock.
    pub(crate) async fn drop_lock<H: GrantHandle>(
        &mut self,
        lock: Resource<H>,
    ) -> wasmtime::Result<()> {
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

impl LockCtxView<'_> {
    /// `subscribe-lost` of a grant of any kind.
    pub(crate) fn subscribe_lost_of<H: GrantHandle>(
        &mut self,
        lock: Resource<H>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let lost = self.lost_signal(&lock)?;
        // No error to return here: a handle past the cap ends the instance.
        let signal = push(self.table, LostPollable(lost)).map_err(|err| match err {
            LockError::Trap(trap) => trap,
            other => wasmtime::format_err!("{other}"),
        })?;
        wasmtime_wasi::p2::subscribe(self.table, signal)
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

    async fn acquire_permit(
        &mut self,
        store: Resource<StoreHandle>,
        semaphore_id: String,
        limit: u32,
        lease_ms: u32,
        wait_ms: u32,
    ) -> Result<Option<Resource<PermitHandle>>, LockError> {
        let asked = Asked::Permit { limit };
        self.take_asked(store, asked, semaphore_id, lease_ms, Some(wait_ms))
            .await
    }

    async fn campaign(
        &mut self,
        store: Resource<StoreHandle>,
        election_id: String,
        value: String,
        lease_ms: u32,
        wait_ms: u32,
    ) -> Result<Option<Resource<LeadershipHandle>>, LockError> {
        let asked = Asked::Leadership { value };
        self.take_asked(store, asked, election_id, lease_ms, Some(wait_ms))
            .await
    }

    async fn leader(
        &mut self,
        store: Resource<StoreHandle>,
        election_id: String,
    ) -> Result<Option<wit::Leader>, LockError> {
        LockCtxView::leader(self, store, election_id).await
    }

    async fn subscribe_leader_change(
        &mut self,
        store: Resource<StoreHandle>,
        election_id: String,
    ) -> Result<Resource<DynPollable>, LockError> {
        LockCtxView::subscribe_leader_change(self, store, election_id).await
    }

    async fn drop(&mut self, store: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

/// The 0.2 host trait of a grant's WIT resource (`lock`, `permit`, `leadership`): its
/// calls are the same but for the names of its id and of how it is let go.
macro_rules! grant_resource {
    ($trait:ident for $handle:ty: $id:ident, $let_go:ident as $op:expr) => {
        impl $trait for LockCtxView<'_> {
            async fn $id(&mut self, grant: Resource<$handle>) -> wasmtime::Result<String> {
                self.lock_resource_id(&grant)
            }

            async fn fence(&mut self, grant: Resource<$handle>) -> wasmtime::Result<u64> {
                self.lock_fence(&grant)
            }

            async fn extend(
                &mut self,
                grant: Resource<$handle>,
                lease_ms: u32,
            ) -> Result<bool, LockError> {
                self.extend_lock(grant, lease_ms).await
            }

            async fn $let_go(
                &mut self,
                grant: Resource<$handle>,
            ) -> Result<wit::UnlockStatus, LockError> {
                Ok(self.release_as($op, grant).await?.into())
            }

            async fn keep_alive(&mut self, grant: Resource<$handle>) -> Result<(), LockError> {
                self.keep_lock_alive(&grant)
            }

            async fn held(&mut self, grant: Resource<$handle>) -> Result<bool, LockError> {
                self.ask_held(grant).await
            }

            async fn subscribe_lost(
                &mut self,
                grant: Resource<$handle>,
            ) -> wasmtime::Result<Resource<DynPollable>> {
                self.subscribe_lost_of(grant)
            }

            async fn drop(&mut self, grant: Resource<$handle>) -> wasmtime::Result<()> {
                self.drop_lock(grant).await
            }
        }
    };
}

grant_resource!(HostLock for LockHandle: resource_id, unlock as Op::Unlock);
grant_resource!(HostPermit for PermitHandle: semaphore_id, release as Op::Release);
grant_resource!(HostLeadership for LeadershipHandle: election_id, resign as Op::Resign);

/// The `pollable` of `subscribe-lost`: ready once the grant is lost.
struct LostPollable(LostSignal);

#[async_trait::async_trait]
impl Pollable for LostPollable {
    async fn ready(&mut self) {
        self.0.wait().await;
    }
}
