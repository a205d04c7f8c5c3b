//! `latchkey`: runs WebAssembly components that take distributed locks.
//!
//! A thin layer over the `latchkey_host` library: it turns flags into a [`LockCtxBuilder`]
//! and a `WasiCtx` per instance, and runs them with [`Runner`].

mod args;
mod output;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser as _;
use clap::error::ErrorKind;
use latchkey_host::backend::redis::redacted;
use latchkey_host::{Exit, LockCtxBuilder, LockStore, Runner};
use wasmtime::component::Component;
use wasmtime_wasi::{FsPerms, WasiCtx};

use args::{Cli, Command, RunArgs};
use output::{Prefixed, Target};

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
        Err(err) => {
            // clap's own text spans several lines; the first says what is wrong.
            let text = err.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!(
                "latchkey: {} (see latchkey --help)",
                first.trim_start_matches("error: ")
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
    let app_id = match &args.app_id {
        Some(id) if id.is_empty() => bail!("--app-id must not be empty"),
        Some(id) => id.clone(),
        None => file_stem(&args.component)?,
    };
    let stores = open_stores(&args)?;

    let runner = Arc::new(Runner::new()?);
    let component = read_component(&runner, &args.component)?;
    let program = runner
        .prepare(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} cannot run here", args.component.display()))?;

    let mut locks = LockCtxBuilder::new(app_id);
    for (name, url, store) in stores {
        store
            .ping(&name)
            .await
            .with_context(|| format!("lock store {name} at {}", redacted(&url)))?;
        locks.store(name, store);
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
            let exit = runner.run(&program, wasi, ctx).await;
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

/// The stores named on the command line (or the default one), with their passwords.
fn open_stores(args: &RunArgs) -> anyhow::Result<Vec<(String, String, LockStore)>> {
    let mut urls = args.stores.clone();
    if urls.is_empty() {
        urls.push((DEFAULT_STORE.to_owned(), "memory".to_owned()));
    }
    for (name, _) in args.password_files.iter().chain(&args.password_envs) {
        if !urls.iter().any(|(n, _)| n == name) {
            bail!("a password is given for store {name}, but there is no --store {name}=URL");
        }
    }
    let timeout = Duration::from_millis(args.store_timeout_ms);
    let mut stores: Vec<(String, String, LockStore)> = Vec::new();
    for (name, url) in urls {
        if stores.iter().any(|(n, _, _)| *n == name) {
            bail!("store {name} is given twice");
        }
        let password = password_for(args, &name)?;
        let store = LockStore::from_url(&url, password, timeout)
            .map_err(|msg| anyhow::anyhow!("--store {name}: {msg}"))?;
        stores.push((name, url, store));
    }
    Ok(stores)
}

fn password_for(args: &RunArgs, store: &str) -> anyhow::Result<Option<String>> {
    if let Some((_, path)) = args.password_files.iter().find(|(n, _)| n == store) {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the password file of store {store}"))?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    if let Some((_, var)) = args.password_envs.iter().find(|(n, _)| n == store) {
        let value = std::env::var(var)
            .with_context(|| format!("the password of store {store} is to come from ${var}"))?;
        return Ok(Some(value));
    }
    Ok(None)
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

/// The guest's WASI: only what the flags grant. No inherited environment, no network,
/// no files beyond `--dir`.
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
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for dir in &args.dirs {
        let (host, guest) = dir.split_once("::").unwrap_or((dir, dir));
        wasi.preopened_dir(host, guest, FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("--dir {dir}: cannot open {host}"))?;
    }
    Ok(wasi.build())
}
