//! `latchkey serve`: a wasi:http handler component behind an HTTP/1.1 server until SIGINT or
//! SIGTERM: one fresh instance per request for WASI 0.2, reused instances for WASI 0.3.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use latchkey_host::runtime::serve::{InstanceReuse, ServeOptions, serve};
use latchkey_host::{GuestLimits, Runner, World};
use tokio::net::TcpListener;

use crate::args::ServeArgs;
use crate::guests::{Guests, prepare, wasi_ctx};
use crate::output::{Overflow, Prefixed, Target};
use crate::signals::stop_signal;

pub async fn command(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut guests = Guests::new(&args.guest, &args.component)?;
    let options = guests.engine_options(&args.guest, args.max_concurrent_requests);
    let runner = Runner::with_options(options)?;
    let program = prepare(
        &runner,
        &args.component,
        &[World::Proxy, World::ServiceP3],
        "run it with latchkey run",
    )?;
    let argv = vec![
        args.component
            .file_name()
            .map_or_else(|| "handler".into(), |n| n.to_string_lossy().into_owned()),
    ];
    // Mistakes in the WASI flags (a --dir that cannot be opened) now, not at a request.
    wasi_ctx(
        &args.guest,
        &argv,
        Prefixed::new(Target::Stdout, String::new(), Overflow::Drop),
        Prefixed::new(Target::Stderr, String::new(), Overflow::Drop),
    )?;
    guests.open_stores(&args.guest).await?;
    let dapr = crate::dapr::beside(&args.dapr, &guests).await?;
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    // Handlers run from here on: a signal must not end the process before their locks
    // are released.
    let shutdown = stop_signal()?;

    let guest = args.guest;
    // Output is labelled by what has an instance of its own: a request, or a reused instance.
    let label = match program.world() {
        World::ServiceP3 => "instance ",
        _ => "#",
    };
    let reuse = InstanceReuse::new(
        args.max_instance_reuse as usize,
        args.max_instance_concurrency as usize,
    );
    let handler = runner
        .handler(&program, guests.app)?
        .limits(request_limits(guests.limits))
        .allow_outgoing_http(guest.allow_network)
        .max_concurrent_requests(args.max_concurrent_requests)
        .instance_reuse(reuse)
        .wasi(move |number| {
            let prefix = format!("[{label}{number}] ");
            let stdout = Prefixed::new(Target::Stdout, prefix.clone(), Overflow::Drop);
            let stderr = Prefixed::new(Target::Stderr, prefix, Overflow::Drop);
            wasi_ctx(&guest, &argv, stdout, stderr).map_err(wasmtime::Error::from_anyhow)
        })
        .build();
    say!(
        "latchkey: serving {} on http://{}/",
        args.component.display(),
        listener.local_addr()?
    );
    let mut options = ServeOptions::default();
    options.grace = args.shutdown_grace;
    options.max_connections = args.max_connections as usize;
    options.header_timeout = args.header_timeout;
    let shutdown = async {
        shutdown.await;
    };
    serve(listener, handler, shutdown, options).await;
    if let Some(dapr) = dapr {
        dapr.stop().await?;
    }
    say!("latchkey: stopped; every lock released");
    Ok(ExitCode::SUCCESS)
}

/// How long a request's handler may run when neither `--deadline` nor the config file says:
/// without a bound, a client that trickles its body holds a request slot for as long as it
/// likes, and a few of them hold every slot.
const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// The limits of each request: the app's, with [`DEFAULT_REQUEST_DEADLINE`] if it sets no
/// deadline.
fn request_limits(mut limits: GuestLimits) -> GuestLimits {
    limits.deadline = limits.deadline.or(Some(DEFAULT_REQUEST_DEADLINE));
    limits
}
