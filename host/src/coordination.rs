//! The coordination beyond the mutex of `latchkey:lock@0.2.1`: leased semaphores
//! (`acquire-permit`, the WIT `permit`) and leader election (`campaign`, `leader`,
//! `subscribe-leader-change`, the WIT `leadership`).
//!
//! Both are made of locks ([`crate::key::Kind`]): a permit is the first free of a
//! semaphore's `limit` locks, a leadership is one lock whose owner token carries the
//! leader's value. So each grant is a lock's grant — the same fence, lease, keep-alive,
//! lost signal, budgets, and release when its instance or task ends — and only the calls
//! that name them, and who leads, are new here (the resources' own calls are those of
//! `host`'s `grant_resource!`).

use tracing::Instrument as _;
use wasmtime::component::{Resource, ResourceTableError};
use wasmtime_wasi::p2::{DynPollable, Pollable};

use crate::bindings::latchkey::lock::locks as wit;
use crate::ctx::LockCtxView;
use crate::error::{LockError, StoreError};
use crate::host::{Named, StoreHandle, finish, handles_exhausted, push, refuse};
use crate::key::LockKey;
use crate::store::LeaderWatch;
use crate::telemetry::{Call, Op, Outcome};
use crate::{Holder, LockStore};

impl LockCtxView<'_> {
    /// Starts a call `op` on election `election_id` of the store behind `handle`, once the
    /// id passes the limits and the policy (a refusal is counted here).
    pub(crate) fn begin_on_election(
        &self,
        op: Op,
        handle: &Resource<StoreHandle>,
        election_id: &str,
    ) -> Result<OnElection, LockError> {
        let handle = self.table.get(handle)?;
        let call = Call::start(op, handle.instruments.clone());
        match self.check_id(Named::Election, election_id) {
            Ok(()) => Ok(OnElection {
                key: handle.store.leadership(&self.ctx.app_id, election_id),
                store: handle.store.clone(),
                call,
            }),
            Err(err) => Err(refuse(call, err)),
        }
    }

    /// `leader`: who leads the election now.
    pub(crate) async fn leader(
        &mut self,
        handle: Resource<StoreHandle>,
        election_id: String,
    ) -> Result<Option<wit::Leader>, LockError> {
        let on = self.begin_on_election(Op::Leader, &handle, &election_id)?;
        let leader = on.run(on.store.leader(&on.key)).await;
        Ok(on.finish_leader(leader)?.map(Into::into))
    }

    /// `subscribe-leader-change`: subscribes to the election and reads who leads, before
    /// it returns, so that every change after the call readies the pollable.
    pub(crate) async fn subscribe_leader_change(
        &mut self,
        handle: Resource<StoreHandle>,
        election_id: String,
    ) -> Result<Resource<DynPollable>, LockError> {
        let on = self.begin_on_election(Op::WatchLeader, &handle, &election_id)?;
        let pollable = match on.run(on.store.watch_leader(on.key.clone())).await {
            Ok(watch) => self.push_leader_change(watch),
            Err(err) => Err(err.into()),
        };
        finish(on.call, pollable, |_| Outcome::Watching)
    }
}

impl LockCtxView<'_> {
    /// A pollable on `watch`: two handles, the watch's and its pollable's, both within the
    /// instance's cap or neither — past it, `limit-exceeded`, as a take is.
    fn push_leader_change(
        &mut self,
        watch: LeaderWatch,
    ) -> Result<Resource<DynPollable>, LockError> {
        let change = push(
            self.table,
            LeaderChange {
                watch,
                changed: false,
            },
        )?;
        match wasmtime_wasi::p2::subscribe(
            self.table,
            Resource::<LeaderChange>::new_own(change.rep()),
        ) {
            Ok(pollable) => Ok(pollable),
            Err(err) => {
                self.table.delete(change)?;
                match err.downcast::<ResourceTableError>() {
                    Ok(ResourceTableError::Full) => Err(handles_exhausted(self.table)),
                    Ok(other) => Err(other.into()),
                    Err(other) => Err(LockError::Trap(other)),
                }
            }
        }
    }
}

/// A call on an election, ready for the store.
pub(crate) struct OnElection {
    call: Call,
    pub(crate) store: LockStore,
    /// The election's leadership.
    pub(crate) key: LockKey,
}

impl OnElection {
    /// Runs `work` in the call's span.
    pub(crate) async fn run<T>(&self, work: impl Future<Output = T>) -> T {
        work.instrument(self.call.span()).await
    }

    /// Counts a call that answers who leads.
    pub(crate) fn finish_leader(
        self,
        leader: Result<Option<Holder>, StoreError>,
    ) -> Result<Option<Holder>, LockError> {
        finish(
            self.call,
            leader.map_err(LockError::from),
            |leader| match leader {
                Some(_) => Outcome::Leading,
                None => Outcome::Vacant,
            },
        )
    }
}

/// What `leader` answers of the store's holder, in each version's bindings.
macro_rules! leader_from_holder {
    ($($wit:path),*) => {$(
        impl From<Holder> for $wit {
            fn from(holder: Holder) -> Self {
                Self {
                    value: holder.value.unwrap_or_default(),
                    fence: holder.fence,
                    lease_left_ms: holder.lease_left.as_millis().try_into().unwrap_or(u32::MAX),
                }
            }
        }
    )*};
}

leader_from_holder!(
    wit::Leader,
    crate::bindings::v0_3::latchkey::lock::locks::Leader
);

/// The `pollable` of `subscribe-leader-change`: once ready, ready for good, however often
/// the guest polls it.
struct LeaderChange {
    watch: LeaderWatch,
    changed: bool,
}

#[async_trait::async_trait]
impl Pollable for LeaderChange {
    async fn ready(&mut self) {
        if !self.changed {
            // A change or a failure readies it alike: `leader` then says which.
            let _ = self.watch.changed().await;
            self.changed = true;
        }
    }
}
