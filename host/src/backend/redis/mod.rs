//! Locks in Redis, shared by every host that uses the same server.
//!
//! Each call is one Lua script (sent by EVALSHA), so each step is atomic on the server: no
//! other client can act between the check and the write. All calls of one host share one
//! multiplexed connection (`connection`: one server, or a Redis Cluster), which reconnects
//! by itself and speaks RESP3 so that it also carries the pub/sub subscriptions that wake
//! waiters (`channels`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{ErrorKind, FromRedisValue, Script, ScriptInvocation, ServerErrorKind};
use tokio::sync::OnceCell;

use super::{
    AnyAttempt, Attempt, Backend, BackendError, BackendErrorKind, BackendResult, Holder, Listing,
    ReleaseWatch, Renewal, Token, UnlockStatus, extend_each,
};
use crate::error::OpenError;
use crate::key::{KeySpace, LockKey};
use crate::store::settings::{StoreKind, StoreSettings, StoreUrl};
use channels::Channels;
use connection::{Connection, Target};

mod channels;
mod connection;
mod operator;
pub(crate) mod redlock;
mod sentinel;
mod setup;

/// Sets the lock if free and computes the fence in the same step, so a fence is never
/// granted without the lock nor the lock without a fence.
///
/// The fence is `max(last + 1, server clock in µs)`: the counter makes fences grow while
/// the fence key exists; the clock makes them grow after it is lost (FLUSHALL, a restart
/// without persistence, or the key's own expiry a day after the last grant). It is written
/// with `%.0f` because Lua's default number format would round it.
const ACQUIRE: &str = include_str!("scripts/acquire.lua");

/// [`ACQUIRE`] over the permits of a semaphore, in order, in one step: the first free one
/// is granted. Its keys share a hash slot (the semaphore's tag), so it runs on a Cluster.
/// Returns `{index from 1, fence}`, or `{0, soonest PTTL}` when every permit is held.
const ACQUIRE_ANY: &str = include_str!("scripts/acquire_any.lua");

/// Compare-and-delete: only the token's owner frees the lock, and the check and the delete
/// cannot be split by another client's grant. Returns 0 success, 1 no lock, 2 someone
/// else's; a success is announced on the lock's channel.
const RELEASE: &str = include_str!("scripts/release.lua");

/// Compare-and-expire: the lease is only moved while the token still holds the lock; a
/// lease made shorter is announced on the lock's channel, so that waiters wake for the new
/// end instead of sleeping until the old one.
const EXTEND: &str = include_str!("scripts/extend.lua");

/// Raises the fence to at least `ARGV[2]`, but only while the token holds the lock: how a
/// Redlock grant writes the fence it chose back to its majority.
const RAISE_FENCE: &str = include_str!("scripts/raise_fence.lua");

/// Compare-and-expire over many locks in one step: the keep-alive renewals due together,
/// one round trip and one script run for a whole batch. Each lock is checked and extended
/// on its own, so a lock lost by one grant never stops the renewal of another's.
const RENEW_MANY: &str = include_str!("scripts/renew_many.lua");

/// The most renewals in one run of [`RENEW_MANY`]: a script blocks the server while it
/// runs, so a large batch goes as several.
const RENEW_BATCH: usize = 256;

/// How long a fence key outlives its last grant. Within it fences follow a counter; after
/// it they follow the server's clock.
const FENCE_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

/// A lock store on one Redis server, a Redis Cluster, or the primary Redis Sentinel names.
pub(crate) struct RedisBackend {
    target: Target,
    timeout: Duration,
    /// Further attempts when connecting fails.
    connect_retries: usize,
    wait_replicas: u32,
    connection: OnceCell<Connection>,
    channels: Arc<Channels>,
    acquire: Script,
    release: Script,
    extend: Script,
    raise_fence: Script,
    renew_many: Script,
    acquire_any: Script,
    inspect: Script,
    evict: Script,
}

/// The backend of a store of `kind` (one server, a Cluster or Sentinel) at `url`, as
/// `settings` say.
/// Checks the URL now; connects on first use, so a host can start while Redis is down.
pub(crate) fn open(
    kind: StoreKind,
    url: &StoreUrl<'_>,
    settings: &StoreSettings,
) -> Result<RedisBackend, OpenError> {
    let target = Target::parse(kind, url, settings.password.as_deref())?;
    if let Target::Sentinel(_) = target
        && settings.wait_replicas == 0
    {
        return Err(OpenError::SentinelNeedsWaitReplicas {
            url: url.shown.clone(),
        });
    }
    Ok(RedisBackend::new(
        target,
        settings.timeout,
        settings.wait_replicas,
    ))
}

impl RedisBackend {
    fn new(target: Target, timeout: Duration, wait_replicas: u32) -> Self {
        RedisBackend {
            target,
            timeout,
            connect_retries: 1,
            wait_replicas,
            connection: OnceCell::new(),
            channels: Arc::default(),
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            extend: Script::new(EXTEND),
            raise_fence: Script::new(RAISE_FENCE),
            renew_many: Script::new(RENEW_MANY),
            acquire_any: Script::new(ACQUIRE_ANY),
            inspect: Script::new(operator::INSPECT),
            evict: Script::new(operator::EVICT),
        }
    }

    /// The same backend, giving up at once when it cannot connect: for a Redlock master,
    /// where the other masters are the retry.
    fn without_connect_retries(mut self) -> Self {
        self.connect_retries = 0;
        self
    }

    async fn connection(&self) -> BackendResult<Connection> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                let channels = self.channels.clone();
                let mut conn = self
                    .target
                    .connect(self.timeout, self.connect_retries, move |push| {
                        channels.deliver(push)
                    })
                    .await
                    .map_err(describe)?;
                self.check_replication(&mut conn).await?;
                self.load_scripts(&mut conn).await?;
                Ok::<_, BackendError>(conn)
            })
            .await?;
        Ok(connection.clone())
    }

    /// Refuses a topology whose guarantees the configuration does not accept: a replica
    /// (its writes are refused or lost), and a primary or a cluster with replicas unless
    /// grants wait for them. Checked once, when the connection is made.
    async fn check_replication(&self, conn: &mut Connection) -> BackendResult<()> {
        if let Connection::Cluster(_) = conn {
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(conn)
                .await
                .map_err(describe)?;
            let replicas = nodes.lines().filter(|line| line.contains("slave")).count();
            if replicas > 0 && self.wait_replicas == 0 {
                return Err(BackendError::new(
                    BackendErrorKind::Topology,
                    format!(
                        "is a cluster with {replicas} replica(s), and a failover can lose a \
                         granted lock: set wait-replicas to accept replication"
                    ),
                ));
            }
            return Ok(());
        }
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(conn)
            .await
            .map_err(describe)?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        if field("role") == Some("slave") {
            return Err(BackendError::new(
                BackendErrorKind::Topology,
                "is a replica: point the store at its primary",
            ));
        }
        let replicas: u32 = field("connected_slaves")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if replicas > 0 && self.wait_replicas == 0 {
            return Err(BackendError::new(
                BackendErrorKind::Topology,
                format!(
                    "has {replicas} replica(s), and a failover can lose a granted lock: \
                     set wait-replicas to accept replication"
                ),
            ));
        }
        Ok(())
    }

    /// Loads every script, so that the first call of each finds it. A script the server
    /// lacks costs a second round trip — and, where a `WAIT` follows it in the same
    /// pipeline, a second `WAIT`. (A server that restarted, or a new primary, lacks them
    /// again: [`RedisBackend::send`] loads them then.)
    async fn load_scripts(&self, conn: &mut Connection) -> BackendResult<()> {
        let scripts = [
            &self.acquire,
            &self.release,
            &self.extend,
            &self.raise_fence,
            &self.renew_many,
            &self.acquire_any,
            &self.inspect,
        ];
        for script in scripts {
            script
                .prepare_invoke()
                .load_async(conn)
                .await
                .map_err(describe)?;
        }
        Ok(())
    }

    /// Raises the fence of `key` to at least `fence` if `token` still holds the lock; false
    /// if it does not.
    async fn raise_fence(&self, key: &LockKey, token: &Token, fence: u64) -> BackendResult<bool> {
        let mut conn = self.connection().await?;
        let raised: i64 = self
            .raise_fence
            .key(key.lock())
            .key(key.fence())
            .arg(token.as_str())
            .arg(fence)
            .arg(millis(FENCE_MEMORY))
            .invoke_async(&mut conn)
            .await
            .map_err(describe)?;
        Ok(raised == 1)
    }

    /// Sends `request` and, when the store waits for replicas, Redis `WAIT` after it in the
    /// same pipeline: the reply, and whether enough replicas confirmed every write this
    /// connection made up to it (always, when the store waits for none).
    ///
    /// Every write that grants or moves a lease goes this way — an acquire, an extend, a
    /// renewal — and so does `held`: a lease the replicas do not share is one a failover
    /// loses, so it does not count until they confirm it.
    ///
    /// `WAIT` counts the replicas that have the writes of the client that sends it. Sent
    /// apart, a cluster client may route it to the slot's primary over another connection
    /// than the request's — a new one made to follow a redirect, or any node while its map
    /// of slots is incomplete — and there it counts no write and confirms at once. In one
    /// pipeline, both commands go to the node of the request's key on one connection, and
    /// the count is about this request.
    async fn send<T: FromRedisValue>(
        &self,
        conn: &mut Connection,
        request: &Request<'_>,
    ) -> BackendResult<(T, Confirmed)> {
        if self.wait_replicas == 0 {
            let reply = match request {
                Request::Script(invocation) => invocation.invoke_async(conn).await,
                Request::Command(cmd) => cmd.query_async(conn).await,
            };
            return Ok((reply.map_err(describe)?, Confirmed::Unasked));
        }
        // Half the call's timeout, so that WAIT answers (with a count) before the call as a
        // whole is given up.
        let wait = millis(self.timeout / 2).max(1);
        let mut pipe = redis::pipe();
        match request {
            Request::Script(invocation) => pipe.invoke_script(invocation),
            Request::Command(cmd) => pipe.add_command(cmd.clone()),
        };
        pipe.cmd("WAIT").arg(self.wait_replicas).arg(wait);
        let (reply, acked): (T, u32) = match pipe.query_async(conn).await {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                if let Request::Script(invocation) = request {
                    invocation.load_async(conn).await.map_err(describe)?;
                }
                pipe.query_async(conn).await
            }
            result => result,
        }
        .map_err(describe)?;
        if acked >= self.wait_replicas {
            return Ok((reply, Confirmed::Yes));
        }
        // Perhaps this server is a restarted old primary, and the set moved on.
        conn.suspect();
        Ok((reply, Confirmed::No { acked }))
    }

    /// The failure of a write (`what`: "the grant") that too few replicas confirmed.
    fn unconfirmed(&self, what: &str, acked: u32) -> BackendError {
        BackendError::new(
            BackendErrorKind::TooFewConfirmations,
            format!(
                "had {acked} of {} replicas confirm {what} in time",
                self.wait_replicas
            ),
        )
    }

    /// Runs the acquire script (see [`RedisBackend::send`]): `(granted, fence or PTTL)`.
    async fn acquire(
        &self,
        conn: &mut Connection,
        key: &LockKey,
        token: &Token,
        lease: Duration,
    ) -> BackendResult<(i64, i64)> {
        let mut invocation = self.acquire.key(key.lock());
        invocation
            .key(key.fence())
            .arg(token.as_str())
            .arg(millis(lease))
            .arg(millis(FENCE_MEMORY));
        match self.send(conn, &Request::Script(invocation)).await? {
            ((1, _), Confirmed::No { acked }) => Err(self.unconfirmed("the grant", acked)),
            (reply, _) => Ok(reply),
        }
    }
}

/// A request [`RedisBackend::send`] sends: a script (by EVALSHA, loaded if the server
/// lacks it) or a plain command.
enum Request<'a> {
    Script(ScriptInvocation<'a>),
    Command(redis::Cmd),
}

/// Whether enough replicas confirmed a request's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirmed {
    /// The store waits for no replica.
    Unasked,
    /// Enough did.
    Yes,
    /// Only `acked` did.
    No { acked: u32 },
}

/// Says what failed in latchkey's own words: the client's text can hold the server's
/// address, which guests must not learn.
pub(super) fn describe(err: redis::RedisError) -> BackendError {
    use BackendErrorKind::*;
    tracing::debug!(error = %err, "redis call failed");
    if err.is_timeout() {
        BackendError::new(Timeout, "did not answer in time")
    } else if err.is_connection_refusal() {
        BackendError::new(Unreachable, "could not be reached (connection refused)")
    } else if err.is_connection_dropped() || err.is_io_error() {
        BackendError::new(Unreachable, "could not be reached (connection lost)")
    } else if err.kind() == redis::ErrorKind::AuthenticationFailed || is_auth_refusal(&err) {
        BackendError::new(CredentialsRefused, "refused the host's credentials")
    } else if let Some(refusal) = acl_refusal(&err) {
        BackendError::new(NotPermitted, refusal)
    } else {
        match err.code() {
            // A server's error code is a word of its own (WRONGTYPE, READONLY): safe to show.
            Some(code) if code.bytes().all(|b| b.is_ascii_uppercase()) => {
                BackendError::new(Failed, format!("failed ({code})"))
            }
            _ => BackendError::new(Failed, "failed (an answer it cannot use)"),
        }
    }
}

/// What the store's ACL refused the host, in latchkey's words — naming the permission its
/// user lacks, never the user — if the error is such a refusal.
fn acl_refusal(err: &redis::RedisError) -> Option<String> {
    let detail = err.detail().unwrap_or_default();
    let grant = "grant it as latchkey's docs give the ACL";
    match err.code()? {
        "NOPERM" => Some(if detail.contains("the keys") {
            format!("refused access to a key: its user needs ~latchkey:* ({grant})")
        } else if detail.contains("the channels") {
            format!("refused access to a channel: its user needs &latchkey:* ({grant})")
        } else {
            // "this user has no permissions to run the 'info' command"
            let command = detail
                .split('\'')
                .nth(1)
                .filter(|c| c.bytes().all(|b| b.is_ascii_alphabetic() || b == b'|'))
                .unwrap_or("a command");
            format!(
                "refused the command {}: its user may not run it (+{command}; {grant})",
                command.to_ascii_uppercase()
            )
        }),
        "ERR" if detail.contains("user executing the script can't run") => Some(format!(
            "refused a command latchkey's scripts run (SET, GET, DEL, PEXPIRE, PTTL, TIME, \
             PUBLISH or TYPE): its user may not run it ({grant})"
        )),
        _ => None,
    }
}

/// A refusal during the handshake (HELLO) comes back as a generic error whose text starts
/// with the server's code, so the code is looked for in the text.
fn is_auth_refusal(err: &redis::RedisError) -> bool {
    let text = err.to_string();
    ["NOAUTH", "WRONGPASS"]
        .iter()
        .any(|code| text.contains(code))
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[async_trait]
impl Backend for RedisBackend {
    async fn try_acquire(
        &self,
        key: &LockKey,
        token: &Token,
        lease: Duration,
    ) -> BackendResult<Attempt> {
        let mut conn = self.connection().await?;
        // If too few replicas confirm, the caller releases the token: a grant the replicas
        // may not have is not handed out.
        let (granted, value) = self.acquire(&mut conn, key, token, lease).await?;
        Ok(if granted == 1 {
            Attempt::Granted {
                fence: value as u64,
            }
        } else {
            Attempt::Busy {
                // PTTL is -2 when the key vanished between the SET and the PTTL, and -1
                // for a key without TTL (never written by latchkey).
                expires_in: u64::try_from(value).ok().map(Duration::from_millis),
            }
        })
    }

    async fn try_acquire_any(
        &self,
        keys: &[LockKey],
        token: &Token,
        lease: Duration,
    ) -> BackendResult<AnyAttempt> {
        let mut conn = self.connection().await?;
        let mut invocation = self.acquire_any.prepare_invoke();
        for key in keys {
            invocation.key(key.lock()).key(key.fence());
        }
        invocation
            .arg(token.as_str())
            .arg(millis(lease))
            .arg(millis(FENCE_MEMORY));
        let ((index, value), confirmed): ((i64, i64), _) =
            self.send(&mut conn, &Request::Script(invocation)).await?;
        if index == 0 {
            return Ok(AnyAttempt::Busy {
                expires_in: u64::try_from(value).ok().map(Duration::from_millis),
            });
        }
        if let Confirmed::No { acked } = confirmed {
            return Err(self.unconfirmed("the grant", acked));
        }
        Ok(AnyAttempt::Granted {
            index: (index - 1) as usize,
            fence: value as u64,
        })
    }

    async fn release(&self, key: &LockKey, token: &Token) -> BackendResult<UnlockStatus> {
        let mut conn = self.connection().await?;
        let status: i64 = self
            .release
            .key(key.lock())
            .arg(token.as_str())
            .arg(key.released())
            .invoke_async(&mut conn)
            .await
            .map_err(describe)?;
        Ok(match status {
            0 => UnlockStatus::Success,
            2 => UnlockStatus::LockBelongsToOthers,
            _ => UnlockStatus::LockDoesNotExist,
        })
    }

    /// An extension the replicas did not confirm is a failure: the lease they know of ends
    /// where it did, and a failover would end it there.
    async fn extend(&self, key: &LockKey, token: &Token, lease: Duration) -> BackendResult<bool> {
        let mut conn = self.connection().await?;
        let mut invocation = self.extend.key(key.lock());
        invocation
            .arg(token.as_str())
            .arg(millis(lease))
            .arg(key.released());
        match self.send(&mut conn, &Request::Script(invocation)).await? {
            (1, Confirmed::No { acked }) => Err(self.unconfirmed("the extension", acked)),
            (extended, _) => Ok(extended == 1),
        }
    }

    /// A holder the replicas may not have confirmed (a grant or renewal of ours they lack)
    /// is not an answer: the store cannot say.
    async fn holds(&self, key: &LockKey, token: &Token) -> BackendResult<bool> {
        let mut conn = self.connection().await?;
        let mut get = redis::cmd("GET");
        get.arg(key.lock());
        let (holder, confirmed): (Option<String>, _) =
            self.send(&mut conn, &Request::Command(get)).await?;
        let ours = holder.as_deref() == Some(token.as_str());
        match confirmed {
            Confirmed::No { acked } if ours => Err(self.unconfirmed("the lease", acked)),
            _ => Ok(ours),
        }
    }

    async fn renew(&self, renewals: &[Renewal<'_>]) -> BackendResult<Vec<Option<bool>>> {
        let mut conn = self.connection().await?;
        if let Connection::Cluster(_) = conn {
            // A script's keys must share a hash slot: one extend each instead, which the
            // cluster connection pipelines to each node.
            return extend_each(self, renewals).await;
        }
        let mut answers = Vec::with_capacity(renewals.len());
        for batch in renewals.chunks(RENEW_BATCH) {
            let mut invocation = self.renew_many.prepare_invoke();
            for renewal in batch {
                invocation
                    .key(renewal.key.lock())
                    .arg(renewal.token.as_str())
                    .arg(millis(renewal.lease));
            }
            let (renewed, confirmed): (Vec<i64>, _) =
                self.send(&mut conn, &Request::Script(invocation)).await?;
            if let Confirmed::No { acked } = confirmed {
                tracing::debug!(acked, "renewals the replicas did not confirm");
            }
            answers.extend(renewed.into_iter().map(|n| match confirmed {
                // Found gone, the replicas or not: a renewal cannot bring it back.
                _ if n != 1 => Some(false),
                Confirmed::No { .. } => None,
                Confirmed::Yes | Confirmed::Unasked => Some(true),
            }));
        }
        Ok(answers)
    }

    async fn watch(&self, key: &LockKey) -> BackendResult<ReleaseWatch> {
        let conn = self.connection().await?;
        self.channels.watch(conn, key.released().to_owned()).await
    }

    async fn announce(&self, key: &LockKey) -> BackendResult<()> {
        let mut conn = self.connection().await?;
        redis::cmd("PUBLISH")
            .arg(key.released())
            .arg("")
            .query_async::<()>(&mut conn)
            .await
            .map_err(describe)
    }

    /// A holder the replicas may not have confirmed is still the holder: who leads is
    /// what the primary says now, as every grant is decided there.
    async fn holder(&self, key: &LockKey) -> BackendResult<Option<Holder>> {
        Ok(self.holder_sighting(key).await?.map(|seen| seen.holder))
    }

    async fn ping(&self) -> BackendResult<()> {
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(describe)
    }

    async fn holders(&self, space: &KeySpace, app: Option<&str>) -> BackendResult<Listing> {
        Ok(self.survey(space, app).await?.into_listing())
    }

    async fn evict(&self, key: &LockKey) -> BackendResult<bool> {
        self.evict_key(key).await
    }
}
