//! What every Redis store shares before it connects: reading the URL forms that list several
//! servers, keeping credentials out of messages, and how each connection is set up.

use std::time::Duration;

use redis::aio::ConnectionManagerConfig;

use crate::store::settings::secrets_of;
use redis::{IntoConnectionInfo, PushInfo};

/// The parts of a URL that lists several servers:
/// `scheme://[user[:password]@]host:port,host:port[/path]`.
pub(super) struct HostList<'a> {
    pub(super) username: Option<&'a str>,
    pub(super) password: Option<&'a str>,
    /// `host:port` of each server.
    pub(super) hosts: Vec<&'a str>,
    /// What follows the first `/` after the hosts, if anything.
    pub(super) path: &'a str,
}

impl<'a> HostList<'a> {
    /// Splits what follows `scheme://`.
    pub(super) fn parse(rest: &'a str) -> Self {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (username, password) = match auth.map(|a| a.split_once(':')) {
            Some(Some((user, pass))) => (Some(user), Some(pass)),
            Some(None) => (auth, None),
            None => (None, None),
        };
        HostList {
            username: username.filter(|u| !u.is_empty()),
            password,
            hosts: hosts.split(',').filter(|h| !h.is_empty()).collect(),
            path,
        }
    }

    /// `redis://host:port` for each server, checked.
    pub(super) fn urls(&self) -> Result<Vec<String>, String> {
        if self.hosts.is_empty() {
            return Err("it lists no host:port".into());
        }
        self.hosts
            .iter()
            .map(|host| {
                let url = format!("redis://{host}");
                match url.as_str().into_connection_info() {
                    Ok(_) => Ok(url),
                    Err(_) => Err(format!("{host:?} is not a host:port")),
                }
            })
            .collect()
    }
}

/// A client library's complaint about `url`, if it holds none of the URL's secrets (see
/// [`secrets_of`]); otherwise a plain one.
pub(super) fn complaint_about(url: &str, complaint: &dyn std::fmt::Display) -> String {
    let text = complaint.to_string();
    if secrets_of(url).iter().any(|secret| text.contains(secret)) {
        "it does not parse as a Redis URL".into()
    } else {
        text
    }
}

/// How every connection to one server is kept: bounded connects and answers, `retries`
/// attempts more to connect, subscriptions restored after a reconnect, push messages to
/// `on_push`.
pub(super) fn manager_config(
    timeout: Duration,
    retries: usize,
    on_push: impl Fn(PushInfo) + Send + Sync + 'static,
) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(retries)
        .set_automatic_resubscription()
        .set_push_sender(move |push| {
            on_push(push);
            Ok::<(), std::convert::Infallible>(())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A library's complaint is passed on only when it holds no part of the credentials.
    #[test]
    fn complaints_holding_credentials_are_replaced() {
        let url = "redis://user:se/cret@h:1";
        assert_eq!(
            complaint_about(url, &"invalid port number"),
            "invalid port number"
        );
        assert_eq!(
            complaint_about(url, &"bad host se/cret@h"),
            "it does not parse as a Redis URL"
        );
        assert_eq!(
            complaint_about(url, &"user is unknown"),
            "it does not parse as a Redis URL"
        );
        let query = "redis+unix:///s.sock?pass=hunter2";
        assert_eq!(
            complaint_about(query, &"bad hunter2"),
            "it does not parse as a Redis URL"
        );
    }
}
