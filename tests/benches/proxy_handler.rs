//! `proxy-handler`: is a WASI 0.2 proxy served through wasmtime-wasi-http's `ProxyHandler`
//! with a reuse count of 1 — as `wasmtime serve` 48 serves one — as fast as `latchkey
//! serve`'s own instance per request (`runtime/serve/fresh.rs`)? If it were, both worlds
//! could be served through one path.
//!
//! Both servers run in this process on one engine (latchkey's, from [`Runner`]) and one
//! tokio runtime, serve the same component (`http_nolock`, B6 (a)'s handler) and are
//! loaded by the same `wrk` runs in turn. The `ProxyHandler` side gets the store set-up
//! `fresh.rs` applies that the public API reaches (handle caps, a yield at every epoch
//! tick); it skips the memory limiter, which only favours it.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use harness::{free_port, guest};
use http_body_util::BodyExt as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use latchkey_host::runtime::serve::{ServeOptions, serve};
use latchkey_host::{DEFAULT_MAX_HANDLES, GuestState, LockCtxBuilder, LockStore, Runner};
use tokio::net::TcpListener;
use wasmtime::component::{GuestTaskId, Linker};
use wasmtime::{Engine, Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};

use crate::serve::{Load, print_row, unique_jobs_script, wrk};

/// Serves `http_nolock` both ways at each of `concurrency` and prints each row beside the
/// other.
pub(crate) fn proxy_handler(concurrency: &[u32]) {
    let runtime = tokio::runtime::Handle::current();
    let runner = Runner::new().unwrap();
    let component = guest("http_nolock");
    let program = runner.load(&component).unwrap();
    let mut app = LockCtxBuilder::new("bench");
    app.store(LockStore::memory("lockstore"));

    // latchkey's own path, as `latchkey serve` takes it.
    let handler = runner.handler(&program, app.clone()).unwrap().build();
    let fresh_port = free_port();
    let fresh = runtime.spawn(async move {
        let listener = TcpListener::bind(("127.0.0.1", fresh_port)).await.unwrap();
        serve(
            listener,
            handler,
            std::future::pending(),
            ServeOptions::default(),
        )
        .await;
    });

    // wasmtime-wasi-http's, as `wasmtime serve` 48 takes it for a WASI 0.2 proxy.
    let proxied = Arc::new(ProxyHandler::new(Proxied::new(
        runner.engine(),
        &component,
        app,
    )));
    let proxied_port = free_port();
    let accept = runtime.spawn(accept_loop(proxied_port, proxied));

    println!("\n## proxy-handler: a WASI 0.2 proxy, ProxyHandler (reuse 1) against fresh.rs\n");
    println!(
        "| handler | conns | req/s | p50 | p99 | baseline | base req/s | base p50 | ratio req/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // B6 (a)'s requests: `POST /jobs/{id}`, each a job of its own.
    let (_dir, script) = unique_jobs_script();
    for &connections in concurrency {
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        // In turn, twice, so that neither is the only one to meet a cold start.
        for _ in 0..2 {
            let theirs: Load = wrk(&url(proxied_port), connections, Some(&script));
            let own: Load = wrk(&url(fresh_port), connections, Some(&script));
            print_row("ProxyHandler", connections, &theirs, "fresh.rs", &own);
        }
    }
    fresh.abort();
    accept.abort();
}

/// HTTP/1.1 on `port`, each request handed to `handler`, as `serve`'s accept loop does
/// (keep-alive, `TCP_NODELAY`).
async fn accept_loop(port: u16, handler: Arc<ProxyHandler<Proxied>>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let request = request
                        .map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
                    let response = handler.handle((), request).await;
                    Ok::<_, Infallible>(
                        response
                            .unwrap_or_else(|err| panic!("ProxyHandler failed a request: {err:?}")),
                    )
                }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The handler's application state: what a new instance is made from.
struct Proxied {
    engine: Engine,
    pre: ProxyPre<GuestState>,
    app: LockCtxBuilder,
}

impl Proxied {
    fn new(engine: &Engine, component: &std::path::Path, app: LockCtxBuilder) -> Self {
        let mut linker = Linker::<GuestState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
        latchkey_host::add_to_linker(&mut linker).unwrap();
        let component = wasmtime::component::Component::from_file(engine, component).unwrap();
        let pre = linker.instantiate_pre(&component).unwrap();
        let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).unwrap();
        Proxied {
            engine: engine.clone(),
            pre: ProxyPre::P2(pre),
            app,
        }
    }
}

impl HandlerState for Proxied {
    type StoreData = GuestState;
    type WorkerExpiration = Never;
    type WorkerState = OneRequest;

    async fn instantiate(&self) -> wasmtime::Result<Instance<GuestState, Never, OneRequest>> {
        let state = GuestState::new(WasiCtx::builder().build(), self.app.build());
        let mut store = Store::new(&self.engine, state);
        wasmtime_wasi::WasiView::ctx(store.data_mut())
            .table
            .set_max_capacity(DEFAULT_MAX_HANDLES);
        store.set_max_component_handles(DEFAULT_MAX_HANDLES * 2);
        store.epoch_deadline_callback(|_| {
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        store.set_epoch_deadline(1);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy,
            view: |state| state.http(),
            expiration: Never,
            state: OneRequest,
        })
    }
}

/// No request expires: B6 (a)'s handler answers at once.
struct Never;

impl WorkerExpiration for Never {
    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        _: WorkerStatus,
        _: Instant,
    ) -> Poll<()> {
        Poll::Pending
    }
}

/// A reuse count of 1: each instance takes one request, then ends, its locks released.
struct OneRequest;

impl WorkerState for OneRequest {
    type StoreData = GuestState;
    type RequestData = ();

    fn should_accept_request(&self, _: usize, total: usize) -> ShouldAccept {
        if total == 0 {
            ShouldAccept::Yes
        } else {
            ShouldAccept::Never
        }
    }

    fn on_request_start(
        &self,
        _: StoreContextMut<'_, GuestState>,
        (): (),
        _: GuestTaskId,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        Box::pin(tokio::time::sleep(std::time::Duration::from_secs(30)))
    }

    fn drop(&self, mut store: Store<GuestState>, _: wasmtime::Result<()>) {
        tokio::spawn(async move { store.data_mut().locks_mut().release_all().await });
    }
}
