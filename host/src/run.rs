//! Running `wasi:cli` command components with locks: what `latchkey run` does, as a library.

use std::path::Path;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap,
};
use wasmtime_wasi::p2::bindings::{Command, CommandPre};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use crate::ctx::{LockCtx, LockCtxView, LockView};

/// The store data of one instance: WASI, locks, and the table of their handles.
pub struct Instance {
    wasi: WasiCtx,
    locks: LockCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

/// Bounds on one instance. Whatever stops it, its locks are released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestLimits {
    /// Wall-clock time the instance may run, time blocked in host calls (waiting for a
    /// lock, sleeping) included.
    pub deadline: Option<Duration>,
    /// The most bytes of linear memory (per memory) it may grow to.
    pub max_memory: Option<usize>,
    /// Fuel for the instance, if the runner meters fuel ([`Runner::metering_fuel`]).
    pub fuel: Option<u64>,
}

/// How often the engine's epoch advances: the resolution of deadlines for code that
/// never calls the host.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// 2^40 ticks of 10 ms: about 350 years.
const NO_DEADLINE_TICKS: u64 = 1 << 40;

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
    /// The guest ran past its deadline and was stopped.
    Deadline(Duration),
    /// The guest trapped (or ran out of memory or fuel), or a host call failed.
    Trap(wasmtime::Error),
}

/// Compiles and runs command components with WASI and `latchkey:lock` linked in.
pub struct Runner {
    engine: Engine,
    linker: Linker<Instance>,
    fuel: bool,
}

/// How a [`Runner`]'s engine is set up.
#[derive(Debug, Clone, Copy)]
pub struct RunnerOptions {
    /// Meter fuel, so that [`GuestLimits::fuel`] applies (slows guests down).
    pub meter_fuel: bool,
    /// Keep compiled components in wasmtime's cache directory (`~/.cache/wasmtime`), keyed
    /// by the component's content and the engine's settings, so an unchanged component is
    /// not compiled again.
    pub disk_cache: bool,
    /// Preallocate slots for this many instances at once (wasmtime's pooling allocator):
    /// instantiation takes a few µs instead of ~20, but an instance beyond the count fails
    /// to start. `None` allocates each instance on demand.
    pub pooled_instances: Option<u32>,
}

impl Default for RunnerOptions {
    /// No fuel, no disk cache, a pool of 1000 instances.
    fn default() -> Self {
        RunnerOptions {
            meter_fuel: false,
            disk_cache: false,
            pooled_instances: Some(1000),
        }
    }
}

/// A component ready to be instantiated many times.
#[derive(Clone)]
pub struct Program {
    pre: CommandPre<Instance>,
}

impl Runner {
    /// An engine with async host calls and epoch deadlines, and a linker with WASI p2 and
    /// `latchkey:lock`.
    pub fn new() -> wasmtime::Result<Self> {
        Self::with_options(RunnerOptions::default())
    }

    /// Like [`Runner::new`], also metering fuel so that [`GuestLimits::fuel`] applies.
    /// Metering slows guests down; use it only if you set fuel.
    pub fn metering_fuel() -> wasmtime::Result<Self> {
        Self::with_options(RunnerOptions {
            meter_fuel: true,
            ..RunnerOptions::default()
        })
    }

    /// A runner with the given options.
    pub fn with_options(options: RunnerOptions) -> wasmtime::Result<Self> {
        let fuel = options.meter_fuel;
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(fuel);
        if let Some(instances) = options.pooled_instances {
            // A Rust wasip2 command is a handful of core instances, memories and tables;
            // these bounds fit `instances` such components at once.
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(instances)
                .total_core_instances(4 * instances)
                .total_memories(2 * instances)
                .total_tables(4 * instances);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        if options.disk_cache {
            match wasmtime::Cache::new(wasmtime::CacheConfig::new()) {
                Ok(cache) => {
                    config.cache(Some(cache));
                }
                // A cache is an optimisation: without one, components are compiled anew.
                Err(err) => tracing::info!("no cache of compiled components: {err}"),
            }
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::add_to_linker(&mut linker)?;
        start_epoch_ticker(&engine);
        Ok(Runner {
            engine,
            linker,
            fuel,
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
        let mut store = match self.new_store(wasi, locks, limits) {
            Ok(store) => store,
            Err(err) => return Exit::Trap(err),
        };
        // Code that never calls the host is stopped by the epoch; code blocked in a host
        // call (a wait for a lock, a sleep) by dropping the call at the deadline.
        // Without a deadline, one centuries away (the epoch counter adds, not saturates).
        let ticks = limits.deadline.map_or(NO_DEADLINE_TICKS, |d| {
            (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
        });
        store.set_epoch_deadline(ticks);
        let run = call_run(&mut store, program);
        let result = match limits.deadline {
            Some(deadline) => tokio::time::timeout(deadline, run).await.ok(),
            None => Some(run.await),
        };
        let exit = match result {
            None => Exit::Deadline(limits.deadline.unwrap_or_default()),
            Some(Ok(Ok(()))) => Exit::Status(0),
            Some(Ok(Err(()))) => Exit::Status(1),
            Some(Err(err)) => {
                if let Some(I32Exit(status)) = err.downcast_ref::<I32Exit>() {
                    Exit::Status(*status)
                } else if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    Exit::Deadline(limits.deadline.unwrap_or_default())
                } else {
                    Exit::Trap(err)
                }
            }
        };
        store.data_mut().locks.release_all().await;
        exit
    }
}

impl Runner {
    /// Instantiates `program` without running it: what a platform that serves one request
    /// per instance pays before the first call. The caller runs `wasi:cli/run` if it
    /// wants, and must call `release_all` on the instance's locks when done.
    pub async fn instantiate(
        &self,
        program: &Program,
        wasi: WasiCtx,
        locks: LockCtx,
    ) -> wasmtime::Result<(Store<Instance>, Command)> {
        let mut store = self.new_store(wasi, locks, GuestLimits::default())?;
        store.set_epoch_deadline(NO_DEADLINE_TICKS);
        let command = program.pre.instantiate_async(&mut store).await?;
        Ok((store, command))
    }

    fn new_store(
        &self,
        wasi: WasiCtx,
        locks: LockCtx,
        limits: GuestLimits,
    ) -> wasmtime::Result<Store<Instance>> {
        let mut memory = StoreLimitsBuilder::new();
        if let Some(bytes) = limits.max_memory {
            // A trap, not a failed `memory.grow`: the guest is stopped, not asked to cope.
            memory = memory.memory_size(bytes).trap_on_grow_failure(true);
        }
        let instance = Instance {
            wasi,
            locks,
            table: ResourceTable::new(),
            limits: memory.build(),
        };
        let mut store = Store::new(&self.engine, instance);
        store.limiter(|instance| &mut instance.limits);
        if self.fuel {
            // Without a budget, a metering engine runs the guest unmetered in effect.
            store.set_fuel(limits.fuel.unwrap_or(u64::MAX))?;
        }
        Ok(store)
    }
}

impl Instance {
    /// The instance's lock state, to release its locks after [`Runner::instantiate`].
    pub fn locks_mut(&mut self) -> &mut LockCtx {
        &mut self.locks
    }
}

/// Advances the engine's epoch every tick for as long as the engine lives.
fn start_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("latchkey-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("a thread for the epoch ticker");
}

async fn call_run(
    store: &mut Store<Instance>,
    program: &Program,
) -> wasmtime::Result<Result<(), ()>> {
    let command: Command = program.pre.instantiate_async(&mut *store).await?;
    command.wasi_cli_run().call_run(store).await
}
