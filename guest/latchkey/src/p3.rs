//! latchkey for WASI 0.3 guests (`latchkey:lock@0.3.1`, feature `p3`): the same stores,
//! locks, semaphores and elections, with every call that waits on the store an `async fn`,
//! so that one task waiting for a lock holds up none of the instance's other tasks.
//!
//! ```no_run
//! # async fn job() -> Result<(), latchkey::Error> {
//! use std::time::Duration;
//! use latchkey::p3::Store;
//!
//! let store = Store::open("lockstore")?;
//! if let Some(lock) = store.lock("report", Duration::from_secs(10), Duration::from_secs(5)).await? {
//!     // ... this task's work; the instance's other tasks go on meanwhile ...
//!     lock.unlock().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! A lock belongs to the task that took it — for an HTTP handler, the request. When that
//! task ends, the host releases every lock it still holds, even one whose [`Lock`] the guest
//! kept somewhere: such a lock is inert from then on. Dropping a [`Lock`] unlocks it (the
//! host finishes the release in the background); dropping a pending [`Store::lock`] cancels
//! it, and a grant that raced the cancel is released by the host. The same holds for a
//! [`Permit`] and a [`Leadership`].
//!
//! An election is watched with [`Store::leader_change`]: it completes when another leads
//! than the one you last saw, so a loop over it misses no change.

use std::fmt;
use std::time::Duration;

use crate::{Error, Leader, UnlockStatus, grant_calls, millis};

/// The raw bindings of `latchkey:lock/locks@0.3.1`, for what the wrappers do not cover.
pub mod wit {
    wit_bindgen::generate!({
        path: "wit/v0.3.1",
        world: "latchkey:lock/imports@0.3.1",
    });
    pub use self::latchkey::lock::locks::*;
}

/// A lock store the host configured for this app.
pub struct Store {
    inner: wit::Store,
}

/// A lock this task holds. Dropping it unlocks it.
#[must_use = "a lock dropped at once is unlocked at once: bind it (`let lock = ...`) for as long as you need it"]
pub struct Lock {
    inner: wit::Lock,
}

impl Store {
    /// Opens the store called `name`.
    pub fn open(name: &str) -> Result<Store, Error> {
        Ok(Store {
            inner: wit::open(name)?,
        })
    }

    /// Takes the lock on `resource_id` for `lease` if nobody holds it.
    pub async fn try_lock(
        &self,
        resource_id: &str,
        lease: Duration,
    ) -> Result<Option<Lock>, Error> {
        let lock = self
            .inner
            .try_lock(resource_id.to_owned(), millis(lease))
            .await?;
        Ok(lock.map(|inner| Lock { inner }))
    }

    /// Takes the lock on `resource_id` for `lease`, waiting up to `wait` for its holder to
    /// release it or for the holder's lease to end. Only this task waits.
    pub async fn lock(
        &self,
        resource_id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Lock>, Error> {
        let lock = self
            .inner
            .lock(resource_id.to_owned(), millis(lease), millis(wait))
            .await?;
        Ok(lock.map(|inner| Lock { inner }))
    }
}

impl Store {
    /// Takes a permit of the semaphore `semaphore_id` for `lease` if fewer than `limit` of
    /// its permits are held, waiting up to `wait` for one to be released or to expire.
    pub async fn acquire_permit(
        &self,
        semaphore_id: &str,
        limit: u32,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Permit>, Error> {
        let permit = self
            .inner
            .acquire_permit(semaphore_id.to_owned(), limit, millis(lease), millis(wait))
            .await?;
        Ok(permit.map(|inner| Permit { inner }))
    }

    /// Campaigns to lead the election `election_id`, publishing `value`: leads now if
    /// nobody does, or once the leader resigns or its lease ends within `wait`.
    pub async fn campaign(
        &self,
        election_id: &str,
        value: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Leadership>, Error> {
        let leadership = self
            .inner
            .campaign(
                election_id.to_owned(),
                value.to_owned(),
                millis(lease),
                millis(wait),
            )
            .await?;
        Ok(leadership.map(|inner| Leadership { inner }))
    }

    /// Who leads the election `election_id` now; `None` if nobody does.
    pub async fn leader(&self, election_id: &str) -> Result<Option<Leader>, Error> {
        Ok(self.inner.leader(election_id.to_owned()).await?.map(leader))
    }

    /// Completes when the election is led by another than the leader whose fence is
    /// `seen` (`None`: nobody) — at once if it already is — and says who leads then.
    pub async fn leader_change(
        &self,
        election_id: &str,
        seen: Option<u64>,
    ) -> Result<Option<Leader>, Error> {
        let now = self
            .inner
            .leader_change(election_id.to_owned(), seen)
            .await?;
        Ok(now.map(leader))
    }
}

fn leader(leader: wit::Leader) -> Leader {
    Leader {
        value: leader.value,
        fence: leader.fence,
        lease_left: Duration::from_millis(leader.lease_left_ms.into()),
    }
}

/// A permit of a semaphore this task holds. Dropping it releases it.
#[must_use = "a permit dropped at once is released at once"]
pub struct Permit {
    inner: wit::Permit,
}

impl Permit {
    /// The semaphore this permit is of.
    pub fn semaphore_id(&self) -> String {
        self.inner.semaphore_id()
    }

    grant_calls!("permit", async await);

    /// Completes once the host knows this grant no longer holds: its lease ran out
    /// unrenewed, a renewal found it gone or taken, the store could not be reached
    /// before the lease ended, it was let go, or its task ended. Race it against your
    /// work (`futures::select!`) to stop before harm is done; dropping it costs nothing.
    pub async fn lost(&self) {
        self.inner.lost().await
    }

    /// Releases the permit now and says what it found.
    pub async fn release(self) -> Result<UnlockStatus, Error> {
        Ok(self.inner.release().await?.into())
    }
}

/// The leadership of an election, held by this task. Dropping it resigns.
#[must_use = "a leadership dropped at once is resigned at once"]
pub struct Leadership {
    inner: wit::Leadership,
}

impl Leadership {
    /// The election this leadership is of.
    pub fn election_id(&self) -> String {
        self.inner.election_id()
    }

    grant_calls!("election", async await);

    /// Completes once the host knows this grant no longer holds: its lease ran out
    /// unrenewed, a renewal found it gone or taken, the store could not be reached
    /// before the lease ended, it was let go, or its task ended. Race it against your
    /// work (`futures::select!`) to stop before harm is done; dropping it costs nothing.
    pub async fn lost(&self) {
        self.inner.lost().await
    }

    /// Steps down now, so that a waiting campaign wins at once.
    pub async fn resign(self) -> Result<UnlockStatus, Error> {
        Ok(self.inner.resign().await?.into())
    }
}

impl Lock {
    /// The resource id this lock is on.
    pub fn resource_id(&self) -> String {
        self.inner.resource_id()
    }

    grant_calls!("resource", async await);

    /// Completes once the host knows this grant no longer holds: its lease ran out
    /// unrenewed, a renewal found it gone or taken, the store could not be reached
    /// before the lease ended, it was let go, or its task ended. Race it against your
    /// work (`futures::select!`) to stop before harm is done; dropping it costs nothing.
    pub async fn lost(&self) {
        self.inner.lost().await
    }

    /// The raw binding of this lock, for what the wrappers do not cover.
    pub fn as_raw(&self) -> &wit::Lock {
        &self.inner
    }

    /// Releases the lock now and says what it found.
    pub async fn unlock(self) -> Result<UnlockStatus, Error> {
        Ok(self.inner.unlock().await?.into())
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
