//! Keep-alive: one renewal loop per store renews the leases of every grant kept alive.
//!
//! A grant is due for renewal when a third of its lease is left: late enough that a lease
//! is renewed about once per two thirds of its length, early enough that a renewal that
//! has to wait out a slow store (up to the store's timeout) or a few missed ticks still
//! lands before the end. All grants due within a few milliseconds of each other go to the
//! store as one [`Backend::renew`] call — one request (a script over many keys) on Redis.
//!
//! A renewal that finds the lock gone or taken marks the grant lost; a store that does not
//! answer is asked again shortly, until the lease's end by the host's clock, when the grant
//! is lost too. Renewal stops at the operator's cap, when the grant is released, or when
//! its instance ends; the lease then ends as usual. The loop itself ends when no grant is
//! left to keep, or when its store is dropped.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::grant::Grant;
use crate::backend::{Backend, Renewal, Token};

/// How far ahead of its due time a renewal may be made, to go in one batch with others
/// (and never more than a tenth of its lease).
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// How soon a renewal the store did not answer is tried again (never past the lease's end).
const RETRY: Duration = Duration::from_millis(100);

/// The grants a store keeps alive, and its renewal loop. Owned by the store: dropping the
/// last clone of the store stops the loop (a drop guard, as mini-redis' `DbDropGuard`).
pub(crate) struct KeepAlive {
    shared: Arc<Shared>,
}

/// What the store and its renewal loop share.
struct Shared {
    backend: Arc<dyn Backend>,
    timeout: Duration,
    registry: Mutex<Registry>,
    /// Wakes the loop when a grant is added, which may be due before what it sleeps for.
    added: Notify,
    /// Cancelled when the store is dropped: the loop ends.
    dropped: CancellationToken,
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.shared.dropped.cancel();
    }
}

#[derive(Default)]
struct Registry {
    grants: HashMap<Token, Kept>,
    /// Every kept grant by when it is due: the loop sleeps until the first.
    due: BTreeSet<(Instant, Token)>,
    running: bool,
}

struct Kept {
    grant: Arc<Grant>,
    due: Instant,
    /// When renewal stops: the operator's cap on how long a lock is kept alive.
    until: Instant,
}

/// When a lease that ends at `ends` is due for renewal: when a third of it is left.
fn due(ends: Instant, length: Duration) -> Instant {
    ends - length / 3
}

impl KeepAlive {
    /// The keep-alive of a store on `backend` whose calls take at most `timeout`. Its loop
    /// starts with the first grant kept alive.
    pub(crate) fn new(backend: Arc<dyn Backend>, timeout: Duration) -> Arc<Self> {
        Arc::new(KeepAlive {
            shared: Arc::new(Shared {
                backend,
                timeout,
                registry: Mutex::default(),
                added: Notify::new(),
                dropped: CancellationToken::new(),
            }),
        })
    }

    /// Renews `grant` from now on, for at most `cap`; starts the loop if it is not running.
    /// A grant already kept alive keeps its schedule, with the cap counted from now.
    pub(crate) fn keep(&self, grant: Arc<Grant>, cap: Duration) {
        let shared = &self.shared;
        let lease = grant.lease();
        // However long the cap, renewal ends in a thousand years at the latest.
        let until = Instant::now()
            .checked_add(cap)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1000 * 365 * 24 * 3600));
        let kept = Kept {
            due: due(lease.ends, lease.length),
            until,
            grant,
        };
        let start = {
            let mut registry = shared.registry();
            let token = kept.grant.token.clone();
            if let Some(already) = registry.grants.get_mut(&token) {
                already.until = until;
                return;
            }
            registry.due.insert((kept.due, token.clone()));
            registry.grants.insert(token, kept);
            !std::mem::replace(&mut registry.running, true)
        };
        if start {
            tokio::spawn(shared.clone().renew_until_empty());
        } else {
            shared.added.notify_one();
        }
    }

    /// The grant's lease was set anew (an `extend`): if it is kept alive, it is renewed by
    /// its new length and end from now on.
    pub(crate) fn lease_changed(&self, grant: &Grant) {
        let shared = &self.shared;
        {
            let mut registry = shared.registry();
            let token = grant.token.clone();
            let Some(kept) = registry.grants.get_mut(&token) else {
                return;
            };
            let old = std::mem::replace(&mut kept.due, {
                let lease = grant.lease();
                due(lease.ends, lease.length)
            });
            let new = kept.due;
            registry.due.remove(&(old, token.clone()));
            registry.due.insert((new, token));
        }
        // It may be due before what the loop sleeps for.
        shared.added.notify_one();
    }

    /// Stops renewing the grant of `token`, if it was kept alive.
    pub(crate) fn stop_renewing(&self, token: &Token) {
        let mut registry = self.shared.registry();
        if let Some(kept) = registry.grants.remove(token) {
            registry.due.remove(&(kept.due, token.clone()));
        }
    }
}

impl Shared {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The renewal loop: sleeps until the first grant is due, renews every grant due by
    /// then in one call, and ends when no grant is left to keep or the store is dropped.
    async fn renew_until_empty(self: Arc<Self>) {
        loop {
            let next = {
                let mut registry = self.registry();
                match registry.due.first() {
                    Some(&(due, _)) => due,
                    None => {
                        registry.running = false;
                        return;
                    }
                }
            };
            // The store's end first: once it is dropped, nothing more is sent.
            tokio::select! {
                biased;
                () = self.dropped.cancelled() => return,
                () = sleep_until(next) => {}
                () = self.added.notified() => continue,
            }
            let batch = self.take_due();
            if !batch.is_empty() {
                tokio::select! {
                    biased;
                    () = self.dropped.cancelled() => return,
                    () = self.renew(batch) => {}
                }
            }
        }
    }

    /// Takes every grant due now or within its batching window out of the schedule. Those
    /// whose lease already ended are lost, and those past their cap are let go.
    fn take_due(&self) -> Vec<Arc<Grant>> {
        let now = Instant::now();
        let mut registry = self.registry();
        let candidates: Vec<(Instant, Token)> = registry
            .due
            .iter()
            .take_while(|(due, _)| *due <= now + BATCH_WINDOW)
            .cloned()
            .collect();
        let mut batch = Vec::new();
        for (due, token) in candidates {
            let kept = &registry.grants[&token];
            let lease = kept.grant.lease();
            if due > now + (lease.length / 10).min(BATCH_WINDOW) {
                continue;
            }
            registry.due.remove(&(due, token.clone()));
            let kept = registry
                .grants
                .remove(&token)
                .expect("a scheduled grant is kept");
            if lease.is_lost() {
                kept.grant.mark_gone();
            } else if now < kept.until {
                batch.push(kept.grant.clone());
                registry.grants.insert(token, kept);
            }
        }
        batch
    }

    /// Renews `batch` in one call, and schedules each grant by what the store said.
    async fn renew(&self, batch: Vec<Arc<Grant>>) {
        let leases: Vec<_> = batch.iter().map(|grant| grant.lease()).collect();
        let renewals: Vec<Renewal<'_>> = batch
            .iter()
            .zip(&leases)
            .map(|(grant, lease)| Renewal {
                key: &grant.key,
                token: &grant.token,
                lease: lease.length,
            })
            .collect();
        let asked = Instant::now();
        let answers = match timeout(self.timeout, self.backend.renew(&renewals)).await {
            Ok(Ok(answers)) => Some(answers),
            Ok(Err(err)) => {
                tracing::debug!(%err, grants = batch.len(), "renewals failed; trying again");
                None
            }
            Err(_) => {
                tracing::debug!(grants = batch.len(), "renewals timed out; trying again");
                None
            }
        };
        let mut registry = self.registry();
        for (i, (grant, lease)) in batch.iter().zip(&leases).enumerate() {
            // Released meanwhile: nothing to schedule.
            let Some(kept) = registry.grants.get_mut(&grant.token) else {
                continue;
            };
            let next = match answers
                .as_ref()
                .and_then(|answers| answers.get(i).copied().flatten())
            {
                Some(true) => {
                    let lease = grant.renewed_in_turn(asked, lease.length);
                    due(lease.ends, lease.length)
                }
                Some(false) => {
                    grant.mark_gone();
                    registry.grants.remove(&grant.token);
                    continue;
                }
                // Asked again soon; the loss comes at the lease's end if it never answers.
                None => (Instant::now() + RETRY).min(lease.ends),
            };
            kept.due = next;
            registry.due.insert((next, grant.token.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::{BackendResult, Intercepted, Interceptor, Step, StepCall};
    use crate::key::LockKey;
    use crate::store::LockStore;

    /// Counts the renewal requests a store is sent.
    #[derive(Default)]
    struct CountRenewals(AtomicUsize);

    #[async_trait]
    impl Interceptor for CountRenewals {
        async fn around<T: Send>(&self, step: Step, call: StepCall<'_, T>) -> BackendResult<T> {
            if step == Step::Renew {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            call.await
        }
    }

    /// The renewal loop belongs to its store: it renews while the store lives, and once the
    /// last clone of the store is dropped it renews nothing more, though a grant is still
    /// on its list.
    #[tokio::test(start_paused = true)]
    async fn the_loop_ends_with_its_store() {
        let memory = Arc::new(MemoryBackend::new());
        let backend = Arc::new(Intercepted::new(memory, CountRenewals::default()));
        let store = LockStore::new("s", backend.clone(), Duration::from_secs(1));
        let grant = store
            .try_lock(LockKey::new(None, "app", "id"), Duration::from_millis(300))
            .await
            .unwrap()
            .expect("a free lock");
        let grant = Arc::new(grant);
        store.keep_alive(&grant, Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let renewed = backend.interceptor().0.load(Ordering::SeqCst);
        assert!(
            renewed >= 5,
            "only {renewed} renewals in 2 s of a 300 ms lease"
        );

        drop(store);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            backend.interceptor().0.load(Ordering::SeqCst),
            renewed,
            "renewals went on after the store was dropped"
        );
        assert!(!grant.lease().gone);
    }
}
