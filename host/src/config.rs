//! The operator's config file: stores, and per-app policy and limits (TOML).
//!
#![doc = concat!("```toml\n", include_str!("../latchkey.example.toml"), "```")]
//!
//! An app the file does not list gets every store and the defaults. Unknown keys, bad URLs,
//! durations and sizes are refused when the file is loaded, each with where it is. An app's
//! `timeout`, the name `deadline` had before, is still read, with a warning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::OpenError;
use crate::limits::{Limits, MIN_LEASE};
use crate::policy::{PatternError, ResourcePolicy};
use crate::runtime::sandbox::GuestLimits;
use crate::store::{DEFAULT_TIMEOUT, LockStore};
use crate::store::{StoreSettings, redacted};

/// A parsed and checked config file.
#[non_exhaustive]
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
#[non_exhaustive]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreConfig {
    /// `memory`, or a URL of one of the forms of [`crate::store::url_forms`].
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
    /// A lock space of its own in the store: the same app and resource id in two
    /// namespaces are two locks. Default: none.
    pub namespace: Option<String>,
    /// How locks are laid out among the store's keys: `"latchkey"` (the default) or
    /// `"dapr"`, as daprd's Redis lock store lays them out, to share locks with daprd.
    pub key_layout: Option<String>,
}

/// What one app may do.
#[non_exhaustive]
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
    /// Most locks one guest task (a request, under instance reuse) may hold at once.
    pub max_held_per_task: Option<usize>,
    /// How long one grant may be kept alive (`keep-alive`).
    #[serde(default, deserialize_with = "duration")]
    pub max_keep_alive: Option<Duration>,
    /// How long each instance may run, wall-clock.
    #[serde(default, deserialize_with = "duration")]
    pub deadline: Option<Duration>,
    /// `deadline` by its old name, read with a warning: "timeout" now means only how long a
    /// store call may take.
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    /// Linear memory cap of each instance, in bytes.
    #[serde(default, deserialize_with = "size")]
    pub max_memory: Option<u64>,
    /// Fuel of each instance.
    pub fuel: Option<u64>,
    /// Handles each instance may hold at once.
    pub max_handles: Option<usize>,
}

/// Why a config file, or a store in it, cannot be used. Each says where, on one line, and
/// never quotes a URL's credentials.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not TOML of the expected shape.
    #[error("{0}")]
    Syntax(String),
    /// A store cannot be set up as written.
    #[error("stores.{store}: {error}")]
    Store {
        /// The store's name.
        store: String,
        /// What is wrong with it.
        error: OpenError,
    },
    /// A store's password cannot be had, or is given twice.
    #[error("stores.{store}: {reason}")]
    Password {
        /// The store's name.
        store: String,
        /// What is wrong.
        reason: String,
    },
    /// An app's id is empty, too long, or holds a control character.
    #[error("apps.\"{app}\": {reason}")]
    BadAppId {
        /// The id, escaped and cut short.
        app: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An app's policy names a store that does not exist.
    #[error("apps.{app}.stores: there is no [stores.{store}]")]
    UnknownStore {
        /// The app.
        app: String,
        /// The store it names.
        store: String,
    },
    /// An app's resource pattern does not parse.
    #[error("apps.{app}.resources: {error}")]
    Pattern {
        /// The app.
        app: String,
        /// The pattern's problem.
        error: PatternError,
    },
    /// An app allows no lock to be held at all.
    #[error("apps.{app}.max-held and max-held-per-task: must be at least 1")]
    NoLocksAllowed {
        /// The app.
        app: String,
    },
    /// An app allows no handle at all: no guest could open a store.
    #[error("apps.{app}.max-handles: must be at least 1")]
    NoHandlesAllowed {
        /// The app.
        app: String,
    },
    /// An app's longest lease is shorter than any lease may be: every lock would be refused.
    #[error("apps.{app}.max-lease: must be at least {} ms, the shortest lease", MIN_LEASE.as_millis())]
    LeaseTooShort {
        /// The app.
        app: String,
    },
    /// A duration set to zero where zero is no setting but a mistake.
    #[error("{place}: must be longer than zero")]
    Zero {
        /// The setting, as `apps.ID.deadline`.
        place: String,
    },
    /// An app sets its deadline under both names.
    #[error("apps.{app}: give deadline, not deadline and timeout (its old name)")]
    DeadlineTwice {
        /// The app.
        app: String,
    },
    /// A mistake in a file, with its path.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The mistake.
        error: Box<ConfigError>,
    },
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The longest duration latchkey takes for a setting: ten years. Longer ones are mistakes,
/// and past some length the host's clock arithmetic would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A duration as an operator writes one (`250ms`, `5s`, `2m`), at most [`MAX_DURATION`];
/// the error says what is wrong in one line.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write e.g. \"250ms\", \"5s\", \"2m\"")
    })?;
    if duration > MAX_DURATION {
        return Err(format!("{text:?} is longer than ten years"));
    }
    Ok(duration)
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
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text).map_err(|error| ConfigError::InFile {
            path: path.to_owned(),
            error: Box::new(error),
        })
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax(one_line(&e)))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        for (name, store) in &self.stores {
            if store.timeout == Some(Duration::ZERO) {
                return Err(ConfigError::Zero {
                    place: format!("stores.{name}.timeout"),
                });
            }
            if store.password_file.is_some() && store.password_env.is_some() {
                return Err(ConfigError::Password {
                    store: name.clone(),
                    reason: "give password-file or password-env, not both".into(),
                });
            }
            // Everything but the password, which may only be readable where it is used.
            crate::open(name, &store.settings(None)).map_err(|error| ConfigError::Store {
                store: name.clone(),
                error,
            })?;
        }
        for (app, policy) in &self.apps {
            if let Err(reason) = crate::limits::check_app_id(app) {
                return Err(ConfigError::BadAppId {
                    app: app.escape_debug().take(64).collect(),
                    reason,
                });
            }
            for store in policy.stores.iter().flatten() {
                if !self.stores.contains_key(store) {
                    return Err(ConfigError::UnknownStore {
                        app: app.clone(),
                        store: store.clone(),
                    });
                }
            }
            policy
                .resource_policy()
                .map_err(|error| ConfigError::Pattern {
                    app: app.clone(),
                    error,
                })?;
            if policy.max_held == Some(0) || policy.max_held_per_task == Some(0) {
                return Err(ConfigError::NoLocksAllowed { app: app.clone() });
            }
            if policy.max_handles == Some(0) {
                return Err(ConfigError::NoHandlesAllowed { app: app.clone() });
            }
            let zero = [
                ("deadline", policy.deadline.or(policy.timeout)),
                ("max-keep-alive", policy.max_keep_alive),
            ];
            if let Some((setting, _)) = zero.iter().find(|(_, d)| *d == Some(Duration::ZERO)) {
                return Err(ConfigError::Zero {
                    place: format!("apps.{app}.{setting}"),
                });
            }
            if policy.max_lease.is_some_and(|lease| lease < MIN_LEASE) {
                return Err(ConfigError::LeaseTooShort { app: app.clone() });
            }
            match (policy.deadline, policy.timeout) {
                (Some(_), Some(_)) => return Err(ConfigError::DeadlineTwice { app: app.clone() }),
                (None, Some(_)) => tracing::warn!(
                    "apps.{app}.timeout is read as apps.{app}.deadline, its new name: rename it"
                ),
                _ => {}
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
            namespace: None,
            key_layout: None,
        }
    }

    /// The password from the file or variable named, if any. `store` names the store in
    /// the error.
    pub fn password(&self, store: &str) -> Result<Option<String>, ConfigError> {
        let fail = |reason: String| ConfigError::Password {
            store: store.to_owned(),
            reason,
        };
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| fail(format!("cannot read password file {}: {e}", path.display())))?;
            return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var).map(Some).map_err(|_| {
                fail(format!(
                    "the password is to come from ${var}, which is not set"
                ))
            });
        }
        Ok(None)
    }

    /// Opens the store as `name`, reading its password.
    pub fn open(&self, name: &str) -> Result<LockStore, ConfigError> {
        let password = self.password(name)?;
        crate::open(name, &self.settings(password)).map_err(|error| ConfigError::Store {
            store: name.to_owned(),
            error,
        })
    }

    /// The settings to open the store with, given its password.
    pub fn settings(&self, password: Option<String>) -> StoreSettings {
        let mut settings = StoreSettings::new(&self.url);
        settings.password = password;
        settings.timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        settings.wait_replicas = self.wait_replicas;
        settings.namespace = self.namespace.clone();
        settings.key_layout = self.key_layout.clone();
        settings
    }
}

/// The store as an operator reads it: its URL with credentials hidden.
impl std::fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redacted(&self.url))
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
    pub fn resource_policy(&self) -> Result<ResourcePolicy, PatternError> {
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
            max_held_per_task: self.max_held_per_task.unwrap_or(defaults.max_held_per_task),
            max_keep_alive: self.max_keep_alive.unwrap_or(defaults.max_keep_alive),
            ..defaults
        }
    }

    /// The bounds on each instance.
    pub fn guest_limits(&self) -> GuestLimits {
        let defaults = GuestLimits::default();
        GuestLimits {
            deadline: self.deadline.or(self.timeout),
            max_memory: self.max_memory.map(|b| b as usize),
            fuel: self.fuel,
            max_handles: self.max_handles.unwrap_or(defaults.max_handles),
        }
    }
}

/// toml's errors span several lines (where, the quoted line, a caret, what): join where,
/// the key or table of the quoted line, and what into one. The rest of the quoted line is
/// left out: a value can hold a secret put where it does not belong.
fn one_line(err: &toml::de::Error) -> String {
    let what = err.message().trim();
    let text = err.to_string();
    let mut lines = text.lines();
    let place = lines
        .next()
        .filter(|first| first.contains("line"))
        .map_or("TOML parse error", |first| first.trim_end_matches(':'));
    let quoted = lines
        .filter_map(|line| line.split_once(" | "))
        .find(|(number, _)| number.trim().parse::<u32>().is_ok())
        .map(|(_, line)| line.trim());
    let key = match quoted {
        Some(table) if table.starts_with('[') => format!(" ({table})"),
        Some(line) => match line.split_once('=') {
            Some((key, _)) => format!(" ({})", key.trim()),
            None => String::new(),
        },
        None => String::new(),
    };
    format!("{place}{key}: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example (the crate docs' and the book's) parses into what it says.
    #[test]
    fn example_parses() {
        let config = Config::parse(include_str!("../latchkey.example.toml")).unwrap();
        let billing = config.app("billing");
        assert!(billing.may_open("lockstore") && !billing.may_open("scratch"));
        assert_eq!(billing.limits().max_lease, Duration::from_secs(300));
        assert_eq!(billing.limits().max_held, 16);
        assert_eq!(billing.limits().max_keep_alive, Duration::from_secs(600));
        assert_eq!(billing.guest_limits().max_memory, Some(64 << 20));
        assert_eq!(
            billing.guest_limits().deadline,
            Some(Duration::from_secs(30))
        );
        assert!(billing.resource_policy().unwrap().allows("invoice-7"));
        assert!(!billing.resource_policy().unwrap().allows("payroll"));
        assert_eq!(
            config.stores["lockstore"].namespace.as_deref(),
            Some("blue")
        );
        let other = config.app("other");
        assert!(other.may_open("scratch"));
        assert_eq!(other.limits(), Limits::default());
    }

    /// A Sentinel store is checked with the file's own `wait-replicas`: accepted with it,
    /// refused without.
    #[test]
    fn sentinel_stores_take_wait_replicas_from_the_file() {
        let url = "url = \"redis+sentinel://127.0.0.1:26379/mymaster\"";
        let with = format!("[stores.lockstore]\n{url}\nwait-replicas = 1\n");
        let config = Config::parse(&with).unwrap();
        assert_eq!(config.stores["lockstore"].wait_replicas, 1);
        let without = Config::parse(&format!("[stores.lockstore]\n{url}\n")).unwrap_err();
        assert!(
            matches!(
                &without,
                ConfigError::Store {
                    error: OpenError::SentinelNeedsWaitReplicas { .. },
                    ..
                }
            ),
            "{without}"
        );
    }

    /// An app's `timeout`, the old name of `deadline`, is still read as its deadline.
    #[test]
    fn an_apps_timeout_is_read_as_its_deadline() {
        let config = Config::parse("[apps.x]\ntimeout = \"3s\"").unwrap();
        assert_eq!(
            config.app("x").guest_limits().deadline,
            Some(Duration::from_secs(3))
        );
    }

    /// Each kind of mistake is refused with where it is and what is wrong, on one line.
    #[test]
    fn mistakes_are_refused_with_their_place() {
        let cases = [
            (
                "[stores.a]\nurl = \"memory\"\ncolour = 1",
                "unknown field `colour`",
            ),
            (
                "[stores.a]\nurl = \"ftp://x\"",
                "stores.a: ftp://x is neither",
            ),
            (
                "[stores.a]\nurl = \"memory\"\ntimeout = \"soon\"",
                "\"soon\" is not a duration",
            ),
            (
                "[stores.a]\nurl = \"memory\"\nnamespace = \"a:b\"",
                "stores.a: namespace",
            ),
            ("[apps.x]\nmax-memory = \"lots\"", "max-memory"),
            (
                "[apps.x]\nstores = [\"nope\"]",
                "apps.x.stores: there is no [stores.nope]",
            ),
            ("[apps.x]\nresources = [\"a[\"]", "apps.x.resources"),
            ("[apps.x]\nmax-held = 0", "apps.x.max-held"),
            (
                "[apps.x]\nmax-lease = \"5ms\"",
                "apps.x.max-lease: must be at least 10 ms",
            ),
            (
                "[apps.x]\nmax-lease = \"0s\"",
                "apps.x.max-lease: must be at least 10 ms",
            ),
            (
                "[apps.x]\nmax-keep-alive = \"500000000000y\"",
                "is longer than ten years",
            ),
            (
                "[apps.x]\ndeadline = \"1s\"\ntimeout = \"2s\"",
                "apps.x: give deadline",
            ),
            ("[app.x]", "unknown field `app`"),
            (
                "[apps.x]\ndeadline = \"0s\"",
                "apps.x.deadline: must be longer than zero",
            ),
            (
                "[stores.a]\nurl = \"memory\"\ntimeout = \"0ms\"",
                "stores.a.timeout: must be longer than zero",
            ),
            (
                "[apps.\"a\\nb\"]",
                "apps.\"a\\nb\": the app id holds a control character",
            ),
            ("[apps.\"\"]", "the app id is empty"),
        ];
        for (text, expected) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?} gave {err:?}");
            assert!(!err.contains('\n'), "{err:?} is not one line");
        }
    }

    /// A mistake on a line that holds a secret does not repeat the line.
    #[test]
    fn mistakes_do_not_quote_secrets() {
        let cases = [
            "[stores.a]\nurl = \"redis://u:hunter2@h\" trailing\n",
            "[stores.a]\nurl = \"memory\"\npasword = \"hunter2\"\n",
            "[stores.a]\nurl = \"redis://u:hun/ter2@h:x\"\n",
        ];
        for text in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(!err.contains("hunter2") && !err.contains("ter2"), "{err}");
        }
    }
}
