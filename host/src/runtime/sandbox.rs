//! What every latchkey host does to run untrusted guests, whatever their world: the engine
//! (async calls, epoch ticks, the instance pool, the cache of compiled components), the
//! guest state of one instance, the limits on it, and running it to an end that always
//! releases its locks.
//!
//! [`crate::Runner`] is built from these pieces, for commands and HTTP handlers alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::{ResourceTable, ResourceTableError};
use wasmtime::{
    CallHook, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::ctx::{LockCtx, LockCtxView, LockView};

/// How often the engine's epoch advances: how long a guest runs before it yields its thread
/// to others, and the resolution of deadlines for code that never calls the host.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// What one slot of the instance pool holds. A Rust command is a handful of core instances,
/// one or two memories and tables; a Python or JavaScript component (componentize-py,
/// componentize-js) is more than a dozen core instances sharing one or two memories. A
/// component needing more is refused when it is loaded, with wasmtime's message saying
/// which limit it exceeds.
const CORE_INSTANCES_PER_COMPONENT: u32 = 64;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 16;

/// How much of a freed slot's linear memory is zeroed in place rather than given back to
/// the kernel: what a Rust guest dirties (its 1 MiB stack and some heap), with room.
const KEEP_RESIDENT_MEMORY: usize = 4 << 20;
/// The same for each table.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;
/// What is given back to the kernel goes in batches of this many regions.
const DECOMMIT_BATCH: usize = 16;

/// How the engine behind a runner is set up.
#[non_exhaustive]
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Meter fuel, so that [`GuestLimits::fuel`] applies (slows guests down).
    pub meter_fuel: bool,
    /// Keep compiled components in wasmtime's cache directory (`~/.cache/wasmtime`), keyed
    /// by the component's content and the engine's settings, so an unchanged component is
    /// not compiled again.
    pub disk_cache: bool,
    /// Preallocate slots for this many instances at once (wasmtime's pooling allocator):
    /// instantiation takes a few µs instead of ~20, but an instance beyond the count waits
    /// for or fails to get a slot. `None` allocates each instance on demand.
    pub pooled_instances: Option<u32>,
}

impl Default for EngineOptions {
    /// No fuel, no disk cache, a pool of 1000 instances.
    fn default() -> Self {
        EngineOptions {
            meter_fuel: false,
            disk_cache: false,
            pooled_instances: Some(1000),
        }
    }
}

impl EngineOptions {
    /// An engine for untrusted guests: async host calls, the component model and its async
    /// ABI (WASI 0.3), an epoch
    /// that ticks every millisecond for as long as the engine lives (so running guests
    /// yield and deadlines apply), and the pool and cache asked for.
    pub fn engine(&self) -> wasmtime::Result<Engine> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .wasm_component_model_async(true)
            .epoch_interruption(true)
            .consume_fuel(self.meter_fuel);
        if let Some(instances) = self.pooled_instances {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(instances)
                .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
                .max_memories_per_component(MEMORIES_PER_COMPONENT)
                .max_tables_per_component(TABLES_PER_COMPONENT)
                .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
                .total_memories(instances.saturating_mul(MEMORIES_PER_COMPONENT))
                .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT))
                // A freed slot is reset with memset up to these sizes rather than with
                // madvise: each madvise of a multi-threaded process costs a TLB shootdown
                // on every core (IPIs; dear on a VM), and the next instance then faults the
                // pages back in. Serving one request per instance, that was half the CPU.
                .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
                .table_keep_resident(KEEP_RESIDENT_TABLE)
                .decommit_batch_size(DECOMMIT_BATCH);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        if self.disk_cache {
            match wasmtime::Cache::new(wasmtime::CacheConfig::new()) {
                Ok(cache) => {
                    config.cache(Some(cache));
                }
                // A cache is an optimisation: without one, components are compiled anew.
                Err(err) => tracing::info!("no cache of compiled components: {err}"),
            }
        }
        let engine = Engine::new(&config)?;
        start_epoch_ticker(&engine);
        Ok(engine)
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
                TICKS.store(ticks_now(), Ordering::Relaxed);
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("a thread for the epoch ticker");
}

/// Epoch ticks since the process began (from 1), as the epoch tickers last saw them: a
/// clock that costs one load to read, for bookkeeping on every call into or out of a guest.
static TICKS: AtomicU64 = AtomicU64::new(1);

fn ticks_now() -> u64 {
    static BEGAN: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    (BEGAN.elapsed().as_nanos() / EPOCH_TICK.as_nanos()) as u64 + 1
}

/// Bounds on one instance. Whatever stops it, its locks are released.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Wall-clock time the instance may run, time blocked in host calls (waiting for a
    /// lock, sleeping) included.
    pub deadline: Option<Duration>,
    /// The most bytes of linear memory (per memory) it may grow to.
    pub max_memory: Option<usize>,
    /// Fuel for the instance, if the engine meters fuel ([`EngineOptions::meter_fuel`]).
    pub fuel: Option<u64>,
    /// The most handles the instance may hold at once: stores it opened, locks, pollables,
    /// WASI's streams and the rest. Each takes host memory that `max_memory` does not
    /// count, so without a cap a guest could grow the host as far as it liked. Past it, a
    /// call that can fail is `limit-exceeded`; one that cannot (a pollable) traps.
    pub max_handles: usize,
}

/// The default of [`GuestLimits::max_handles`]: far more than a guest in any of latchkey's
/// languages holds, and a couple of MB of host memory at most.
pub const DEFAULT_MAX_HANDLES: usize = 10_000;

impl Default for GuestLimits {
    /// No deadline, memory cap or fuel; [`DEFAULT_MAX_HANDLES`] handles.
    fn default() -> Self {
        GuestLimits {
            deadline: None,
            max_memory: None,
            fuel: None,
            max_handles: DEFAULT_MAX_HANDLES,
        }
    }
}

/// The guest state of one instance — the data of its wasmtime store: WASI, `wasi:http`,
/// locks, and the table of their handles.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outgoing_http: OutgoingHttp,
    locks: LockCtx,
    table: ResourceTable,
    memory: StoreLimits,
    /// Told of the instance's computing, if anyone asks.
    computing: Option<Arc<dyn Computing>>,
}

/// What learns of an instance's computing, from the guest's own thread: told of every
/// epoch tick at which the instance was running guest code, and keeping its
/// [`Stint`]. A reused instance's serving uses it to send no request to an instance that
/// is computing, which serves none of its other requests meanwhile (its tasks share one
/// thread of execution).
pub(crate) trait Computing: Send + Sync {
    /// The instance's stint in guest code.
    fn stint(&self) -> &Stint;
    /// An epoch tick came while the instance ran guest code.
    fn ticked(&self);
}

/// How long an instance has been running guest code without a break, kept from wasmtime's
/// call hooks: a call into the guest from the host begins a stint, its return ends it. A
/// guest's call into the host is part of its stint unless it lasts a whole tick (it
/// waited, as a stackful task suspended in a host call does): what follows is a new one.
/// An epoch tick alone cannot tell: it comes at the first check after the epoch advanced,
/// so a guest entered once a millisecond for a moment looks like one that computes.
#[derive(Debug, Default)]
pub(crate) struct Stint {
    /// Calls into the guest not yet returned.
    depth: AtomicU32,
    /// The tick the stint began at, 0 if none.
    since: AtomicU64,
    /// The tick a call into the host began at, 0 if none is under way.
    in_host: AtomicU64,
}

impl Stint {
    fn crossed(&self, hook: CallHook) {
        let now = TICKS.load(Ordering::Relaxed);
        match hook {
            CallHook::CallingWasm => {
                if self.depth.fetch_add(1, Ordering::Relaxed) == 0 {
                    self.since.store(now, Ordering::Relaxed);
                    self.in_host.store(0, Ordering::Relaxed);
                }
            }
            CallHook::ReturningFromWasm => {
                if self.depth.fetch_sub(1, Ordering::Relaxed) == 1 {
                    self.since.store(0, Ordering::Relaxed);
                }
            }
            CallHook::CallingHost => self.in_host.store(now, Ordering::Relaxed),
            CallHook::ReturningFromHost => {
                let began = self.in_host.swap(0, Ordering::Relaxed);
                if began != 0 && now >= began + 2 {
                    self.since.store(now, Ordering::Relaxed);
                }
            }
        }
    }

    /// The call into the host under way is the epoch's (this tick's yield): part of the
    /// stint however long the yield takes on a loaded machine.
    fn ticking(&self) {
        self.in_host.store(0, Ordering::Relaxed);
    }

    /// Whole ticks the instance has been computing, without a break, up to now.
    pub(crate) fn ticks(&self) -> u64 {
        let since = self.since.load(Ordering::Relaxed);
        let in_host = self.in_host.load(Ordering::Relaxed);
        let now = TICKS.load(Ordering::Relaxed);
        if since == 0 || (in_host != 0 && now >= in_host + 2) {
            return 0;
        }
        now.saturating_sub(since)
    }
}

impl GuestState {
    /// The state of an instance with `wasi` and `locks`, and no outgoing HTTP requests.
    pub fn new(wasi: WasiCtx, locks: LockCtx) -> Self {
        GuestState {
            wasi,
            http: WasiHttpCtx::new(),
            outgoing_http: OutgoingHttp { allowed: false },
            locks,
            table: ResourceTable::new(),
            memory: StoreLimits::default(),
            computing: None,
        }
    }

    /// Tells `computing` of this instance's calls into and out of its guest, and of the
    /// epoch ticks it spends running guest code.
    pub(crate) fn telling(mut self, computing: Arc<dyn Computing>) -> Self {
        self.computing = Some(computing);
        self
    }

    /// Lets a handler send HTTP requests of its own (`wasi:http/outgoing-handler`): network
    /// access, so only when the operator allows the network.
    pub fn allow_outgoing_http(mut self, allowed: bool) -> Self {
        self.outgoing_http.allowed = allowed;
        self
    }

    /// The instance's lock state.
    pub fn locks_mut(&mut self) -> &mut LockCtx {
        &mut self.locks
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing_http,
        }
    }
}

impl LockView for GuestState {
    fn locks(&mut self) -> LockCtxView<'_> {
        LockCtxView {
            ctx: &mut self.locks,
            table: &mut self.table,
        }
    }
}

/// `wasi:http`'s default behaviour, except that a guest's own requests are refused unless
/// the network is allowed.
struct OutgoingHttp {
    allowed: bool,
}

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        if self.allowed {
            wasmtime_wasi_http::default_hooks().send_request(request, options, fut)
        } else {
            Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
        }
    }
}

/// An engine and how it was set up: what every instance's wasmtime store is made from.
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Sandbox {
    pub(crate) engine: Engine,
    options: EngineOptions,
}

impl Sandbox {
    /// The engine `options` ask for.
    pub(crate) fn new(options: EngineOptions) -> wasmtime::Result<Self> {
        Ok(Sandbox {
            engine: options.engine()?,
            options,
        })
    }

    /// A wasmtime store for `state` with `limits` applied: a memory cap (growing past it
    /// traps), fuel if the engine meters it, and a yield to other tasks at every epoch
    /// tick, so a guest that never calls the host still lets the thread serve others.
    pub(crate) fn new_store(
        &self,
        state: GuestState,
        limits: GuestLimits,
    ) -> wasmtime::Result<Store<GuestState>> {
        new_store(&self.engine, &self.options, state, limits)
    }
}

fn new_store(
    engine: &Engine,
    options: &EngineOptions,
    mut state: GuestState,
    limits: GuestLimits,
) -> wasmtime::Result<Store<GuestState>> {
    if let Some(bytes) = limits.max_memory {
        // A trap, not a failed `memory.grow`: the guest is stopped, not asked to cope.
        state.memory = StoreLimitsBuilder::new()
            .memory_size(bytes)
            .trap_on_grow_failure(true)
            .build();
    }
    state.table.set_max_capacity(limits.max_handles);
    let state_computing = state.computing.is_some();
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.memory);
    // The component's own handle tables count the guest's resources too. Twice the host's
    // cap, so that a host resource past the cap is refused by the host's table — as
    // `limit-exceeded`, where the call can say so — before this traps.
    store.set_max_component_handles(limits.max_handles.saturating_mul(2));
    if options.meter_fuel {
        // Without a budget, a metering engine runs the guest unmetered in effect.
        store.set_fuel(limits.fuel.unwrap_or(u64::MAX))?;
    }
    if state_computing {
        store.call_hook(|store, hook| {
            if let Some(computing) = &store.data().computing {
                computing.stint().crossed(hook);
            }
            Ok(())
        });
    }
    // tokio's own yield lets the worker poll for I/O before it resumes this guest, so a
    // guest waiting on Redis is woken even while every thread has a spinning guest.
    store.epoch_deadline_callback(|store| {
        if let Some(computing) = &store.data().computing {
            computing.stint().ticking();
            computing.ticked();
        }
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    store.set_epoch_deadline(1);
    Ok(store)
}

/// How a guest's call ended.
#[derive(Debug)]
pub(crate) enum Ended<R> {
    /// It returned this.
    Returned(R),
    /// Its deadline stopped it.
    Deadline(Duration),
    /// The host stopped it: the client of its request went away, or the host is shutting
    /// down.
    Stopped,
    /// It trapped (or ran out of memory or fuel), or a host call failed.
    Trap(wasmtime::Error),
}

/// Runs `call` on `store` until it returns, `limits.deadline` passes or `stop` completes,
/// then releases every lock the instance still holds — however it ended.
pub(crate) async fn run_to_end<R>(
    store: &mut Store<GuestState>,
    limits: GuestLimits,
    stop: impl Future<Output = ()>,
    call: impl AsyncFnOnce(&mut Store<GuestState>) -> wasmtime::Result<R>,
) -> Ended<R> {
    let deadline = limits.deadline.unwrap_or_default();
    // A running guest yields at every tick and a blocked host call is a future, so the
    // deadline or `stop` can drop the call wherever the guest is.
    let ended = {
        let run = call(store);
        let limited = async {
            match limits.deadline {
                Some(deadline) => tokio::time::timeout(deadline, run).await.ok(),
                None => Some(run.await),
            }
        };
        tokio::select! {
            result = limited => match result {
                None => Ended::Deadline(deadline),
                Some(Ok(value)) => Ended::Returned(value),
                Some(Err(err)) if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                    Ended::Deadline(deadline)
                }
                Some(Err(err)) => Ended::Trap(err),
            },
            () = stop => Ended::Stopped,
        }
    };
    let ended = match ended {
        Ended::Trap(err) if matches!(err.downcast_ref(), Some(ResourceTableError::Full)) => {
            let max = store.data().table.max_capacity();
            Ended::Trap(err.context(format!(
                "limit exceeded: the instance holds {max} handles, the most it may (max-handles)"
            )))
        }
        ended => ended,
    };
    store.data_mut().locks.release_all().await;
    ended
}
