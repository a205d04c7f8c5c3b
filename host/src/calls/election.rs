//! Who leads an election: `leader`, and the watch for a change of leader — in WASI 0.2 a
//! pollable (`subscribe-leader-change`), in 0.3 a wait (`leader-change`).
//!
//! A leadership is one lock whose owner token carries the leader's value
//! ([`crate::key::GrantKind::Leadership`]), so `campaign` is a take and a leadership's own
//! calls are a grant's: only who leads is new here.

use tracing::Instrument as _;
use wasmtime::component::Resource;

use super::take::Named;
use super::{Caller, StoreHandle, finish, refuse};
use crate::backend::Holder;
use crate::ctx::LockCtxView;
use crate::error::{LockError, StoreError};
use crate::key::LockKey;
use crate::store::{LeaderWatch, LockStore};
use crate::telemetry::{Call, Op, Outcome};

/// `leader`: who leads the election now.
pub(crate) async fn leader(
    caller: &mut impl Caller,
    store: Resource<StoreHandle>,
    election_id: String,
) -> Result<Option<Holder>, LockError> {
    let _pending = caller.pending()?;
    let on = caller.with(|view| view.begin_on_election(Op::Leader, &store, &election_id))?;
    let leader = on.ask(on.store.leader(&on.key)).await;
    on.finish_leader(leader)
}

/// `leader-change`: who leads once it is another than the leader whose fence is `seen`.
pub(crate) async fn leader_change(
    caller: &mut impl Caller,
    store: Resource<StoreHandle>,
    election_id: String,
    seen: Option<u64>,
) -> Result<Option<Holder>, LockError> {
    let _pending = caller.pending()?;
    let on = caller.with(|view| view.begin_on_election(Op::WatchLeader, &store, &election_id))?;
    let leader = on.ask(on.store.leader_change(on.key.clone(), seen)).await;
    on.finish_leader(leader)
}

/// A watch of the election, made before the call returns — so that every change after the
/// call is seen — and handed to the guest by `hand_out` (as a pollable, in WASI 0.2).
pub(crate) async fn watch<R>(
    caller: &mut impl Caller,
    store: Resource<StoreHandle>,
    election_id: String,
    hand_out: impl FnOnce(&mut LockCtxView<'_>, LeaderWatch) -> Result<R, LockError>,
) -> Result<R, LockError> {
    let _pending = caller.pending()?;
    let on = caller.with(|view| view.begin_on_election(Op::WatchLeader, &store, &election_id))?;
    let handed = match on.ask(on.store.watch_leader(on.key.clone())).await {
        Ok(watch) => caller.with(|view| hand_out(view, watch)),
        Err(err) => Err(err.into()),
    };
    finish(on.call, handed, |_| Outcome::Watching)
}

/// A call on an election, begun.
struct OnElection {
    call: Call,
    store: LockStore,
    /// The election's leadership.
    key: LockKey,
}

impl OnElection {
    /// Asks the store `work`, in the call's span.
    async fn ask<T>(&self, work: impl Future<Output = T>) -> T {
        work.instrument(self.call.span()).await
    }

    /// Finishes a call that answers who leads.
    fn finish_leader(
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

impl LockCtxView<'_> {
    /// Begins a call `op` on election `election_id` of the store behind `handle`, once the
    /// id passes the limits and the policy (a refusal is counted here).
    fn begin_on_election(
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
}
