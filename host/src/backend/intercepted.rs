//! [`Intercepted`]: a backend that does what another does, with a hook around each step —
//! to time, count, delay or fail a store's steps without writing a backend.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    AnyAttempt, Attempt, Backend, BackendResult, Holder, Listing, ReleaseWatch, Renewal, Token,
    UnlockStatus,
};
use crate::key::{KeySpace, LockKey};

/// A step of a [`Backend`], as an [`Interceptor`] sees it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// [`Backend::try_acquire`].
    TryAcquire,
    /// [`Backend::try_acquire_any`].
    TryAcquireAny,
    /// [`Backend::release`].
    Release,
    /// [`Backend::extend`].
    Extend,
    /// [`Backend::holds`].
    Holds,
    /// [`Backend::renew`].
    Renew,
    /// [`Backend::watch`].
    Watch,
    /// [`Backend::announce`].
    Announce,
    /// [`Backend::holder`].
    Holder,
    /// [`Backend::ping`].
    Ping,
    /// [`Backend::holders`].
    Holders,
    /// [`Backend::evict`].
    Evict,
}

/// A step on its way to the backend: await it to run it.
pub type StepCall<'a, T> = Pin<Box<dyn Future<Output = BackendResult<T>> + Send + 'a>>;

/// What runs around each step of an [`Intercepted`] backend.
#[async_trait]
pub trait Interceptor: Send + Sync + 'static {
    /// Runs `call`, the step `step` of the backend, and returns what it returned (or
    /// anything else). By default, just runs it.
    async fn around<T: Send>(&self, step: Step, call: StepCall<'_, T>) -> BackendResult<T> {
        let _ = step;
        call.await
    }
}

/// A backend that does what `inner` does, each step through `interceptor`.
pub struct Intercepted<I> {
    inner: Arc<dyn Backend>,
    interceptor: I,
}

impl<I: Interceptor> Intercepted<I> {
    /// `inner`'s steps, each through `interceptor`.
    pub fn new(inner: Arc<dyn Backend>, interceptor: I) -> Self {
        Intercepted { inner, interceptor }
    }

    /// The interceptor.
    pub fn interceptor(&self) -> &I {
        &self.interceptor
    }
}

#[async_trait]
impl<I: Interceptor> Backend for Intercepted<I> {
    async fn try_acquire(
        &self,
        key: &LockKey,
        token: &Token,
        lease: Duration,
    ) -> BackendResult<Attempt> {
        let call = self.inner.try_acquire(key, token, lease);
        self.interceptor.around(Step::TryAcquire, call).await
    }

    async fn try_acquire_any(
        &self,
        keys: &[LockKey],
        token: &Token,
        lease: Duration,
    ) -> BackendResult<AnyAttempt> {
        let call = self.inner.try_acquire_any(keys, token, lease);
        self.interceptor.around(Step::TryAcquireAny, call).await
    }

    async fn release(&self, key: &LockKey, token: &Token) -> BackendResult<UnlockStatus> {
        let call = self.inner.release(key, token);
        self.interceptor.around(Step::Release, call).await
    }

    async fn extend(&self, key: &LockKey, token: &Token, lease: Duration) -> BackendResult<bool> {
        let call = self.inner.extend(key, token, lease);
        self.interceptor.around(Step::Extend, call).await
    }

    async fn holds(&self, key: &LockKey, token: &Token) -> BackendResult<bool> {
        let call = self.inner.holds(key, token);
        self.interceptor.around(Step::Holds, call).await
    }

    async fn renew(&self, renewals: &[Renewal<'_>]) -> BackendResult<Vec<Option<bool>>> {
        let call = self.inner.renew(renewals);
        self.interceptor.around(Step::Renew, call).await
    }

    async fn watch(&self, key: &LockKey) -> BackendResult<ReleaseWatch> {
        let call = self.inner.watch(key);
        self.interceptor.around(Step::Watch, call).await
    }

    async fn announce(&self, key: &LockKey) -> BackendResult<()> {
        let call = self.inner.announce(key);
        self.interceptor.around(Step::Announce, call).await
    }

    async fn holder(&self, key: &LockKey) -> BackendResult<Option<Holder>> {
        let call = self.inner.holder(key);
        self.interceptor.around(Step::Holder, call).await
    }

    async fn ping(&self) -> BackendResult<()> {
        let call = self.inner.ping();
        self.interceptor.around(Step::Ping, call).await
    }

    async fn holders(&self, space: &KeySpace, app: Option<&str>) -> BackendResult<Listing> {
        let call = self.inner.holders(space, app);
        self.interceptor.around(Step::Holders, call).await
    }

    async fn evict(&self, key: &LockKey) -> BackendResult<bool> {
        let call = self.inner.evict(key);
        self.interceptor.around(Step::Evict, call).await
    }
}
