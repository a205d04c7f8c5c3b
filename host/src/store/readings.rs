//! Shared readings of who leads: one reader per election watched on this host, whose
//! readings every [`crate::LeaderWatch`] of the election shares.
//!
//! The reader subscribes to the election's channel, reads who leads, and reads again when
//! the channel announces a change (a new leader, a resignation, a shortened lease) or when
//! the lease it read ends — a leader that renews is re-read once per lease on this host,
//! however many watch it. A watch joins the reading in progress: it waits for the next
//! reading if one is being made, so that what it sees first is never older than its start.
//! The reader ends with the last watch of its election.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::backend::{Holder, ReleaseWatch};
use crate::error::StoreError;
use crate::key::LockKey;

/// What a reader reads an election from: its store's own calls, each bounded by the
/// store's timeout ([`crate::LockStore`] is the one there is).
pub(crate) trait Source: Clone + Send + Sync + 'static {
    /// Subscribes to the announcements of `key`.
    fn subscribe(
        &self,
        key: &LockKey,
    ) -> impl Future<Output = Result<ReleaseWatch, StoreError>> + Send;
    /// Who holds `key` now.
    fn leader(
        &self,
        key: &LockKey,
    ) -> impl Future<Output = Result<Option<Holder>, StoreError>> + Send;
}

/// How soon a reader tries again after the store failed to say who leads.
const RETRY: Duration = Duration::from_millis(500);

/// An instant no wait reaches: a vacant election is read again only when announced.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// What the readers of one store share: the reader of each election watched now.
#[derive(Default)]
pub(crate) struct Readings {
    readers: Mutex<HashMap<LockKey, Weak<watch::Sender<Reading>>>>,
}

/// The state of an election's reading.
#[derive(Clone)]
pub(crate) enum Reading {
    /// A reading is being made: what was read before may be stale.
    Reading,
    /// Who led when it was last read, or why the store could not say.
    Read(Result<Option<Holder>, StoreError>),
}

impl Readings {
    fn readers(&self) -> std::sync::MutexGuard<'_, HashMap<LockKey, Weak<watch::Sender<Reading>>>> {
        self.readers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A subscription to the readings of the election `key` of `store`, starting its
    /// reader if nobody watches the election yet.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        store: &impl Source,
        key: &LockKey,
    ) -> watch::Receiver<Reading> {
        let mut readers = self.readers();
        if let Some(sender) = readers.get(key).and_then(Weak::upgrade) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(Reading::Reading);
        let sender = Arc::new(sender);
        readers.insert(key.clone(), Arc::downgrade(&sender));
        tokio::spawn(self.clone().read(store.clone(), key.clone(), sender));
        receiver
    }

    /// The reader of one election: reads, waits for a reason to read again, until nobody
    /// watches.
    async fn read(
        self: Arc<Self>,
        store: impl Source,
        key: LockKey,
        sender: Arc<watch::Sender<Reading>>,
    ) {
        // Subscribed before the first read, so that no change after it is missed.
        let mut released = loop {
            match store.subscribe(&key).await {
                Ok(released) => break released,
                Err(err) => {
                    sender.send_replace(Reading::Read(Err(err)));
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => {}
                        () = sender.closed() => {}
                    }
                    if self.unwatched(&key, &sender) {
                        return;
                    }
                }
            }
        };
        loop {
            let read = Instant::now();
            let leader = store.leader(&key).await;
            let until = match &leader {
                // A millisecond past the end, by which the store has surely let it go.
                Ok(Some(leader)) => read + leader.lease_left + Duration::from_millis(1),
                Ok(None) => far_future(),
                Err(_) => read + RETRY,
            };
            sender.send_replace(Reading::Read(leader));
            tokio::select! {
                () = released.released() => {}
                () = sleep_until(until) => {}
                () = sender.closed() => {}
            }
            if self.unwatched(&key, &sender) {
                return;
            }
            sender.send_replace(Reading::Reading);
        }
    }

    /// Whether nobody watches the election any more; if so its reader is forgotten, under
    /// the same lock a new watch takes to join, so that none joins a reader that ends.
    fn unwatched(&self, key: &LockKey, sender: &Arc<watch::Sender<Reading>>) -> bool {
        let mut readers = self.readers();
        if sender.receiver_count() > 0 {
            return false;
        }
        if readers
            .get(key)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(sender)))
        {
            readers.remove(key);
        }
        true
    }
}
