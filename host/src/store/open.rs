//! [`open`]: the only place that turns a URL into a backend. The [`LockStore`] it returns
//! knows its name and sees its backend only through the [`crate::Backend`] trait; an
//! embedder with a store of its own builds one with [`LockStore::new`].

use std::sync::Arc;

use crate::backend::Backend;
use crate::backend::memory::MemoryBackend;
use crate::backend::redis::{self, redlock::RedlockBackend};
use crate::error::OpenError;
use crate::store::LockStore;
use crate::store::settings::{StoreKind, StoreSettings, kind_of, unknown_option};

/// Opens the lock store `name` as `settings` say. The URL and every setting are checked
/// now; a Redis store connects on first use, so an unreachable server makes calls
/// `unavailable` rather than failing here ([`LockStore::ping`] checks it).
pub fn open(name: &str, settings: &StoreSettings) -> Result<LockStore, OpenError> {
    let url = settings.url();
    let kind = kind_of(url.full).ok_or_else(|| OpenError::UnknownScheme {
        url: url.shown.clone(),
    })?;
    if let Some(option) = unknown_option(url.full) {
        return Err(OpenError::UnknownOption {
            url: url.shown.clone(),
            option,
        });
    }
    let backend: Arc<dyn Backend> = match kind {
        StoreKind::Memory => Arc::new(MemoryBackend::new()),
        StoreKind::Redlock => Arc::new(RedlockBackend::new(&url, settings)?),
        StoreKind::Server | StoreKind::Cluster | StoreKind::Sentinel => {
            Arc::new(redis::open(kind, &url, settings)?)
        }
    };
    let store = LockStore::new(name, backend, settings.timeout);
    match &settings.namespace {
        Some(namespace) => store.with_namespace(namespace),
        None => Ok(store),
    }
}
