//! [`LockStore`]: one lock store, as the operator named it, with the behaviour every backend
//! shares — owner tokens, timeouts, waiting for a lock without polling, and keep-alive.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout, timeout_at};

use crate::backend::memory::MemoryBackend;
use crate::backend::{
    Attempt, Backend, BackendError, BackendErrorKind, BackendResult, Holder, Token, UnlockStatus,
    within_lease,
};
use crate::error::{StoreConfigError, StoreError};
pub use crate::grant::{Grant, Lease, LostSignal};
use crate::keepalive::KeepAlive;
use crate::key::LockKey;

/// How long a store call may take before it is `unavailable`, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A lock store a host can offer to guests, under the name guests open it by. Cheap to
/// clone: clones share the backend, so every instance given a clone competes for the same
/// locks. Made by [`crate::open`] from a URL, or by [`LockStore::new`] on a backend of your
/// own.
#[derive(Clone)]
pub struct LockStore {
    name: Arc<str>,
    backend: Arc<dyn Backend>,
    timeout: Duration,
    namespace: Option<Arc<str>>,
    keep_alive: Arc<KeepAlive>,
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
            namespace: None,
        }
    }

    /// The same store with its locks in their own namespace: locks of the same app and
    /// resource id in two namespaces of one store are different locks. A namespace is 1 to
    /// 64 letters, digits, `.`, `_` or `-`.
    pub fn with_namespace(mut self, namespace: &str) -> Result<Self, StoreConfigError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if namespace.is_empty() || namespace.len() > 64 || !namespace.chars().all(allowed) {
            return Err(StoreConfigError::BadNamespace {
                namespace: namespace.to_owned(),
            });
        }
        self.namespace = Some(namespace.into());
        Ok(self)
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
        LockKey::new(self.namespace.as_deref(), app, resource_id)
    }

    /// Checks that the store answers within its timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(self.backend.ping()).await
    }

    /// Every lock held now in this store (and its namespace) — of `app` alone, if given:
    /// the operator's view (`latchkey locks list`), never a guest's. Each step of the
    /// listing is bounded by the store's timeout; the whole takes as many as the store has
    /// keys to look through.
    pub async fn holders(&self, app: Option<&str>) -> Result<Vec<Holder>, StoreError> {
        let namespace = self.namespace.as_deref();
        let mut holders =
            (self.backend.holders(namespace, app).await).map_err(|err| self.failed(err))?;
        holders.sort_by(|a, b| (&a.app, &a.resource_id).cmp(&(&b.app, &b.resource_id)));
        Ok(holders)
    }

    /// Frees the lock of `app` on `resource_id` whoever holds it (`latchkey locks
    /// release`): the operator's forced release, an **eviction**. Whether someone held it.
    /// The next grant's fence is higher; the evicted holder's `unlock` finds the lock gone,
    /// and its `held` or its next renewal says it is lost.
    pub async fn evict(&self, app: &str, resource_id: &str) -> Result<bool, StoreError> {
        self.bounded(self.backend.evict(&self.key(app, resource_id)))
            .await
    }

    /// Takes the lock now if nobody holds it.
    pub async fn try_lock(
        &self,
        key: LockKey,
        lease: Duration,
    ) -> Result<Option<Grant>, StoreError> {
        let token = Token::random();
        let asked = Instant::now();
        match self.attempt(&key, &token, lease).await? {
            Attempt::Granted { fence } => Ok(Some(Grant::new(key, token, fence, asked, lease))),
            Attempt::Busy { .. } => Ok(None),
        }
    }

    /// One acquire attempt. A grant that came back too late to be used within its lease is
    /// a failure. If it fails or is cancelled (the instance hit its deadline),
    /// the store may still carry it out later — a request that timed out can still be in
    /// flight — so a release with the same token follows it, and the lock is not left
    /// taken by nobody until its lease ends.
    async fn attempt(
        &self,
        key: &LockKey,
        token: &Token,
        lease: Duration,
    ) -> Result<Attempt, StoreError> {
        let mut undo = ReleaseUnlessKept {
            store: self,
            key,
            token,
            keep: false,
        };
        let started = Instant::now();
        let result = match self
            .bounded(self.backend.try_acquire(key, token, lease))
            .await
        {
            // Slow enough that the lease may have run out before the guest could use it
            // (a WAIT for replicas that took that long, say): released, not handed out.
            Ok(Attempt::Granted { .. }) if !within_lease(started, lease) => {
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

    /// Takes the lock, waiting up to `wait` for its holder to release it or for the
    /// holder's lease to end.
    ///
    /// Before each attempt it subscribes to the lock's releases, so a release between a
    /// failed attempt and the wait still wakes it. Without a release it sleeps until the
    /// holder's lease ends; it never polls on a fixed period.
    pub async fn lock(
        &self,
        key: LockKey,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Grant>, StoreError> {
        if wait.is_zero() {
            // Nothing to wait for, so nothing to subscribe to.
            return self.try_lock(key, lease).await;
        }
        let deadline = Instant::now() + wait;
        let token = Token::random();
        loop {
            let mut released = self.bounded(self.backend.watch(&key)).await?;
            let asked = Instant::now();
            let expires_in = match self.attempt(&key, &token, lease).await? {
                Attempt::Granted { fence } => {
                    return Ok(Some(Grant::new(key, token, fence, asked, lease)));
                }
                Attempt::Busy { expires_in } => expires_in,
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // A store that cannot say when the lease ends gets one more look at the deadline.
            let wake_at = expires_in.map_or(deadline, |left| deadline.min(now + left));
            let _ = timeout_at(wake_at, released.released()).await;
        }
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
    pub async fn held(&self, grant: &Grant) -> Result<bool, StoreError> {
        let held = self
            .bounded(self.backend.held(&grant.key, &grant.token))
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

/// Releases `token`'s hold on `key` when dropped, unless told to keep it.
struct ReleaseUnlessKept<'a> {
    store: &'a LockStore,
    key: &'a LockKey,
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
        let (key, token) = (self.key.clone(), self.token.clone());
        runtime.spawn(async move {
            let _ = timeout(wait, backend.release(&key, &token)).await;
        });
    }
}
