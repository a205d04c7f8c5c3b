//! The `latchkey:lock/locks` functions, implemented on [`LockCtxView`]. Each call that
//! reaches a store is timed and counted by outcome, in a span of its own ([`telemetry`]).

use std::sync::Arc;

use tracing::Instrument as _;
use wasmtime::component::{Resource, ResourceTable, ResourceTableError};
use wasmtime_wasi::p2::{DynPollable, Pollable};

use crate::backend::UnlockStatus;
use crate::bindings::latchkey::lock::locks::{self as wit, HostLock, HostStore};
use crate::ctx::{HeldLock, LockCtxView};
use crate::error::{FromLockError, LockError};
use crate::store::{LockStore, LostSignal};
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

/// Runs `work` as `call`: in its span, then counted by the outcome `outcome` gives a
/// success, or by the error's kind.
async fn observe<T>(
    call: Call,
    work: impl Future<Output = Result<T, LockError>>,
    outcome: impl FnOnce(&T) -> Outcome,
) -> Result<T, LockError> {
    let result = work.instrument(call.span()).await;
    call.finish(match &result {
        Ok(value) => outcome(value),
        Err(err) => Outcome::of_error(err),
    });
    result
}

impl wit::Host for LockCtxView<'_> {
    async fn open(&mut self, name: String) -> Result<Resource<StoreHandle>, LockError> {
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
        observe(call, std::future::ready(opened), |_| Outcome::Opened).await
    }

    fn convert_error(&mut self, err: LockError) -> wasmtime::Result<wit::Error> {
        wit::Error::from_lock_error(err)
    }
}

impl LockCtxView<'_> {
    /// A call `op` on the lock behind `lock`.
    fn call_on(&self, op: Op, lock: &Resource<LockHandle>) -> Result<Call, LockError> {
        let held = &self.table.get(lock)?.held;
        Ok(Call::start(op, held.instruments.clone()))
    }

    /// `try-lock`, or `lock` if `wait_ms` is given: timed and counted.
    pub(crate) async fn take(
        &mut self,
        handle: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
        wait_ms: Option<u32>,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        let instruments = self.table.get(&handle)?.instruments.clone();
        let op = if wait_ms.is_some() {
            Op::Lock
        } else {
            Op::TryLock
        };
        let call = Call::start(op, instruments.clone());
        let started = std::time::Instant::now();
        let granted = observe(
            call,
            self.grant(handle, resource_id, lease_ms, wait_ms),
            |lock| match (lock, wait_ms) {
                (Some(_), _) => Outcome::Granted,
                (None, None) => Outcome::Busy,
                (None, Some(_)) => Outcome::WaitTimedOut,
            },
        )
        .await;
        if wait_ms.is_some() && granted.is_ok() {
            instruments.waited(started.elapsed());
        }
        granted
    }

    /// Checks the arguments, the app's policy and the instance's budget — all before the
    /// store is touched — then takes the lock (waiting if `wait_ms` is given) and turns the
    /// grant into a guest handle.
    async fn grant(
        &mut self,
        handle: Resource<StoreHandle>,
        resource_id: String,
        lease_ms: u32,
        wait_ms: Option<u32>,
    ) -> Result<Option<Resource<LockHandle>>, LockError> {
        let limits = self.ctx.limits;
        limits.check_id(&resource_id)?;
        let lease = limits.check_lease(lease_ms)?;
        let wait = wait_ms.map(|ms| limits.check_wait(ms)).transpose()?;
        if !self.ctx.resources.allows(&resource_id) {
            return Err(LockError::AccessDenied(format!(
                "app {:?} may not lock resource id {:?}",
                &*self.ctx.app_id,
                abbreviated(&resource_id)
            )));
        }
        if self.ctx.held.len() >= limits.max_held {
            return Err(LockError::LimitExceeded(format!(
                "this instance already holds {} locks, the most it may hold",
                limits.max_held
            )));
        }
        let handle = self.table.get(&handle)?;
        let (instruments, lock_store) = (handle.instruments.clone(), handle.store.clone());
        let key = lock_store.key(&self.ctx.app_id, &resource_id);
        let grant = match wait {
            None => lock_store.try_lock(key, lease).await?,
            Some(wait) => lock_store.lock(key, lease, wait).await?,
        };
        let Some(grant) = grant else {
            tracing::debug!(resource_id = abbreviated(&resource_id), "held by another");
            return Ok(None);
        };
        tracing::debug!(
            resource_id = abbreviated(&resource_id),
            fence = grant.fence,
            "granted"
        );
        let held = HeldLock::new(instruments, lock_store, grant);
        let serial = self.ctx.remember(held.clone());
        let handle = LockHandle {
            serial,
            resource_id,
            held,
        };
        match push(self.table, handle) {
            Ok(handle) => Ok(Some(handle)),
            Err(err) => {
                // No handle, so nobody could release it: let it go now.
                if let Ok(status) = self.ctx.held[&serial].release().await {
                    tracing::debug!(?status, "released a grant that got no handle");
                    self.ctx.forget(serial);
                }
                Err(err)
            }
        }
    }

    /// `unlock`: frees the lock and says what the store found. The instance forgets the
    /// lock only once the store answered: if it could not be reached, the lock stays on the
    /// list for the instance's final release.
    pub(crate) async fn release(
        &mut self,
        lock: Resource<LockHandle>,
    ) -> Result<UnlockStatus, LockError> {
        let call = self.call_on(Op::Unlock, &lock)?;
        let this = &mut *self;
        let work = async move {
            let handle = this.table.get(&lock)?;
            let status = handle.held.release().await?;
            tracing::debug!(
                resource_id = abbreviated(&handle.resource_id),
                ?status,
                "unlocked"
            );
            this.ctx.forget(handle.serial);
            Ok(status)
        };
        observe(call, work, |&status| status.into()).await
    }

    /// A dropped lock handle: the lock is released, and forgotten only once the store has
    /// answered — if the release fails, or is cut short by the instance's deadline,
    /// `release_all` still knows the lock.
    pub(crate) async fn drop_lock(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<()> {
        let call = self.call_on(Op::Unlock, &lock)?;
        let handle = self.table.delete(lock)?;
        let Some(held) = self.ctx.held.get(&handle.serial) else {
            return Ok(());
        };
        match held.release().instrument(call.span()).await {
            Ok(status) => {
                tracing::debug!(
                    resource_id = abbreviated(&handle.resource_id),
                    ?status,
                    "dropped"
                );
                self.ctx.forget(handle.serial);
                call.finish(status.into());
            }
            Err(err) => {
                tracing::warn!(%err, "could not release a dropped lock; trying again when the instance ends");
                call.finish(Outcome::of_error(&LockError::Unavailable(err)));
            }
        }
        Ok(())
    }
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
        Ok(self.table.get(&lock)?.resource_id.clone())
    }

    async fn fence(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&lock)?.held.grant.fence)
    }

    async fn extend(
        &mut self,
        lock: Resource<LockHandle>,
        lease_ms: u32,
    ) -> Result<bool, LockError> {
        let call = self.call_on(Op::Extend, &lock)?;
        let this = &mut *self;
        let work = async move {
            let lease = this.ctx.limits.check_lease(lease_ms)?;
            let held = &this.table.get(&lock)?.held;
            Ok(held.store.extend(&held.grant, lease).await?)
        };
        observe(call, work, |&extended| {
            if extended {
                Outcome::Extended
            } else {
                Outcome::LeaseLost
            }
        })
        .await
    }

    async fn unlock(&mut self, lock: Resource<LockHandle>) -> Result<wit::UnlockStatus, LockError> {
        Ok(self.release(lock).await?.into())
    }

    async fn keep_alive(&mut self, lock: Resource<LockHandle>) -> Result<(), LockError> {
        let call = self.call_on(Op::KeepAlive, &lock)?;
        let held = &self.table.get(&lock)?.held;
        held.store
            .keep_alive(&held.grant, self.ctx.limits.max_keep_alive);
        call.finish(Outcome::KeepingAlive);
        Ok(())
    }

    async fn held(&mut self, lock: Resource<LockHandle>) -> Result<bool, LockError> {
        let call = self.call_on(Op::Held, &lock)?;
        let this = &mut *self;
        let work = async move {
            let held = &this.table.get(&lock)?.held;
            Ok(held.store.held(&held.grant).await?)
        };
        observe(call, work, |&held| {
            if held {
                Outcome::Held
            } else {
                Outcome::LeaseLost
            }
        })
        .await
    }

    async fn subscribe_lost(
        &mut self,
        lock: Resource<LockHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let lost = self.table.get(&lock)?.held.grant.lost();
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
