//! The accept loop: [`serve`] takes HTTP/1.1 connections on a listener and hands each
//! request to a [`Handler`], until shutdown, and then lets the requests in flight finish.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime_wasi_http::io::TokioIo;

use super::Handler;

/// How long connections get, after the requests in flight were stopped at shutdown, to
/// send the answers saying so.
const FINAL_ANSWERS: Duration = Duration::from_secs(1);

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
