//! A store behind Redis Sentinel: the connection follows whichever server the sentinels name
//! as the primary.
//!
//! redis-rs asks the sentinels for the primary (and checks its `ROLE`) but keeps no
//! connection that follows a failover, so this module does: every call goes to the current
//! primary's `ConnectionManager`. The sentinels are asked again before the next call once
//! the connection dropped (a `ConnectionManager` would otherwise reconnect to the same
//! address, where an empty server may have restarted), once a call found the server gone or
//! demoted to a replica (a `READONLY` reply), and once the backend says the server looks wrong (too
//! few replicas confirmed a grant). The failed call itself is not retried. A new primary
//! means a new connection, with no subscriptions yet: the waiters are woken (as after any
//! disconnection) and subscribe again on it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    Client, Cmd, Pipeline, PushInfo, PushKind, RedisError, RedisFuture, RedisResult, Value,
};

use super::setup::manager_config;

/// Where the sentinels are, and which service they watch.
pub(super) struct Sentinels {
    /// `redis://host:port` of each sentinel.
    pub(super) addresses: Vec<String>,
    /// The name the sentinels monitor the primary under (`sentinel monitor NAME ...`).
    pub(super) service: String,
    /// Credentials and protocol for the primary itself.
    pub(super) primary: SentinelNodeConnectionInfo,
}

/// A multiplexed connection to the current primary; clones share it.
#[derive(Clone)]
pub(super) struct PrimaryConnection(Arc<Following>);

struct Following {
    /// Held while the sentinels are asked, so that one question is asked at a time.
    sentinel: tokio::sync::Mutex<Sentinel>,
    service: String,
    primary_info: SentinelNodeConnectionInfo,
    connector: Connector,
    current: Mutex<Primary>,
    /// Bumped on every switch, so that many calls failing at once ask the sentinels once.
    switches: AtomicU64,
}

#[derive(Clone)]
struct Primary {
    address: String,
    manager: ConnectionManager,
}

/// Makes connections to a primary, set up like every other store connection, that mark
/// themselves suspect when they drop.
struct Connector {
    timeout: Duration,
    retries: usize,
    /// Set when the current primary may no longer be the primary: ask before the next call.
    suspect: Arc<AtomicBool>,
    on_push: Arc<dyn Fn(PushInfo) + Send + Sync>,
}

impl Connector {
    async fn connect(&self, address: String, client: Client) -> RedisResult<Primary> {
        let (suspect, on_push) = (self.suspect.clone(), self.on_push.clone());
        let config = manager_config(self.timeout, self.retries, move |push: PushInfo| {
            if push.kind == PushKind::Disconnection {
                suspect.store(true, Ordering::Release);
            }
            on_push(push);
        });
        let manager = ConnectionManager::new_with_config(client, config).await?;
        Ok(Primary { address, manager })
    }
}

impl Sentinels {
    /// Asks the sentinels for the primary and connects to it.
    pub(super) async fn connect(
        &self,
        timeout: Duration,
        retries: usize,
        on_push: Arc<dyn Fn(PushInfo) + Send + Sync>,
    ) -> RedisResult<PrimaryConnection> {
        let mut sentinel = Sentinel::build(self.addresses.clone())?;
        let connector = Connector {
            timeout,
            retries,
            suspect: Arc::new(AtomicBool::new(false)),
            on_push,
        };
        let (address, client) = ask(&mut sentinel, &self.service, &self.primary).await?;
        let current = connector.connect(address, client).await?;
        Ok(PrimaryConnection(Arc::new(Following {
            sentinel: tokio::sync::Mutex::new(sentinel),
            service: self.service.clone(),
            primary_info: self.primary.clone(),
            connector,
            current: Mutex::new(current),
            switches: AtomicU64::new(0),
        })))
    }
}

/// The primary's address and a client for it, checked with `ROLE` by redis-rs.
async fn ask(
    sentinel: &mut Sentinel,
    service: &str,
    info: &SentinelNodeConnectionInfo,
) -> RedisResult<(String, Client)> {
    let client = sentinel.async_master_for(service, Some(info)).await?;
    Ok((client.get_connection_info().addr().to_string(), client))
}

/// Whether a failed call may mean the primary moved: the server is gone, or is a replica now.
fn may_have_moved(err: &RedisError) -> bool {
    err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_io_error()
        || err.is_timeout()
        || err.code() == Some("READONLY")
}

/// Whether a reply is a replica's refusal to write. Server errors arrive as values and only
/// become `RedisError`s in the caller, so they are looked for here too.
fn from_a_replica(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(err) if err.code() == "READONLY")
}

impl PrimaryConnection {
    fn current(&self) -> (ConnectionManager, u64) {
        let current = self.0.current.lock().unwrap_or_else(|e| e.into_inner());
        (
            current.manager.clone(),
            self.0.switches.load(Ordering::Acquire),
        )
    }

    /// Runs `call` on the current primary; if it failed as if the primary moved, asks the
    /// sentinels before returning the error, so the next call goes to the right server.
    /// The failed call is not retried: it may have run (a script that acquired a lock).
    async fn call<T, F>(
        &self,
        call: impl FnOnce(ConnectionManager) -> F,
        replica_replied: impl Fn(&T) -> bool,
    ) -> RedisResult<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        if self.0.connector.suspect.load(Ordering::Acquire) {
            self.follow(self.0.switches.load(Ordering::Acquire)).await;
        }
        let (manager, seen) = self.current();
        let result = call(manager).await;
        let moved = match &result {
            Ok(reply) => replica_replied(reply),
            Err(err) => may_have_moved(err),
        };
        if moved {
            self.follow(seen).await;
        }
        result
    }

    /// Makes the next call ask the sentinels first: the server answered, but not as the
    /// primary of a healthy set would.
    pub(super) fn suspect(&self) {
        self.0.connector.suspect.store(true, Ordering::Release);
    }

    /// Switches to the primary the sentinels name now, unless another call already did
    /// since switch number `seen`.
    async fn follow(&self, seen: u64) {
        let this = &self.0;
        let mut sentinel = this.sentinel.lock().await;
        if this.switches.load(Ordering::Acquire) != seen {
            return;
        }
        // Cleared before asking, so that a disconnection during the question is not lost.
        this.connector.suspect.store(false, Ordering::Release);
        let (address, client) = match ask(&mut sentinel, &this.service, &this.primary_info).await {
            Ok(answer) => answer,
            Err(err) => {
                tracing::debug!(error = %err, "sentinels did not name a primary");
                return;
            }
        };
        let old = self.current_address();
        if address == old {
            return;
        }
        match this.connector.connect(address, client).await {
            Ok(primary) => {
                tracing::info!(from = %old, to = %primary.address, "sentinels named a new primary");
                *this.current.lock().unwrap_or_else(|e| e.into_inner()) = primary;
                this.switches.fetch_add(1, Ordering::AcqRel);
                // Subscriptions stayed on the old server: wake the waiters to subscribe anew.
                (this.connector.on_push)(PushInfo {
                    kind: PushKind::Disconnection,
                    data: Vec::new(),
                });
            }
            Err(err) => tracing::debug!(error = %err, "the new primary could not be reached"),
        }
    }

    fn current_address(&self) -> String {
        let current = self.0.current.lock().unwrap_or_else(|e| e.into_inner());
        current.address.clone()
    }

    pub(super) async fn subscribe(&self, channel: &str) -> RedisResult<()> {
        self.call(|mut m| async move { m.subscribe(channel).await }, |_| false)
            .await
    }

    pub(super) async fn unsubscribe(&self, channel: &str) -> RedisResult<()> {
        self.call(
            |mut m| async move { m.unsubscribe(channel).await },
            |_| false,
        )
        .await
    }
}

impl ConnectionLike for PrimaryConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.call(
            move |mut m| async move { m.req_packed_command(cmd).await },
            from_a_replica,
        ))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.call(
            move |mut m| async move { m.req_packed_commands(pipeline, offset, count).await },
            |replies: &Vec<Value>| replies.iter().any(from_a_replica),
        ))
    }

    fn get_db(&self) -> i64 {
        self.current().0.get_db()
    }
}
