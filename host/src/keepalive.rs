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
//! its instance ends; the lease then ends as usual.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout};

use crate::backend::{Backend, Renewal, Token};
use crate::grant::Grant;

/// How far ahead of its due time a renewal may be made, to go in one batch with others
/// (and never more than a tenth of its lease).
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// How soon a renewal the store did not answer is tried again (never past the lease's end).
const RETRY: Duration = Duration::from_millis(100);

/// The grants a store keeps alive, and its renewal loop.
pub(crate) struct KeepAlive {
    backend: Arc<dyn Backend>,
    timeout: Duration,
    registry: Mutex<Registry>,
    /// Wakes the loop when a grant is added, which may be due before what it sleeps for.
    added: Notify,
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
    pub(crate) fn new(backend: Arc<dyn Backend>, timeout: Duration) -> Self {
        KeepAlive {
            backend,
            timeout,
            registry: Mutex::default(),
            added: Notify::new(),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renews `grant` from now on, for at most `cap`; starts the loop if it is not running.
    /// A grant already kept alive keeps its schedule, with the cap counted from now.
    pub(crate) fn keep(self: &Arc<Self>, grant: Arc<Grant>, cap: Duration) {
        let lease = grant.lease();
        let until = Instant::now() + cap;
        let kept = Kept {
            due: due(lease.ends, lease.length),
            until,
            grant,
        };
        let start = {
            let mut registry = self.registry();
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
            tokio::spawn(self.clone().renew_until_empty());
        } else {
            self.added.notify_one();
        }
    }

    /// Stops renewing the grant of `token`, if it was kept alive.
    pub(crate) fn forget(&self, token: &Token) {
        let mut registry = self.registry();
        if let Some(kept) = registry.grants.remove(token) {
            registry.due.remove(&(kept.due, token.clone()));
        }
    }

    /// The renewal loop: sleeps until the first grant is due, renews every grant due by
    /// then in one call, and ends when no grant is left to keep.
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
            tokio::select! {
                () = sleep_until(next) => {}
                () = self.added.notified() => continue,
            }
            let batch = self.take_due();
            if !batch.is_empty() {
                self.renew(batch).await;
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
            if lease.is_over() {
                kept.grant.mark_lost();
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
            let next = match answers.as_ref().and_then(|answers| answers.get(i).copied()) {
                Some(true) => {
                    grant.renewed(asked, lease.length);
                    due(asked + lease.length, lease.length)
                }
                Some(false) => {
                    grant.mark_lost();
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
