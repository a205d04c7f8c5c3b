//! # latchkey: distributed locks for Rust guests
//!
//! Take a lock on a named resource, shared with every other instance of your app, from a
//! WebAssembly component. The host decides where the locks live (memory, Redis) and keeps
//! the credentials; the guest only names a store and a resource.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let store = latchkey::p2::Store::open("lockstore")?;
//! match store.try_lock("my_file_name", Duration::from_secs(60))? {
//!     Some(lock) => {
//!         // Exclusive until the lease ends: hand `lock.fence()` to the resource so it can
//!         // refuse a holder whose lease has run out.
//!         println!("Success, fence {}", lock.fence());
//!     } // dropped here: unlocked
//!     None => println!("Failed to lock my_file_name."),
//! }
//! # Ok::<(), latchkey::Error>(())
//! ```
//!
//! Beyond the mutex (`latchkey:lock@0.2.1`): a leased counting semaphore —
//! [`Store::acquire_permit`](p2::Store::acquire_permit) gives a [`Permit`](p2::Permit) while
//! fewer than `limit` are held — and leader election —
//! [`Store::campaign`](p2::Store::campaign) gives a [`Leadership`](p2::Leadership),
//! [`Store::leader`](p2::Store::leader) says who leads,
//! [`Store::leader_changes`](p2::Store::leader_changes) wakes an observer when that changes.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let store = latchkey::p2::Store::open("lockstore")?;
//! let lease = Duration::from_secs(2);
//! // At most 3 instances of the app inside at once.
//! if let Some(permit) = store.acquire_permit("db-pool", 3, lease, Duration::from_secs(30))? {
//!     permit.keep_alive()?;
//!     // ... work ...
//!     permit.release()?;
//! }
//! // One leader among the replicas; the others learn who.
//! match store.campaign("scheduler", "10.0.0.7:8080", lease, Duration::ZERO)? {
//!     Some(leadership) => leadership.keep_alive()?, // lead while this lives
//!     None => println!("led by {:?}", store.leader("scheduler")?.map(|l| l.value)),
//! }
//! # Ok::<(), latchkey::Error>(())
//! ```
//!
//! # Layout
//!
//! - [`p2`]: the API of WASI 0.2 guests (`latchkey:lock@0.2.1`): calls that answer before
//!   they return, waits as `wasi:io` pollables.
//! - [`p3`] (feature `p3`): the API of WASI 0.3 guests (`latchkey:lock@0.3.1`): every call
//!   that waits an `async fn`, locks owned by the task that took them.
//! - Here, what both share: [`Error`], [`UnlockStatus`], [`Leader`], and the calls every
//!   grant has (`grant_calls!`).
//!
//! Durations are sent in whole milliseconds: a lease under 10 ms, or over the host's
//! maximum, is refused as [`Error::InvalidArgument`].

pub mod p2;
#[cfg(feature = "p3")]
pub mod p3;

use std::fmt;
use std::time::Duration;

/// What an unlock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockStatus {
    /// The lock was still ours; now it is free.
    Success,
    /// The lease had ended and nobody holds the lock.
    LockDoesNotExist,
    /// The lease had ended and someone else holds the lock now.
    LockBelongsToOthers,
}

/// Why a lock call failed. A lock held by someone else is not an error: it is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No store of this name is configured for this app.
    NoSuchStore(String),
    /// An argument is empty, too long or out of range.
    InvalidArgument(String),
    /// The host's policy does not allow it.
    AccessDenied(String),
    /// This instance holds as many locks as the host allows.
    LimitExceeded(String),
    /// The store could not be reached or did not answer in time.
    Unavailable(String),
}

/// Who leads an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// What the leader published when it campaigned.
    pub value: String,
    /// Its leadership's fence: greater than every earlier leader's.
    pub fence: u64,
    /// How long its lease has left unless renewed.
    pub lease_left: Duration,
}

/// The calls a lock, a permit and a leadership share, on the grant's raw binding
/// (`self.inner`) of either API: `$what` names what a grant is of; `async await` makes the
/// calls that wait on the store `async fn`s (WASI 0.3). The lost signal is each API's own —
/// a pollable in 0.2, a future in 0.3.
macro_rules! grant_calls {
    ($what:literal $(, $async:tt $await:tt)?) => {
        /// The fencing token: greater than that of every earlier grant of this
        #[doc = concat!($what, ".")]
        /// Hand it to the resource you protect, so that it can refuse a holder whose lease
        /// ended.
        pub fn fence(&self) -> u64 {
            self.inner.fence()
        }

        /// Sets the lease to end `lease` from now. `false` if it had already ended: stop
        /// using the resource, someone else may hold it.
        pub $($async)? fn extend(&self, lease: Duration) -> Result<bool, Error> {
            Ok(self.inner.extend($crate::millis(lease))$(.$await)??)
        }

        /// From now until this is let go or dropped, or its owner ends (the instance; in
        /// WASI 0.3 the task that took it), the host renews its lease before it runs out,
        /// to the length last asked for (by the grant or the last `extend`). So a short
        /// lease — which frees it soon should this host die — lasts through work of any
        /// length. The host stops at a cap its operator sets (an hour by default); the
        /// lease then ends as usual.
        ///
        /// A lease kept alive can still be lost (the store lost it, or this host was paused
        /// past it): watch `lost`, and hand `fence` to what you write.
        pub fn keep_alive(&self) -> Result<(), Error> {
            Ok(self.inner.keep_alive()?)
        }

        /// Asks the store whether this grant still holds (one round trip).
        pub $($async)? fn held(&self) -> Result<bool, Error> {
            Ok(self.inner.held()$(.$await)??)
        }
    };
}
pub(crate) use grant_calls;

/// Saturates rather than wraps: an over-long duration is then refused by the host.
fn millis(d: Duration) -> u32 {
    d.as_millis().try_into().unwrap_or(u32::MAX)
}

/// The SDK's `Error` and `UnlockStatus` from those of the bindings at `$wit`: each version
/// of the interface generates its own types for the same WIT.
macro_rules! from_wit {
    ($wit:path) => {
        use $wit as bindings;

        impl From<bindings::Error> for $crate::Error {
            fn from(err: bindings::Error) -> Self {
                match err {
                    bindings::Error::NoSuchStore(m) => $crate::Error::NoSuchStore(m),
                    bindings::Error::InvalidArgument(m) => $crate::Error::InvalidArgument(m),
                    bindings::Error::AccessDenied(m) => $crate::Error::AccessDenied(m),
                    bindings::Error::LimitExceeded(m) => $crate::Error::LimitExceeded(m),
                    bindings::Error::Unavailable(m) => $crate::Error::Unavailable(m),
                }
            }
        }

        impl From<bindings::UnlockStatus> for $crate::UnlockStatus {
            fn from(status: bindings::UnlockStatus) -> Self {
                match status {
                    bindings::UnlockStatus::Success => $crate::UnlockStatus::Success,
                    bindings::UnlockStatus::LockDoesNotExist => {
                        $crate::UnlockStatus::LockDoesNotExist
                    }
                    bindings::UnlockStatus::LockBelongsToOthers => {
                        $crate::UnlockStatus::LockBelongsToOthers
                    }
                }
            }
        }
    };
}
pub(crate) use from_wit;

impl Error {
    /// The WIT name of the error, such as `invalid-argument`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NoSuchStore(_) => "no-such-store",
            Error::InvalidArgument(_) => "invalid-argument",
            Error::AccessDenied(_) => "access-denied",
            Error::LimitExceeded(_) => "limit-exceeded",
            Error::Unavailable(_) => "unavailable",
        }
    }

    /// The host's explanation.
    pub fn message(&self) -> &str {
        match self {
            Error::NoSuchStore(m)
            | Error::InvalidArgument(m)
            | Error::AccessDenied(m)
            | Error::LimitExceeded(m)
            | Error::Unavailable(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl std::error::Error for Error {}

impl fmt::Display for UnlockStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnlockStatus::Success => "success",
            UnlockStatus::LockDoesNotExist => "lock-does-not-exist",
            UnlockStatus::LockBelongsToOthers => "lock-belongs-to-others",
        })
    }
}
