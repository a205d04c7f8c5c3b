//! What `run` and `serve` share: the config file and the flags merged into one app and its
//! limits, the app's stores opened, the component read, and each guest's WASI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use latchkey_host::config::{Config, StoreConfig};
use latchkey_host::{EngineOptions, GuestLimits, LockCtxBuilder, Program, Runner, World};
use wasmtime::component::Component;
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::{FsPerms, WasiCtx};

use crate::args::GuestArgs;

/// The store a guest gets when no `--store` is given: the name Dapr's docs use.
const DEFAULT_STORE: &str = "lockstore";

/// The app the guests run as, and what every instance of it is allowed.
pub struct Guests {
    /// The app's id, policy and limits, without its stores yet ([`Guests::open_stores`]).
    pub app: LockCtxBuilder,
    /// The bounds on each instance.
    pub limits: GuestLimits,
    /// The stores the app may open, by name.
    stores: BTreeMap<String, StoreConfig>,
}

impl Guests {
    /// The config file (if any) with the flags on top; the app id defaults to the stem of
    /// `component`'s file name.
    pub fn new(args: &GuestArgs, component: &Path) -> anyhow::Result<Self> {
        let config = match &args.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let app_id = match &args.app_id {
            Some(id) => id.clone(),
            None => file_stem(component)?,
        };
        if let Err(reason) = latchkey_host::limits::check_app_id(&app_id) {
            match args.app_id {
                Some(_) => bail!("--app-id: {reason}"),
                None => bail!("{}: {reason}; give --app-id", component.display()),
            }
        }
        let policy = config.app(&app_id);
        let mut lock_limits = policy.limits();
        lock_limits.max_keep_alive = args.max_keep_alive.unwrap_or(lock_limits.max_keep_alive);
        let mut app = LockCtxBuilder::new(app_id);
        app.limits(lock_limits).resources(policy.resource_policy()?);
        let mut limits = policy.guest_limits();
        limits.deadline = args.deadline.or(limits.deadline);
        limits.max_memory = args.max_memory.map(|b| b as usize).or(limits.max_memory);
        limits.fuel = args.fuel.or(limits.fuel);
        if let Some(handles) = args.max_handles {
            limits.max_handles = handles as usize;
        }
        let stores = store_configs(args, &config)?
            .into_iter()
            .filter(|(name, _)| policy.may_open(name))
            .collect();
        Ok(Guests {
            app,
            limits,
            stores,
        })
    }

    /// The engine these guests need, with a pool of `instances` slots (or none past a
    /// thousand, where the pool's address-space reservation gets large).
    pub fn engine_options(&self, args: &GuestArgs, instances: u32) -> EngineOptions {
        let mut options = EngineOptions::default();
        options.meter_fuel = self.limits.fuel.is_some();
        options.disk_cache = !args.no_cache;
        options.pooled_instances = (instances <= 1000).then_some(instances);
        options
    }

    /// Opens every store the app may use and checks that each answers, so that a wrong
    /// address or password stops the command before any guest runs; and starts serving
    /// metrics if asked to.
    pub async fn open_stores(&mut self, args: &GuestArgs) -> anyhow::Result<()> {
        if let Some(addr) = args.metrics_addr {
            crate::metrics::listen(addr)?;
        }
        for (name, store) in &self.stores {
            let opened = store.open(name)?;
            opened
                .ping()
                .await
                .with_context(|| format!("lock store {name} at {store}"))?;
            self.app.store(opened);
        }
        Ok(())
    }
}

fn file_stem(path: &Path) -> anyhow::Result<String> {
    match path.file_stem().and_then(|s| s.to_str()) {
        Some(stem) if !stem.is_empty() => Ok(stem.to_owned()),
        _ => bail!(
            "cannot take an app id from {}; give --app-id",
            path.display()
        ),
    }
}

/// The stores of the config file, overridden and extended by `--store` flags; the default
/// in-memory `lockstore` if neither names any.
fn store_configs(
    args: &GuestArgs,
    config: &Config,
) -> anyhow::Result<BTreeMap<String, StoreConfig>> {
    let mut stores = config.stores.clone();
    let mut flagged = BTreeSet::new();
    for (name, url) in &args.stores {
        if !flagged.insert(name) {
            bail!("store {name} is given twice");
        }
        stores.insert(name.clone(), StoreConfig::new(url));
    }
    for (name, path) in &args.password_files {
        let store = flagged_store(&mut stores, name, "a password")?;
        (store.password_file, store.password_env) = (Some(path.into()), None);
    }
    for (name, var) in &args.password_envs {
        let store = flagged_store(&mut stores, name, "a password")?;
        (store.password_file, store.password_env) = (None, Some(var.clone()));
    }
    for (name, count) in &args.wait_replicas {
        flagged_store(&mut stores, name, "--wait-replicas")?.wait_replicas = *count;
    }
    if stores.is_empty() {
        stores.insert(DEFAULT_STORE.to_owned(), StoreConfig::new("memory"));
    }
    if let Some(ms) = args.store_timeout_ms {
        for store in stores.values_mut() {
            store.timeout = Some(Duration::from_millis(ms));
        }
    }
    Ok(stores)
}

/// The store a flag names; `what` says which flag, for the error.
fn flagged_store<'a>(
    stores: &'a mut BTreeMap<String, StoreConfig>,
    name: &str,
    what: &str,
) -> anyhow::Result<&'a mut StoreConfig> {
    stores.get_mut(name).with_context(|| {
        format!("{what} is given for store {name}, but there is no --store {name}=URL")
    })
}

/// Reads and compiles the component at `path`, saying plainly what it is if it is not one.
pub fn read_component(runner: &Runner, path: &Path) -> anyhow::Result<Component> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !bytes.starts_with(b"\0asm") {
        bail!("{} is not a WebAssembly file", path.display());
    }
    Component::from_binary(runner.engine(), &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} is not a WebAssembly component", path.display()))
}

/// Reads the component at `path` and prepares it on `runner` as a program of one of
/// `worlds`, saying plainly what it is if it is not one (`otherwise` says what to do with it
/// then).
pub fn prepare(
    runner: &Runner,
    path: &Path,
    worlds: &[World],
    otherwise: &str,
) -> anyhow::Result<Program> {
    let component = read_component(runner, path)?;
    let verb = if worlds.contains(&World::Proxy) {
        "be served"
    } else {
        "run here"
    };
    let program = runner
        .prepare(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} cannot {verb}", path.display()))?;
    if !worlds.contains(&program.world()) {
        bail!(
            "{} cannot {verb}: it is {}; {otherwise}",
            path.display(),
            program.world()
        );
    }
    Ok(program)
}

/// The guest's WASI: only what the flags grant. No inherited environment, no network
/// unless `--allow-network`, no files beyond `--dir`; `argv` as given.
pub fn wasi_ctx(
    args: &GuestArgs,
    argv: &[String],
    stdout: impl StdoutStream + 'static,
    stderr: impl StdoutStream + 'static,
) -> anyhow::Result<WasiCtx> {
    let mut wasi = WasiCtx::builder();
    wasi.args(argv)
        .envs(&args.envs)
        .stdout(stdout)
        .stderr(stderr);
    if args.allow_network {
        wasi.inherit_network()
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true);
    }
    for dir in &args.dirs {
        let (host, guest) = dir.split_once("::").unwrap_or((dir, dir));
        wasi.preopened_dir(host, guest, FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("--dir {dir}: cannot open {host}"))?;
    }
    Ok(wasi.build())
}
