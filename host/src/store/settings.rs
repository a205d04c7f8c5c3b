//! What a lock store is opened from, and all that may be known of it before it is: the one
//! table of the URL forms latchkey knows, the kinds of store they name, [`StoreSettings`],
//! and how a URL is shown without its credentials.
//!
//! A leaf: it imports nothing of the crate, so that the backends, the errors and the config
//! file can all take their words from here.

use std::time::Duration;

/// How long a store call may take before it is `unavailable`, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a lock store is and how to use it: what [`open`](crate::open()) needs.
#[non_exhaustive]
#[derive(Clone)]
pub struct StoreSettings {
    /// `memory`, or a URL of one of the forms of [`url_forms`]; may hold a user and a
    /// password.
    pub url: String,
    /// A password that overrides the URL's, so it need not appear on a command line.
    pub password: Option<String>,
    /// How long one call may take before it is `unavailable` (default 2 s).
    pub timeout: Duration,
    /// How many replicas must confirm a grant (Redis `WAIT`) before the guest gets it. With
    /// 0, a server that has replicas, or is one, is refused: on failover, asynchronous
    /// replication can lose a granted lock. See the book's Redis page, "Replicas".
    pub wait_replicas: u32,
    /// A lock space of its own in the store: the same app and resource id in two
    /// namespaces are two locks. 1 to 64 letters, digits, `.`, `_` or `-`.
    pub namespace: Option<String>,
    /// How locks are laid out among the store's keys: `latchkey` (the default) or `dapr`,
    /// daprd's own layout ([`crate::key::KeySpace::Dapr`]). The URL's `key-layout=` says
    /// the same.
    pub key_layout: Option<String>,
}

impl StoreSettings {
    /// A store at `url`: the URL's password if any, the default timeout, no replicas to
    /// wait for, no namespace.
    pub fn new(url: impl Into<String>) -> Self {
        StoreSettings {
            url: url.into(),
            password: None,
            timeout: DEFAULT_TIMEOUT,
            wait_replicas: 0,
            namespace: None,
            key_layout: None,
        }
    }
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &redacted(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("wait_replicas", &self.wait_replicas)
            .field("namespace", &self.namespace)
            .field("key_layout", &self.key_layout)
            .finish()
    }
}

/// A store's URL as configured, beside the form of it that may be shown: redacted once, as
/// the store is opened, and quoted from there by every error about it.
pub(crate) struct StoreUrl<'a> {
    /// The URL, credentials and all.
    pub(crate) full: &'a str,
    /// The URL as [`redacted`] shows it.
    pub(crate) shown: String,
}

impl StoreSettings {
    /// Its URL, and the URL as it may be shown.
    pub(crate) fn url(&self) -> StoreUrl<'_> {
        StoreUrl {
            full: &self.url,
            shown: redacted(&self.url),
        }
    }
}

/// The kinds of lock store, each with the backend that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    /// This process's memory.
    Memory,
    /// One Redis server, over TCP, TLS or a unix socket.
    Server,
    /// A Redis Cluster, from its seed nodes.
    Cluster,
    /// The primary that Redis Sentinels name.
    Sentinel,
    /// Redlock over independent masters.
    Redlock,
}

/// Every URL form: the scheme before `://` (or the whole URL, for `memory`), the kind of
/// store it names, and whether messages list it (`unix://` is redis-rs' alias of
/// `redis+unix://`). The one list of them.
const SCHEMES: [(&str, StoreKind, bool); 8] = [
    ("memory", StoreKind::Memory, true),
    ("redis", StoreKind::Server, true),
    ("rediss", StoreKind::Server, true),
    ("redis+unix", StoreKind::Server, true),
    ("unix", StoreKind::Server, false),
    ("redis+cluster", StoreKind::Cluster, true),
    ("redis+sentinel", StoreKind::Sentinel, true),
    ("redis+redlock", StoreKind::Redlock, true),
];

/// The URL forms as an operator writes them, for help: `memory, redis://, ... or
/// redis+redlock://`.
pub fn url_forms() -> String {
    let mut forms = vec!["memory".to_owned()];
    forms.extend(redis_url_forms());
    or_list(&forms)
}

/// The Redis URL forms, `redis://` to `redis+redlock://`.
pub(crate) fn redis_url_forms() -> Vec<String> {
    SCHEMES
        .iter()
        .filter(|(_, kind, listed)| *listed && *kind != StoreKind::Memory)
        .map(|(name, _, _)| format!("{name}://"))
        .collect()
}

/// `a, b or c`.
pub(crate) fn or_list(items: &[String]) -> String {
    match items.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The kind of store `url` names, if it is of a form latchkey knows.
pub(crate) fn kind_of(url: &str) -> Option<StoreKind> {
    let (scheme, whole) = match url.split_once("://") {
        Some((scheme, _)) => (scheme, false),
        None => (url, true),
    };
    SCHEMES
        .iter()
        .find(|(name, kind, _)| *name == scheme && (*kind == StoreKind::Memory) == whole)
        .map(|&(_, kind, _)| kind)
}

/// The options a store URL's query may set: latchkey's `key-layout`, and redis-rs's
/// (`protocol`, and a unix socket's `db`, `user`, `pass` or `password`). Anything else is a
/// mistake, refused rather than ignored.
const QUERY_OPTIONS: [&str; 6] = [KEY_LAYOUT, "protocol", "db", "user", "pass", "password"];

/// The query option that says how a store lays out its keys.
pub(crate) const KEY_LAYOUT: &str = "key-layout";

/// `url` without latchkey's own option `name` in its query, and that option's last value:
/// what redis-rs is given is only what it reads.
pub(crate) fn take_option(url: &str, name: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let at = rest.rfind('@').map_or(0, |at| at + 1);
    let Some(question) = rest[at..].find('?').map(|q| at + q) else {
        return (url.to_owned(), None);
    };
    let (mut kept, mut value) = (Vec::new(), None);
    for pair in rest[question + 1..].split('&') {
        match pair.split_once('=') {
            Some((key, found)) if key == name => value = Some(found.to_owned()),
            _ => kept.push(pair),
        }
    }
    let before = &rest[..question];
    let url = match kept.is_empty() {
        true => format!("{scheme}://{before}"),
        false => format!("{scheme}://{before}?{}", kept.join("&")),
    };
    (url, value)
}

/// The first option of `url`'s query that no URL form takes, if any, as a message may name
/// it: a word without `=` may be a secret pasted in the wrong place, and is not quoted.
pub(crate) fn unknown_option(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let place = rest.rsplit_once('@').map_or(rest, |(_, place)| place);
    let (_, query) = place.split_once('?')?;
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| match pair.split_once('=') {
            Some((name, _)) if QUERY_OPTIONS.contains(&name) => None,
            Some((name, _)) => Some(format!("{name:?}")),
            None => Some("without a value".to_owned()),
        })
}

/// `url` for a message or a log line, with every place a URL form can carry a secret
/// hidden: everything between `scheme://` and the last `@` (a password may hold `/`, `?`,
/// `#` or `@`, so no narrower cut is safe), and the whole query after the host, where
/// redis-rs reads `password=` and `pass=` (the only way to give a unix socket's password).
/// Text that does not start like a URL is not shown at all.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    let scheme_like = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b));
    if !scheme_like {
        return "<not a URL>".into();
    }
    let (at, query) = (rest.rfind('@'), rest.find('?'));
    match (at, query) {
        // A `?` before the last `@`: a password with a `?`, or a query with an `@`. Which
        // one cannot be told, so nothing is shown.
        (Some(at), Some(query)) if query < at => format!("{scheme}://***"),
        (at, _) => {
            let (userinfo, place) = match at {
                Some(at) => ("***@", &rest[at + 1..]),
                None => ("", rest),
            };
            let place = match place.split_once('?') {
                Some((before, _)) => format!("{before}?***"),
                None => place.to_owned(),
            };
            format!("{scheme}://{userinfo}{place}")
        }
    }
}

/// The parts of `url` that may be secrets: its user and password, and every value of its
/// query. A message that quotes any of them must not be shown.
pub(crate) fn secrets_of(url: &str) -> Vec<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (userinfo, place) = match rest.rsplit_once('@') {
        Some((userinfo, place)) => (Some(userinfo), place),
        None => (None, rest),
    };
    let mut secrets: Vec<&str> = Vec::new();
    if let Some(info) = userinfo {
        secrets.push(info);
        secrets.extend(info.split(':'));
    }
    if let Some((_, query)) = place.split_once('?') {
        secrets.push(query);
        for pair in query.split('&') {
            secrets.push(pair.split_once('=').map_or(pair, |(_, value)| value));
        }
    }
    secrets.retain(|secret| !secret.is_empty());
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scheme of the table is found, `memory` only as a whole URL, and nothing else.
    #[test]
    fn kinds_come_from_the_one_table() {
        let cases = [
            ("memory", Some(StoreKind::Memory)),
            ("memory://x", None),
            ("redis://h", Some(StoreKind::Server)),
            ("rediss://h", Some(StoreKind::Server)),
            ("redis+unix:///s", Some(StoreKind::Server)),
            ("unix:///s", Some(StoreKind::Server)),
            ("redis+cluster://a:1", Some(StoreKind::Cluster)),
            ("redis+sentinel://a:1/m", Some(StoreKind::Sentinel)),
            ("redis+redlock://a:1", Some(StoreKind::Redlock)),
            ("redis", None),
            ("ftp://x", None),
            ("", None),
        ];
        for (url, kind) in cases {
            assert_eq!(kind_of(url), kind, "{url}");
        }
        assert_eq!(
            url_forms(),
            "memory, redis://, rediss://, redis+unix://, redis+cluster://, \
             redis+sentinel:// or redis+redlock://"
        );
    }

    /// A query option no URL form takes is found, so that it is refused, not ignored.
    #[test]
    fn unknown_query_options_are_found() {
        let found = |url: &str| unknown_option(url).unwrap_or_default();
        assert_eq!(found("redis://h:1/0?protocol=3&timeout=5"), "\"timeout\"");
        assert_eq!(found("redis://h:1/?s3cret"), "without a value");
        assert_eq!(unknown_option("redis+unix:///s?db=1&pass=x"), None);
        assert_eq!(unknown_option("redis://u:p?w@h:1"), None);
        assert_eq!(unknown_option("redis://h:1"), None);
        assert_eq!(unknown_option("memory"), None);
        assert_eq!(unknown_option("redis://h:1/?key-layout=dapr"), None);
    }

    /// latchkey's own option leaves the URL redis-rs reads, whatever else the query holds.
    #[test]
    fn the_key_layout_is_taken_out_of_the_query() {
        let taken = |url| take_option(url, KEY_LAYOUT);
        let dapr = Some("dapr".to_owned());
        assert_eq!(
            taken("redis://h:1/?key-layout=dapr"),
            ("redis://h:1/".into(), dapr.clone())
        );
        assert_eq!(
            taken("redis://u:p?w@h:1/2?protocol=3&key-layout=dapr"),
            ("redis://u:p?w@h:1/2?protocol=3".into(), dapr)
        );
        assert_eq!(
            taken("redis://u:p?w@h:1"),
            ("redis://u:p?w@h:1".into(), None)
        );
        assert_eq!(taken("memory"), ("memory".into(), None));
    }

    /// Credentials never reach a log line, whatever characters the password holds and
    /// whether or not the rest parses.
    #[test]
    fn redaction_hides_user_and_password() {
        let cases = [
            ("redis://user:s3cret@db:6379/0", "redis://***@db:6379/0"),
            (
                "redis://user:se/cret@127.0.0.1:1",
                "redis://***@127.0.0.1:1",
            ),
            ("redis://user:se?cret@127.0.0.1:1", "redis://***"),
            ("redis://user:se#cret@h:1", "redis://***@h:1"),
            ("redis://u:se@cret@h:1/2", "redis://***@h:1/2"),
            ("rediss://:pw@h/?x=@", "rediss://***"),
            ("redis://h/?pass=se@cret", "redis://***"),
            ("redis+cluster://u:p@a:1,b:2", "redis+cluster://***@a:1,b:2"),
            ("redis://h:1", "redis://h:1"),
            ("redis+unix:///tmp/r.sock", "redis+unix:///tmp/r.sock"),
            ("s3cret", "<not a URL>"),
            ("u:s3cret@redis://h", "<not a URL>"),
            (
                "redis+unix:///run/redis.sock?pass=s3cret",
                "redis+unix:///run/redis.sock?***",
            ),
            ("redis://h/?password=s3cret", "redis://h/?***"),
            ("redis://u:p@h:1/0?password=s3cret", "redis://***@h:1/0?***"),
        ];
        for (url, shown) in cases {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }
}
