//! The held-locks budget of a Dapr endpoint, the counterpart of an instance's.
//!
//! A guest's locks are counted per instance, which the host made; a Dapr client has no
//! instance, only the owner it names. So the endpoint counts the locks it granted and that
//! are still within their lease, per owner (at most the app's `max-held`, as an instance) and
//! in all ([`MAX_HELD_BY_ENDPOINT`]): an owner's name costs a client nothing, so only the
//! second bound keeps the endpoint's bookkeeping, and the store, from growing without bound.
//!
//! A lock leaves the count when its owner unlocks it (or finds it gone) through the endpoint,
//! or when its lease ends. One freed another way — by the operator, or by daprd in daprd's
//! layout — is counted until its lease ends: the budget errs towards refusing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most locks one Dapr endpoint holds at once, over every owner and store.
pub const MAX_HELD_BY_ENDPOINT: usize = 16_384;

/// The locks an endpoint granted, per owner, with the end of each one's lease.
pub(super) struct Budget {
    per_owner: usize,
    total: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    by_owner: HashMap<Box<str>, Owned>,
    /// Every entry of every owner, and every reservation.
    count: usize,
}

#[derive(Default)]
struct Owned {
    /// (store, resource id) → the end of the lease.
    locks: HashMap<(Box<str>, Box<str>), Instant>,
    /// TryLocks begun and not yet answered.
    pending: usize,
}

impl Owned {
    fn len(&self) -> usize {
        self.locks.len() + self.pending
    }

    /// Forgets the locks whose lease has ended; how many.
    fn prune(&mut self, now: Instant) -> usize {
        let before = self.locks.len();
        self.locks.retain(|_, ends| *ends > now);
        before - self.locks.len()
    }
}

impl Held {
    fn prune_all(&mut self, now: Instant) {
        let mut pruned = 0;
        self.by_owner.retain(|_, owned| {
            pruned += owned.prune(now);
            owned.len() > 0
        });
        self.count -= pruned;
    }
}

/// A place in the budget for one TryLock, given back when dropped unless the lock was
/// granted ([`Reservation::granted`]).
pub(super) struct Reservation<'a> {
    budget: &'a Budget,
    owner: &'a str,
    spent: bool,
}

impl Budget {
    /// A budget of `per_owner` locks per owner and `total` in all.
    pub(super) fn new(per_owner: usize, total: usize) -> Self {
        Budget {
            per_owner,
            total,
            held: Mutex::default(),
        }
    }

    /// A place for one more lock of `owner`, or why there is none.
    pub(super) fn reserve<'a>(&'a self, owner: &'a str) -> Result<Reservation<'a>, String> {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap();
        if let Some(owned) = held.by_owner.get_mut(owner) {
            let pruned = owned.prune(now);
            held.count -= pruned;
        }
        if held.count >= self.total {
            held.prune_all(now);
        }
        if held.count >= self.total {
            return Err(format!(
                "this endpoint holds {} locks, the most it may hold at once",
                self.total
            ));
        }
        let owned = held.by_owner.entry(owner.into()).or_default();
        if owned.len() >= self.per_owner {
            return Err(format!(
                "the owner holds {} locks, the most one owner may hold at once",
                self.per_owner
            ));
        }
        owned.pending += 1;
        held.count += 1;
        Ok(Reservation {
            budget: self,
            owner,
            spent: false,
        })
    }

    /// Forgets `owner`'s lock on `resource_id` in `store`: it was unlocked, or is gone.
    pub(super) fn forget(&self, owner: &str, store: &str, resource_id: &str) {
        let mut held = self.held.lock().unwrap();
        let Some(owned) = held.by_owner.get_mut(owner) else {
            return;
        };
        let found = owned.locks.remove(&(store.into(), resource_id.into()));
        let empty = owned.len() == 0;
        if empty {
            held.by_owner.remove(owner);
        }
        if found.is_some() {
            held.count -= 1;
        }
    }

    /// How many locks are counted, leases ended or not.
    #[cfg(test)]
    fn counted(&self) -> usize {
        self.held.lock().unwrap().count
    }
}

impl Reservation<'_> {
    /// The lock on `resource_id` in `store` was granted, for `lease` from `asked`: it is
    /// counted until then.
    pub(super) fn granted(
        mut self,
        store: &str,
        resource_id: &str,
        asked: Instant,
        lease: Duration,
    ) {
        self.spent = true;
        let mut held = self.budget.held.lock().unwrap();
        let owned = held.by_owner.entry(self.owner.into()).or_default();
        owned.pending -= 1;
        let replaced = owned
            .locks
            .insert((store.into(), resource_id.into()), asked + lease);
        if replaced.is_some() {
            // The owner's earlier lock on it ended without an unlock, and was taken again.
            held.count -= 1;
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.spent {
            return;
        }
        let mut held = self.budget.held.lock().unwrap();
        let Some(owned) = held.by_owner.get_mut(self.owner) else {
            return;
        };
        owned.pending -= 1;
        if owned.len() == 0 {
            held.by_owner.remove(self.owner);
        }
        held.count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owner gets `per_owner` places, a refused or cancelled TryLock gives its place
    /// back, an unlock frees one, and the endpoint's total binds across owners.
    #[test]
    fn places_are_given_back_and_both_bounds_bind() {
        let budget = Budget::new(2, 3);
        let minute = Duration::from_secs(60);
        budget
            .reserve("a")
            .unwrap()
            .granted("s", "x", Instant::now(), minute);
        drop(budget.reserve("a").unwrap()); // busy, or its client went away
        budget
            .reserve("a")
            .unwrap()
            .granted("s", "y", Instant::now(), minute);
        assert!(budget.reserve("a").err().unwrap().contains("one owner"));
        budget.forget("a", "s", "x");
        budget
            .reserve("a")
            .unwrap()
            .granted("s", "x", Instant::now(), minute);

        budget
            .reserve("b")
            .unwrap()
            .granted("s", "x", Instant::now(), minute);
        assert!(budget.reserve("c").err().unwrap().contains("this endpoint"));
        assert_eq!(budget.counted(), 3);
    }

    /// A lock whose lease ended is no longer counted, for its owner or in all.
    #[test]
    fn a_lease_that_ended_is_not_counted() {
        let budget = Budget::new(1, 1);
        budget
            .reserve("a")
            .unwrap()
            .granted("s", "x", Instant::now(), Duration::ZERO);
        budget
            .reserve("b")
            .unwrap()
            .granted("s", "x", Instant::now(), Duration::from_secs(60));
        assert_eq!(budget.counted(), 1);
        assert!(budget.reserve("a").is_err());
    }
}
