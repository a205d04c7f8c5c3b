//! latchkey for WASI 0.2 guests (`latchkey:lock@0.2.1`): every call answers before it
//! returns, and the waits a guest polls — a grant's loss, a change of leader — are `wasi:io`
//! pollables, polled beside the guest's own timers and streams.
//!
//! ```no_run
//! use std::time::Duration;
//! use latchkey::p2::Store;
//!
//! let store = Store::open("lockstore")?;
//! if let Some(lock) = store.lock("report", Duration::from_secs(10), Duration::from_secs(5))? {
//!     // ... work, fenced with `lock.fence()` ...
//!     lock.unlock()?;
//! }
//! # Ok::<(), latchkey::Error>(())
//! ```
//!
//! A lock belongs to the instance that took it: when the instance ends, the host releases
//! every lock it still holds.

use std::cell::OnceCell;
use std::fmt;
use std::time::Duration;

use crate::{Error, Leader, UnlockStatus, grant_calls, millis};

/// The raw bindings of `latchkey:lock/locks`, for what the wrappers do not cover. Its
/// pollable is `wasip2`'s, so it polls together with the guest's own timers and streams.
pub mod wit {
    wit_bindgen::generate!({
        path: "wit",
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

crate::from_wit!(wit);
