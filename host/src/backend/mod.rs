//! The small trait every lock store's backend implements, and what its calls return.
//!
//! A backend performs single atomic steps; waiting, timeouts, owner tokens, keep-alive and
//! argument checks live in [`crate::LockStore`], so every backend gets them the same way.
//! latchkey's own backends — `memory`, and `redis` (one server, Cluster or Sentinel) with
//! `redis::redlock` — are private: [`crate::open()`] makes them from a URL. The trait is the
//! extension point for a store of your own: implement it and hand it to
//! [`crate::LockStore::new`]. [`Intercepted`] wraps any backend with a hook around each of
//! its steps, to time, count, delay or fail them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

pub use crate::error::{BackendError, BackendErrorKind};
use crate::key::{Decoded, GrantKind, KeySpace, LockKey};

mod intercepted;
pub(crate) mod memory;
pub(crate) mod redis;

pub use intercepted::{Intercepted, Interceptor, Step, StepCall};

/// What a backend call returns.
pub type BackendResult<T> = Result<T, BackendError>;

/// One lock store: an in-process map, a Redis server, ...
///
/// Every method is one atomic step on the store. Implementations must keep the key layout of
/// [`crate::key`], and must treat an expired lease exactly like a lock that was never taken.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Sets `token` as holder of `key` for `lease` if nobody holds it.
    ///
    /// On a grant, returns the fencing token: `max(previous + 1, store clock in µs since the
    /// Unix epoch)`, so it grows with every grant even when the store forgot the previous
    /// one.
    async fn try_acquire(
        &self,
        key: &LockKey,
        token: &Token,
        lease: Duration,
    ) -> BackendResult<Attempt>;

    /// Takes the first of `keys` that nobody holds, as [`Backend::try_acquire`] would take
    /// it: the permits of a semaphore. On a grant, which of `keys` it is; when all are
    /// busy, `expires_in` is the soonest any of their leases ends.
    ///
    /// By default one [`Backend::try_acquire`] after another; a backend that can try them
    /// all in one step should.
    async fn try_acquire_any(
        &self,
        keys: &[LockKey],
        token: &Token,
        lease: Duration,
    ) -> BackendResult<AnyAttempt> {
        let mut soonest: Option<Duration> = None;
        for (index, key) in keys.iter().enumerate() {
            match self.try_acquire(key, token, lease).await? {
                Attempt::Granted { fence } => return Ok(AnyAttempt::Granted { index, fence }),
                Attempt::Busy { expires_in } => {
                    soonest = match (soonest, expires_in) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        Ok(AnyAttempt::Busy {
            expires_in: soonest,
        })
    }

    /// Frees `key` if `token` holds it, and announces it to watchers.
    async fn release(&self, key: &LockKey, token: &Token) -> BackendResult<UnlockStatus>;

    /// Restarts the lease of `key` at `lease` from now if `token` still holds it. A new
    /// lease the store cannot make durable (replicas that did not confirm it, say) is an
    /// error, not `true`: the lease the store would keep after a failure is the old one.
    /// A lease made shorter than it was must be announced to watchers, as a release is:
    /// waiters sleep until the end they last read, and would otherwise miss the new one.
    async fn extend(&self, key: &LockKey, token: &Token, lease: Duration) -> BackendResult<bool>;

    /// Whether `token` holds `key` now. An error where the store cannot say durably (its
    /// replicas lack a write that made it ours).
    async fn holds(&self, key: &LockKey, token: &Token) -> BackendResult<bool>;

    /// Restarts many leases at once, each only while its token still holds its lock: the
    /// keep-alive renewals that fall due together. One answer per renewal, in order:
    /// `Some(renewed)`, or `None` where the store could not say durably, as
    /// [`Backend::extend`] would have failed (the renewal is tried again).
    ///
    /// By default one [`Backend::extend`] each, all at once; a backend that can send them
    /// as one request should.
    async fn renew(&self, renewals: &[Renewal<'_>]) -> BackendResult<Vec<Option<bool>>> {
        extend_each(self, renewals).await
    }

    /// Starts listening for releases of `key`. Any release that happens after this returns
    /// wakes the watch, so a caller may watch, try, then wait without missing a release.
    async fn watch(&self, key: &LockKey) -> BackendResult<ReleaseWatch>;

    /// Wakes the watchers of `key` without a release: how an election's observers learn of
    /// a new leader. By default a backend announces nothing, and observers learn of the
    /// change when the lease they know of ends.
    async fn announce(&self, key: &LockKey) -> BackendResult<()> {
        let _ = key;
        Ok(())
    }

    /// The grant that holds `key` now, if any — with the value its owner token carries
    /// ([`Token::with_value`]): who leads an election. By default a backend cannot say.
    async fn holder(&self, key: &LockKey) -> BackendResult<Option<Holder>> {
        let _ = key;
        Err(BackendError::new(
            BackendErrorKind::Failed,
            "cannot say who holds a lock",
        ))
    }

    /// Checks that the store answers; an embedded store always does.
    async fn ping(&self) -> BackendResult<()> {
        Ok(())
    }

    /// Every lock held now in `space` — of `app` alone, if given: an operator's view of
    /// the store, never a guest's — with what else the listing came across. By default a
    /// backend cannot list its locks.
    async fn holders(&self, space: &KeySpace, app: Option<&str>) -> BackendResult<Listing> {
        let _ = (space, app);
        Err(BackendError::new(
            BackendErrorKind::Failed,
            "cannot list its locks",
        ))
    }

    /// Frees `key` whoever holds it, and announces it to watchers: an operator's forced
    /// release (an **eviction**). Whether someone held it. The fence stays, so the next
    /// grant's is higher; the evicted grant's `unlock`, `extend`, `held` and renewals find
    /// the lock gone. By default a backend cannot evict.
    async fn evict(&self, key: &LockKey) -> BackendResult<bool> {
        let _ = key;
        Err(BackendError::new(
            BackendErrorKind::Failed,
            "cannot release a lock by force",
        ))
    }
}

/// What a listing of a store's locks found: see [`Backend::holders`].
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The locks held now in the namespace listed (of the app asked for).
    pub holders: Vec<Holder>,
    /// Keys under `latchkey:` that are no lock of latchkey's — a name that is not UTF-8 or
    /// not of the key layout, a value of another type — skipped.
    pub skipped: usize,
    /// How many locks (of the app asked for) are held under each other namespace than the
    /// one listed; `None` is no namespace.
    pub elsewhere: BTreeMap<Option<String>, usize>,
}

impl Listing {
    /// Counts a lock of another namespace than the one listed.
    pub fn held_elsewhere(&mut self, namespace: Option<&str>) {
        *self
            .elsewhere
            .entry(namespace.map(str::to_owned))
            .or_default() += 1;
    }
}

/// A lock a store holds now, as an operator's listing shows it, and as an election's
/// leader is read.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The app the lock belongs to.
    pub app: String,
    /// The resource id the lock is on — a semaphore's or an election's id for a permit or
    /// a leadership.
    pub resource_id: String,
    /// A lock, a permit or a leadership.
    pub kind: GrantKind,
    /// What the holder published with its grant: a leader's value.
    pub value: Option<String>,
    /// The fencing token of the grant that holds it.
    pub fence: u64,
    /// How long its lease has left, by the store's clock.
    pub lease_left: Duration,
    /// How long ago it was granted, if the store can say: in Redis, the store's clock less
    /// the fence's clock part (exact unless grants of the lock came faster than one per µs,
    /// or the server's clock stepped).
    pub age: Option<Duration>,
}

impl Holder {
    /// The lock `lock`, held by the owner token `owner` (as the store keeps it) granted
    /// with `fence`, `lease_left` to go.
    pub fn new(
        lock: Decoded,
        owner: &str,
        fence: u64,
        lease_left: Duration,
        age: Option<Duration>,
    ) -> Self {
        Holder {
            app: lock.app,
            resource_id: lock.id,
            kind: lock.kind,
            value: Token::value_of(owner).map(str::to_owned),
            fence,
            lease_left,
            age,
        }
    }
}

/// [`Backend::renew`] as one [`Backend::extend`] per renewal, all at once; one that fails
/// has no answer.
pub(crate) async fn extend_each<B: Backend + ?Sized>(
    backend: &B,
    renewals: &[Renewal<'_>],
) -> BackendResult<Vec<Option<bool>>> {
    let answers = futures_util::future::join_all(
        renewals
            .iter()
            .map(|r| backend.extend(r.key, r.token, r.lease)),
    )
    .await;
    Ok(answers.into_iter().map(Result::ok).collect())
}

/// Whether a grant begun at `started` still has time left on its `lease`, allowing 1 % of
/// the lease plus 2 ms for clocks that run at different rates (Redlock's allowance). A grant
/// that took longer than that to come back may already have expired, and been granted to
/// someone else: it must not be handed out.
pub(crate) fn within_lease(started: tokio::time::Instant, lease: Duration) -> bool {
    let drift = lease / 100 + Duration::from_millis(2);
    started.elapsed() + drift < lease
}

/// One lease to restart: see [`Backend::renew`].
#[derive(Debug, Clone, Copy)]
pub struct Renewal<'a> {
    /// The lock.
    pub key: &'a LockKey,
    /// The grant that must still hold it.
    pub token: &'a Token,
    /// The new lease, from now.
    pub lease: Duration,
}

/// The outcome of one acquire attempt.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The lock is ours, with this fencing token.
    Granted {
        /// The fencing token of this grant.
        fence: u64,
    },
    /// Someone else holds it; their lease ends in `expires_in` if the store said.
    Busy {
        /// How long the current holder's lease has left.
        expires_in: Option<Duration>,
    },
}

/// The outcome of one attempt at any of several locks: see [`Backend::try_acquire_any`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyAttempt {
    /// The lock `index` (of those asked for) is ours, with this fencing token.
    Granted {
        /// Which lock.
        index: usize,
        /// The fencing token of this grant.
        fence: u64,
    },
    /// Every one is held; the soonest lease ends in `expires_in` if the store said.
    Busy {
        /// How long the first lease to end has left.
        expires_in: Option<Duration>,
    },
}

/// What an unlock found (the statuses of Dapr's Unlock). Displayed as the WIT names it
/// (`lock-does-not-exist`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::Display, strum::IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum UnlockStatus {
    /// This grant still held the lock; now it is free.
    Success,
    /// The lease had ended and nobody holds the lock.
    LockDoesNotExist,
    /// The lease had ended and someone else holds the lock now.
    LockBelongsToOthers,
}

/// A random owner token, made by the host for each grant: 128 bits from the OS-seeded CSPRNG,
/// as 32 hex digits — followed, for a leader, by a space and the value it publishes. Kept
/// inline when it has no value: a lock's grant allocates nothing for its token.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(Stored);

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Stored {
    Digits([u8; 32]),
    WithValue(Arc<str>),
}

impl Token {
    /// A fresh, unguessable token.
    pub fn random() -> Self {
        Token(Stored::Digits(random_digits()))
    }

    /// A fresh, unguessable token that carries `value` where anyone who can read the lock
    /// can read it ([`Backend::holder`]): a leader's published value. The digits before it
    /// stay secret: only the value is read back.
    pub fn with_value(value: &str) -> Self {
        let digits = random_digits();
        let digits = std::str::from_utf8(&digits).expect("hex digits are ASCII");
        Token(Stored::WithValue(format!("{digits} {value}").into()))
    }

    /// The token of a lock owner a Dapr client names (`lockOwner`): the same for every
    /// host, since the owner is how a Dapr client proves a lock is its own. Hex-encoded, so
    /// it never carries a value and never looks like a host's random token.
    pub fn of_dapr_owner(owner: &str) -> Self {
        Token(Stored::WithValue(
            format!("dapr:{}", hex::encode(owner)).into(),
        ))
    }

    /// The token that is `owner` itself, as daprd's Redis lock store keeps a Dapr client's
    /// owner ([`crate::key::KeySpace::Dapr`]).
    pub fn as_named(owner: &str) -> Self {
        Token(Stored::WithValue(owner.into()))
    }

    /// The token as stored.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Stored::Digits(digits) => std::str::from_utf8(digits).expect("hex digits are ASCII"),
            Stored::WithValue(stored) => stored,
        }
    }

    /// The value a stored token carries, if it carries one.
    pub fn value_of(stored: &str) -> Option<&str> {
        stored.get(32..)?.strip_prefix(' ')
    }
}

fn random_digits() -> [u8; 32] {
    let mut digits = [0; 32];
    hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut digits)
        .expect("16 bytes are 32 hex digits");
    digits
}

impl std::fmt::Debug for Token {
    // Tokens are capabilities: keep them out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A subscription to the releases of one lock. Dropping it ends the subscription.
pub struct ReleaseWatch {
    released: watch::Receiver<()>,
    _subscription: Option<Box<dyn Send + Sync>>,
}

impl ReleaseWatch {
    /// A watch on `released`; `subscription` is dropped with the watch, to unsubscribe.
    pub fn new(released: watch::Receiver<()>, subscription: Option<Box<dyn Send + Sync>>) -> Self {
        ReleaseWatch {
            released,
            _subscription: subscription,
        }
    }

    /// A watch that wakes when any of `watches` does: the releases of one lock kept on
    /// several servers. Each is followed by a task of its own, stopped with the watch.
    pub fn any(watches: Vec<ReleaseWatch>) -> Self {
        let (sender, released) = watch::channel(());
        let followers: Vec<tokio::task::AbortHandle> = watches
            .into_iter()
            .map(|mut one| {
                let sender = sender.clone();
                tokio::spawn(async move {
                    loop {
                        one.released().await;
                        sender.send_replace(());
                    }
                })
                .abort_handle()
            })
            .collect();
        ReleaseWatch::new(released, Some(Box::new(AbortOnDrop(followers))))
    }

    /// Waits for a release after the watch began or after the last `released` returned.
    /// If the announcing side is gone it never returns: the caller's lease and wait
    /// deadlines still end the wait.
    pub async fn released(&mut self) {
        if self.released.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Stops the tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Token;

    /// A token is 128 random bits as 32 lowercase hex digits, and never repeats in practice.
    #[test]
    fn tokens_are_32_hex_digits_and_differ() {
        let (a, b) = (Token::random(), Token::random());
        for token in [&a, &b] {
            assert_eq!(token.as_str().len(), 32);
            assert!(
                token
                    .as_str()
                    .bytes()
                    .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                "{}",
                token.as_str()
            );
        }
        assert_ne!(a, b);
        assert_eq!(Token::value_of(a.as_str()), None);
    }

    /// A leader's token carries its value after the secret digits, and gives back only
    /// the value.
    #[test]
    fn a_token_with_a_value_reads_back_as_the_value() {
        let token = Token::with_value("10.0.0.7:8080 and spaces");
        assert_eq!(
            Token::value_of(token.as_str()),
            Some("10.0.0.7:8080 and spaces")
        );
        assert_eq!(Token::value_of(Token::with_value("").as_str()), Some(""));
        assert_ne!(token, Token::with_value("10.0.0.7:8080 and spaces"));
    }
}
