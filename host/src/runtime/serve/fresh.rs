//! WASI 0.2 handlers: a fresh instance per request, whose locks are released when it ends.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio_util::sync::CancellationToken;
use wasmtime::Store;
use wasmtime::component::Resource;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use super::{Common, plain, shutting_down};
use crate::runtime::sandbox::{Ended, GuestState, run_to_end};

type ResponseSender = oneshot::Sender<Result<Response<HyperOutgoingBody>, ErrorCode>>;

/// A request's wasmtime store, with the request and its response's place in the store's
/// table.
struct Prepared {
    store: Store<GuestState>,
    request: Resource<HostIncomingRequest>,
    outparam: Resource<HostResponseOutparam>,
}

/// Serves request `id` with a fresh instance of `pre`, in a task of its own so that the
/// response body can stream after the response is returned; `slot` is held until the
/// instance has ended.
pub(super) async fn handle(
    common: &std::sync::Arc<Common>,
    pre: &ProxyPre<GuestState>,
    id: u64,
    request: Request<Incoming>,
    slot: OwnedSemaphorePermit,
) -> Response<HyperOutgoingBody> {
    let (respond, response) = oneshot::channel();
    let prepared = match prepare(common, id, request, respond) {
        Ok(prepared) => prepared,
        Err(err) => {
            tracing::warn!(request = id, "could not start the handler: {err:#}");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    let stop = common.stop_all.child_token();
    // Stops the instance if this future is dropped before it has a response to give.
    let client_gone = stop.clone().drop_guard();
    let (report, ended) = oneshot::channel();
    let (common_, pre) = (common.clone(), pre.clone());
    common.requests.spawn(async move {
        let outcome = run(&common_, &pre, id, prepared, stop).await;
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
            Ok(Ended::Stopped) => shutting_down(),
            _ => plain(StatusCode::INTERNAL_SERVER_ERROR, "the handler failed\n"),
        },
    };
    client_gone.disarm();
    response
}

/// A wasmtime store for request `id`, with the request and the place for its response in
/// its table.
fn prepare(
    common: &Common,
    id: u64,
    request: Request<Incoming>,
    respond: ResponseSender,
) -> wasmtime::Result<Prepared> {
    let mut store = common
        .sandbox
        .new_store(common.guest_state(id)?, common.limits)?;
    let mut http = store.data_mut().http();
    let request = http.new_incoming_request(Scheme::Http, request)?;
    let outparam = http.new_response_outparam(respond)?;
    Ok(Prepared {
        store,
        request,
        outparam,
    })
}

/// Runs request `id`'s instance to its end, and says how it ended; its locks are released
/// by then.
async fn run(
    common: &Common,
    pre: &ProxyPre<GuestState>,
    id: u64,
    prepared: Prepared,
    stop: CancellationToken,
) -> Ended<()> {
    let Prepared {
        mut store,
        request,
        outparam,
    } = prepared;
    let ended = run_to_end(&mut store, common.limits, stop.cancelled(), async |store| {
        let proxy = pre.instantiate_async(&mut *store).await?;
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
