//! Dapr's lock API, for Dapr's own clients: the sidecar's `TryLockAlpha1` and
//! `UnlockAlpha1` over gRPC ([`grpc`]) and HTTP ([`http`]), for one app, on the same lock
//! stores, policy and limits as its guests — so that a Dapr service and a guest of one app
//! exclude each other on one resource id.
//!
//! A Dapr client names the lock's owner itself (`lockOwner`), where a guest's owner token is
//! made by the host: the owner's token is made from its name
//! ([`crate::backend::Token::of_dapr_owner`]), the same on every host, so that whoever names
//! the owner may unlock — Dapr's own rule. In daprd's key layout
//! ([`crate::key::KeySpace::Dapr`]) the token is the owner itself, as daprd stores it. The
//! app is the endpoint's, never the request's. A grant's fence is offered where Dapr's
//! answer has room for it: the `latchkey-fence` header, or gRPC metadata of that name.
//!
//! [`DaprApi`] holds what both protocols share: the checks, the calls, the API token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;

use crate::backend::UnlockStatus;
use crate::ctx::{LockCtxBuilder, Offered};
use crate::error::{LockError, StoreError};
use crate::limits::Limits;
use crate::policy::ResourcePolicy;
use crate::telemetry::{Call, Op, Outcome};

mod budget;
pub mod grpc;
pub mod http;

use budget::Budget;
pub use budget::MAX_HELD_BY_ENDPOINT;

/// The header (and gRPC metadata key) that carries a granted lock's fence.
pub const FENCE_HEADER: &str = "latchkey-fence";

/// The header (and gRPC metadata key) that carries Dapr's API token.
pub const TOKEN_HEADER: &str = "dapr-api-token";

/// Dapr's lock API for one app: its stores, its policy and limits, and the API token every
/// call must carry, if one is set.
#[derive(Clone)]
pub struct DaprApi(Arc<Shared>);

struct Shared {
    app_id: Arc<str>,
    stores: Arc<BTreeMap<String, Offered>>,
    limits: Limits,
    resources: ResourcePolicy,
    token: Option<Vec<u8>>,
    budget: Budget,
}

/// Why a Dapr call was refused or failed, in the host's words; each protocol maps it onto
/// its own answer.
#[derive(Debug, thiserror::Error)]
pub enum DaprError {
    /// The call carried no API token, or another than the endpoint's.
    #[error("the dapr-api-token is missing or wrong")]
    Unauthenticated,
    /// No lock store of this name is offered to the app.
    #[error("lock store {0} is not found")]
    NoSuchStore(String),
    /// A field is missing, empty, too long, of the wrong type or out of range.
    #[error("{0}")]
    Malformed(String),
    /// The app's policy does not allow this resource id.
    #[error("{0}")]
    Denied(String),
    /// The owner, or the endpoint, holds as many locks as it may.
    #[error("{0}")]
    TooManyLocks(String),
    /// The store could not be reached or did not answer in time.
    #[error("{0}")]
    Unavailable(StoreError),
}

/// What a TryLock answered: whether the lock is the owner's now, and its fence if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryLocked {
    /// Dapr's `success`.
    pub success: bool,
    /// The grant's fence, greater than every earlier grant's on the lock.
    pub fence: Option<u64>,
}

impl DaprApi {
    /// Dapr's lock API for the app of `app`, over the stores offered to it, with its policy
    /// and limits; `token`, if given, is the API token every call must carry.
    pub fn new(app: &LockCtxBuilder, token: Option<String>) -> Self {
        DaprApi(Arc::new(Shared {
            app_id: app.app_id.clone(),
            stores: app.stores.clone(),
            limits: app.limits,
            resources: app.resources.clone(),
            token: token.map(String::into_bytes),
            budget: Budget::new(app.limits.max_held, MAX_HELD_BY_ENDPOINT),
        }))
    }

    /// The app the endpoint serves.
    pub fn app_id(&self) -> &str {
        &self.0.app_id
    }

    /// The names of the lock stores offered.
    pub fn store_names(&self) -> impl Iterator<Item = &str> {
        self.0.stores.keys().map(String::as_str)
    }

    /// Checks a call's API token against the endpoint's, in constant time; with none set,
    /// every call passes.
    pub fn check_token(&self, presented: Option<&[u8]>) -> Result<(), DaprError> {
        let Some(expected) = &self.0.token else {
            return Ok(());
        };
        match presented {
            Some(presented) if bool::from(presented.ct_eq(expected)) => Ok(()),
            _ => Err(DaprError::Unauthenticated),
        }
    }

    /// `TryLockAlpha1`: the lock on `resource_id` for `owner`, for `expiry_in_seconds`, if
    /// nobody holds it.
    pub async fn try_lock(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
        expiry_in_seconds: i64,
    ) -> Result<TryLocked, DaprError> {
        let offered = self.store(store)?;
        let call = Call::start(Op::DaprTryLock, offered.instruments.clone());
        let checked = self
            .check(offered, resource_id, owner)
            .and_then(|()| self.lease(expiry_in_seconds));
        let lease = match checked {
            Ok(lease) => lease,
            Err(err) => {
                call.finish(refused(&err));
                return Err(err);
            }
        };
        let place = match self.0.budget.reserve(owner) {
            Ok(place) => place,
            Err(why) => {
                call.finish(Outcome::LimitExceeded);
                return Err(DaprError::TooManyLocks(why));
            }
        };
        let key = offered.store.key(&self.0.app_id, resource_id);
        let token = offered.store.dapr_owner(owner);
        let asked = Instant::now();
        match offered.store.try_lock_as(key, token, lease).await {
            Ok(Some(grant)) => {
                place.granted(store, resource_id, asked, lease);
                call.finish(Outcome::Granted);
                Ok(TryLocked {
                    success: true,
                    fence: Some(grant.fence),
                })
            }
            Ok(None) => {
                call.finish(Outcome::Busy);
                Ok(TryLocked {
                    success: false,
                    fence: None,
                })
            }
            Err(err) => {
                call.finish(Outcome::of_error(&LockError::Unavailable(err.clone())));
                Err(DaprError::Unavailable(err))
            }
        }
    }

    /// `UnlockAlpha1`: frees the lock on `resource_id` if `owner` holds it.
    pub async fn unlock(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
    ) -> Result<UnlockStatus, DaprError> {
        let offered = self.store(store)?;
        let call = Call::start(Op::DaprUnlock, offered.instruments.clone());
        if let Err(err) = self.check(offered, resource_id, owner) {
            call.finish(refused(&err));
            return Err(err);
        }
        let key = offered.store.key(&self.0.app_id, resource_id);
        let token = offered.store.dapr_owner(owner);
        match offered.store.unlock_as(&key, &token).await {
            Ok(status) => {
                if status != UnlockStatus::LockBelongsToOthers {
                    self.0.budget.forget(owner, store, resource_id);
                }
                call.finish(status.into());
                Ok(status)
            }
            Err(err) => {
                call.finish(Outcome::of_error(&LockError::Unavailable(err.clone())));
                Err(DaprError::Unavailable(err))
            }
        }
    }

    fn store(&self, name: &str) -> Result<&Offered, DaprError> {
        self.0
            .stores
            .get(name)
            .ok_or_else(|| DaprError::NoSuchStore(quoted(name)))
    }

    /// The resource id and the owner, against the app's limits and policy, the store's
    /// names, and Dapr's own rule: no `||` in a resource id (daprd's Redis lock store keys
    /// locks by it).
    fn check(&self, offered: &Offered, resource_id: &str, owner: &str) -> Result<(), DaprError> {
        let malformed = |err: LockError| DaprError::Malformed(bare(err));
        let limits = self.0.limits;
        limits
            .check_named_id("resourceId", resource_id)
            .map_err(malformed)?;
        if resource_id.contains("||") {
            return Err(DaprError::Malformed(
                "resourceId holds \"||\", which Dapr does not allow in an id".into(),
            ));
        }
        limits
            .check_named_id("lockOwner", owner)
            .map_err(malformed)?;
        offered
            .store
            .check_names(&self.0.app_id, "resourceId", resource_id)
            .map_err(DaprError::Malformed)?;
        if !self.0.resources.allows(resource_id) {
            return Err(DaprError::Denied(format!(
                "app {:?} may not lock resource id {}",
                &*self.0.app_id,
                quoted(resource_id)
            )));
        }
        Ok(())
    }

    /// The lease of `expiry_in_seconds`: more than zero, as daprd requires, and within the
    /// app's longest lease.
    fn lease(&self, expiry_in_seconds: i64) -> Result<Duration, DaprError> {
        if expiry_in_seconds <= 0 {
            return Err(DaprError::Malformed(format!(
                "expiryInSeconds is {expiry_in_seconds}; it must be more than 0"
            )));
        }
        let ms = u32::try_from(expiry_in_seconds.saturating_mul(1000)).unwrap_or(u32::MAX);
        self.0
            .limits
            .check_lease(ms)
            .map_err(|err| DaprError::Malformed(bare(err).replace("lease-ms", "expiryInSeconds")))
    }
}

/// How a refused call is counted.
fn refused(err: &DaprError) -> Outcome {
    match err {
        DaprError::Denied(_) => Outcome::AccessDenied,
        _ => Outcome::InvalidArgument,
    }
}

/// A message of the host's without the WIT error's name before it.
fn bare(err: LockError) -> String {
    match err {
        LockError::InvalidArgument(message)
        | LockError::AccessDenied(message)
        | LockError::LimitExceeded(message)
        | LockError::NoSuchStore(message) => message,
        other => other.to_string(),
    }
}

/// A name from a request, quoted and cut short enough for a message.
fn quoted(text: &str) -> String {
    format!("{:?}", crate::calls::abbreviated(text))
}
