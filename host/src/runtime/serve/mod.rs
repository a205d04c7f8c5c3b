//! Serving `wasi:http` request handlers with locks: what `latchkey serve` does, as a library.
//!
//! A [`Runner`] prepares a handler component once; a [`Handler`] made by
//! [`Runner::handler`] then serves requests with instances of it, with the app's locks, the
//! operator's limits and nothing else:
//!
//! - A WASI 0.2 handler (`wasi:http/incoming-handler`) gets a fresh instance per request
//!   (`fresh`), whose locks are released when it ends: when its response is finished, when
//!   it traps, at its deadline, when its client goes away, or when the server shuts down.
//! - A WASI 0.3 handler (`wasi:http/handler`) is reused (`reused`): one instance serves up to
//!   [`InstanceReuse::max_requests`] requests, up to [`InstanceReuse::max_concurrent`] at
//!   once. Each request is a guest task, and owns the locks it takes: they are released when
//!   its response body is finished, at its deadline or when its client goes away — while the
//!   instance lives on. A trap ends the instance, every lock of every request in it
//!   released, and the next request gets a fresh one.
//!
//! [`serve`] (the `listen` module) runs the accept loop on a listener with hyper.
//!
//! A platform with its own hyper server needs none of this: link [`crate::add_to_linker`]
//! beside `wasmtime_wasi_http::p2::add_to_linker_async`, implement [`crate::LockView`] for
//! its store data, and call [`crate::LockCtx::release_all`] when a request's instance ends
//! (the book's "Embedding in an HTTP server", docs/src/embedding.md, shows it); with instance reuse, also
//! [`crate::LockCtx::begin_task`] as each request starts and [`crate::TaskLocks::end`]
//! when it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::ctx::LockCtxBuilder;
use crate::runtime::runner::{Entry, Program, Runner};
use crate::runtime::sandbox::{GuestLimits, GuestState, Sandbox};

mod fresh;
mod listen;
mod reused;

pub use listen::{ServeOptions, serve};

impl Runner {
    /// A handler that serves requests with instances of the HTTP handler `program` for
    /// `app`: a fresh instance per request for WASI 0.2, reused instances for WASI 0.3.
    /// Size the runner's pool ([`crate::EngineOptions::pooled_instances`]) to the most
    /// instances at once.
    pub fn handler(
        &self,
        program: &Program,
        app: LockCtxBuilder,
    ) -> wasmtime::Result<HandlerBuilder> {
        let pre = match program.entry() {
            Entry::Proxy(pre) => Pre::Fresh(pre.clone()),
            Entry::ServiceP3(pre) => Pre::Reused(pre.clone()),
            Entry::Command(_) | Entry::CommandP3(_) => {
                wasmtime::bail!("it is {}, not an HTTP handler", program.world())
            }
        };
        Ok(HandlerBuilder {
            common: Common {
                sandbox: self.sandbox.clone(),
                app,
                limits: GuestLimits::default(),
                new_wasi: Box::new(|_| Ok(WasiCtx::builder().build())),
                outgoing_http: false,
                next_request: AtomicU64::new(1),
                slots: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
                stop_all: CancellationToken::new(),
                requests: TaskTracker::new(),
            },
            pre,
            reuse: InstanceReuse::default(),
        })
    }
}

/// Sets up a [`Handler`]: limits, WASI, concurrency and instance reuse. Defaults: no
/// limits, a WASI with nothing in it, no outgoing HTTP, no cap on requests at once, and
/// [`InstanceReuse::default`].
pub struct HandlerBuilder {
    common: Common,
    pre: Pre,
    reuse: InstanceReuse,
}

/// The handler component, prepared.
enum Pre {
    Fresh(wasmtime_wasi_http::p2::bindings::ProxyPre<GuestState>),
    Reused(wasmtime_wasi_http::p3::bindings::ServicePre<GuestState>),
}

/// How far a WASI 0.3 handler's instance is reused (a WASI 0.2 handler gets a fresh
/// instance per request whatever this says: it cannot serve two requests at once, and its
/// locks are the instance's).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceReuse {
    /// The most requests one instance serves, in all; then it is retired once they end.
    pub max_requests: usize,
    /// The most requests one instance serves at once.
    pub max_concurrent: usize,
    /// How long an instance with no request waits for one before it is dropped.
    pub idle: Duration,
}

impl Default for InstanceReuse {
    /// `wasmtime serve`'s: 128 requests, 16 at once, 1 s idle.
    fn default() -> Self {
        InstanceReuse {
            max_requests: 128,
            max_concurrent: 16,
            idle: Duration::from_secs(1),
        }
    }
}

impl InstanceReuse {
    /// `max_requests` in all, `max_concurrent` at once, and the default idle time. Zeroes
    /// count as one: an instance serves at least one request.
    pub fn new(max_requests: usize, max_concurrent: usize) -> Self {
        InstanceReuse {
            max_requests: max_requests.max(1),
            max_concurrent: max_concurrent.max(1),
            ..InstanceReuse::default()
        }
    }
}

impl HandlerBuilder {
    /// The bounds on each request: its deadline, and its instance's memory, fuel and
    /// handles. Where instances are reused, the deadline is each request's, memory and
    /// handles are the instance's, and each request adds its fuel to the instance's. A
    /// request stopped by them gets a 5xx.
    pub fn limits(mut self, limits: GuestLimits) -> Self {
        self.common.limits = limits;
        self
    }

    /// Makes each instance's WASI (files, variables, stdout and stderr); it gets the
    /// instance's number, counting from 1 — the request's, where each request has an
    /// instance of its own. A failure is the request's `500`.
    pub fn wasi(
        mut self,
        new_wasi: impl Fn(u64) -> wasmtime::Result<WasiCtx> + Send + Sync + 'static,
    ) -> Self {
        self.common.new_wasi = Box::new(new_wasi);
        self
    }

    /// Lets handlers send HTTP requests of their own (network access).
    pub fn allow_outgoing_http(mut self, allowed: bool) -> Self {
        self.common.outgoing_http = allowed;
        self
    }

    /// Serves at most `requests` at once; more get `503 Service Unavailable` with
    /// `Retry-After`, so a flood of requests cannot grow the host.
    pub fn max_concurrent_requests(mut self, requests: u32) -> Self {
        self.common.slots = Arc::new(Semaphore::new(requests as usize));
        self
    }

    /// How far a WASI 0.3 handler's instances are reused.
    pub fn instance_reuse(mut self, reuse: InstanceReuse) -> Self {
        self.reuse = reuse;
        self
    }

    /// The handler.
    pub fn build(self) -> Handler {
        let common = Arc::new(self.common);
        let serving = match self.pre {
            Pre::Fresh(pre) => Serving::Fresh(pre),
            Pre::Reused(pre) => Serving::Reused(reused::handler(common.clone(), pre, self.reuse)),
        };
        Handler(Arc::new(Shared { common, serving }))
    }
}

/// Serves requests. Cheap to clone: clones share everything, including the requests in
/// flight that [`Handler::stop_all`] stops.
#[derive(Clone)]
pub struct Handler(Arc<Shared>);

struct Shared {
    common: Arc<Common>,
    serving: Serving,
}

enum Serving {
    Fresh(wasmtime_wasi_http::p2::bindings::ProxyPre<GuestState>),
    Reused(reused::Reused),
}

/// What serving a request takes, whichever way instances are made.
struct Common {
    sandbox: Sandbox,
    app: LockCtxBuilder,
    limits: GuestLimits,
    new_wasi: Box<dyn Fn(u64) -> wasmtime::Result<WasiCtx> + Send + Sync>,
    outgoing_http: bool,
    next_request: AtomicU64,
    /// One permit per request that may be served at once, held until it is over: its
    /// instance ended (fresh), or its response finished and its locks released (reused).
    slots: Arc<Semaphore>,
    /// Cancelled to stop every request in flight.
    stop_all: CancellationToken,
    /// Every request's task and every release of locks, until done.
    requests: TaskTracker,
}

impl Common {
    /// The guest state of a new instance numbered `number`.
    fn guest_state(&self, number: u64) -> wasmtime::Result<GuestState> {
        Ok(GuestState::new((self.new_wasi)(number)?, self.app.build())
            .allow_outgoing_http(self.outgoing_http))
    }
}

/// How long a client refused for lack of slots is asked to wait, in seconds.
const RETRY_AFTER_SECONDS: u32 = 1;

impl Handler {
    /// Serves one request. The response body can stream after the response is returned
    /// here; the request is over once it has.
    ///
    /// If this future is dropped before the response is ready — the client went away —
    /// the request is stopped and its locks released at once.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<HyperOutgoingBody> {
        let common = &self.0.common;
        let Ok(slot) = common.slots.clone().try_acquire_owned() else {
            let mut response = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests at once\n",
            );
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, RETRY_AFTER_SECONDS.into());
            return response;
        };
        if common.stop_all.is_cancelled() {
            return shutting_down();
        }
        let id = common.next_request.fetch_add(1, Ordering::Relaxed);
        match &self.0.serving {
            Serving::Fresh(pre) => fresh::handle(common, pre, id, request, slot).await,
            Serving::Reused(reused) => reused.handle(common, id, request, slot).await,
        }
    }

    /// Stops every request in flight (each instance ends and releases its locks), and
    /// waits until all have.
    pub async fn stop_all(&self) {
        self.0.common.stop_all.cancel();
        self.0.common.requests.close();
        self.0.common.requests.wait().await;
    }
}

/// The answer to a request the server stopped, or will not start, because it is shutting
/// down.
fn shutting_down() -> Response<HyperOutgoingBody> {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down\n",
    )
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
