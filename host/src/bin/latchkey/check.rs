//! `latchkey check`: compiles a component into wasmtime's cache, as `run` and `serve` would,
//! and says which world it is — so that a deployment can be checked, and a cache warmed,
//! before anything runs.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use latchkey_host::{EngineOptions, Runner};

use crate::args::CheckArgs;
use crate::guests::read_component;

pub fn command(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut options = EngineOptions::default();
    options.meter_fuel = args.fuel;
    options.disk_cache = true;
    let runner = Runner::with_options(options)?;
    let component = read_component(&runner, &args.component)?;
    let program = runner
        .prepare(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} cannot run here", args.component.display()))?;
    // A stdout nobody reads is no failure of the check's.
    let _ = writeln!(
        std::io::stdout(),
        "{}: {}",
        args.component.display(),
        program.world()
    );
    Ok(ExitCode::SUCCESS)
}
