//! The bounds every call's arguments are checked against before any store is touched.

use std::time::Duration;

use crate::error::LockError;

/// The shortest lease a guest may take or extend to. A grant is handed out only if it came
/// back with time left on its lease after an allowance of 1 % + 2 ms for clock drift, so a
/// lease of a few milliseconds could never be granted: it is refused up front instead.
pub const MIN_LEASE: Duration = Duration::from_millis(10);

/// Bounds on what a guest may ask for. Every call is checked against them before any store
/// is touched, so a refused call changes nothing.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest resource id, in bytes of UTF-8.
    pub max_id_bytes: usize,
    /// The longest lease a guest may take or extend to.
    pub max_lease: Duration,
    /// The longest a guest may wait in `lock`.
    pub max_wait: Duration,
    /// The most locks one instance may hold at once.
    pub max_held: usize,
    /// The most locks one guest task may hold at once (`latchkey:lock@0.3.0`, where one
    /// instance serves many tasks: for a `wasi:http` handler, each request).
    pub max_held_per_task: usize,
    /// How long one grant may be kept alive (`keep-alive`); then its lease ends as usual.
    pub max_keep_alive: Duration,
    /// The largest `limit` of a semaphore (`acquire-permit`): a semaphore of limit n is n
    /// locks in the store, tried in one step.
    pub max_permits: u32,
}

/// The longest app id, in bytes of UTF-8: as long as a resource id may be.
pub const MAX_APP_ID_BYTES: usize = 1024;

/// Checks an app id as every place that takes one does — a flag, a config file's
/// `[apps.ID]`, an operator's `--app`: 1 to [`MAX_APP_ID_BYTES`] bytes, and no control
/// characters (an id is printed in tables and log lines). The reason, if it is refused.
pub fn check_app_id(app_id: &str) -> Result<(), String> {
    if app_id.is_empty() {
        return Err("the app id is empty".into());
    }
    if app_id.len() > MAX_APP_ID_BYTES {
        return Err(format!(
            "the app id is {} bytes; the limit is {MAX_APP_ID_BYTES} bytes",
            app_id.len()
        ));
    }
    if app_id.chars().any(char::is_control) {
        return Err("the app id holds a control character (a newline, say)".into());
    }
    Ok(())
}

/// The longest value a leader may publish (`campaign`), in bytes of UTF-8.
pub const MAX_VALUE_BYTES: usize = 1024;

impl Default for Limits {
    /// 1 KiB ids, leases up to one hour, waits up to five minutes, 1024 locks per instance
    /// and per task, keep-alive for an hour, semaphores of up to 256 permits.
    fn default() -> Self {
        Limits {
            max_id_bytes: 1024,
            max_lease: Duration::from_secs(60 * 60),
            max_wait: Duration::from_secs(5 * 60),
            max_held: 1024,
            max_held_per_task: 1024,
            max_keep_alive: Duration::from_secs(60 * 60),
            max_permits: 256,
        }
    }
}

impl Limits {
    /// Checks a resource id: not empty and not over `max_id_bytes`.
    pub fn check_id(&self, id: &str) -> Result<(), LockError> {
        self.check_named_id("resource-id", id)
    }

    /// Checks the id `argument` (`resource-id`, `semaphore-id`, `election-id`) as a
    /// resource id is checked.
    pub fn check_named_id(&self, argument: &str, id: &str) -> Result<(), LockError> {
        if id.is_empty() {
            return Err(LockError::InvalidArgument(format!(
                "{argument} is empty; name what to coordinate on"
            )));
        }
        if id.len() > self.max_id_bytes {
            return Err(LockError::InvalidArgument(format!(
                "{argument} is {} bytes; the limit is {} bytes",
                id.len(),
                self.max_id_bytes
            )));
        }
        Ok(())
    }

    /// Checks a semaphore's limit: 1 to `max_permits`.
    pub fn check_permits(&self, limit: u32) -> Result<u32, LockError> {
        if limit == 0 || limit > self.max_permits {
            return Err(LockError::InvalidArgument(format!(
                "limit is {limit}; a semaphore has 1 to {} permits",
                self.max_permits
            )));
        }
        Ok(limit)
    }

    /// Checks a leader's value: up to [`MAX_VALUE_BYTES`] (it may be empty).
    pub fn check_value(&self, value: &str) -> Result<(), LockError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(LockError::InvalidArgument(format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES} bytes",
                value.len()
            )));
        }
        Ok(())
    }

    /// Checks a lease: at least [`MIN_LEASE`] and not over `max_lease`.
    pub fn check_lease(&self, lease_ms: u32) -> Result<Duration, LockError> {
        let lease = Duration::from_millis(lease_ms.into());
        if lease < MIN_LEASE {
            return Err(LockError::InvalidArgument(format!(
                "lease-ms is {lease_ms}; a lease must be at least {} ms",
                MIN_LEASE.as_millis()
            )));
        }
        if lease > self.max_lease {
            return Err(LockError::InvalidArgument(format!(
                "lease-ms is {lease_ms}; the limit is {} ms",
                self.max_lease.as_millis()
            )));
        }
        Ok(lease)
    }

    /// Checks a wait: 0 (do not wait) up to `max_wait`.
    pub fn check_wait(&self, wait_ms: u32) -> Result<Duration, LockError> {
        let wait = Duration::from_millis(wait_ms.into());
        if wait > self.max_wait {
            return Err(LockError::InvalidArgument(format!(
                "wait-ms is {wait_ms}; the limit is {} ms",
                self.max_wait.as_millis()
            )));
        }
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(err: LockError) -> String {
        match err {
            LockError::InvalidArgument(msg) => msg,
            other => panic!("expected invalid-argument, got {other:?}"),
        }
    }

    /// Each refusal names the argument and the bound it broke.
    #[test]
    fn refusals_name_the_argument() {
        let limits = Limits::default();
        assert!(message(limits.check_id("").unwrap_err()).starts_with("resource-id is empty"));
        let long = "x".repeat(1025);
        assert!(message(limits.check_id(&long).unwrap_err()).contains("1025 bytes"));
        assert!(message(limits.check_lease(0).unwrap_err()).starts_with("lease-ms is 0"));
        assert!(message(limits.check_lease(9).unwrap_err()).contains("at least 10 ms"));
        assert!(message(limits.check_lease(3_600_001).unwrap_err()).contains("3600000 ms"));
        assert!(message(limits.check_wait(300_001).unwrap_err()).starts_with("wait-ms"));
        assert!(
            message(limits.check_named_id("semaphore-id", "").unwrap_err())
                .starts_with("semaphore-id is empty")
        );
        assert!(message(limits.check_permits(0).unwrap_err()).starts_with("limit is 0"));
        assert!(message(limits.check_permits(257).unwrap_err()).contains("1 to 256"));
        assert!(message(limits.check_value(&"v".repeat(1025)).unwrap_err()).contains("1024 bytes"));
    }

    /// App ids are bounded as resource ids are, and hold no control character.
    #[test]
    fn app_ids_are_checked() {
        check_app_id("billing").unwrap();
        check_app_id(&"a".repeat(1024)).unwrap();
        for (bad, said) in [
            ("", "empty"),
            ("a\nb", "control character"),
            ("a\u{9b}b", "control character"),
        ] {
            assert!(check_app_id(bad).unwrap_err().contains(said), "{bad:?}");
        }
        assert!(
            check_app_id(&"a".repeat(1025))
                .unwrap_err()
                .contains("1025 bytes")
        );
    }

    /// The bounds themselves are allowed.
    #[test]
    fn bounds_are_inclusive() {
        let limits = Limits::default();
        limits.check_id(&"x".repeat(1024)).unwrap();
        limits.check_lease(10).unwrap();
        limits.check_lease(3_600_000).unwrap();
        limits.check_wait(0).unwrap();
        limits.check_wait(300_000).unwrap();
        limits.check_permits(1).unwrap();
        limits.check_permits(256).unwrap();
        limits.check_value("").unwrap();
        limits.check_value(&"v".repeat(1024)).unwrap();
    }
}

/// Argument checking against its specification, over arbitrary input.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Every id, lease and wait is accepted exactly when the documented bounds allow
        /// it, and a refusal always names its argument.
        #[test]
        fn checks_follow_the_spec(
            id in prop::collection::vec(any::<char>(), 0..400).prop_map(String::from_iter),
            lease in prop_oneof![0..=20u32, 3_599_990..=3_600_010u32, any::<u32>()],
            wait in prop_oneof![0..=10u32, 299_990..=300_010u32, any::<u32>()],
        ) {
            let limits = Limits::default();
            let id_ok = !id.is_empty() && id.len() <= 1024;
            prop_assert_eq!(limits.check_id(&id).is_ok(), id_ok);
            prop_assert_eq!(limits.check_lease(lease).is_ok(), (10..=3_600_000).contains(&lease));
            prop_assert_eq!(limits.check_wait(wait).is_ok(), wait <= 300_000);
            for (result, name) in [
                (limits.check_id(&id).err(), "resource-id"),
                (limits.check_lease(lease).err(), "lease-ms"),
                (limits.check_wait(wait).err(), "wait-ms"),
            ] {
                if let Some(LockError::InvalidArgument(message)) = result {
                    prop_assert!(message.starts_with(name), "{message}");
                }
            }
        }
    }
}
