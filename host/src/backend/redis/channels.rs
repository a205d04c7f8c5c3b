//! The pub/sub side of the Redis backend: one subscription per lock somebody waits for, on
//! the host's one connection, shared by all its waiters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::watch;

use super::connection::Connection;
use super::describe;
use crate::backend::{BackendResult, ReleaseWatch};

/// The channels this host is subscribed to, shared by all its waiters: one subscription per
/// lock that somebody waits for, on the host's one connection.
#[derive(Default)]
pub(super) struct Channels {
    watched: Mutex<HashMap<String, Watched>>,
    /// Held across SUBSCRIBE and UNSUBSCRIBE so that they reach the server in the order the
    /// watch counts changed: an UNSUBSCRIBE can never overtake a later SUBSCRIBE.
    changes: tokio::sync::Mutex<()>,
}

struct Watched {
    released: watch::Sender<()>,
    watchers: usize,
    subscribed: bool,
}

impl Channels {
    pub(super) fn deliver(&self, push: PushInfo) {
        let mut watched = self.lock_watched();
        match push.kind {
            PushKind::Message => {
                if let Some(Value::BulkString(channel)) = push.data.first()
                    && let Some(w) = std::str::from_utf8(channel)
                        .ok()
                        .and_then(|c| watched.get(c))
                {
                    w.released.send_replace(());
                }
            }
            // Releases may have been missed while the connection was down: let every
            // waiter try again. The next watch of each channel subscribes again: the
            // connection may be another one now (a Sentinel failover), which has none of
            // the old one's subscriptions.
            PushKind::Disconnection => {
                for w in watched.values_mut() {
                    w.subscribed = false;
                    w.released.send_replace(());
                }
            }
            _ => {}
        }
    }

    pub(super) async fn watch(
        self: &Arc<Self>,
        mut conn: Connection,
        channel: String,
    ) -> BackendResult<ReleaseWatch> {
        let _order = self.changes.lock().await;
        let (released, needs_subscribe) = {
            let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
            let w = watched.entry(channel.clone()).or_insert_with(|| Watched {
                released: watch::Sender::new(()),
                watchers: 0,
                subscribed: false,
            });
            w.watchers += 1;
            (w.released.subscribe(), !w.subscribed)
        };
        let guard = Unwatch {
            channels: self.clone(),
            channel: channel.clone(),
            conn: conn.clone(),
        };
        if needs_subscribe {
            conn.subscribe(&channel).await.map_err(describe)?;
            if let Some(w) = self.lock_watched().get_mut(&channel) {
                w.subscribed = true;
            }
        }
        Ok(ReleaseWatch::new(released, Some(Box::new(guard))))
    }

    fn lock_watched(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watched>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Drops one watcher of a channel; the last one unsubscribes.
struct Unwatch {
    channels: Arc<Channels>,
    channel: String,
    conn: Connection,
}

impl Drop for Unwatch {
    fn drop(&mut self) {
        let last = {
            let mut watched = self.channels.lock_watched();
            let w = watched
                .get_mut(&self.channel)
                .expect("a watched channel has an entry");
            w.watchers -= 1;
            w.watchers == 0
        };
        if !last {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let channels = self.channels.clone();
        let channel = std::mem::take(&mut self.channel);
        let mut conn = self.conn.clone();
        runtime.spawn(async move {
            let _order = channels.changes.lock().await;
            let still_unwatched = {
                let mut watched = channels.lock_watched();
                let idle = watched.get(&channel).is_some_and(|w| w.watchers == 0);
                if idle {
                    watched.remove(&channel);
                }
                idle
            };
            if still_unwatched {
                // A failure leaves a harmless extra subscription until the next reconnect.
                let _ = conn.unsubscribe(&channel).await;
            }
        });
    }
}
