//! [`LockStore`]: one configured store, with the behaviour every backend shares — owner
//! tokens, timeouts, and waiting for a lock without polling.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout, timeout_at};

use crate::backend::memory::MemoryBackend;
use crate::backend::redis::redlock::RedlockBackend;
use crate::backend::redis::{RedisBackend, RedisConfig};
use crate::backend::{
    Attempt, Backend, BackendError, BackendErrorKind, BackendResult, Token, UnlockStatus,
    within_lease,
};
use crate::error::{StoreConfigError, StoreError};
pub use crate::grant::{Grant, Lease, LostSignal};
use crate::keepalive::KeepAlive;
use crate::key::LockKey;

/// How long a store call may take before it is `unavailable`, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A lock store a host can offer to guests. Cheap to clone: clones share the backend, so
/// every instance given a clone competes for the same locks.
#[derive(Clone)]
pub struct LockStore {
    backend: Arc<dyn Backend>,
    timeout: Duration,
    namespace: Option<Arc<str>>,
    keep_alive: Arc<KeepAlive>,
}

impl LockStore {
    /// A store in this process's memory: zero set-up, shared by the instances of one host.
    pub fn memory() -> Self {
        Self::new(Arc::new(MemoryBackend::new()), DEFAULT_TIMEOUT)
    }

    /// A store on a Redis server. The URL is checked now; the connection is made on first
    /// use, so an unreachable server makes calls `unavailable` rather than failing here.
    /// `redis+redlock://` URLs make a Redlock store over the masters they list.
    pub fn redis(config: RedisConfig) -> Result<Self, StoreConfigError> {
        const SCHEMES: [&str; 7] = [
            "redis",
            "rediss",
            "redis+unix",
            "unix",
            "redis+cluster",
            "redis+sentinel",
            "redis+redlock",
        ];
        let scheme = config.url.split_once("://").map(|(scheme, _)| scheme);
        if !scheme.is_some_and(|scheme| SCHEMES.contains(&scheme)) {
            return Err(StoreConfigError::UnknownScheme {
                url: crate::backend::redis::redacted(&config.url),
            });
        }
        let timeout = config.timeout;
        let backend: Arc<dyn Backend> = if config.url.starts_with("redis+redlock://") {
            Arc::new(RedlockBackend::new(config)?)
        } else {
            Arc::new(RedisBackend::new(config)?)
        };
        Ok(Self::new(backend, timeout))
    }

    /// The same store with another call timeout.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self {
            keep_alive: Arc::new(KeepAlive::new(self.backend.clone(), timeout)),
            timeout,
            ..self
        }
    }

    /// The same store, with its locks in their own namespace: locks of the same app and
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

    /// A store on any backend; each call on it fails as `unavailable` after `timeout`.
    pub fn new(backend: Arc<dyn Backend>, timeout: Duration) -> Self {
        LockStore {
            keep_alive: Arc::new(KeepAlive::new(backend.clone(), timeout)),
            backend,
            timeout,
            namespace: None,
        }
    }

    /// Where the lock of `app` on `resource_id` lives in this store.
    pub fn key(&self, app: &str, resource_id: &str) -> LockKey {
        LockKey::new(self.namespace.as_deref(), app, resource_id)
    }

    /// Checks that the store answers within its timeout.
    pub async fn ping(&self, name: &str) -> Result<(), StoreError> {
        self.bounded(name, self.backend.ping()).await
    }

    /// Takes the lock now if nobody holds it.
    pub async fn try_lock(
        &self,
        name: &str,
        key: LockKey,
        lease: Duration,
    ) -> Result<Option<Grant>, StoreError> {
        let token = Token::random();
        let asked = Instant::now();
        match self.attempt(name, &key, &token, lease).await? {
            Attempt::Granted { fence } => Ok(Some(Grant::new(key, token, fence, asked, lease))),
            Attempt::Held { .. } => Ok(None),
        }
    }

    /// One acquire attempt. A grant that came back too late to be used within its lease is
    /// a failure. If it fails or is cancelled (the instance hit its deadline),
    /// the store may still carry it out later — a request that timed out can still be in
    /// flight — so a release with the same token follows it, and the lock is not left
    /// taken by nobody until its lease ends.
    async fn attempt(
        &self,
        name: &str,
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
            .bounded(name, self.backend.try_acquire(key, token, lease))
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
                Err(StoreError::new(
                    name,
                    BackendError::new(BackendErrorKind::Timeout, reason),
                ))
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
        name: &str,
        key: LockKey,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Grant>, StoreError> {
        if wait.is_zero() {
            // Nothing to wait for, so nothing to subscribe to.
            return self.try_lock(name, key, lease).await;
        }
        let deadline = Instant::now() + wait;
        let token = Token::random();
        loop {
            let mut released = self.bounded(name, self.backend.watch(&key)).await?;
            let asked = Instant::now();
            let expires_in = match self.attempt(name, &key, &token, lease).await? {
                Attempt::Granted { fence } => {
                    return Ok(Some(Grant::new(key, token, fence, asked, lease)));
                }
                Attempt::Held { expires_in } => expires_in,
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
    /// (it is lost then). Keep-alive renews to this length from now on.
    pub async fn extend(
        &self,
        name: &str,
        grant: &Grant,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let asked = Instant::now();
        let extended = self
            .bounded(name, self.backend.extend(&grant.key, &grant.token, lease))
            .await?;
        if extended {
            grant.renewed(asked, lease);
        } else {
            grant.mark_lost();
        }
        Ok(extended)
    }

    /// Asks the store whether the grant still holds the lock; if not, it is lost.
    pub async fn held(&self, name: &str, grant: &Grant) -> Result<bool, StoreError> {
        let held = self
            .bounded(name, self.backend.held(&grant.key, &grant.token))
            .await?;
        if !held {
            grant.mark_lost();
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
    pub async fn unlock(&self, name: &str, grant: &Grant) -> Result<UnlockStatus, StoreError> {
        self.keep_alive.forget(&grant.token);
        let status = self
            .bounded(name, self.backend.release(&grant.key, &grant.token))
            .await?;
        grant.mark_lost();
        Ok(status)
    }

    async fn bounded<T>(
        &self,
        name: &str,
        call: impl Future<Output = BackendResult<T>>,
    ) -> Result<T, StoreError> {
        match timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|err| StoreError::new(name, err)),
            Err(_) => {
                let reason = format!("did not answer within {} ms", self.timeout.as_millis());
                Err(StoreError::new(
                    name,
                    BackendError::new(BackendErrorKind::Timeout, reason),
                ))
            }
        }
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
