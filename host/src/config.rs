//! The operator's config file: stores, and per-app policy and limits (TOML).
//!
//! ```toml
//! [stores.lockstore]
//! url = "redis://latchkey@10.0.0.5:6379"
//! password-file = "/run/secrets/redis"   # or password-env = "REDIS_PASSWORD"
//! timeout = "2s"
//! wait-replicas = 0                      # replicas that must confirm each grant
//!
//! [stores.scratch]
//! url = "memory"
//!
//! [apps.billing]
//! stores = ["lockstore"]                 # default: every store
//! resources = ["invoice-*", "ledger"]    # default: any id
//! max-lease = "5m"
//! max-wait = "30s"
//! max-held = 16
//! timeout = "30s"                        # the instance's deadline
//! max-memory = "64MiB"
//! fuel = 1_000_000_000
//! ```
//!
//! An app the file does not list gets every store and the defaults. Unknown keys, bad URLs,
//! durations and sizes are refused when the file is loaded, each with where it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::limits::Limits;
use crate::policy::ResourcePolicy;
use crate::run::GuestLimits;
use crate::store::{DEFAULT_TIMEOUT, LockStore, RedisOptions};

/// A parsed and checked config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Stores by the name guests open them by.
    #[serde(default)]
    pub stores: BTreeMap<String, StoreConfig>,
    /// Policy and limits by app id.
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
}

/// Where one store is and how to log in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreConfig {
    /// `memory`, or a `redis://`, `rediss://` or `redis+unix://` URL.
    pub url: String,
    /// How long a call may take before it is `unavailable` (default 2 s).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// A file holding the password.
    pub password_file: Option<PathBuf>,
    /// A host environment variable holding the password.
    pub password_env: Option<String>,
    /// Replicas that must confirm each grant (Redis `WAIT`); 0 refuses replicated servers.
    #[serde(default)]
    pub wait_replicas: u32,
}

/// What one app may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AppConfig {
    /// The stores it may open (default: all).
    pub stores: Option<Vec<String>>,
    /// Glob patterns of the resource ids it may lock (default: any).
    pub resources: Option<Vec<String>>,
    /// Longest lease.
    #[serde(default, deserialize_with = "duration")]
    pub max_lease: Option<Duration>,
    /// Longest wait in `lock`.
    #[serde(default, deserialize_with = "duration")]
    pub max_wait: Option<Duration>,
    /// Most locks one instance may hold at once.
    pub max_held: Option<usize>,
    /// Wall-clock deadline of each instance.
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Linear memory cap of each instance, in bytes.
    #[serde(default, deserialize_with = "size")]
    pub max_memory: Option<u64>,
    /// Fuel of each instance.
    pub fuel: Option<u64>,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration ({e}); write e.g. \"250ms\", \"5s\", \"2m\""
        ))
    })
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse::<bytesize::ByteSize>()
        .map(|b| Some(b.as_u64()))
        .map_err(|_| {
            serde::de::Error::custom(format!("{text:?} is not a size; write e.g. \"64MiB\""))
        })
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        for (name, store) in &self.stores {
            if store.password_file.is_some() && store.password_env.is_some() {
                return Err(format!(
                    "stores.{name}: give password-file or password-env, not both"
                ));
            }
            LockStore::from_url(&store.url, DEFAULT_TIMEOUT, RedisOptions::default())
                .map_err(|e| format!("stores.{name}.url: {e}"))?;
        }
        for (app, policy) in &self.apps {
            for store in policy.stores.iter().flatten() {
                if !self.stores.contains_key(store) {
                    return Err(format!("apps.{app}.stores: there is no [stores.{store}]"));
                }
            }
            policy
                .resource_policy()
                .map_err(|e| format!("apps.{app}.resources: {e}"))?;
            if policy.max_held == Some(0) {
                return Err(format!("apps.{app}.max-held: must be at least 1"));
            }
        }
        Ok(())
    }

    /// The policy for `app_id`: its own entry, or the defaults.
    pub fn app(&self, app_id: &str) -> AppConfig {
        self.apps.get(app_id).cloned().unwrap_or_default()
    }
}

impl StoreConfig {
    /// A store at `url` with the default timeout, no password and no replicas to wait for.
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            timeout: None,
            password_file: None,
            password_env: None,
            wait_replicas: 0,
        }
    }

    /// The password from the file or variable named, if any.
    pub fn password(&self) -> Result<Option<String>, String> {
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
            return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map(Some)
                .map_err(|_| format!("the password is to come from ${var}, which is not set"));
        }
        Ok(None)
    }

    /// Opens the store.
    pub fn open(&self) -> Result<LockStore, String> {
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let redis = RedisOptions {
            password: self.password()?,
            wait_replicas: self.wait_replicas,
        };
        LockStore::from_url(&self.url, timeout, redis)
    }
}

impl AppConfig {
    /// Whether the app may open `store`.
    pub fn may_open(&self, store: &str) -> bool {
        self.stores
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|s| s == store))
    }

    /// The resource ids it may lock.
    pub fn resource_policy(&self) -> Result<ResourcePolicy, String> {
        match &self.resources {
            None => Ok(ResourcePolicy::any()),
            Some(patterns) => ResourcePolicy::only(patterns.iter().cloned()),
        }
    }

    /// The argument bounds, defaults where unset.
    pub fn limits(&self) -> Limits {
        let defaults = Limits::default();
        Limits {
            max_lease: self.max_lease.unwrap_or(defaults.max_lease),
            max_wait: self.max_wait.unwrap_or(defaults.max_wait),
            max_held: self.max_held.unwrap_or(defaults.max_held),
            ..defaults
        }
    }

    /// The bounds on each instance.
    pub fn guest_limits(&self) -> GuestLimits {
        GuestLimits {
            deadline: self.timeout,
            max_memory: self.max_memory.map(|b| b as usize),
            fuel: self.fuel,
        }
    }
}

/// toml's errors span several lines (where, the quoted line, a caret, what): join where,
/// the quoted line and what into one.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let quoted = lines
        .iter()
        .filter_map(|l| l.split_once(" | "))
        .find(|(n, _)| n.trim().parse::<u32>().is_ok())
        .map(|(_, line)| format!(" ({})", line.trim()));
    let first = lines.first().copied().unwrap_or_default();
    let last = lines.last().copied().unwrap_or_default().trim();
    format!("{first}{}: {last}", quoted.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example parses into what it says.
    #[test]
    fn example_parses() {
        let config = Config::parse(
            r#"
            [stores.lockstore]
            url = "redis://latchkey@127.0.0.1:6379"
            password-env = "REDIS_PASSWORD"
            timeout = "2s"
            [stores.scratch]
            url = "memory"
            [apps.billing]
            stores = ["lockstore"]
            resources = ["invoice-*", "ledger"]
            max-lease = "5m"
            max-wait = "30s"
            max-held = 16
            timeout = "30s"
            max-memory = "64MiB"
            fuel = 1_000_000_000
            "#,
        )
        .unwrap();
        let billing = config.app("billing");
        assert!(billing.may_open("lockstore") && !billing.may_open("scratch"));
        assert_eq!(billing.limits().max_lease, Duration::from_secs(300));
        assert_eq!(billing.limits().max_held, 16);
        assert_eq!(billing.guest_limits().max_memory, Some(64 << 20));
        assert!(billing.resource_policy().unwrap().allows("invoice-7"));
        assert!(!billing.resource_policy().unwrap().allows("payroll"));
        let other = config.app("other");
        assert!(other.may_open("scratch"));
        assert_eq!(other.limits(), Limits::default());
    }

    /// Each kind of mistake is refused with where it is and what is wrong, on one line.
    #[test]
    fn mistakes_are_refused_with_their_place() {
        let cases = [
            (
                "[stores.a]\nurl = \"memory\"\ncolour = 1",
                "unknown field `colour`",
            ),
            ("[stores.a]\nurl = \"ftp://x\"", "stores.a.url"),
            (
                "[stores.a]\nurl = \"memory\"\ntimeout = \"soon\"",
                "\"soon\" is not a duration",
            ),
            ("[apps.x]\nmax-memory = \"lots\"", "max-memory"),
            (
                "[apps.x]\nstores = [\"nope\"]",
                "apps.x.stores: there is no [stores.nope]",
            ),
            ("[apps.x]\nresources = [\"a[\"]", "apps.x.resources"),
            ("[apps.x]\nmax-held = 0", "apps.x.max-held"),
            ("[app.x]", "unknown field `app`"),
        ];
        for (text, expected) in cases {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?} gave {err:?}");
            assert!(!err.contains('\n'), "{err:?} is not one line");
        }
    }
}
