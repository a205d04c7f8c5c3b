//! Serving `wasi:http` request handlers with locks: what `latchkey serve` does, as a library.
//!
//! A [`Runner`] prepares a `wasi:http/proxy` component once; a [`Handler`] made by
//! [`Runner::handler`] then gives every request a fresh instance of it, with the app's
//! locks, the operator's limits and nothing else, and releases the instance's locks when it
//! ends: when its response is finished, when it traps, at its deadline, when its client
//! goes away, or when the server shuts down. [`serve`] runs the accept loop on a listener
//! with hyper.
//!
//! A platform with its own hyper server needs none of this: link [`crate::add_to_linker`]
//! beside `wasmtime_wasi_http::p2::add_to_linker_async`, implement [`crate::LockView`] for
//! its store data, and call [`crate::LockCtx::release_all`] when a request's instance ends
//! (the README's "Embedding in an HTTP server" shows it).

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime::Store;
use wasmtime::component::Resource;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use crate::ctx::LockCtxBuilder;
use crate::runner::{Entry, Program, Runner};
use crate::sandbox::{Ended, GuestLimits, GuestState, Sandbox, run_to_end};

impl Runner {
    /// A handler that serves every request with a fresh instance of the HTTP handler
    /// `program` for `app`. Size the runner's pool ([`crate::EngineOptions::pooled_instances`])
    /// to the most requests served at once.
    pub fn handler(
        &self,
        program: &Program,
        app: LockCtxBuilder,
    ) -> wasmtime::Result<HandlerBuilder> {
        let Entry::Proxy(pre) = program.entry() else {
            wasmtime::bail!("it is {}, not an HTTP handler", program.world());
        };
        Ok(HandlerBuilder {
            shared: Shared {
                sandbox: self.sandbox.clone(),
                pre: pre.clone(),
                app,
                limits: GuestLimits::default(),
                new_wasi: Box::new(|_| Ok(WasiCtx::builder().build())),
                outgoing_http: false,
                next_request: AtomicU64::new(1),
                slots: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
                stop_all: CancellationToken::new(),
                requests: TaskTracker::new(),
            },
        })
    }
}

/// Sets up a [`Handler`]: limits, WASI and concurrency. Defaults: no limits, a WASI with
/// nothing in it, no outgoing HTTP, no cap on requests at once.
pub struct HandlerBuilder {
    shared: Shared,
}

impl HandlerBuilder {
    /// The bounds on each request's instance. A request stopped by them gets a 5xx.
    pub fn limits(mut self, limits: GuestLimits) -> Self {
        self.shared.limits = limits;
        self
    }

    /// Makes each request's WASI (files, variables, stdout and stderr); it gets the
    /// request's number, counting from 1. A failure is the request's `500`.
    pub fn wasi(
        mut self,
        new_wasi: impl Fn(u64) -> wasmtime::Result<WasiCtx> + Send + Sync + 'static,
    ) -> Self {
        self.shared.new_wasi = Box::new(new_wasi);
        self
    }

    /// Lets handlers send HTTP requests of their own (network access).
    pub fn allow_outgoing_http(mut self, allowed: bool) -> Self {
        self.shared.outgoing_http = allowed;
        self
    }

    /// Serves at most `requests` at once; more get `503 Service Unavailable` with
    /// `Retry-After`, so a flood of requests cannot grow the host.
    pub fn max_concurrent_requests(mut self, requests: u32) -> Self {
        self.shared.slots = Arc::new(Semaphore::new(requests as usize));
        self
    }

    /// The handler.
    pub fn build(self) -> Handler {
        Handler(Arc::new(self.shared))
    }
}

/// Serves requests, one fresh instance each. Cheap to clone: clones share everything,
/// including the requests in flight that [`Handler::stop_all`] stops.
#[derive(Clone)]
pub struct Handler(Arc<Shared>);

struct Shared {
    sandbox: Sandbox,
    pre: ProxyPre<GuestState>,
    app: LockCtxBuilder,
    limits: GuestLimits,
    new_wasi: Box<dyn Fn(u64) -> wasmtime::Result<WasiCtx> + Send + Sync>,
    outgoing_http: bool,
    next_request: AtomicU64,
    /// One permit per request that may be served at once, held until its instance ended.
    slots: Arc<Semaphore>,
    /// Cancelled to stop every request in flight.
    stop_all: CancellationToken,
    /// Every request's task, until its instance has ended and released its locks.
    requests: TaskTracker,
}

type ResponseSender = oneshot::Sender<Result<Response<HyperOutgoingBody>, ErrorCode>>;

/// A request's wasmtime store, with the request and its response's place in the store's
/// table.
struct Prepared {
    store: Store<GuestState>,
    request: Resource<HostIncomingRequest>,
    outparam: Resource<HostResponseOutparam>,
}

/// How long connections get, after the requests in flight were stopped at shutdown, to
/// send the answers saying so.
const FINAL_ANSWERS: Duration = Duration::from_secs(1);

/// How long a client refused for lack of slots is asked to wait, in seconds.
const RETRY_AFTER_SECONDS: u32 = 1;

impl Handler {
    /// Serves one request: a fresh instance of the component handles it in a task of its
    /// own, so that the response body can stream after the response is returned here.
    ///
    /// If this future is dropped before the response is ready — the client went away —
    /// the instance is stopped and its locks released at once.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<HyperOutgoingBody> {
        let shared = &self.0;
        let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
            let mut response = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests at once\n",
            );
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, RETRY_AFTER_SECONDS.into());
            return response;
        };
        let id = shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (respond, response) = oneshot::channel();
        let prepared = match self.prepare_request(id, request, respond) {
            Ok(prepared) => prepared,
            Err(err) => {
                tracing::warn!(request = id, "could not start the handler: {err:#}");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
            }
        };
        let stop = shared.stop_all.child_token();
        // Stops the instance if this future is dropped before it has a response to give.
        let client_gone = stop.clone().drop_guard();
        let (report, ended) = oneshot::channel();
        let this = self.clone();
        shared.requests.spawn(async move {
            let outcome = this.run(id, prepared, stop).await;
            drop(slot);
            let _ = report.send(outcome);
        });

        let response = match response.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => {
                tracing::warn!(request = id, "the handler answered with an error: {code:?}");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "the handler failed\n")
            }
            // The instance ended without a response: say why.
            Err(_) => match ended.await {
                Ok(Ended::Deadline(_)) => {
                    plain(StatusCode::GATEWAY_TIMEOUT, "the handler ran out of time\n")
                }
                Ok(Ended::Stopped) => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is shutting down\n",
                ),
                _ => plain(StatusCode::INTERNAL_SERVER_ERROR, "the handler failed\n"),
            },
        };
        client_gone.disarm();
        response
    }

    /// A wasmtime store for request `id`, with the request and the place for its response
    /// in its table.
    fn prepare_request(
        &self,
        id: u64,
        request: Request<Incoming>,
        respond: ResponseSender,
    ) -> wasmtime::Result<Prepared> {
        let shared = &self.0;
        let state = GuestState::new((shared.new_wasi)(id)?, shared.app.build())
            .allow_outgoing_http(shared.outgoing_http);
        let mut store = shared.sandbox.new_store(state, shared.limits)?;
        let mut http = store.data_mut().http();
        let request = http.new_incoming_request(Scheme::Http, request)?;
        let outparam = http.new_response_outparam(respond)?;
        Ok(Prepared {
            store,
            request,
            outparam,
        })
    }

    /// Runs request `id`'s instance to its end, and says how it ended; its locks are
    /// released by then.
    async fn run(&self, id: u64, prepared: Prepared, stop: CancellationToken) -> Ended<()> {
        let shared = &self.0;
        let Prepared {
            mut store,
            request,
            outparam,
        } = prepared;
        let ended = run_to_end(&mut store, shared.limits, stop.cancelled(), async |store| {
            let proxy = shared.pre.instantiate_async(&mut *store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut *store, request, outparam)
                .await
        })
        .await;
        match &ended {
            Ended::Returned(()) => {}
            Ended::Deadline(after) => {
                tracing::warn!(
                    request = id,
                    "the handler was stopped at its deadline of {after:?}"
                );
            }
            Ended::Trap(err) => {
                tracing::warn!(request = id, "the handler failed: {}", err.root_cause());
                tracing::debug!(request = id, "failure: {err:?}");
            }
            Ended::Stopped => {
                tracing::info!(
                    request = id,
                    "stopped: the client went away or the server is shutting down"
                );
            }
        }
        ended
    }

    /// Stops every request in flight (each instance ends and releases its locks), and
    /// waits until all have.
    pub async fn stop_all(&self) {
        self.0.stop_all.cancel();
        self.0.requests.close();
        self.0.requests.wait().await;
    }
}

/// A short plain-text response of the host's own.
fn plain(status: StatusCode, text: &'static str) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// How [`serve`] treats connections and its own end.
#[non_exhaustive]
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// At shutdown, how long requests in flight may finish before they are stopped.
    pub grace: Duration,
    /// The most connections served at once. Past them the server accepts no more until
    /// one closes: a new client waits in the listen backlog, holding none of the host's
    /// file descriptors or buffers.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and how long a connection
    /// may sit idle waiting for its next request; then it is closed.
    pub header_timeout: Duration,
}

impl Default for ServeOptions {
    /// A 10 s grace, 1024 connections, and 10 s for headers or idleness.
    fn default() -> Self {
        ServeOptions {
            grace: Duration::from_secs(10),
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The most bytes of a request's head hyper takes: a longer head is refused (`431`). Ample for real headers; with [`ServeOptions::max_connections`] it bounds what
/// clients that never finish their headers can make the host hold.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` completes; then stops
/// accepting, lets the requests in flight finish for up to `options.grace`, stops those
/// still running, and returns once every instance has ended and released its locks.
pub async fn serve(
    listener: TcpListener,
    handler: Handler,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let closing = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    loop {
        // A slot first: without one, the next connection stays in the backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // A response goes out in more than one write: without this, Nagle's
                    // algorithm holds the last one until the client's delayed ACK (40 ms).
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!("TCP_NODELAY not set: {err}");
                    }
                    stream
                }
                Err(err) => {
                    // Out of file descriptors, say: wait for connections to end.
                    tracing::warn!("could not accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (handler, closing) = (handler.clone(), closing.clone());
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler.handle(request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_timeout)
                .max_header_size(MAX_HEAD_BYTES)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                tracing::debug!("connection ended: {err}");
            }
            drop(slot);
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    if tokio::time::timeout(options.grace, connections.wait())
        .await
        .is_err()
    {
        tracing::info!("grace period over: stopping the requests still in flight");
        handler.stop_all().await;
        // Their connections now answer them (503): a moment to send that.
        let _ = tokio::time::timeout(FINAL_ANSWERS, connections.wait()).await;
    }
    handler.stop_all().await;
}
