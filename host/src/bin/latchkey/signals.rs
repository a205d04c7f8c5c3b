//! SIGINT and SIGTERM: both `run` and `serve` stop their guests on the first one, release
//! their locks, and exit.

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

/// Which signal asked the host to stop.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    Interrupt,
    Terminate,
}

impl Stop {
    /// The exit code of a process that a signal ended: 128 + its number.
    pub fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupt => 128 + 2,
            Stop::Terminate => 128 + 15,
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        })
    }
}

/// Completes on the first SIGINT or SIGTERM, saying which. Installed now, so that a signal
/// from here on no longer ends the process before its locks are released.
pub fn stop_signal() -> anyhow::Result<impl Future<Output = Stop>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => Stop::Interrupt,
            _ = terminate.recv() => Stop::Terminate,
        }
    })
}
