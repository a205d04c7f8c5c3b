//! What the host records of lock traffic: metrics through the [`metrics`] facade — nothing
//! is recorded unless the embedder installs a recorder — and a `tracing` span per host call.
//!
//! Labels are the app, the store's name (what guests open it by, chosen by the operator),
//! the operation and its outcome: never a resource id, an owner token, a URL or a
//! credential, which would both leak and make a series per lock. The resource id appears
//! only in debug-level events, so `RUST_LOG=latchkey_host=debug` follows a lock from grant
//! to release.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `latchkey_lock_operations_total` | counter | app, store, op, outcome |
//! | `latchkey_lock_operation_duration_seconds` | histogram | app, store, op |
//! | `latchkey_lock_wait_seconds` | histogram | app, store |
//! | `latchkey_lock_held_seconds` | histogram | app, store |
//! | `latchkey_locks_held` | gauge | app, store |
//! | `latchkey_instances_running` | gauge | app |
//! | `latchkey_store_unavailable_total` | counter | store |
//!
//! Each series' handle is registered with the recorder on its first use and kept: install
//! the recorder before the first lock call.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};

use strum::EnumCount as _;

use crate::backend::UnlockStatus;
use crate::error::{ErrorKind, LockError};

/// Every lock operation, by outcome.
pub const OPERATIONS: &str = "latchkey_lock_operations_total";
/// How long each operation took, the store's round trips included.
pub const OPERATION_DURATION: &str = "latchkey_lock_operation_duration_seconds";
/// How long `lock` waited for a lock (granted or not).
pub const WAIT: &str = "latchkey_lock_wait_seconds";
/// How long locks were held, from grant to release.
pub const HELD: &str = "latchkey_lock_held_seconds";
/// Locks held by running instances now.
pub const LOCKS_HELD: &str = "latchkey_locks_held";
/// Instances running now (that have a lock context).
pub const INSTANCES_RUNNING: &str = "latchkey_instances_running";
/// Calls that found their store unreachable or too slow.
pub const STORE_UNAVAILABLE: &str = "latchkey_store_unavailable_total";

/// The store label of a call on a store the app was not offered: the name a guest asked
/// for is the guest's, and is not a label.
pub(crate) const UNKNOWN_STORE: &str = "-";

/// A host call: the `op` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumCount, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub(crate) enum Op {
    Open,
    TryLock,
    Lock,
    Extend,
    Unlock,
    ReleaseOnExit,
    KeepAlive,
    Held,
    AcquirePermit,
    Release,
    Campaign,
    Resign,
    Leader,
    WatchLeader,
    // Dapr's lock API (`dapr`): a client's TryLock and Unlock.
    DaprTryLock,
    DaprUnlock,
}

/// What an operation ended with: the `outcome` label. The error kinds are those of
/// [`ErrorKind`], and the unlock statuses those of [`UnlockStatus`], under the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumCount, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub(crate) enum Outcome {
    Opened,
    Granted,
    Busy,
    WaitTimedOut,
    Success,
    LockDoesNotExist,
    LockBelongsToOthers,
    Extended,
    LeaseLost,
    Held,
    KeepingAlive,
    Leading,
    Vacant,
    Watching,
    NoSuchStore,
    InvalidArgument,
    AccessDenied,
    LimitExceeded,
    Unavailable,
    Trap,
}

impl From<UnlockStatus> for Outcome {
    fn from(status: UnlockStatus) -> Self {
        match status {
            UnlockStatus::Success => Outcome::Success,
            UnlockStatus::LockDoesNotExist => Outcome::LockDoesNotExist,
            UnlockStatus::LockBelongsToOthers => Outcome::LockBelongsToOthers,
        }
    }
}

impl From<ErrorKind> for Outcome {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::NoSuchStore => Outcome::NoSuchStore,
            ErrorKind::InvalidArgument => Outcome::InvalidArgument,
            ErrorKind::AccessDenied => Outcome::AccessDenied,
            ErrorKind::LimitExceeded => Outcome::LimitExceeded,
            ErrorKind::Unavailable => Outcome::Unavailable,
            ErrorKind::Trap => Outcome::Trap,
        }
    }
}

impl Outcome {
    /// The outcome of a call that failed with `err`.
    pub(crate) fn of_error(err: &LockError) -> Self {
        err.kind().into()
    }

    fn label(self) -> &'static str {
        self.into()
    }
}

/// The series of one app on one store, each registered on first use: recording is then an
/// atomic add, with no key to build or look up on the lock path.
pub(crate) struct Instruments {
    pub(crate) app: Arc<str>,
    pub(crate) store: Arc<str>,
    operations: [[OnceLock<Counter>; Outcome::COUNT]; Op::COUNT],
    durations: [OnceLock<Histogram>; Op::COUNT],
    wait: OnceLock<Histogram>,
    held: OnceLock<Histogram>,
    locks_held: OnceLock<Gauge>,
    unavailable: OnceLock<Counter>,
}

impl Instruments {
    pub(crate) fn new(app: Arc<str>, store: Arc<str>) -> Arc<Self> {
        Arc::new(Instruments {
            app,
            store,
            operations: Default::default(),
            durations: Default::default(),
            wait: OnceLock::new(),
            held: OnceLock::new(),
            locks_held: OnceLock::new(),
            unavailable: OnceLock::new(),
        })
    }

    fn operations(&self, op: Op, outcome: Outcome) -> &Counter {
        self.operations[op as usize][outcome as usize].get_or_init(|| {
            metrics::counter!(
                OPERATIONS,
                "app" => self.app.clone(),
                "store" => self.store.clone(),
                "op" => <&str>::from(op),
                "outcome" => outcome.label(),
            )
        })
    }

    fn duration(&self, op: Op) -> &Histogram {
        self.durations[op as usize].get_or_init(|| {
            metrics::histogram!(
                OPERATION_DURATION,
                "app" => self.app.clone(),
                "store" => self.store.clone(),
                "op" => <&str>::from(op),
            )
        })
    }

    fn per_store<'a, T>(
        &'a self,
        cell: &'a OnceLock<T>,
        make: impl FnOnce(Arc<str>, Arc<str>) -> T,
    ) -> &'a T {
        cell.get_or_init(|| make(self.app.clone(), self.store.clone()))
    }

    /// `lock` waited this long, whether or not it got the lock.
    pub(crate) fn waited(&self, wait: Duration) {
        self.per_store(
            &self.wait,
            |app, store| metrics::histogram!(WAIT, "app" => app, "store" => store),
        )
        .record(wait);
    }

    fn locks_held(&self) -> &Gauge {
        self.per_store(
            &self.locks_held,
            |app, store| metrics::gauge!(LOCKS_HELD, "app" => app, "store" => store),
        )
    }

    /// A lock was granted to a running instance.
    pub(crate) fn lock_taken(&self) {
        self.locks_held().increment(1);
    }

    /// A lock granted `held` ago was released, or given up for its lease to end.
    pub(crate) fn lock_let_go(&self, held: Duration) {
        self.locks_held().decrement(1);
        self.per_store(
            &self.held,
            |app, store| metrics::histogram!(HELD, "app" => app, "store" => store),
        )
        .record(held);
    }
}

/// One host call being timed, inside its span.
pub(crate) struct Call {
    op: Op,
    instruments: Arc<Instruments>,
    started: Instant,
    span: tracing::Span,
}

impl Call {
    pub(crate) fn start(op: Op, instruments: Arc<Instruments>) -> Self {
        let span = tracing::debug_span!(
            "lock_call",
            op = <&str>::from(op),
            app = &*instruments.app,
            store = &*instruments.store,
            outcome = tracing::field::Empty,
        );
        Call {
            op,
            instruments,
            started: Instant::now(),
            span,
        }
    }

    /// The span the call's work runs in.
    pub(crate) fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// Records the call's outcome and duration.
    pub(crate) fn finish(self, outcome: Outcome) {
        let instruments = &self.instruments;
        self.span.record("outcome", outcome.label());
        if outcome == Outcome::Unavailable {
            instruments
                .unavailable
                .get_or_init(
                    || metrics::counter!(STORE_UNAVAILABLE, "store" => instruments.store.clone()),
                )
                .increment(1);
        }
        instruments.operations(self.op, outcome).increment(1);
        instruments.duration(self.op).record(self.started.elapsed());
    }
}

/// An instance of `app` started (`+1`) or ended (`-1`).
pub(crate) fn instances(app: &Arc<str>, change: f64) {
    metrics::gauge!(INSTANCES_RUNNING, "app" => app.clone()).increment(change);
}
