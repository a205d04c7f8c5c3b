//! `latchkey`: runs WebAssembly components that take distributed locks.
//!
//! A thin layer over the `latchkey_host` library: it turns flags into a [`LockCtxBuilder`]
//! and a `WasiCtx` per instance, and runs them with [`Runner`].

mod args;
mod output;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser as _;
use clap::error::ErrorKind;
use latchkey_host::backend::redis::redacted;
use latchkey_host::config::{Config, StoreConfig};
use latchkey_host::{Exit, LockCtxBuilder, Runner, RunnerOptions};
use wasmtime::component::Component;
use wasmtime_wasi::{FsPerms, WasiCtx};

use args::{Cli, Command, RunArgs};
use output::{Prefixed, Target};

/// The most instances `latchkey run` preallocates slots for.
const MAX_POOLED: u32 = 1000;

/// The store a guest gets when no `--store` is given: the name Dapr's docs use.
const DEFAULT_STORE: &str = "lockstore";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            return ExitCode::from(2);
        }
        Err(err) => {
            // clap's own text spans several paragraphs; the first says what is wrong.
            let text = err.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!(
                "latchkey: {} (see latchkey --help)",
                first.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run(args) => run(args).await,
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("latchkey: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(anyhow::Error::msg)?,
        None => Config::default(),
    };
    let app_id = match &args.app_id {
        Some(id) if id.is_empty() => bail!("--app-id must not be empty"),
        Some(id) => id.clone(),
        None => file_stem(&args.component)?,
    };
    let app = config.app(&app_id);
    let mut locks = LockCtxBuilder::new(app_id.clone());
    locks
        .limits(app.limits())
        .resources(app.resource_policy().map_err(anyhow::Error::msg)?);
    let mut guest_limits = app.guest_limits();
    guest_limits.deadline = args.timeout.or(guest_limits.deadline);
    guest_limits.max_memory = args
        .max_memory
        .map(|b| b as usize)
        .or(guest_limits.max_memory);
    guest_limits.fuel = args.fuel.or(guest_limits.fuel);

    let runner = Arc::new(Runner::with_options(RunnerOptions {
        meter_fuel: guest_limits.fuel.is_some(),
        disk_cache: !args.no_cache,
        // Past a thousand, the pool's address-space reservation gets large: allocate on
        // demand instead.
        pooled_instances: (args.instances <= MAX_POOLED).then_some(args.instances),
    })?);
    let component = read_component(&runner, &args.component)?;
    let program = runner
        .prepare(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} cannot run here", args.component.display()))?;

    for (name, store) in store_configs(&args, &config)? {
        if !app.may_open(&name) {
            continue;
        }
        let opened = store
            .open()
            .map_err(|msg| anyhow::anyhow!("store {name}: {msg}"))?;
        opened
            .ping(&name)
            .await
            .with_context(|| format!("lock store {name} at {}", redacted(&store.url)))?;
        locks.store(name, opened);
    }

    let many = args.instances > 1;
    let mut instances = tokio::task::JoinSet::new();
    for n in 1..=args.instances {
        let prefix = if many {
            format!("[{n}] ")
        } else {
            String::new()
        };
        let stdout = Prefixed::new(Target::Stdout, prefix.clone());
        let stderr = Prefixed::new(Target::Stderr, prefix);
        let wasi = wasi_ctx(&args, stdout.clone(), stderr.clone())?;
        let (runner, program, ctx) = (runner.clone(), program.clone(), locks.build());
        instances.spawn(async move {
            let exit = runner.run_limited(&program, wasi, ctx, guest_limits).await;
            stdout.finish();
            stderr.finish();
            (n, exit)
        });
    }

    let mut code = ExitCode::SUCCESS;
    let mut failed = false;
    while let Some(joined) = instances.join_next().await {
        let (n, exit) = joined?;
        match exit {
            Exit::Status(0) => {}
            Exit::Status(status) => {
                tracing::info!(instance = n, status, "instance exited");
                if !failed {
                    code = ExitCode::from(u8::try_from(status).unwrap_or(1));
                    failed = true;
                }
            }
            Exit::Deadline(after) => {
                eprintln!("latchkey: instance {n} stopped at its deadline of {after:?}");
                if !failed {
                    code = ExitCode::FAILURE;
                    failed = true;
                }
            }
            Exit::Trap(err) => {
                eprintln!("latchkey: instance {n} trapped: {}", err.root_cause());
                tracing::debug!(instance = n, "trap: {err:?}");
                if !failed {
                    code = ExitCode::FAILURE;
                    failed = true;
                }
            }
        }
    }
    Ok(code)
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
fn store_configs(args: &RunArgs, config: &Config) -> anyhow::Result<BTreeMap<String, StoreConfig>> {
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

fn read_component(runner: &Runner, path: &Path) -> anyhow::Result<Component> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !bytes.starts_with(b"\0asm") {
        bail!("{} is not a WebAssembly file", path.display());
    }
    Component::from_binary(runner.engine(), &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} is not a WebAssembly component", path.display()))
}

/// The guest's WASI: only what the flags grant. No inherited environment, no network
/// unless `--allow-network`, no files beyond `--dir`.
fn wasi_ctx(args: &RunArgs, stdout: Prefixed, stderr: Prefixed) -> anyhow::Result<WasiCtx> {
    let mut wasi = WasiCtx::builder();
    let program = args
        .component
        .file_name()
        .map_or_else(|| "guest".into(), |n| n.to_string_lossy());
    wasi.arg(program)
        .args(&args.args)
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
