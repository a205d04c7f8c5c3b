//! # latchkey: distributed locks for Rust guests
//!
//! Take a lock on a named resource, shared with every other instance of your app, from a
//! WebAssembly component. The host decides where the locks live (memory, Redis) and keeps
//! the credentials; the guest only names a store and a resource.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let store = latchkey::Store::open("lockstore")?;
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
//! [`Store::acquire_permit`] gives a [`Permit`] while fewer than `limit` are held — and
//! leader election — [`Store::campaign`] gives a [`Leadership`], [`Store::leader`] says who
//! leads, [`Store::leader_changes`] wakes an observer when that changes.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let store = latchkey::Store::open("lockstore")?;
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
//! Durations are sent in whole milliseconds: a lease under 10 ms, or over the host's
//! maximum, is refused as [`Error::InvalidArgument`].

#[cfg(feature = "p3")]
pub mod p3;

use std::cell::OnceCell;
use std::fmt;
use std::time::Duration;

/// The raw bindings of `latchkey:lock/locks`, for what the wrappers do not cover. Its
/// pollable is `wasip2`'s, so it polls together with the guest's own timers and streams.
pub mod wit {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "latchkey:lock/imports",
        with: {
            "wasi:io/poll@0.2.12": wasip2::io::poll,
        },
    });
    pub use self::latchkey::lock::locks::*;
}

pub use wasip2::io::poll::Pollable;

/// A lock store the host configured for this app.
pub struct Store {
    inner: wit::Store,
}

/// A lock this instance holds. Dropping it unlocks it.
#[must_use = "a lock dropped at once is unlocked at once: bind it (`let lock = ...`) for as long as you need it"]
pub struct Lock {
    inner: wit::Lock,
    /// Made on first use: see [`Lock::lost`].
    lost: OnceCell<Pollable>,
}

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

impl Store {
    /// Opens the store called `name`.
    pub fn open(name: &str) -> Result<Store, Error> {
        Ok(Store {
            inner: wit::open(name)?,
        })
    }

    /// Takes the lock on `resource_id` for `lease` if nobody holds it.
    #[must_use = "the lock is released as soon as it is dropped"]
    pub fn try_lock(&self, resource_id: &str, lease: Duration) -> Result<Option<Lock>, Error> {
        let lock = self.inner.try_lock(resource_id, millis(lease))?;
        Ok(lock.map(Lock::new))
    }

    /// Takes the lock on `resource_id` for `lease`, waiting up to `wait` for its holder to
    /// release it or for the holder's lease to end.
    #[must_use = "the lock is released as soon as it is dropped"]
    pub fn lock(
        &self,
        resource_id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Lock>, Error> {
        let lock = self.inner.lock(resource_id, millis(lease), millis(wait))?;
        Ok(lock.map(Lock::new))
    }
}

impl Store {
    /// Takes a permit of the semaphore `semaphore_id` for `lease` if fewer than `limit` of
    /// its permits are held, waiting up to `wait` (zero: not at all) for one to be
    /// released or to expire. Never more than `limit` permits hold at once, among callers
    /// that agree on `limit`.
    #[must_use = "the permit is released as soon as it is dropped"]
    pub fn acquire_permit(
        &self,
        semaphore_id: &str,
        limit: u32,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Permit>, Error> {
        let permit = self
            .inner
            .acquire_permit(semaphore_id, limit, millis(lease), millis(wait))?;
        Ok(permit.map(|inner| Permit {
            inner,
            lost: OnceCell::new(),
        }))
    }

    /// Campaigns to lead the election `election_id`, publishing `value` to whoever asks
    /// [`Store::leader`]: leads now if nobody does, or once the leader resigns or its lease
    /// ends within `wait` (zero: not at all).
    #[must_use = "the leadership is resigned as soon as it is dropped"]
    pub fn campaign(
        &self,
        election_id: &str,
        value: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Leadership>, Error> {
        let leadership = self
            .inner
            .campaign(election_id, value, millis(lease), millis(wait))?;
        Ok(leadership.map(|inner| Leadership {
            inner,
            lost: OnceCell::new(),
        }))
    }

    /// Who leads the election `election_id` now; `None` if nobody does.
    pub fn leader(&self, election_id: &str) -> Result<Option<Leader>, Error> {
        Ok(self.inner.leader(election_id)?.map(|leader| Leader {
            value: leader.value,
            fence: leader.fence,
            lease_left: Duration::from_millis(leader.lease_left_ms.into()),
        }))
    }

    /// A pollable that becomes ready when the election has another leader than now (a new
    /// one, or none), or when the store could not be asked. Read [`Store::leader`] after
    /// it is ready, and take a new one to watch on.
    pub fn leader_changes(&self, election_id: &str) -> Result<Pollable, Error> {
        Ok(self.inner.subscribe_leader_change(election_id)?)
    }
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

/// The calls a lock, a permit and a leadership share, each on its own raw binding (`what`:
/// "lock", "permit", "leadership").
macro_rules! grant_calls {
    ($what:literal) => {
        /// The fencing token: greater than that of every earlier grant of this
        #[doc = concat!($what, ".")]
        /// Hand it to the resource you protect, so that it can refuse a holder whose lease
        /// ended.
        pub fn fence(&self) -> u64 {
            self.inner.fence()
        }

        /// Sets the lease to end `lease` from now. `false` if it had already ended: stop
        /// using the resource, someone else may hold it.
        pub fn extend(&self, lease: Duration) -> Result<bool, Error> {
            Ok(self.inner.extend(millis(lease))?)
        }

        /// From now until this is let go or dropped, or the instance ends, the host renews
        /// its lease before it runs out, to the length last asked for (by the grant or the
        /// last `extend`). So a short lease — which frees it soon should this host die —
        /// lasts through work of any length. The host stops at a cap its operator sets (an
        /// hour by default); the lease then ends as usual.
        ///
        /// A lease kept alive can still be lost (the store lost it, or this host was paused
        /// past it): watch `lost`, and hand `fence` to what you write.
        pub fn keep_alive(&self) -> Result<(), Error> {
            Ok(self.inner.keep_alive()?)
        }

        /// Asks the store whether this grant still holds (one round trip).
        pub fn held(&self) -> Result<bool, Error> {
            Ok(self.inner.held()?)
        }

        /// A pollable that is ready once the host knows this grant no longer holds: its
        /// lease ran out unrenewed, a renewal found it gone or taken, or the store could not
        /// be reached before the lease ended. Poll it beside your own timers and streams
        /// (`wasip2::io::poll::poll`) to stop before harm is done.
        pub fn lost(&self) -> &Pollable {
            self.lost.get_or_init(|| self.inner.subscribe_lost())
        }

        /// Whether the grant is known to be lost, now, without waiting.
        pub fn is_lost(&self) -> bool {
            self.lost().ready()
        }
    };
}

/// A permit of a semaphore this instance holds. Dropping it releases it.
#[must_use = "a permit dropped at once is released at once"]
pub struct Permit {
    inner: wit::Permit,
    lost: OnceCell<Pollable>,
}

impl Permit {
    /// The semaphore this permit is of.
    pub fn semaphore_id(&self) -> String {
        self.inner.semaphore_id()
    }

    grant_calls!("permit");

    /// Releases the permit now and says what it found.
    pub fn release(self) -> Result<UnlockStatus, Error> {
        Ok(self.inner.release()?.into())
    }
}

/// The leadership of an election, held by this instance. Dropping it resigns.
#[must_use = "a leadership dropped at once is resigned at once"]
pub struct Leadership {
    inner: wit::Leadership,
    lost: OnceCell<Pollable>,
}

impl Leadership {
    /// The election this leadership is of.
    pub fn election_id(&self) -> String {
        self.inner.election_id()
    }

    grant_calls!("election");

    /// Steps down now, so that another campaign wins at once.
    pub fn resign(self) -> Result<UnlockStatus, Error> {
        Ok(self.inner.resign()?.into())
    }
}

impl Lock {
    fn new(inner: wit::Lock) -> Self {
        Lock {
            inner,
            lost: OnceCell::new(),
        }
    }

    /// The resource id this lock is on.
    pub fn resource_id(&self) -> String {
        self.inner.resource_id()
    }

    grant_calls!("resource");

    /// The raw binding of this lock, for what the wrappers do not cover.
    pub fn as_raw(&self) -> &wit::Lock {
        &self.inner
    }

    /// Releases the lock now and says what it found.
    pub fn unlock(self) -> Result<UnlockStatus, Error> {
        Ok(self.inner.unlock()?.into())
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("resource_id", &self.resource_id())
            .field("fence", &self.fence())
            .finish()
    }
}

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

from_wit!(wit);

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
