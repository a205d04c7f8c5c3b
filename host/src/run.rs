//! Running `wasi:cli` command components with locks: what `latchkey run` does, as a library.

use std::path::Path;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::{Command, CommandPre};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use crate::ctx::{LockCtx, LockCtxView, LockView};

/// The store data of one instance: WASI, locks, and the table of their handles.
pub struct Instance {
    wasi: WasiCtx,
    locks: LockCtx,
    table: ResourceTable,
}

impl WasiView for Instance {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl LockView for Instance {
    fn locks(&mut self) -> LockCtxView<'_> {
        LockCtxView {
            ctx: &mut self.locks,
            table: &mut self.table,
        }
    }
}

/// How an instance ended. Its locks are released by then, whichever it is.
#[derive(Debug)]
pub enum Exit {
    /// `main` returned or the guest called `exit`, with this status.
    Status(i32),
    /// The guest trapped or a host call failed.
    Trap(wasmtime::Error),
}

/// Compiles and runs command components with WASI and `latchkey:lock` linked in.
pub struct Runner {
    engine: Engine,
    linker: Linker<Instance>,
}

/// A component ready to be instantiated many times.
#[derive(Clone)]
pub struct Program {
    pre: CommandPre<Instance>,
}

impl Runner {
    /// An engine with async host calls, and a linker with WASI p2 and `latchkey:lock`.
    pub fn new() -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::add_to_linker(&mut linker)?;
        Ok(Runner { engine, linker })
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
        let instance = Instance {
            wasi,
            locks,
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, instance);
        let exit = match call_run(&mut store, program).await {
            Ok(Ok(())) => Exit::Status(0),
            Ok(Err(())) => Exit::Status(1),
            Err(err) => match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(status)) => Exit::Status(*status),
                None => Exit::Trap(err),
            },
        };
        store.data_mut().locks.release_all().await;
        exit
    }
}

async fn call_run(
    store: &mut Store<Instance>,
    program: &Program,
) -> wasmtime::Result<Result<(), ()>> {
    let command: Command = program.pre.instantiate_async(&mut *store).await?;
    command.wasi_cli_run().call_run(store).await
}
