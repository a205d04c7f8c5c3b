//! Running `wasi:cli` command components with locks: what `latchkey run` does, as a library.

use std::time::Duration;

use wasmtime::Store;
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{I32Exit, WasiCtx};

use crate::ctx::LockCtx;
use crate::runtime::runner::{Entry, Program, Runner};
use crate::runtime::sandbox::{Ended, GuestLimits, GuestState, run_to_end};

/// How an instance ended. Its locks are released by then, whichever it is.
#[non_exhaustive]
#[derive(Debug)]
pub enum Exit {
    /// `main` returned or the guest called `exit`, with this status.
    Status(i32),
    /// The guest ran past its deadline and was stopped.
    Deadline(Duration),
    /// The host stopped it before it ended ([`Runner::run_until`]).
    Stopped,
    /// The guest trapped (or ran out of memory or fuel), a host call failed, or the
    /// program is not a command.
    Trap(wasmtime::Error),
}

impl Runner {
    /// Runs one instance of the command `program` within `limits`, then releases every lock
    /// it still holds — also when a limit stopped it.
    pub async fn run(
        &self,
        program: &Program,
        wasi: WasiCtx,
        locks: LockCtx,
        limits: GuestLimits,
    ) -> Exit {
        self.run_until(program, wasi, locks, limits, std::future::pending())
            .await
    }

    /// [`Runner::run`], stopping the instance when `stop` completes first (a signal to the
    /// host, say); its locks are released either way.
    pub async fn run_until(
        &self,
        program: &Program,
        wasi: WasiCtx,
        locks: LockCtx,
        limits: GuestLimits,
        stop: impl Future<Output = ()>,
    ) -> Exit {
        let mut store = match self.sandbox.new_store(GuestState::new(wasi, locks), limits) {
            Ok(store) => store,
            Err(err) => return Exit::Trap(err),
        };
        let ended = match program.entry() {
            Entry::Command(pre) => {
                run_to_end(&mut store, limits, stop, async |store| {
                    let command = pre.instantiate_async(&mut *store).await?;
                    command.wasi_cli_run().call_run(&mut *store).await
                })
                .await
            }
            Entry::CommandP3(pre) => {
                run_to_end(&mut store, limits, stop, async |store| {
                    let command = pre.instantiate_async(&mut *store).await?;
                    store
                        .run_concurrent(async |tasks| command.wasi_cli_run().call_run(tasks).await)
                        .await?
                })
                .await
            }
            Entry::Proxy(_) | Entry::ServiceP3(_) => {
                return Exit::Trap(wasmtime::format_err!(
                    "it is {}, not a command",
                    program.world()
                ));
            }
        };
        match ended {
            Ended::Returned(Ok(())) => Exit::Status(0),
            Ended::Returned(Err(())) => Exit::Status(1),
            Ended::Deadline(after) => Exit::Deadline(after),
            Ended::Stopped => Exit::Stopped,
            Ended::Trap(err) => match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(status)) => Exit::Status(*status),
                None => Exit::Trap(err),
            },
        }
    }

    /// Instantiates the command `program` without running it: what a platform that serves
    /// one request per instance pays before the first call. The caller runs `wasi:cli/run`
    /// if it wants, and must call `release_all` on the instance's locks when done.
    pub async fn instantiate(
        &self,
        program: &Program,
        wasi: WasiCtx,
        locks: LockCtx,
    ) -> wasmtime::Result<(Store<GuestState>, Command)> {
        let Entry::Command(pre) = program.entry() else {
            wasmtime::bail!("it is {}, not a command", program.world());
        };
        let state = GuestState::new(wasi, locks);
        let mut store = self.sandbox.new_store(state, GuestLimits::default())?;
        let command = pre.instantiate_async(&mut store).await?;
        Ok((store, command))
    }
}
