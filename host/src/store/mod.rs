//! The lock store: [`LockStore`], one store as the operator named it, with the behaviour
//! every backend shares — owner tokens, timeouts, waiting for a lock without polling,
//! keep-alive, leader watches — and [`open`], which makes one from its [`StoreSettings`].
//!
//! - `settings`: the URL forms, [`StoreSettings`], the kinds of store, redaction (a leaf).
//! - `open`: [`open`], the one place a URL becomes a backend.
//! - `grant`: [`Grant`], the lock given to this host once, and what it knows of its lease.
//! - `keepalive`: the renewal loop of each store.
//! - `waiting`: the wait line of each lock on this host (only its first waiter re-asks).
//! - `readings`: one reader per election watched, shared by its [`LeaderWatch`]es.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout, timeout_at};

use crate::backend::memory::MemoryBackend;
use crate::backend::{
    AnyAttempt, Attempt, Backend, BackendError, BackendErrorKind, BackendResult, Holder, Listing,
    ReleaseWatch, Token, UnlockStatus, within_lease,
};
use crate::error::{OpenError, StoreError};
use crate::key::{GrantKind, KeySpace, LockKey};
use keepalive::KeepAlive;
use readings::{Reading, Readings};
use waiting::{Place, WaitLines};

mod grant;
mod keepalive;
mod open;
mod readings;
pub(crate) mod settings;
mod waiting;

pub use grant::{Grant, Lease, LostSignal};
pub use open::open;
pub use settings::{DEFAULT_TIMEOUT, StoreSettings, redacted, url_forms};

/// How often a waiter in daprd's key layout looks again at a lock held by someone who may
/// be a daprd sidecar, whose unlock publishes nothing: one attempt per waiting lock and
/// host (the first in its wait line) per period.
pub const DAPRD_RELEASE_POLL: Duration = Duration::from_millis(100);

/// A lock store a host can offer to guests, under the name guests open it by. Cheap to
/// clone: clones share the backend, so every instance given a clone competes for the same
/// locks. Made by [`crate::open()`] from a URL, or by [`LockStore::new`] on a backend of your
/// own.
#[derive(Clone)]
pub struct LockStore {
    name: Arc<str>,
    backend: Arc<dyn Backend>,
    timeout: Duration,
    space: KeySpace,
    keep_alive: Arc<KeepAlive>,
    waiting: Arc<WaitLines>,
    readings: Arc<Readings>,
}

impl LockStore {
    /// A store named `name` in this process's memory: zero set-up, shared by the instances
    /// of one host.
    pub fn memory(name: &str) -> Self {
        Self::new(name, Arc::new(MemoryBackend::new()), DEFAULT_TIMEOUT)
    }

    /// A store named `name` on any backend; each call on it fails as `unavailable` after
    /// `timeout`.
    pub fn new(name: &str, backend: Arc<dyn Backend>, timeout: Duration) -> Self {
        LockStore {
            name: name.into(),
            keep_alive: KeepAlive::new(backend.clone(), timeout),
            backend,
            timeout,
            space: KeySpace::default(),
            waiting: Arc::default(),
            readings: Arc::default(),
        }
    }

    /// The same store with its locks in their own namespace: locks of the same app and
    /// resource id in two namespaces of one store are different locks. A namespace is 1 to
    /// 64 letters, digits, `.`, `_` or `-`.
    pub fn with_namespace(mut self, namespace: &str) -> Result<Self, OpenError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if namespace.is_empty() || namespace.len() > 64 || !namespace.chars().all(allowed) {
            return Err(OpenError::BadNamespace {
                namespace: namespace.to_owned(),
            });
        }
        if self.space == KeySpace::Dapr {
            return Err(OpenError::NamespaceInDaprsLayout);
        }
        self.space = KeySpace::Latchkey {
            namespace: Some(namespace.into()),
        };
        Ok(self)
    }

    /// The same store with its locks laid out as daprd's Redis lock store lays them out
    /// ([`KeySpace::Dapr`]), so that its hosts and daprd sidecars on the same Redis exclude
    /// each other. A store in this layout has no namespace.
    pub fn in_daprs_layout(mut self) -> Result<Self, OpenError> {
        if self.space.namespace().is_some() {
            return Err(OpenError::NamespaceInDaprsLayout);
        }
        self.space = KeySpace::Dapr;
        Ok(self)
    }

    /// Where the store's locks live among its keys.
    pub fn space(&self) -> &KeySpace {
        &self.space
    }

    /// Checks that the store can name a lock of `app` on `id` (as `what`, for the
    /// message) apart from every other: in daprd's layout, neither may hold `||`.
    pub fn check_names(&self, app: &str, what: &str, id: &str) -> Result<(), String> {
        self.space.check("the app id", app)?;
        self.space.check(what, id)
    }

    /// The token of the lock owner a Dapr client names (`lockOwner`): in daprd's layout
    /// the owner itself, as daprd stores it, so that daprd and latchkey agree on whose a
    /// lock is; otherwise one made from it ([`Token::of_dapr_owner`]).
    pub(crate) fn dapr_owner(&self, owner: &str) -> Token {
        match self.space {
            KeySpace::Dapr => Token::as_named(owner),
            _ => Token::of_dapr_owner(owner),
        }
    }

    /// The name guests open the store by, which its messages and metrics carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend behind the store: to wrap it in one of your own (and make a store of
    /// that with [`LockStore::new`]), or to call its atomic steps directly.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Where the lock of `app` on `resource_id` lives in this store.
    pub fn key(&self, app: &str, resource_id: &str) -> LockKey {
        self.space.key(app, resource_id, GrantKind::Lock)
    }

    /// Checks that the store answers within its timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(self.backend.ping()).await
    }

    /// Every lock held now in this store (and its namespace) — of `app` alone, if given —
    /// and what else the listing came across ([`Listing`]): the operator's view (`latchkey locks list`), never a guest's. Each step of the
    /// listing is bounded by the store's timeout; the whole takes as many as the store has
    /// keys to look through.
    pub async fn holders(&self, app: Option<&str>) -> Result<Listing, StoreError> {
        let mut listing =
            (self.backend.holders(&self.space, app).await).map_err(|err| self.failed(err))?;
        listing.holders.sort_by(|a, b| {
            (&a.app, &a.resource_id, a.kind).cmp(&(&b.app, &b.resource_id, b.kind))
        });
        Ok(listing)
    }

    /// Frees the lock of `kind` of `app` on `resource_id` whoever holds it (`latchkey locks
    /// release`): the operator's forced release, an **eviction**. Whether someone held it.
    /// The next grant's fence is higher; the evicted holder's `unlock` finds the lock gone,
    /// and its `held` or its next renewal says it is lost.
    pub async fn evict(
        &self,
        app: &str,
        resource_id: &str,
        kind: GrantKind,
    ) -> Result<bool, StoreError> {
        let key = self.space.key(app, resource_id, kind);
        self.bounded(self.backend.evict(&key)).await
    }

    /// Takes the lock now if nobody holds it.
    pub async fn try_lock(
        &self,
        key: LockKey,
        lease: Duration,
    ) -> Result<Option<Grant>, StoreError> {
        self.take(vec![key], Token::random(), lease, Duration::ZERO)
            .await
    }

    /// Takes the lock now for the holder of `token` if nobody holds it: a Dapr client's
    /// owner, whose token is its own across hosts ([`Token::of_dapr_owner`]).
    pub(crate) async fn try_lock_as(
        &self,
        key: LockKey,
        token: Token,
        lease: Duration,
    ) -> Result<Option<Grant>, StoreError> {
        self.take(vec![key], token, lease, Duration::ZERO).await
    }

    /// Frees `key` if the holder of `token` holds it, and says what it found: a Dapr
    /// client's unlock, which names its lock by its owner, not by a grant.
    pub(crate) async fn unlock_as(
        &self,
        key: &LockKey,
        token: &Token,
    ) -> Result<UnlockStatus, StoreError> {
        self.bounded(self.backend.release(key, token)).await
    }

    /// Takes the lock, waiting up to `wait` for its holder to release it or for the
    /// holder's lease to end.
    pub async fn lock(
        &self,
        key: LockKey,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Grant>, StoreError> {
        self.take(vec![key], Token::random(), lease, wait).await
    }

    /// The locks of the permits of semaphore `semaphore_id` of `app` with `limit` permits.
    pub fn permits(&self, app: &str, semaphore_id: &str, limit: u32) -> Vec<LockKey> {
        (0..limit)
            .map(|slot| {
                self.space
                    .key(app, semaphore_id, GrantKind::Permit { slot })
            })
            .collect()
    }

    /// Takes a permit of the semaphore whose permits are `permits` ([`LockStore::permits`]):
    /// the first of them nobody holds, waiting up to `wait` for a release or a lease's end
    /// if all are held. At no moment do more grants hold than there are permits: each
    /// permit is a lock. Callers that name the same semaphore with different limits share
    /// its first permits, so at most the largest limit in use hold at once.
    pub async fn acquire_permit(
        &self,
        permits: Vec<LockKey>,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Grant>, StoreError> {
        self.take(permits, Token::random(), lease, wait).await
    }

    /// The leadership of election `election_id` of `app`.
    pub fn leadership(&self, app: &str, election_id: &str) -> LockKey {
        self.space.key(app, election_id, GrantKind::Leadership)
    }

    /// Campaigns for the leadership `key` ([`LockStore::leadership`]), publishing `value`
    /// to whoever asks who leads: leads at once, or once the leader resigns or its lease
    /// ends, within `wait`. A new leader is announced to the election's observers.
    pub async fn campaign(
        &self,
        key: LockKey,
        value: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Grant>, StoreError> {
        let grant = self
            .take(vec![key], Token::with_value(value), lease, wait)
            .await?;
        if let Some(grant) = &grant
            && let Err(err) = self.bounded(self.backend.announce(&grant.key)).await
        {
            // The leadership stands; observers learn of it when they next look.
            tracing::warn!(%err, "could not announce a new leader");
        }
        Ok(grant)
    }

    /// Who holds the leadership `key` now, with the value it published; `None` if nobody.
    pub async fn leader(&self, key: &LockKey) -> Result<Option<Holder>, StoreError> {
        self.bounded(self.backend.holder(key)).await
    }

    /// Starts watching the leadership `key` for a change from its leader now (see
    /// [`LeaderWatch::changed`]): joins this host's reader of the election (the
    /// `readings` module), and waits for a reading made after this call began.
    pub async fn watch_leader(&self, key: LockKey) -> Result<LeaderWatch, StoreError> {
        let mut readings = self.readings.subscribe(self, &key);
        let seen = fresh(&self.name, &mut readings).await?;
        Ok(LeaderWatch {
            store: self.name.clone(),
            readings,
            seen,
        })
    }

    /// Subscribes to the releases of `key` (and whatever else its channel announces).
    pub(crate) async fn subscribe(&self, key: &LockKey) -> Result<ReleaseWatch, StoreError> {
        self.bounded(self.backend.watch(key)).await
    }

    /// Who leads the leadership `key` once it is another than the leader whose fence is
    /// `seen` (`None`: nobody) — now, if it already is: the wait of `leader-change` in
    /// `latchkey:lock@0.3.1`. Woken as [`LeaderWatch::changed`] is.
    pub async fn leader_change(
        &self,
        key: LockKey,
        seen: Option<u64>,
    ) -> Result<Option<Holder>, StoreError> {
        let mut watch = self.watch_leader(key).await?;
        match watch.leader() {
            now if now.map(|leader| leader.fence) != seen => Ok(now.cloned()),
            _ => watch.changed().await,
        }
    }

    /// Takes the first of `keys` that nobody holds for `token`, waiting up to `wait`.
    ///
    /// Before each attempt it subscribes to the releases of `keys` (one channel: a lock's,
    /// or a semaphore's), so a release between a failed attempt and the wait still wakes
    /// it. Without a release it sleeps until the first holder's lease ends; it never polls
    /// on a fixed period — but in daprd's layout, where a daprd holder's unlock is announced
    /// to nobody, it looks again every [`DAPRD_RELEASE_POLL`] too. A waiter whose first
    /// attempt failed joins this host's wait line for `keys` (the `waiting` module): only the
    /// first in it asks the store again.
    async fn take(
        &self,
        mut keys: Vec<LockKey>,
        token: Token,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Grant>, StoreError> {
        let deadline = Instant::now() + wait;
        let mut place: Option<Place> = None;
        loop {
            if let Some(place) = &place
                && timeout_at(deadline, place.turn()).await.is_err()
            {
                return Ok(None);
            }
            // Nothing to wait for without a wait, so nothing to subscribe to.
            let mut released = match wait.is_zero() {
                true => None,
                false => Some(self.bounded(self.backend.watch(&keys[0])).await?),
            };
            let asked = Instant::now();
            let expires_in = match self.attempt(&keys, &token, lease).await? {
                AnyAttempt::Granted { index, fence } => {
                    let key = keys.swap_remove(index);
                    return Ok(Some(Grant::new(key, token, fence, asked, lease)));
                }
                AnyAttempt::Busy { expires_in } => expires_in,
            };
            let now = Instant::now();
            let Some(released) = released.as_mut().filter(|_| now < deadline) else {
                return Ok(None);
            };
            if place.is_none() {
                let joined = self.waiting.join(keys[0].released());
                let first = joined.is_first();
                place = Some(joined);
                if !first {
                    continue;
                }
            }
            // A store that cannot say when the lease ends gets one more look at the deadline.
            let mut wake_at = expires_in.map_or(deadline, |left| deadline.min(now + left));
            if self.space == KeySpace::Dapr {
                // daprd announces no release: its holder's unlock is seen by looking again.
                wake_at = wake_at.min(now + DAPRD_RELEASE_POLL);
            }
            let _ = timeout_at(wake_at, released.released()).await;
        }
    }

    /// One acquire attempt on the first free of `keys`. A grant that came back too late to
    /// be used within its lease is a failure. If it fails or is cancelled (the instance hit
    /// its deadline), the store may still carry it out later — a request that timed out
    /// can still be in flight — so a release with the same token follows it, and no lock
    /// is left taken by nobody until its lease ends.
    async fn attempt(
        &self,
        keys: &[LockKey],
        token: &Token,
        lease: Duration,
    ) -> Result<AnyAttempt, StoreError> {
        let mut undo = ReleaseUnlessKept {
            store: self,
            keys,
            token,
            keep: false,
        };
        let started = Instant::now();
        let call = async {
            match keys {
                [key] => Ok(match self.backend.try_acquire(key, token, lease).await? {
                    Attempt::Granted { fence } => AnyAttempt::Granted { index: 0, fence },
                    Attempt::Busy { expires_in } => AnyAttempt::Busy { expires_in },
                }),
                keys => self.backend.try_acquire_any(keys, token, lease).await,
            }
        };
        let result = match self.bounded(call).await {
            // Slow enough that the lease may have run out before the guest could use it
            // (a WAIT for replicas that took that long, say): released, not handed out.
            Ok(AnyAttempt::Granted { .. }) if !within_lease(started, lease) => {
                let reason = format!(
                    "took {} ms to grant a {} ms lease",
                    started.elapsed().as_millis(),
                    lease.as_millis()
                );
                Err(self.failed(BackendError::new(BackendErrorKind::Timeout, reason)))
            }
            result => result,
        };
        // A grant is kept: the caller records it before its next await.
        undo.keep = result.is_ok();
        result
    }

    /// Restarts the lease at `lease` from now; false if the grant no longer holds the lock
    /// (it is gone then). Keep-alive renews to this length, on this lease's schedule, from
    /// now on.
    pub async fn extend(&self, grant: &Grant, lease: Duration) -> Result<bool, StoreError> {
        let asked = Instant::now();
        let extended = self
            .bounded(self.backend.extend(&grant.key, &grant.token, lease))
            .await?;
        if extended {
            grant.renewed(asked, lease);
            self.keep_alive.lease_changed(grant);
        } else {
            grant.mark_gone();
        }
        Ok(extended)
    }

    /// Asks the store whether the grant still holds the lock; if not, it is gone.
    pub async fn holds(&self, grant: &Grant) -> Result<bool, StoreError> {
        let held = self
            .bounded(self.backend.holds(&grant.key, &grant.token))
            .await?;
        if !held {
            grant.mark_gone();
        }
        Ok(held)
    }

    /// Renews the grant's lease before it runs out, to the length last asked for, until it
    /// is unlocked or lost, or for `cap` at most (then the lease ends as usual). One loop
    /// per store renews every grant kept alive; see the `keepalive` module.
    pub fn keep_alive(&self, grant: &Arc<Grant>, cap: Duration) {
        self.keep_alive.keep(grant.clone(), cap);
    }

    /// Frees the lock if the grant still holds it, and says what it found. Its keep-alive
    /// stops first; once the store answers, the grant no longer holds the lock.
    pub async fn unlock(&self, grant: &Grant) -> Result<UnlockStatus, StoreError> {
        self.keep_alive.stop_renewing(&grant.token);
        let status = self
            .bounded(self.backend.release(&grant.key, &grant.token))
            .await?;
        grant.mark_gone();
        Ok(status)
    }

    /// `call`, failing as `unavailable` if it takes longer than the store's timeout.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = BackendResult<T>>,
    ) -> Result<T, StoreError> {
        match timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|err| self.failed(err)),
            Err(_) => {
                let reason = format!("did not answer within {} ms", self.timeout.as_millis());
                Err(self.failed(BackendError::new(BackendErrorKind::Timeout, reason)))
            }
        }
    }

    /// `error`, said of this store.
    fn failed(&self, error: BackendError) -> StoreError {
        StoreError::new(&self.name, error)
    }
}

impl readings::Source for LockStore {
    async fn subscribe(&self, key: &LockKey) -> Result<ReleaseWatch, StoreError> {
        LockStore::subscribe(self, key).await
    }

    async fn leader(&self, key: &LockKey) -> Result<Option<Holder>, StoreError> {
        LockStore::leader(self, key).await
    }
}

/// Releases `token`'s hold on any of `keys` when dropped, unless told to keep it.
struct ReleaseUnlessKept<'a> {
    store: &'a LockStore,
    keys: &'a [LockKey],
    token: &'a Token,
    keep: bool,
}

impl Drop for ReleaseUnlessKept<'_> {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (backend, wait) = (self.store.backend.clone(), self.store.timeout);
        let (keys, token) = (self.keys.to_vec(), self.token.clone());
        runtime.spawn(async move {
            let releases = keys.iter().map(|key| backend.release(key, &token));
            let _ = timeout(wait, futures_util::future::join_all(releases)).await;
        });
    }
}

/// A watch on who leads an election: see [`LockStore::watch_leader`].
pub struct LeaderWatch {
    /// The store's name, for its errors.
    store: Arc<str>,
    readings: tokio::sync::watch::Receiver<Reading>,
    /// The leader when the watch began.
    seen: Option<Holder>,
}

/// The next reading that is not being made; an error if the store could not say, or if
/// the reader is gone (the store was dropped).
async fn fresh(
    store: &str,
    readings: &mut tokio::sync::watch::Receiver<Reading>,
) -> Result<Option<Holder>, StoreError> {
    let reading = readings.wait_for(|r| matches!(r, Reading::Read(_))).await;
    match reading.as_deref() {
        Ok(Reading::Read(leader)) => leader.clone(),
        _ => Err(StoreError::new(
            store,
            BackendError::new(BackendErrorKind::Failed, "is no longer open"),
        )),
    }
}

impl LeaderWatch {
    /// Who led when the watch began.
    pub fn leader(&self) -> Option<&Holder> {
        self.seen.as_ref()
    }

    /// Returns who leads once the election has another leader than when the watch began —
    /// a new one, or none after a resignation or an expiry — or why the store could not be
    /// asked.
    ///
    /// It is woken by the host's reader of the election, which the store wakes: a
    /// resignation or a new leader is announced on the election's channel; an expiry is
    /// not, so the reader also reads again when the lease it last read ends. A leader that
    /// renews is the same leader: it waits on.
    pub async fn changed(&mut self) -> Result<Option<Holder>, StoreError> {
        let fence = |leader: &Option<Holder>| leader.as_ref().map(|h| h.fence);
        let first = fence(&self.seen);
        loop {
            if self.readings.changed().await.is_err() {
                return fresh(&self.store, &mut self.readings).await;
            }
            let now = match &*self.readings.borrow_and_update() {
                Reading::Reading => continue,
                Reading::Read(leader) => leader.clone()?,
            };
            if fence(&now) != first {
                return Ok(now);
            }
        }
    }
}
