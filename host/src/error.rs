//! Errors of the lock host and their one mapping onto the WIT `error` variant.

use crate::generated::latchkey::lock::locks as wit;

/// Why a lock call failed.
///
/// Every variant but [`LockError::Trap`] reaches the guest as the WIT `error` variant of the
/// same name; `Trap` ends the guest instance (a bad resource handle means a host bug or a
/// hostile guest, not an ordinary failure).
#[derive(Debug, thiserror::Error)]
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
    Unavailable(String),
    /// Not the guest's to handle: the instance is stopped.
    #[error(transparent)]
    Trap(wasmtime::Error),
}

impl From<wasmtime::component::ResourceTableError> for LockError {
    fn from(err: wasmtime::component::ResourceTableError) -> Self {
        LockError::Trap(err.into())
    }
}

impl From<StoreError> for LockError {
    fn from(err: StoreError) -> Self {
        LockError::Unavailable(err.to_string())
    }
}

/// A store that failed to answer. Its text is safe to show a guest: it never holds a URL,
/// user name or password.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store '{store}' {reason}")]
pub struct StoreError {
    /// The name the store is opened by.
    pub store: String,
    /// What went wrong, such as "did not answer within 2s".
    pub reason: String,
}

/// The one place where internal errors become what a guest sees.
pub(crate) fn to_wit(err: LockError) -> wasmtime::Result<wit::Error> {
    Ok(match err {
        LockError::NoSuchStore(m) => wit::Error::NoSuchStore(m),
        LockError::InvalidArgument(m) => wit::Error::InvalidArgument(m),
        LockError::AccessDenied(m) => wit::Error::AccessDenied(m),
        LockError::LimitExceeded(m) => wit::Error::LimitExceeded(m),
        LockError::Unavailable(m) => wit::Error::Unavailable(m),
        LockError::Trap(trap) => return Err(trap),
    })
}
