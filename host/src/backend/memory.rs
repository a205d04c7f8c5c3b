//! The embedded store: locks in this process's memory, for one host and zero set-up.
//!
//! Same semantics as Redis: leases end by themselves, unlock reports the three statuses,
//! fences grow with every grant, and waiters are woken by releases. Nothing survives the
//! process, and only instances of this host share it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Attempt, Backend, BackendResult, Holder, Listing, ReleaseWatch, Token, UnlockStatus};
use crate::key::{Decoded, Found, KeySpace, LockKey};

/// Locks held in this process.
#[derive(Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last grant of each lock, until it is released or found expired.
    owners: HashMap<LockKey, Owner>,
    /// The channels watched now, by name ([`LockKey::released`]): the permits of one
    /// semaphore share one.
    channels: HashMap<String, watch::Sender<()>>,
    /// The largest fence granted on any key. Fences come from one counter for the whole store,
    /// so they grow even when an owner is forgotten or the wall clock steps back.
    last_fence: u64,
    /// How many owners and channels there were after the last sweep; sweeping when the maps
    /// have doubled keeps the cost per call constant.
    swept_len: usize,
}

struct Owner {
    token: Token,
    expires: Instant,
    fence: u64,
    granted: Instant,
}

impl Owner {
    /// Whether its lease still runs at `now`: an expired lease counts as no owner.
    fn is_live(&self, now: Instant) -> bool {
        self.expires > now
    }

    /// This owner of `lock`, as a listing shows it at `now`.
    fn seen(&self, lock: Decoded, now: Instant) -> Holder {
        let (left, age) = (self.expires - now, Some(now - self.granted));
        Holder::new(lock, self.token.as_str(), self.fence, left, age)
    }
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        // A panic while holding the lock cannot leave an owner half-written (every update is
        // one assignment), so a poisoned mutex is still consistent.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state, Instant::now())
    }
}

impl State {
    /// The live owner of `key`, if any.
    fn live(&self, key: &LockKey, now: Instant) -> Option<&Owner> {
        self.owners.get(key).filter(|owner| owner.is_live(now))
    }

    fn next_fence(&mut self) -> u64 {
        let clock_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.last_fence = (self.last_fence + 1).max(clock_us);
        self.last_fence
    }

    fn sweep_if_grown(&mut self, now: Instant) {
        if self.owners.len() + self.channels.len() >= 2 * self.swept_len.max(64) {
            self.owners.retain(|_, owner| owner.is_live(now));
            self.channels
                .retain(|_, channel| channel.receiver_count() > 0);
            self.swept_len = self.owners.len() + self.channels.len();
        }
    }

    /// Wakes whoever watches `key`'s channel; a channel nobody watches any more goes.
    fn announce(&mut self, key: &LockKey) {
        if let Some(channel) = self.channels.get(key.released()) {
            if channel.receiver_count() == 0 {
                self.channels.remove(key.released());
            } else {
                channel.send_replace(());
            }
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn try_acquire(
        &self,
        key: &LockKey,
        token: &Token,
        lease: Duration,
    ) -> BackendResult<Attempt> {
        Ok(self.with_state(|state, now| {
            state.sweep_if_grown(now);
            if let Some(holder) = state.live(key, now) {
                return Attempt::Busy {
                    expires_in: Some(holder.expires - now),
                };
            }
            let fence = state.next_fence();
            let owner = Owner {
                token: token.clone(),
                expires: now + lease,
                fence,
                granted: now,
            };
            state.owners.insert(key.clone(), owner);
            Attempt::Granted { fence }
        }))
    }

    async fn release(&self, key: &LockKey, token: &Token) -> BackendResult<UnlockStatus> {
        Ok(self.with_state(|state, now| {
            let status = match state.live(key, now) {
                None => UnlockStatus::LockDoesNotExist,
                Some(holder) if holder.token != *token => return UnlockStatus::LockBelongsToOthers,
                Some(_) => UnlockStatus::Success,
            };
            // Ours, or expired: either way no owner any more.
            state.owners.remove(key);
            if status == UnlockStatus::Success {
                state.announce(key);
            }
            status
        }))
    }

    async fn extend(&self, key: &LockKey, token: &Token, lease: Duration) -> BackendResult<bool> {
        Ok(self.with_state(|state, now| {
            let Some(holder) = state.owners.get_mut(key) else {
                return false;
            };
            if holder.token != *token || !holder.is_live(now) {
                return false;
            }
            let shortened = now + lease < holder.expires;
            holder.expires = now + lease;
            if shortened {
                // Waiters sleep until the end they last saw: they learn of the new one.
                state.announce(key);
            }
            true
        }))
    }

    async fn holds(&self, key: &LockKey, token: &Token) -> BackendResult<bool> {
        Ok(self.with_state(|state, now| {
            state
                .live(key, now)
                .is_some_and(|holder| holder.token == *token)
        }))
    }

    async fn holders(&self, space: &KeySpace, app: Option<&str>) -> BackendResult<Listing> {
        Ok(self.with_state(|state, now| {
            let mut listing = Listing::default();
            for (key, owner) in state.owners.iter().filter(|(_, o)| o.is_live(now)) {
                match space.find(key.lock()) {
                    Found::Here(lock) if app.is_none_or(|app| app == lock.app) => {
                        listing.holders.push(owner.seen(lock, now));
                    }
                    Found::Elsewhere(found, lock) if app.is_none_or(|app| app == lock.app) => {
                        listing.held_elsewhere(found);
                    }
                    _ => {}
                }
            }
            listing
        }))
    }

    async fn evict(&self, key: &LockKey) -> BackendResult<bool> {
        Ok(self.with_state(|state, now| {
            let Some(owner) = state.owners.remove(key) else {
                return false;
            };
            state.announce(key);
            owner.is_live(now)
        }))
    }

    async fn watch(&self, key: &LockKey) -> BackendResult<ReleaseWatch> {
        Ok(self.with_state(|state, now| {
            state.sweep_if_grown(now);
            let channel = state
                .channels
                .entry(key.released().to_owned())
                .or_insert_with(|| watch::Sender::new(()));
            ReleaseWatch::new(channel.subscribe(), None)
        }))
    }

    async fn announce(&self, key: &LockKey) -> BackendResult<()> {
        self.with_state(|state, _| state.announce(key));
        Ok(())
    }

    async fn holder(&self, key: &LockKey) -> BackendResult<Option<Holder>> {
        Ok(self.with_state(|state, now| {
            let owner = state.live(key, now)?;
            Some(owner.seen(key.decoded(), now))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> LockKey {
        LockKey::new(None, "app", id)
    }

    fn fence(attempt: Attempt) -> u64 {
        match attempt {
            Attempt::Granted { fence } => fence,
            Attempt::Busy { .. } => panic!("expected a grant"),
        }
    }

    /// The operator's view: live locks only, of the namespace and app asked for; an
    /// eviction frees a lock whoever holds it, wakes its watchers, and says whether it was
    /// held.
    #[tokio::test]
    async fn holders_are_listed_and_evicted() {
        let store = MemoryBackend::new();
        let (a, b) = (Token::random(), Token::random());
        let minute = Duration::from_secs(60);
        let first = fence(store.try_acquire(&key("job"), &a, minute).await.unwrap());
        let other = LockKey::new(None, "other", "job");
        store.try_acquire(&other, &b, minute).await.unwrap();
        let spaced = LockKey::new(Some("blue"), "app", "job");
        store.try_acquire(&spaced, &b, minute).await.unwrap();
        store
            .try_acquire(&key("brief"), &b, Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let listing = store
            .holders(&KeySpace::default(), Some("app"))
            .await
            .unwrap();
        let held = listing.holders;
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(
            (held[0].resource_id.as_str(), held[0].fence),
            ("job", first)
        );
        assert!(held[0].lease_left <= minute && held[0].age.is_some());
        assert_eq!(listing.elsewhere, [(Some("blue".to_owned()), 1)].into());
        assert_eq!(
            store
                .holders(&KeySpace::default(), None)
                .await
                .unwrap()
                .holders
                .len(),
            2
        );
        let blue = KeySpace::Latchkey {
            namespace: Some("blue".into()),
        };
        let blue = store.holders(&blue, None).await.unwrap();
        assert_eq!(blue.holders.len(), 1);
        assert_eq!(blue.elsewhere, [(None, 2)].into());

        let mut watch = store.watch(&key("job")).await.unwrap();
        assert!(store.evict(&key("job")).await.unwrap());
        watch.released().await;
        assert_eq!(
            store.release(&key("job"), &a).await.unwrap(),
            UnlockStatus::LockDoesNotExist
        );
        assert!(!store.evict(&key("job")).await.unwrap());
        let next = fence(store.try_acquire(&key("job"), &b, minute).await.unwrap());
        assert!(next > first);
    }

    /// A lease that has run out is the same as no lock, for every call.
    #[tokio::test]
    async fn expired_lease_is_no_lock() {
        let store = MemoryBackend::new();
        let (a, b) = (Token::random(), Token::random());
        let lease = Duration::from_millis(50);
        fence(store.try_acquire(&key("x"), &a, lease).await.unwrap());
        // Real time, not tokio's: the store reads `Instant::now()`.
        std::thread::sleep(Duration::from_millis(60));
        assert!(!store.extend(&key("x"), &a, lease).await.unwrap());
        assert_eq!(
            store.release(&key("x"), &a).await.unwrap(),
            UnlockStatus::LockDoesNotExist
        );
        fence(store.try_acquire(&key("x"), &b, lease).await.unwrap());
        std::thread::sleep(Duration::from_millis(60));
        fence(store.try_acquire(&key("x"), &a, lease).await.unwrap());
        assert_eq!(
            store.release(&key("x"), &b).await.unwrap(),
            UnlockStatus::LockBelongsToOthers
        );
    }

    /// Released owners are forgotten, yet fences keep growing.
    #[tokio::test]
    async fn sweeping_keeps_fences_growing() {
        let store = MemoryBackend::new();
        let token = Token::random();
        let mut last = 0;
        for i in 0..1000 {
            let k = key(&format!("id-{}", i % 10));
            let f = fence(
                store
                    .try_acquire(&k, &token, Duration::from_secs(1))
                    .await
                    .unwrap(),
            );
            assert!(f > last, "fence {f} after {last}");
            last = f;
            store.release(&k, &token).await.unwrap();
        }
        assert!(store.state.lock().unwrap().owners.is_empty());
    }
}
