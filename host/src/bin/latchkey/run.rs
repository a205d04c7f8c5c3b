//! `latchkey run`: N instances of a command component, their output prefixed, their exit
//! codes folded into one. SIGINT or SIGTERM stops them; their locks are released first.

use std::process::ExitCode;
use std::sync::Arc;

use latchkey_host::{Exit, Runner, World};
use tokio_util::sync::CancellationToken;

use crate::args::RunArgs;
use crate::guests::{Guests, prepare, wasi_ctx};
use crate::output::{Overflow, Prefixed, Target};
use crate::signals::stop_signal;

pub async fn command(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut guests = Guests::new(&args.guest, &args.component)?;
    let runner = Runner::with_options(guests.engine_options(&args.guest, args.instances))?;
    let program = prepare(
        &runner,
        &args.component,
        &[World::Command, World::CommandP3],
        "serve it with latchkey serve",
    )?;
    guests.open_stores(&args.guest).await?;
    let dapr = crate::dapr::beside(&args.dapr, &guests).await?;

    let program_name = args
        .component
        .file_name()
        .map_or_else(|| "guest".into(), |n| n.to_string_lossy().into_owned());
    let argv: Vec<String> = std::iter::once(program_name)
        .chain(args.args.clone())
        .collect();
    let stop = CancellationToken::new();
    let signal = stop_signal()?;
    let runner = Arc::new(runner);
    let many = args.instances > 1;
    let mut instances = tokio::task::JoinSet::new();
    for n in 1..=args.instances {
        let prefix = if many {
            format!("[{n}] ")
        } else {
            String::new()
        };
        let stdout = Prefixed::new(Target::Stdout, prefix.clone(), Overflow::Wait);
        let stderr = Prefixed::new(Target::Stderr, prefix, Overflow::Wait);
        let wasi = wasi_ctx(&args.guest, &argv, stdout.clone(), stderr.clone())?;
        let (runner, program, locks) = (runner.clone(), program.clone(), guests.app.build());
        let (limits, stop) = (guests.limits, stop.clone());
        instances.spawn(async move {
            let exit = runner
                .run_until(&program, wasi, locks, limits, stop.cancelled())
                .await;
            // The last unended line goes out before the exit is reported.
            drop((stdout, stderr));
            (n, exit)
        });
    }

    let mut signal = std::pin::pin!(signal);
    let mut stopped_by = None;
    let mut first_failure = None;
    loop {
        let joined = tokio::select! {
            joined = instances.join_next() => joined,
            by = &mut signal, if stopped_by.is_none() => {
                stopped_by = Some(by);
                stop.cancel();
                continue;
            }
        };
        let Some(joined) = joined else { break };
        let (n, exit) = joined?;
        if let Some(code) = report(n, exit) {
            first_failure.get_or_insert(code);
        }
    }
    if let Some(dapr) = dapr {
        dapr.stop().await?;
    }
    if let Some(by) = stopped_by {
        say!("latchkey: stopped by {by}; every lock released");
        return Ok(ExitCode::from(by.exit_code()));
    }
    Ok(first_failure.unwrap_or(ExitCode::SUCCESS))
}

/// Says how instance `n` ended if it failed, and the exit code that failure gives.
fn report(n: u32, exit: Exit) -> Option<ExitCode> {
    match exit {
        Exit::Status(0) => None,
        Exit::Status(status) => {
            tracing::info!(instance = n, status, "instance exited");
            Some(ExitCode::from(u8::try_from(status).unwrap_or(1)))
        }
        Exit::Deadline(after) => {
            say!("latchkey: instance {n} stopped at its deadline of {after:?}");
            Some(ExitCode::FAILURE)
        }
        Exit::Stopped => Some(ExitCode::FAILURE),
        Exit::Trap(err) => {
            say!("latchkey: instance {n} trapped: {}", err.root_cause());
            tracing::debug!(instance = n, "trap: {err:?}");
            Some(ExitCode::FAILURE)
        }
        _ => Some(ExitCode::FAILURE),
    }
}
