//! The host state of one guest instance: [`LockCtx`], its builder, and the borrowed view
//! that the WIT functions are implemented on.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::{HasData, ResourceTable};

use crate::backend::UnlockStatus;
use crate::error::{LockError, StoreError};
use crate::limits::Limits;
use crate::policy::ResourcePolicy;
use crate::store::{Grant, LockStore};
use crate::telemetry::{self, Call, Instruments, Op, Outcome, UNKNOWN_STORE};

/// Builds a [`LockCtx`] for each instance of one app.
///
/// The builder is reusable: every context built from it shares the same stores, so the
/// instances compete for the same locks.
#[derive(Clone)]
pub struct LockCtxBuilder {
    pub(crate) app_id: Arc<str>,
    /// Shared with every context built: building one per request copies nothing.
    pub(crate) stores: Arc<BTreeMap<String, Offered>>,
    /// The series of calls naming a store the app was not offered.
    pub(crate) unknown_store: Arc<Instruments>,
    pub(crate) limits: Limits,
    pub(crate) resources: ResourcePolicy,
}

/// A lock store offered to an app, and the metrics of the app's calls on it.
#[derive(Clone)]
pub(crate) struct Offered {
    pub(crate) store: LockStore,
    pub(crate) instruments: Arc<Instruments>,
}

impl LockCtxBuilder {
    /// Starts a context for the app `app_id`. Locks are scoped to it: two apps that lock the
    /// same resource id never meet.
    pub fn new(app_id: impl Into<Arc<str>>) -> Self {
        let app_id = app_id.into();
        LockCtxBuilder {
            unknown_store: Instruments::new(app_id.clone(), UNKNOWN_STORE.into()),
            app_id,
            stores: Arc::default(),
            limits: Limits::default(),
            resources: ResourcePolicy::any(),
        }
    }

    /// Offers `store` to guests under its name (what they pass to `open`); it replaces a
    /// store of the same name.
    pub fn store(&mut self, store: LockStore) -> &mut Self {
        let name = store.name().to_owned();
        let instruments = Instruments::new(self.app_id.clone(), name.as_str().into());
        Arc::make_mut(&mut self.stores).insert(name, Offered { store, instruments });
        self
    }

    /// Replaces the default [`Limits`].
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.limits = limits;
        self
    }

    /// Restricts the resource ids the app may lock; others are `access-denied`.
    pub fn resources(&mut self, policy: ResourcePolicy) -> &mut Self {
        self.resources = policy;
        self
    }

    /// The app the contexts are for.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The stores offered.
    pub fn stores(&self) -> impl Iterator<Item = &LockStore> {
        self.stores.values().map(|offered| &offered.store)
    }

    /// A fresh context for one instance.
    pub fn build(&self) -> LockCtx {
        telemetry::instances(&self.app_id, 1.0);
        LockCtx {
            app_id: self.app_id.clone(),
            stores: self.stores.clone(),
            unknown_store: self.unknown_store.clone(),
            limits: self.limits,
            resources: self.resources.clone(),
            grants: Arc::default(),
            pending: Arc::default(),
        }
    }
}

/// The lock state of one guest instance: its app, the stores it may open, and the locks it
/// holds. Call [`LockCtx::release_all`] when the instance ends, however it ends; and, where
/// one instance serves many tasks (`latchkey:lock@0.3.0`), [`LockCtx::begin_task`] as each
/// starts and [`TaskLocks::end`] when it ends.
pub struct LockCtx {
    pub(crate) app_id: Arc<str>,
    pub(crate) stores: Arc<BTreeMap<String, Offered>>,
    pub(crate) unknown_store: Arc<Instruments>,
    pub(crate) limits: Limits,
    pub(crate) resources: ResourcePolicy,
    /// Every grant the instance holds, until its release is confirmed: none outlives the
    /// instance, or its task.
    pub(crate) grants: Arc<Grants>,
    /// How many async calls of the instance are pending now (`latchkey:lock@0.3`): each
    /// holds a handle of the guest's, a subtask, which the instance's cap counts.
    pub(crate) pending: Arc<AtomicUsize>,
}

/// One pending async call, counted until it is dropped: finished or cancelled.
pub(crate) struct PendingCall(Arc<AtomicUsize>);

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// wasmtime's id of the guest task a grant belongs to (`latchkey:lock@0.3.0`): the root of
/// the component-model call stack that took it — for a `wasi:http` handler, the request.
/// wasmtime gives a finished task's id to a later task: [`LockCtx::begin_task`] tells them
/// apart.
pub type TaskId = wasmtime::component::GuestTaskId;

/// The grants of one instance. Shared, so that they can be released from outside a host
/// call: by the release of a dropped handle, or when a task ends.
#[derive(Default)]
pub(crate) struct Grants {
    state: Mutex<GrantsState>,
}

#[derive(Default)]
struct GrantsState {
    owned: HashMap<u64, OwnedGrant>,
    /// The serial of the last grant, and of the last task begun.
    next_serial: u64,
    /// What became of the last task begun under each task id: wasmtime gives a finished
    /// task's id to a later task, so a task is told apart by its serial too.
    tasks: HashMap<TaskId, TaskState>,
}

/// A guest task as the host knows it: wasmtime's id for it, and the serial [`LockCtx::begin_task`]
/// gave it (0 for the tasks of a guest that nobody brackets, such as a command's).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Task {
    id: TaskId,
    serial: u64,
}

/// The last task begun under one task id.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Running(u64),
    Ended(u64),
}

impl GrantsState {
    /// Whether `task` is over: ended, or followed by another task under its id.
    fn is_over(&self, task: Task) -> bool {
        match self.tasks.get(&task.id) {
            Some(TaskState::Running(serial)) => *serial != task.serial,
            Some(TaskState::Ended(_)) => true,
            None => task.serial != 0,
        }
    }
}

/// A grant as the instance that owns it keeps it (and, in 0.3, the task that took it):
/// what `unlock` and `release_all` need.
#[derive(Clone)]
pub(crate) struct OwnedGrant {
    /// The app's series on the store.
    pub(crate) instruments: Arc<Instruments>,
    pub(crate) store: LockStore,
    pub(crate) grant: Arc<Grant>,
    /// The task that took it, if the guest has tasks (0.3.0).
    pub(crate) task: Option<Task>,
    granted: Instant,
}

impl OwnedGrant {
    pub(crate) fn new(
        instruments: Arc<Instruments>,
        store: LockStore,
        grant: Grant,
        task: Option<Task>,
    ) -> Self {
        OwnedGrant {
            instruments,
            store,
            grant: Arc::new(grant),
            task,
            granted: Instant::now(),
        }
    }

    /// Releases the lock if this grant still holds it.
    pub(crate) async fn release(&self) -> Result<UnlockStatus, StoreError> {
        self.store.unlock(&self.grant).await
    }

    /// Releases the lock where nobody can be told the outcome (an ended instance or task):
    /// a failure is logged, and the lease ends the lock.
    async fn release_on_exit(self) {
        let call = Call::start(Op::ReleaseOnExit, self.instruments.clone());
        match self.release().await {
            Ok(status) => call.finish(status.into()),
            Err(err) => {
                tracing::warn!(%err, "could not release a lock; its lease will end it");
                call.finish(Outcome::of_error(&LockError::Unavailable(err)));
            }
        }
    }
}

impl Grants {
    fn state(&self) -> std::sync::MutexGuard<'_, GrantsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task running under `id` now (0.3.0): the one begun last under it, or an
    /// unbracketed one.
    pub(crate) fn task(&self, id: TaskId) -> Task {
        let serial = match self.state().tasks.get(&id) {
            Some(TaskState::Running(serial) | TaskState::Ended(serial)) => *serial,
            None => 0,
        };
        Task { id, serial }
    }

    /// How many grants are owned, by the instance and by `task`.
    pub(crate) fn counts(&self, task: Option<Task>) -> (usize, usize) {
        let state = self.state();
        let by_task = match task {
            Some(task) => state
                .owned
                .values()
                .filter(|h| h.task == Some(task))
                .count(),
            None => 0,
        };
        (state.owned.len(), by_task)
    }

    /// Whether `task` has ended (or is followed by another under its id).
    pub(crate) fn has_ended(&self, task: Task) -> bool {
        self.state().is_over(task)
    }

    /// Records `owned`; its serial, or `None` if its task ended while it was being granted.
    pub(crate) fn remember(&self, owned: &OwnedGrant) -> Option<u64> {
        let mut state = self.state();
        if owned.task.is_some_and(|task| state.is_over(task)) {
            return None;
        }
        owned.instruments.lock_taken();
        state.next_serial += 1;
        let serial = state.next_serial;
        state.owned.insert(serial, owned.clone());
        Some(serial)
    }

    /// The grant `serial`, if the instance still holds it.
    pub(crate) fn get(&self, serial: u64) -> Option<OwnedGrant> {
        self.state().owned.get(&serial).cloned()
    }

    /// The lock `serial` is released, and the store confirmed it: the instance forgets it.
    pub(crate) fn forget(&self, serial: u64) {
        if let Some(owned) = self.state().owned.remove(&serial) {
            owned.instruments.lock_let_go(owned.granted.elapsed());
        }
    }

    /// Every grant for which `which` says so, taken off the list for a final release.
    fn let_go_of(&self, which: impl Fn(&OwnedGrant) -> bool) -> Vec<OwnedGrant> {
        let mut state = self.state();
        let serials: Vec<u64> = state
            .owned
            .iter()
            .filter(|(_, owned)| which(owned))
            .map(|(&serial, _)| serial)
            .collect();
        let all: Vec<OwnedGrant> = serials
            .into_iter()
            .filter_map(|serial| state.owned.remove(&serial))
            .collect();
        for owned in &all {
            owned.instruments.lock_let_go(owned.granted.elapsed());
        }
        all
    }

    /// Releases each of `grants` at once, and waits for the stores to answer.
    async fn release(grants: Vec<OwnedGrant>) {
        if grants.is_empty() {
            return;
        }
        let mut releases = tokio::task::JoinSet::new();
        for owned in grants {
            releases.spawn(owned.release_on_exit());
        }
        releases.join_all().await;
    }

    /// Releases `serial` as a dropped handle's: forgotten once the store confirms; left
    /// for the instance's final release if it does not.
    pub(crate) async fn release_dropped(self: Arc<Self>, serial: u64) {
        let Some(owned) = self.get(serial) else {
            return;
        };
        let call = Call::start(Op::Unlock, owned.instruments.clone());
        match owned.release().await {
            Ok(status) => {
                tracing::debug!(?status, "dropped");
                self.forget(serial);
                call.finish(status.into());
            }
            Err(err) => {
                tracing::warn!(%err, "could not release a dropped lock; trying again when the instance ends");
                call.finish(Outcome::of_error(&LockError::Unavailable(err)));
            }
        }
    }
}

impl LockCtx {
    /// How many locks the instance holds now.
    pub fn held_count(&self) -> usize {
        self.grants.counts(None).0
    }

    /// Releases every lock the instance still holds, all at once, and waits for the stores
    /// to answer. A store that cannot be reached leaves its locks to their leases.
    pub async fn release_all(&mut self) {
        Grants::release(self.grants.let_go_of(|_| true)).await;
    }

    /// Starts guest task `task` (`latchkey:lock@0.3.0`): the handle that ends it. A host
    /// that runs many tasks in one instance — a `wasi:http` handler serving many requests —
    /// calls this as each starts (wasmtime reuses the ids of finished tasks).
    pub fn begin_task(&self, id: TaskId) -> TaskLocks {
        let mut state = self.grants.state();
        state.next_serial += 1;
        let serial = state.next_serial;
        // Whatever ran under this id before is over: wasmtime frees an id with its task.
        state.tasks.insert(id, TaskState::Running(serial));
        TaskLocks {
            grants: self.grants.clone(),
            task: Task { id, serial },
        }
    }
}

/// The locks of one guest task, apart from the instance's state, so that the task can be
/// ended wherever its end is learnt: its response finished, its client gone, its deadline
/// passed.
#[derive(Clone)]
pub struct TaskLocks {
    grants: Arc<Grants>,
    task: Task,
}

impl TaskLocks {
    /// The task's id.
    pub fn task(&self) -> TaskId {
        self.task.id
    }

    /// Ends the task: it takes no new lock, and every lock it still holds is released —
    /// also those whose handles the guest kept, which are inert from then on. The future
    /// borrows nothing, and the task has ended before it is first polled. A later task
    /// that wasmtime gave the same id keeps its locks.
    pub fn end(&self) -> impl Future<Output = ()> + Send + use<> {
        let Task { id, serial } = self.task;
        {
            let mut state = self.grants.state();
            if state.tasks.get(&id) == Some(&TaskState::Running(serial)) {
                state.tasks.insert(id, TaskState::Ended(serial));
            }
        }
        let grants = self.grants.let_go_of(|h| h.task == Some(self.task));
        Grants::release(grants)
    }

    /// How many locks the task holds now.
    pub fn held_count(&self) -> usize {
        self.grants.counts(Some(self.task)).1
    }
}

impl Drop for LockCtx {
    /// A safety net for embedders that drop an instance without `release_all`: the releases
    /// are sent from a background task if a tokio runtime is at hand.
    fn drop(&mut self) {
        telemetry::instances(&self.app_id, -1.0);
        let all = self.grants.let_go_of(|_| true);
        if all.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(Grants::release(all));
        }
    }
}

/// A [`LockCtx`] together with the instance's resource table, borrowed for one call.
pub struct LockCtxView<'a> {
    /// The instance's lock state.
    pub ctx: &'a mut LockCtx,
    /// Where the guest's `store` and `lock` handles live.
    pub table: &'a mut ResourceTable,
}

impl LockCtxView<'_> {
    /// Counts a new pending async call, within the instance's cap on handles: past it, the
    /// call is `limit-exceeded`, as a take past it is — where the guest's own table of
    /// handles would otherwise trap, losing every lock of the instance.
    pub(crate) fn begin_pending(&self) -> Result<PendingCall, LockError> {
        // A pending call holds two of the guest's handles (its subtask's and its waitable's):
        // half the cap, so that pending calls and the host's handles fit the guest's table
        // together (it holds twice the cap).
        let most = (self.table.max_capacity() / 2).max(1);
        let pending = &self.ctx.pending;
        if pending.fetch_add(1, Ordering::Relaxed) >= most {
            pending.fetch_sub(1, Ordering::Relaxed);
            return Err(LockError::LimitExceeded(format!(
                "this instance has {most} calls pending, the most it may (half of max-handles)"
            )));
        }
        Ok(PendingCall(pending.clone()))
    }
}

/// Implemented by an embedder's store data to give the lock host its state, like
/// `wasmtime_wasi::WasiView`.
pub trait LockView: Send {
    /// The lock state and resource table of this instance.
    fn locks(&mut self) -> LockCtxView<'_>;
}

/// The [`HasData`] marker of `latchkey:lock`: its host functions run on a [`LockCtxView`].
/// Name it when calling the generated `add_to_linker` of [`crate::p2::bindings`] or
/// [`crate::p3::bindings`] yourself.
pub struct HasLocks;

impl HasData for HasLocks {
    type Data<'a> = LockCtxView<'a>;
}
