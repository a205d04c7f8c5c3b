//! What an operator asks of a Redis store, never a guest: the locks held now, and their
//! eviction. Keys are found with `SCAN` (never `KEYS`, which blocks the server) on the
//! server, or on every primary of a cluster; each lock is then read in one script run.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::{Confirmed, Connection, RedisBackend, Request, describe};
use crate::backend::{BackendError, BackendErrorKind, BackendResult, Holder, Listing};
use crate::key::{Found, KeySpace, LockKey};

/// Reads one lock in one step: see `scripts/inspect.lua`.
pub(super) const INSPECT: &str = include_str!("scripts/inspect.lua");

/// Frees one lock whoever holds it: see `scripts/evict.lua`.
pub(super) const EVICT: &str = include_str!("scripts/evict.lua");

/// How many keys one `SCAN` step asks a server to look at.
const SCAN_COUNT: usize = 1000;

/// How many locks are read at once.
const INSPECT_BATCH: usize = 256;

/// The lease `inspect.lua` answers for a key that holds a value of another type.
const FOREIGN: i64 = -3;

/// A lock held now, with its owner token: what Redlock compares across masters.
pub(crate) struct Sighting {
    pub(crate) holder: Holder,
    pub(crate) token: String,
}

/// What one server's listing found: the locks of the namespace listed, with their tokens,
/// and what else (see [`Listing`]).
#[derive(Default)]
pub(crate) struct Survey {
    pub(crate) sightings: Vec<Sighting>,
    pub(crate) skipped: usize,
    pub(crate) elsewhere: BTreeMap<Option<String>, usize>,
}

impl Survey {
    /// The listing it makes, without the tokens.
    pub(crate) fn into_listing(self) -> Listing {
        Listing {
            holders: self.sightings.into_iter().map(|s| s.holder).collect(),
            skipped: self.skipped,
            elsewhere: self.elsewhere,
        }
    }
}

/// What [`RedisBackend::inspect`] read of one lock.
pub(crate) enum Inspected {
    Held(Sighting),
    Free,
    /// Its key, or its fence's, holds a value of another type than latchkey writes.
    Foreign,
}

impl RedisBackend {
    /// Every lock held now in `namespace` (of `app`, if given), with its owner token; the
    /// keys skipped, and the locks found in other namespaces.
    pub(crate) async fn survey(
        &self,
        space: &KeySpace,
        app: Option<&str>,
    ) -> BackendResult<Survey> {
        let mut conn = self.connection().await?;
        let keys = match conn.clone() {
            Connection::Cluster(cluster) => {
                let mut keys = Vec::new();
                for (host, port) in primaries(&mut conn).await? {
                    let node =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                    let on_node = |cmd| {
                        let (mut cluster, node) = (cluster.clone(), node.clone());
                        async move { cluster.route_command(cmd, node).await }
                    };
                    keys.extend(scan(on_node, space.pattern()).await?);
                }
                keys
            }
            one => {
                let on_server = |cmd: redis::Cmd| {
                    let mut one = one.clone();
                    async move { cmd.query_async::<redis::Value>(&mut one).await }
                };
                scan(on_server, space.pattern()).await?
            }
        };
        let mut survey = Survey::default();
        let mut wanted = Vec::new();
        for raw in &keys {
            let Ok(key) = std::str::from_utf8(raw) else {
                survey.skipped += 1;
                continue;
            };
            match space.find(key) {
                Found::Here(lock) if app.is_none_or(|app| app == lock.app) => {
                    wanted.push(space.key(&lock.app, &lock.id, lock.kind));
                }
                Found::Elsewhere(found, lock) if app.is_none_or(|app| app == lock.app) => {
                    *survey
                        .elsewhere
                        .entry(found.map(str::to_owned))
                        .or_default() += 1;
                }
                Found::Foreign => survey.skipped += 1,
                _ => {}
            }
        }
        for batch in wanted.chunks(INSPECT_BATCH) {
            let read = batch.iter().map(|key| {
                let mut conn = conn.clone();
                async move { self.inspect(&mut conn, key).await }
            });
            for inspected in try_join_all(read).await? {
                match inspected {
                    Inspected::Held(sighting) => survey.sightings.push(sighting),
                    Inspected::Free => {}
                    Inspected::Foreign => survey.skipped += 1,
                }
            }
        }
        Ok(survey)
    }

    /// Who holds `key` now, read in one step.
    pub(super) async fn inspect(
        &self,
        conn: &mut Connection,
        key: &LockKey,
    ) -> BackendResult<Inspected> {
        let (token, left, fence, now): (Option<String>, i64, String, String) = self
            .inspect
            .key(key.lock())
            .key(key.fence())
            .invoke_async(conn)
            .await
            .map_err(describe)?;
        if left == FOREIGN {
            return Ok(Inspected::Foreign);
        }
        let Some((token, left)) = token.zip(u64::try_from(left).ok()) else {
            return Ok(Inspected::Free);
        };
        let Ok(fence) = fence.parse::<u64>() else {
            return Ok(Inspected::Foreign);
        };
        let age = now
            .parse::<u64>()
            .ok()
            .and_then(|now| now.checked_sub(fence))
            .map(Duration::from_micros);
        let holder = Holder::new(
            key.decoded(),
            &token,
            fence,
            Duration::from_millis(left),
            age,
        );
        Ok(Inspected::Held(Sighting { holder, token }))
    }

    /// [`RedisBackend::inspect`] on a connection of its own: one Redlock master's answer
    /// of who holds `key`. A key of another type where the lock should be is a failure.
    pub(crate) async fn holder_sighting(&self, key: &LockKey) -> BackendResult<Option<Sighting>> {
        let mut conn = self.connection().await?;
        match self.inspect(&mut conn, key).await? {
            Inspected::Held(sighting) => Ok(Some(sighting)),
            Inspected::Free => Ok(None),
            Inspected::Foreign => Err(BackendError::new(
                BackendErrorKind::Failed,
                "holds a key of another kind where the lock should be",
            )),
        }
    }

    /// Frees `key` whoever holds it; on a store that waits for replicas, only once they
    /// confirm it (an eviction a failover undoes would hand the lock back).
    pub(crate) async fn evict_key(&self, key: &LockKey) -> BackendResult<bool> {
        let mut conn = self.connection().await?;
        let mut invocation = self.evict.key(key.lock());
        invocation.arg(key.released());
        let (evicted, confirmed): (i64, _) =
            self.send(&mut conn, &Request::Script(invocation)).await?;
        match confirmed {
            Confirmed::No { acked } => Err(self.unconfirmed("the eviction", acked)),
            _ => Ok(evicted == 1),
        }
    }
}

/// Every key that matches `pattern` ([`KeySpace::pattern`]) on one server, by `SCAN` steps
/// sent through `send`; as bytes, since a key of someone else's need not be UTF-8.
async fn scan<F, Fut>(mut send: F, pattern: &str) -> BackendResult<Vec<Vec<u8>>>
where
    F: FnMut(redis::Cmd) -> Fut,
    Fut: Future<Output = redis::RedisResult<redis::Value>>,
{
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let reply = send(cmd).await.map_err(describe)?;
        let (next, found): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply).map_err(|_| {
            BackendError::new(
                BackendErrorKind::Failed,
                "answered SCAN in a form it cannot read",
            )
        })?;
        keys.extend(found);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// The addresses of a cluster's primaries, from `CLUSTER NODES`; an error if one is failing.
async fn primaries(conn: &mut Connection) -> BackendResult<Vec<(String, u16)>> {
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(conn)
        .await
        .map_err(describe)?;
    let mut primaries = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        if !flags.split(',').any(|f| f == "master") {
            continue;
        }
        if flags.contains("fail") {
            // Its locks cannot be read: a listing without them would look complete.
            return Err(BackendError::new(
                BackendErrorKind::Unreachable,
                "has a failing primary, whose locks cannot be listed",
            ));
        }
        let address = address.split('@').next().unwrap_or_default();
        let parsed = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)));
        match parsed {
            Some(primary) => primaries.push(primary),
            None => {
                return Err(BackendError::new(
                    BackendErrorKind::Failed,
                    "answered CLUSTER NODES with a line it cannot read",
                ));
            }
        }
    }
    Ok(primaries)
}
