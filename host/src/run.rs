//! Running `wasi:cli` command components with locks: what `latchkey run` does, as a library.

use std::path::Path;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::{Command, CommandPre};
use wasmtime_wasi::{I32Exit, WasiCtx};

use crate::ctx::LockCtx;
use crate::sandbox::{Ended, EngineOptions, GuestLimits, Instance, new_store, run_to_end};

/// How an instance ended. Its locks are released by then, whichever it is.
#[non_exhaustive]
#[derive(Debug)]
pub enum Exit {
    /// `main` returned or the guest called `exit`, with this status.
    Status(i32),
    /// The guest ran past its deadline and was stopped.
    Deadline(Duration),
    /// The guest trapped (or ran out of memory or fuel), or a host call failed.
    Trap(wasmtime::Error),
}

/// Compiles and runs command components with WASI and `latchkey:lock` linked in.
pub struct Runner {
    engine: Engine,
    options: EngineOptions,
    linker: Linker<Instance>,
}

/// A component ready to be instantiated many times.
#[derive(Clone)]
pub struct Program {
    pre: CommandPre<Instance>,
}

impl Runner {
    /// A runner on an engine with the default [`EngineOptions`].
    pub fn new() -> wasmtime::Result<Self> {
        Self::with_options(EngineOptions::default())
    }

    /// Like [`Runner::new`], also metering fuel so that [`GuestLimits::fuel`] applies.
    /// Metering slows guests down; use it only if you set fuel.
    pub fn metering_fuel() -> wasmtime::Result<Self> {
        Self::with_options(EngineOptions {
            meter_fuel: true,
            ..EngineOptions::default()
        })
    }

    /// A runner on an engine set up by `options`, with WASI p2 and `latchkey:lock` linked.
    pub fn with_options(options: EngineOptions) -> wasmtime::Result<Self> {
        let engine = options.engine()?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::add_to_linker(&mut linker)?;
        Ok(Runner {
            engine,
            options,
            linker,
        })
    }

    /// The engine components must be compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles the component at `path` and checks that it is a command whose imports this
    /// host provides.
    pub fn load(&self, path: &Path) -> wasmtime::Result<Program> {
        let component = Component::from_file(&self.engine, path)?;
        self.prepare(&component)
    }

    /// Checks that `component` is a command whose imports this host provides.
    pub fn prepare(&self, component: &Component) -> wasmtime::Result<Program> {
        let pre = CommandPre::new(self.linker.instantiate_pre(component)?)?;
        Ok(Program { pre })
    }

    /// Runs one instance of `program` to its end, then releases every lock it still holds.
    pub async fn run(&self, program: &Program, wasi: WasiCtx, locks: LockCtx) -> Exit {
        self.run_limited(program, wasi, locks, GuestLimits::default())
            .await
    }

    /// Runs one instance within `limits`, then releases every lock it still holds —
    /// also when a limit stopped it.
    pub async fn run_limited(
        &self,
        program: &Program,
        wasi: WasiCtx,
        locks: LockCtx,
        limits: GuestLimits,
    ) -> Exit {
        let instance = Instance::new(wasi, locks);
        let mut store = match new_store(&self.engine, &self.options, instance, limits) {
            Ok(store) => store,
            Err(err) => return Exit::Trap(err),
        };
        let ended = run_to_end(&mut store, limits, std::future::pending(), async |store| {
            let command = program.pre.instantiate_async(&mut *store).await?;
            command.wasi_cli_run().call_run(&mut *store).await
        })
        .await;
        match ended {
            Ended::Returned(Ok(())) => Exit::Status(0),
            Ended::Returned(Err(())) => Exit::Status(1),
            Ended::Deadline(after) => Exit::Deadline(after),
            Ended::Stopped => unreachable!("a command is never stopped but by its deadline"),
            Ended::Trap(err) => match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(status)) => Exit::Status(*status),
                None => Exit::Trap(err),
            },
        }
    }

    /// Instantiates `program` without running it: what a platform that serves one request
    /// per instance pays before the first call. The caller runs `wasi:cli/run` if it
    /// wants, and must call `release_all` on the instance's locks when done.
    pub async fn instantiate(
        &self,
        program: &Program,
        wasi: WasiCtx,
        locks: LockCtx,
    ) -> wasmtime::Result<(Store<Instance>, Command)> {
        let instance = Instance::new(wasi, locks);
        let mut store = new_store(
            &self.engine,
            &self.options,
            instance,
            GuestLimits::default(),
        )?;
        let command = program.pre.instantiate_async(&mut store).await?;
        Ok((store, command))
    }
}
