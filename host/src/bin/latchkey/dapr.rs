//! `latchkey dapr`: Dapr's lock API for one app, over HTTP and gRPC on daprd's ports, on the
//! stores, policy and limits `run` and `serve` give that app's guests, until SIGINT or
//! SIGTERM — and the same beside guests (`--dapr-http-addr`, `--dapr-grpc-addr`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use latchkey_host::dapr::{DaprApi, grpc, http};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::{DaprArgs, DaprBeside};
use crate::guests::Guests;
use crate::signals::stop_signal;

pub async fn command(args: DaprArgs) -> anyhow::Result<ExitCode> {
    if args.guest.app_id.is_none() {
        bail!("latchkey dapr needs --app-id: the app its clients' locks belong to");
    }
    let token = api_token(args.dapr_api_token_file.as_deref())?;
    let mut guests = Guests::new(&args.guest, Path::new("dapr"))?;
    guests.open_stores(&args.guest).await?;
    let api = DaprApi::new(&guests.app, token);
    let app = api.app_id().to_owned();
    let endpoints = Endpoints::start(api, Some(args.http_addr), Some(args.grpc_addr)).await?;
    let stop = stop_signal()?;
    say!(
        "latchkey: Dapr's lock API for app {app:?} on {}",
        endpoints.shown
    );
    stop.await;
    endpoints.stop().await?;
    say!("latchkey: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Dapr's lock API beside guests, if `args` ask for it: for their app, on their stores.
pub async fn beside(args: &DaprBeside, guests: &Guests) -> anyhow::Result<Option<Endpoints>> {
    if args.dapr_http_addr.is_none() && args.dapr_grpc_addr.is_none() {
        return Ok(None);
    }
    let token = api_token(args.dapr_api_token_file.as_deref())?;
    let api = DaprApi::new(&guests.app, token);
    let endpoints = Endpoints::start(api, args.dapr_http_addr, args.dapr_grpc_addr).await?;
    say!("latchkey: Dapr's lock API on {}", endpoints.shown);
    Ok(Some(endpoints))
}

/// The Dapr endpoints being served, until [`Endpoints::stop`].
pub struct Endpoints {
    stopping: watch::Sender<bool>,
    http: Option<JoinHandle<()>>,
    grpc: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// Where they listen, as a line says it.
    shown: String,
}

impl Endpoints {
    /// Listens at each address given and serves `api` there.
    async fn start(
        api: DaprApi,
        http_addr: Option<SocketAddr>,
        grpc_addr: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let (stopping, stopped) = watch::channel(false);
        let when_stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|&stop| stop).await;
            }
        };
        let mut shown = Vec::new();
        let http = match http_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for Dapr's HTTP API"))?;
                shown.push(format!("http://{}", listener.local_addr()?));
                let bounds = http::Bounds::default();
                Some(tokio::spawn(http::serve(
                    listener,
                    api.clone(),
                    bounds,
                    when_stopped(),
                )))
            }
            None => None,
        };
        let grpc = match grpc_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for Dapr's gRPC API"))?;
                shown.push(format!("grpc://{}", listener.local_addr()?));
                Some(tokio::spawn(grpc::serve(listener, api, when_stopped())))
            }
            None => None,
        };
        Ok(Endpoints {
            stopping,
            http,
            grpc,
            shown: shown.join(" and "),
        })
    }

    /// Stops accepting, and waits for the calls in flight.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stopping.send(true);
        if let Some(http) = self.http {
            let _ = http.await;
        }
        if let Some(grpc) = self.grpc
            && let Ok(Err(err)) = grpc.await
        {
            bail!("Dapr's gRPC API failed: {err}");
        }
        Ok(())
    }
}

/// Dapr's API token: from `file`, or the host's `DAPR_API_TOKEN`.
fn api_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let token = match file {
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
