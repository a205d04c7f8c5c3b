//! Errors of the lock host, and their one mapping onto the WIT `error` variant of every
//! version of `latchkey:lock` the host serves.

use crate::backend::{BackendError, BackendErrorKind};

/// Why a lock call failed.
///
/// Every variant but [`LockError::Trap`] reaches the guest as the WIT `error` variant of the
/// same name; `Trap` ends the guest instance (a bad resource handle means a host bug or a
/// hostile guest, not an ordinary failure).
#[non_exhaustive]
#[derive(Debug, thiserror::Error, strum::EnumDiscriminants)]
#[strum_discriminants(
    name(ErrorKind),
    doc = "The kinds of [`LockError`], named as the WIT `error` cases (`invalid-argument`).",
    derive(
        strum::IntoStaticStr,
        strum::Display,
        strum::EnumCount,
        strum::EnumIter,
        Hash
    ),
    strum(serialize_all = "kebab-case")
)]
pub enum LockError {
    /// No store of this name is configured for the app.
    #[error("no such store: {0}")]
    NoSuchStore(String),
    /// An argument is empty, too long or out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The host's policy does not allow this call.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The instance holds as many locks as allowed.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The store could not be reached or did not answer in time.
    #[error("unavailable: {0}")]
    Unavailable(StoreError),
    /// Not the guest's to handle: the instance is stopped.
    #[error(transparent)]
    Trap(wasmtime::Error),
}

impl LockError {
    /// Its kind; displayed, the name of the WIT `error` case (`invalid-argument`), or `trap`.
    pub fn kind(&self) -> ErrorKind {
        self.into()
    }
}

impl From<wasmtime::component::ResourceTableError> for LockError {
    fn from(err: wasmtime::component::ResourceTableError) -> Self {
        LockError::Trap(err.into())
    }
}

impl From<StoreError> for LockError {
    fn from(err: StoreError) -> Self {
        LockError::Unavailable(err)
    }
}

/// A store that failed to answer, as `store 'NAME' REASON`. Its text is safe to show a
/// guest: it never holds a URL, user name or password.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store '{store}' {error}")]
pub struct StoreError {
    store: String,
    error: BackendError,
}

impl StoreError {
    /// `store`'s failure.
    pub fn new(store: &str, error: BackendError) -> Self {
        StoreError {
            store: store.to_owned(),
            error,
        }
    }

    /// The name the store is opened by.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// What kind of failure it was.
    pub fn kind(&self) -> BackendErrorKind {
        self.error.kind()
    }
}

/// A store that cannot be set up as configured. Found before any connection is made; URLs
/// in it are redacted.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreConfigError {
    /// The URL is of no kind latchkey knows.
    #[error(
        "{url} is neither `memory` nor a {} URL",
        crate::open::or_list(&crate::open::redis_url_forms())
    )]
    UnknownScheme {
        /// The URL, redacted.
        url: String,
    },
    /// The URL is of a known kind but does not parse.
    #[error("bad Redis URL {url}: {reason}")]
    BadUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A Sentinel store that does not wait for replicas: a failover would lose locks.
    #[error(
        "{url}: a Sentinel failover can lose a granted lock unless grants wait for \
         replicas: set wait-replicas (1 or more)"
    )]
    SentinelNeedsWaitReplicas {
        /// The URL, redacted.
        url: String,
    },
    /// A Redlock store over fewer than three masters.
    #[error("bad Redlock URL {url}: Redlock needs three or more masters, it lists {masters}")]
    TooFewRedlockMasters {
        /// The URL, redacted.
        url: String,
        /// How many it lists.
        masters: usize,
    },
    /// A Redlock store asked to wait for replicas: its masters are independent.
    #[error("bad Redlock URL {url}: Redlock masters are independent: wait-replicas does not apply")]
    WaitReplicasWithRedlock {
        /// The URL, redacted.
        url: String,
    },
    /// A namespace that could not be told apart from the rest of a key.
    #[error("namespace {namespace:?}: use 1 to 64 letters, digits, `.`, `_` or `-`")]
    BadNamespace {
        /// The namespace asked for.
        namespace: String,
    },
}

/// What a guest sees of an internal error, in one version's generated types. `Trap` is not
/// the guest's to see: it ends the instance.
pub(crate) trait FromLockError: Sized {
    fn from_lock_error(err: LockError) -> wasmtime::Result<Self>;
}

/// The one mapping of internal errors and unlock statuses onto a version of `latchkey:lock`
/// (named by the module of its bindings): every version has the same cases in types of its
/// own.
macro_rules! wit_mapping {
    ($($wit:ident)::+) => {
        impl $crate::error::FromLockError for $($wit)::+::Error {
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

wit_mapping!(crate::bindings::latchkey::lock::locks);
wit_mapping!(crate::bindings::v0_1::latchkey::lock::locks);
wit_mapping!(crate::bindings::v0_3::latchkey::lock::locks);
