//! The one connection a host keeps per Redis store: a `ConnectionManager` to a single
//! server, or a `ClusterConnection` to a Redis Cluster. Both are multiplexed, reconnect by
//! themselves, speak RESP3 (so they carry pub/sub too) and resubscribe after a reconnect.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Client, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisFuture, RedisResult,
    Value,
};

use super::redacted;

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
}

impl Target {
    /// Parses `url`; `password`, if given, replaces the URL's.
    pub(super) fn parse(url: &str, password: Option<&str>) -> Result<Self, String> {
        let bad = |e: &dyn std::fmt::Display| format!("bad Redis URL {}: {e}", redacted(url));
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (Some(auth), hosts),
                None => (None, rest),
            };
            let nodes: Vec<String> = hosts
                .trim_end_matches('/')
                .split(',')
                .map(|host| format!("redis://{host}"))
                .collect();
            for node in &nodes {
                node.as_str().into_connection_info().map_err(|e| bad(&e))?;
            }
            let (username, url_password) = match auth.map(|a| a.split_once(':')) {
                Some(Some((user, pass))) => (Some(user), Some(pass)),
                Some(None) => (auth, None),
                None => (None, None),
            };
            return Ok(Target::Cluster {
                nodes,
                username: username.filter(|u| !u.is_empty()).map(str::to_owned),
                password: password.or(url_password).map(str::to_owned),
            });
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

    /// Connects, handing every push message (pub/sub) to `on_push`.
    pub(super) async fn connect(
        &self,
        timeout: Duration,
        on_push: impl Fn(PushInfo) + Send + Sync + 'static,
    ) -> RedisResult<Connection> {
        let on_push = move |push: PushInfo| {
            on_push(push);
            Ok::<(), std::convert::Infallible>(())
        };
        match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_automatic_resubscription()
                    .set_push_sender(on_push);
                let manager = ConnectionManager::new_with_config(client.clone(), config).await?;
                Ok(Connection::Single(manager))
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
                    .retries(1)
                    .push_sender(on_push);
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
}

impl Connection {
    pub(super) async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Connection::Single(c) => c.subscribe(channel).await,
            Connection::Cluster(c) => c.subscribe(channel).await,
        }
    }

    pub(super) async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Connection::Single(c) => c.unsubscribe(channel).await,
            Connection::Cluster(c) => c.unsubscribe(channel).await,
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}
