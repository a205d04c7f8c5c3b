//! [`open`]: the only place that turns a URL into a backend. The [`LockStore`] it returns
//! knows its name and sees its backend only through the [`crate::Backend`] trait; an
//! embedder with a store of its own builds one with [`LockStore::new`].

use std::sync::Arc;

use crate::backend::Backend;
use crate::backend::memory::MemoryBackend;
use crate::backend::redis::{self, redlock::RedlockBackend};
use crate::error::OpenError;
use crate::store::LockStore;
use crate::store::settings::{
    KEY_LAYOUT, StoreKind, StoreSettings, StoreUrl, kind_of, take_option, unknown_option,
};

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
    let (full, in_url) = take_option(url.full, KEY_LAYOUT);
    let daprs = daprs_layout(&url, kind, in_url, settings.key_layout.as_deref())?;
    let url = StoreUrl {
        full: &full,
        shown: url.shown,
    };
    let backend: Arc<dyn Backend> = match kind {
        StoreKind::Memory => Arc::new(MemoryBackend::new()),
        StoreKind::Redlock => Arc::new(RedlockBackend::new(&url, settings)?),
        StoreKind::Server | StoreKind::Cluster | StoreKind::Sentinel => {
            Arc::new(redis::open(kind, &url, settings)?)
        }
    };
    let mut store = LockStore::new(name, backend, settings.timeout);
    if let Some(namespace) = &settings.namespace {
        store = store.with_namespace(namespace)?;
    }
    match daprs {
        true => store.in_daprs_layout(),
        false => Ok(store),
    }
}

/// Whether the store is to be in daprd's key layout, as its URL's `key-layout=` or its
/// settings say (both, if they agree); an error where the store cannot keep it.
fn daprs_layout(
    url: &StoreUrl<'_>,
    kind: StoreKind,
    in_url: Option<String>,
    in_settings: Option<&str>,
) -> Result<bool, OpenError> {
    let layout = match (in_url.as_deref(), in_settings) {
        (Some(one), Some(other)) if one != other => {
            return Err(OpenError::BadUrl {
                url: url.shown.clone(),
                reason: format!("key-layout {one:?} in the URL, {other:?} in the settings"),
            });
        }
        (one, other) => one.or(other).unwrap_or("latchkey"),
    };
    let unsupported = |reason| OpenError::DaprsLayoutUnsupported {
        url: url.shown.clone(),
        reason,
    };
    match (layout, kind) {
        ("latchkey", _) => Ok(false),
        ("dapr", StoreKind::Server) => Ok(true),
        ("dapr", StoreKind::Sentinel) => Err(unsupported(
            "cannot share locks with daprd through Sentinel: daprd's Redis lock store refuses \
             failover and replicas",
        )),
        ("dapr", StoreKind::Memory) => Err(unsupported(
            "is for a Redis that daprd shares: the memory store is this process's own",
        )),
        ("dapr", StoreKind::Cluster) => Err(unsupported(
            "has no hash tags, so a lock's keys would be in different Cluster slots \
             (and daprd's Redis lock store does not run on a Cluster)",
        )),
        ("dapr", StoreKind::Redlock) => Err(unsupported(
            "cannot share locks with daprd on Redlock: daprd takes a lock on one server, \
             not on a majority of masters",
        )),
        (other, _) => Err(OpenError::UnknownKeyLayout {
            url: url.shown.clone(),
            layout: other.to_owned(),
        }),
    }
}
