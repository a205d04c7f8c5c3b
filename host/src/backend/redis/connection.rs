//! The one connection a host keeps per Redis store: a `ConnectionManager` to a single
//! server, a `ClusterConnection` to a Redis Cluster, or a connection that follows the
//! primary named by Redis Sentinel. All are multiplexed, reconnect by themselves, and speak
//! RESP3, so they carry pub/sub too.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelNodeConnectionInfo;
use redis::{
    Client, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisConnectionInfo,
    RedisFuture, RedisResult, Value,
};

use super::sentinel::{PrimaryConnection, Sentinels};
use super::setup::{HostList, complaint_about, manager_config};
use crate::error::OpenError;
use crate::store::settings::{StoreKind, StoreUrl};

/// Where a store's server is, parsed from its URL.
pub(super) enum Target {
    /// `redis://`, `rediss://`, `redis+unix://`: one server.
    Single(Client),
    /// `redis+cluster://[user[:password]@]host:port,host:port,...`: the seed nodes of a
    /// cluster; the client learns the rest.
    Cluster {
        nodes: Vec<String>,
        username: Option<String>,
        password: Option<String>,
    },
    /// `redis+sentinel://[user[:password]@]host:port,host:port/service`: the sentinels
    /// that know which server is the primary of `service`; the credentials are the
    /// primary's (the sentinels themselves are reached without).
    Sentinel(Sentinels),
}

impl Target {
    /// Parses `url`, a URL of `kind` (one server, a Cluster or Sentinel); `password`, if
    /// given, replaces the URL's.
    pub(super) fn parse(
        kind: StoreKind,
        url: &StoreUrl<'_>,
        password: Option<&str>,
    ) -> Result<Self, OpenError> {
        let bad = |e: &dyn std::fmt::Display| OpenError::BadUrl {
            url: url.shown.clone(),
            reason: complaint_about(url.full, e),
        };
        let url = url.full;
        let after_scheme = || url.split_once("://").map_or("", |(_, rest)| rest);
        if kind == StoreKind::Cluster {
            let list = HostList::parse(after_scheme());
            return Ok(Target::Cluster {
                nodes: list.urls().map_err(|e| bad(&e))?,
                username: list.username.map(str::to_owned),
                password: password.or(list.password).map(str::to_owned),
            });
        }
        if kind == StoreKind::Sentinel {
            let list = HostList::parse(after_scheme());
            let service = list.path.trim_end_matches('/');
            if service.is_empty() {
                return Err(bad(&"name the monitored service after the hosts, as in \
                     redis+sentinel://host:port/mymaster"));
            }
            let mut primary = RedisConnectionInfo::default().set_protocol(ProtocolVersion::RESP3);
            if let Some(username) = list.username {
                primary = primary.set_username(username);
            }
            if let Some(password) = password.or(list.password) {
                primary = primary.set_password(password);
            }
            return Ok(Target::Sentinel(Sentinels {
                addresses: list.urls().map_err(|e| bad(&e))?,
                service: service.to_owned(),
                primary: SentinelNodeConnectionInfo::default().set_redis_connection_info(primary),
            }));
        }
        let info = url.into_connection_info().map_err(|e| bad(&e))?;
        let mut settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        if let Some(password) = password {
            settings = settings.set_password(password);
        }
        let client = Client::open(info.set_redis_settings(settings)).map_err(|e| bad(&e))?;
        Ok(Target::Single(client))
    }

    /// Connects, handing every push message (pub/sub) to `on_push`; a failed connection is
    /// tried `retries` times more.
    pub(super) async fn connect(
        &self,
        timeout: Duration,
        retries: usize,
        on_push: impl Fn(PushInfo) + Send + Sync + 'static,
    ) -> RedisResult<Connection> {
        let on_push: Arc<dyn Fn(PushInfo) + Send + Sync> = Arc::new(on_push);
        match self {
            Target::Single(client) => {
                let config = manager_config(timeout, retries, move |push| on_push(push));
                let manager = ConnectionManager::new_with_config(client.clone(), config).await?;
                Ok(Connection::Single(manager))
            }
            Target::Sentinel(sentinels) => {
                let primary = sentinels.connect(timeout, retries, on_push).await?;
                Ok(Connection::Sentinel(primary))
            }
            Target::Cluster {
                nodes,
                username,
                password,
            } => {
                let mut builder = ClusterClientBuilder::new(nodes.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(retries as u32)
                    .push_sender(move |push| {
                        on_push(push);
                        Ok::<(), std::convert::Infallible>(())
                    });
                if let Some(username) = username {
                    builder = builder.username(username);
                }
                if let Some(password) = password {
                    builder = builder.password(password);
                }
                let connection = builder.build()?.get_async_connection().await?;
                Ok(Connection::Cluster(connection))
            }
        }
    }
}

/// A connection to a single server or to a cluster; commands and scripts are routed by
/// their first key in a cluster.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(PrimaryConnection),
}

impl Connection {
    /// Says the server answered, but not as a healthy primary would: a Sentinel store asks
    /// the sentinels before its next call. Others have nobody to ask.
    pub(super) fn suspect(&self) {
        if let Connection::Sentinel(c) = self {
            c.suspect();
        }
    }

    pub(super) async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Connection::Single(c) => c.subscribe(channel).await,
            Connection::Cluster(c) => c.subscribe(channel).await,
            Connection::Sentinel(c) => c.subscribe(channel).await,
        }
    }

    pub(super) async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Connection::Single(c) => c.unsubscribe(channel).await,
            Connection::Cluster(c) => c.unsubscribe(channel).await,
            Connection::Sentinel(c) => c.unsubscribe(channel).await,
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
            Connection::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
            Connection::Sentinel(c) => c.get_db(),
        }
    }
}
