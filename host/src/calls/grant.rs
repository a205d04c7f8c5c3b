//! The calls every grant's handle shares, whatever its kind: `resource-id` (or
//! `semaphore-id`, `election-id`), `fence`, `extend`, the let-go (`unlock`, `release`,
//! `resign`), `keep-alive`, `held`, the lost signal, and the handle's drop.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;
use wasmtime::component::Resource;

use super::{Caller, GrantHandle, finish, refuse};
use crate::backend::UnlockStatus;
use crate::ctx::{Grants, LockCtxView, OwnedGrant};
use crate::error::LockError;
use crate::store::LostSignal;
use crate::telemetry::{Call, Op, Outcome};

/// `extend`: a new lease, from now.
pub(crate) async fn extend<H: GrantHandle>(
    caller: &mut impl Caller,
    grant: Resource<H>,
    lease_ms: u32,
) -> Result<bool, LockError> {
    let _pending = caller.pending()?;
    let (on, lease) = caller.with(|view| view.begin_extend(&grant, lease_ms))?;
    let extended = on.ask(on.owned.store.extend(&on.owned.grant, lease)).await;
    finish(on.call, extended.map_err(LockError::from), |&extended| {
        if extended {
            Outcome::Extended
        } else {
            Outcome::LeaseLost
        }
    })
}

/// `unlock`, `release` or `resign` (`op`): the instance forgets the grant once the store
/// answered; if it could not be reached, the grant stays the instance's for its final
/// release.
pub(crate) async fn let_go<H: GrantHandle>(
    caller: &mut impl Caller,
    op: Op,
    grant: Resource<H>,
) -> Result<UnlockStatus, LockError> {
    let _pending = caller.pending()?;
    let on = caller.with(|view| view.begin_on_grant(op, &grant))?;
    let status = on.ask(on.owned.release()).await;
    caller.with(|view| {
        let _entered = on.call.span().entered();
        if let Ok(status) = &status {
            tracing::debug!(?status, "unlocked");
            view.ctx.grants.forget(on.serial);
        }
        finish(on.call, status.map_err(LockError::from), |&status| {
            status.into()
        })
    })
}

/// `held`: asks the store whether the grant still holds its lock.
pub(crate) async fn confirm<H: GrantHandle>(
    caller: &mut impl Caller,
    grant: Resource<H>,
) -> Result<bool, LockError> {
    let _pending = caller.pending()?;
    let on = caller.with(|view| view.begin_on_grant(Op::Held, &grant))?;
    let holds = on.ask(on.owned.store.holds(&on.owned.grant)).await;
    finish(on.call, holds.map_err(LockError::from), |&holds| {
        if holds {
            Outcome::Held
        } else {
            Outcome::LeaseLost
        }
    })
}

/// A call on a grant, begun: the grant it is about, and its call.
pub(crate) struct OnGrant {
    call: Call,
    serial: u64,
    owned: OwnedGrant,
}

impl OnGrant {
    /// Asks the store `work`, in the call's span.
    async fn ask<T>(&self, work: impl Future<Output = T>) -> T {
        work.instrument(self.call.span()).await
    }
}

impl LockCtxView<'_> {
    /// Begins a call `op` on the grant behind `grant`.
    fn begin_on_grant<H: GrantHandle>(
        &self,
        op: Op,
        grant: &Resource<H>,
    ) -> Result<OnGrant, LockError> {
        let handle = self.table.get(grant)?.grant();
        Ok(OnGrant {
            call: Call::start(op, handle.owned.instruments.clone()),
            serial: handle.serial,
            owned: handle.owned.clone(),
        })
    }

    /// Begins an `extend`; a bad lease is refused, and counted, here.
    fn begin_extend<H: GrantHandle>(
        &self,
        grant: &Resource<H>,
        lease_ms: u32,
    ) -> Result<(OnGrant, Duration), LockError> {
        let on = self.begin_on_grant(Op::Extend, grant)?;
        match self.ctx.limits.check_lease(lease_ms) {
            Ok(lease) => Ok((on, lease)),
            Err(err) => Err(refuse(on.call, err)),
        }
    }

    /// `keep-alive`: the host renews the lease until the grant is let go or lost.
    pub(crate) fn keep_alive<H: GrantHandle>(
        &mut self,
        grant: &Resource<H>,
    ) -> Result<(), LockError> {
        let on = self.begin_on_grant(Op::KeepAlive, grant)?;
        on.owned
            .store
            .keep_alive(&on.owned.grant, self.ctx.limits.max_keep_alive);
        finish(on.call, Ok(()), |()| Outcome::KeepingAlive)
    }

    /// `resource-id` (`semaphore-id`, `election-id`).
    pub(crate) fn grant_id<H: GrantHandle>(&self, grant: &Resource<H>) -> wasmtime::Result<String> {
        Ok(self.table.get(grant)?.grant().resource_id.clone())
    }

    /// `fence`.
    pub(crate) fn grant_fence<H: GrantHandle>(&self, grant: &Resource<H>) -> wasmtime::Result<u64> {
        Ok(self.table.get(grant)?.grant().owned.grant.fence)
    }

    /// The lost signal of the grant behind `grant`.
    pub(crate) fn lost_signal<H: GrantHandle>(
        &self,
        grant: &Resource<H>,
    ) -> wasmtime::Result<LostSignal> {
        Ok(self.table.get(grant)?.grant().owned.grant.lost())
    }

    /// Forgets the handle `grant`: the release of its grant if the instance still owns it —
    /// forgotten only once the store has answered, so that if the release fails, or is cut
    /// short, `release_all` still knows the grant. Each adapter awaits it or lets it run.
    pub(crate) fn drop_grant<H: GrantHandle>(
        &mut self,
        grant: Resource<H>,
    ) -> wasmtime::Result<Option<impl Future<Output = ()> + Send + use<H>>> {
        let handle = self.table.delete(grant)?;
        let grants: Arc<Grants> = self.ctx.grants.clone();
        let serial = handle.grant().serial;
        Ok(grants
            .get(serial)
            .is_some()
            .then(|| grants.release_dropped(serial)))
    }
}
