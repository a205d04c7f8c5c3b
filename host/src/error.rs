//! The errors of the lock host, in its own words: what a call fails with ([`LockError`]),
//! what a store answered ([`StoreError`], [`BackendError`]) and why a store cannot be opened
//! ([`OpenError`]). The lowest module but one: it takes the URL forms it lists from the
//! store's settings, a leaf; each WIT version maps these errors onto its own `error` in
//! its adapter (`p2`, `p3`).

use std::borrow::Cow;

use crate::store::settings::{or_list, redis_url_forms};

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

/// A failure of the store itself: unreachable, too slow, refusing the host, or answering in
/// a way the configuration does not accept.
///
/// Its text reaches guests (after `store 'NAME' `), so a backend builds it from its own
/// words, never from a client library's error text, which can hold an address or a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    kind: BackendErrorKind,
    message: Cow<'static, str>,
}

/// What kind of failure a [`BackendError`] is.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendErrorKind {
    /// The store could not be reached, or the connection was lost.
    Unreachable,
    /// The store did not answer in time.
    Timeout,
    /// The store refused the host's credentials.
    CredentialsRefused,
    /// The store's access control refused the host's user a command, key or channel
    /// latchkey needs.
    NotPermitted,
    /// The store is not deployed as the configuration accepts: a replica, or replicas
    /// that grants do not wait for.
    Topology,
    /// Too few replicas or Redlock masters confirmed in time.
    TooFewConfirmations,
    /// Anything else the store answered with.
    Failed,
}

impl BackendError {
    /// A failure of `kind`, explained by `message` (shown to guests: no addresses or
    /// credentials).
    pub fn new(kind: BackendErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        BackendError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }
}

/// Why [`open`](crate::open()) refused a store: it cannot be set up as configured. Found
/// before any connection is made; URLs in it are redacted.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The URL is of no kind latchkey knows.
    #[error(
        "{url} is neither `memory` nor a {} URL",
        or_list(&redis_url_forms())
    )]
    UnknownScheme {
        /// The URL, redacted.
        url: String,
    },
    /// The URL's query sets an option no URL form takes: a mistake, never ignored.
    #[error("{url}: no store URL takes the option {option}")]
    UnknownOption {
        /// The URL, redacted.
        url: String,
        /// The option's name, quoted (or `without a value`, not quoted: it may be a secret).
        option: String,
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
    /// A key layout of another name than `latchkey` or `dapr`.
    #[error("{url}: key-layout {layout:?} is not one of \"latchkey\", \"dapr\"")]
    UnknownKeyLayout {
        /// The URL, redacted.
        url: String,
        /// The layout asked for.
        layout: String,
    },
    /// daprd's key layout on a store that cannot keep it safely.
    #[error("{url}: key-layout \"dapr\" {reason}")]
    DaprsLayoutUnsupported {
        /// The URL, redacted.
        url: String,
        /// Why not.
        reason: &'static str,
    },
    /// A namespace in daprd's key layout, which has none.
    #[error("daprd's key layout has no namespaces: leave out the namespace or key-layout")]
    NamespaceInDaprsLayout,
}
