//! `latchkey dapr`: Dapr's lock API for one app, over HTTP and gRPC on daprd's ports, on the
//! stores, policy and limits `run` and `serve` give that app's guests, until SIGINT or
//! SIGTERM.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use latchkey_host::dapr::{DaprApi, grpc, http};
use tokio::net::TcpListener;

use crate::args::DaprArgs;
use crate::guests::Guests;
use crate::signals::stop_signal;

pub async fn command(args: DaprArgs) -> anyhow::Result<ExitCode> {
    if args.guest.app_id.is_none() {
        bail!("latchkey dapr needs --app-id: the app its clients' locks belong to");
    }
    let token = api_token(&args)?;
    let mut guests = Guests::new(&args.guest, Path::new("dapr"))?;
    guests.open_stores(&args.guest).await?;
    let api = DaprApi::new(&guests.app, token);
    let http_listener = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} for Dapr's HTTP API", args.http_addr))?;
    let grpc_listener = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {} for Dapr's gRPC API", args.grpc_addr))?;
    let (http_addr, grpc_addr) = (http_listener.local_addr()?, grpc_listener.local_addr()?);
    let stop = stop_signal()?;
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let when_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|&stop| stop).await;
        }
    };
    say!(
        "latchkey: Dapr's lock API for app {:?} on http://{http_addr} and grpc://{grpc_addr}",
        api.app_id()
    );
    let http = tokio::spawn(http::serve(
        http_listener,
        api.clone(),
        http::Bounds::default(),
        when_stopped(),
    ));
    let grpc = tokio::spawn(grpc::serve(grpc_listener, api, when_stopped()));
    stop.await;
    let _ = stopping.send(true);
    let _ = http.await;
    if let Ok(Err(err)) = grpc.await {
        bail!("Dapr's gRPC API failed: {err}");
    }
    say!("latchkey: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Dapr's API token: from `--dapr-api-token-file`, or the host's `DAPR_API_TOKEN`.
fn api_token(args: &DaprArgs) -> anyhow::Result<Option<String>> {
    let token = match &args.dapr_api_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--dapr-api-token-file {}", path.display()))?;
            Some(text.trim_end_matches(['\n', '\r']).to_owned())
        }
        None => std::env::var("DAPR_API_TOKEN").ok(),
    };
    match token {
        Some(token) if token.is_empty() => bail!("the Dapr API token is empty"),
        token => Ok(token),
    }
}
