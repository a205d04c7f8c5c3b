//! Dapr's lock API over HTTP, as daprd serves it on its HTTP port:
//!
//! - `POST /v1.0-alpha1/lock/{store}` with `{"resourceId", "lockOwner", "expiryInSeconds"}`
//!   → `{"success": true|false}` (and the fence in `latchkey-fence`);
//! - `POST /v1.0-alpha1/unlock/{store}` with `{"resourceId", "lockOwner"}` → `{"status": 0..3}`;
//! - `GET /v1.0/healthz` and `/v1.0/healthz/outbound` → 204, which Dapr's SDKs wait for;
//!   `GET /v1.0/metadata` → the app id and the lock stores as components, which the
//!   JavaScript SDK waits for.
//!
//! Anything else is Dapr's error answer: `{"errorCode": "ERR_...", "message": "..."}`.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::{DaprApi, DaprError, FENCE_HEADER, TOKEN_HEADER};
use crate::backend::UnlockStatus;

/// The largest request body taken: a lock request is a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 << 10;

/// The largest request head taken.
const MAX_HEAD_BYTES: usize = 16 << 10;

/// How the HTTP endpoint bounds its clients.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's head, or sit idle between requests.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body.
    pub body_timeout: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves Dapr's HTTP lock API on `listener` until `shutdown` completes; then stops
/// accepting and lets the connections in flight finish their requests.
pub async fn serve(
    listener: TcpListener,
    api: DaprApi,
    bounds: Bounds,
    shutdown: impl Future<Output = ()>,
) {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!("could not accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let api = api.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(answer(&api, request, bounds).await) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(bounds.header_timeout)
                .max_buf_size(MAX_HEAD_BYTES.max(8192))
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                tracing::debug!("dapr connection ended: {err}");
            }
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
}

/// The JSON of a TryLock.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TryLockBody {
    resource_id: String,
    lock_owner: String,
    expiry_in_seconds: i64,
}

/// The JSON of an Unlock.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnlockBody {
    resource_id: String,
    lock_owner: String,
}

/// The answer to one request.
async fn answer(
    api: &DaprApi,
    request: Request<Incoming>,
    bounds: Bounds,
) -> Response<Full<Bytes>> {
    let health = matches!(
        request.uri().path(),
        "/v1.0/healthz" | "/v1.0/healthz/outbound"
    );
    // daprd's health routes need no token; everything else does, before anything is read.
    if !health {
        let token = request.headers().get(TOKEN_HEADER).map(|v| v.as_bytes());
        if let Err(err) = api.check_token(token) {
            return error(&err);
        }
    }
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["v1.0", "healthz"] | ["v1.0", "healthz", "outbound"]) => {
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::GET, ["v1.0", "metadata"]) => json(StatusCode::OK, &metadata(api)),
        (&Method::POST, ["v1.0-alpha1", "lock", store]) => {
            // Store names are letters, digits and `._-`: an escaped one names no store.
            let store = store.to_string();
            match read::<TryLockBody>(request, bounds).await {
                Ok(body) => {
                    let locked = api
                        .try_lock(
                            &store,
                            &body.resource_id,
                            &body.lock_owner,
                            body.expiry_in_seconds,
                        )
                        .await;
                    match locked {
                        Ok(locked) => {
                            let mut response = json(
                                StatusCode::OK,
                                &serde_json::json!({ "success": locked.success }),
                            );
                            if let Some(fence) = locked.fence {
                                response
                                    .headers_mut()
                                    .insert(FENCE_HEADER, fence.to_string().parse().unwrap());
                            }
                            response
                        }
                        Err(err) => error(&err),
                    }
                }
                Err(err) => error(&err),
            }
        }
        (&Method::POST, ["v1.0-alpha1", "unlock", store]) => {
            let store = store.to_string();
            match read::<UnlockBody>(request, bounds).await {
                Ok(body) => match api
                    .unlock(&store, &body.resource_id, &body.lock_owner)
                    .await
                {
                    Ok(status) => json(
                        StatusCode::OK,
                        &serde_json::json!({ "status": status_code(status) }),
                    ),
                    Err(err) => error(&err),
                },
                Err(err) => error(&err),
            }
        }
        _ => dapr_error(
            StatusCode::NOT_FOUND,
            "ERR_NOT_FOUND",
            &format!("{method} {} is not a route of this endpoint", short(&path)),
        ),
    }
}

/// The body of `request` as `T`: within [`MAX_BODY_BYTES`] and the body timeout.
async fn read<T: for<'de> Deserialize<'de>>(
    request: Request<Incoming>,
    bounds: Bounds,
) -> Result<T, DaprError> {
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(bounds.body_timeout, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) => {
            return Err(DaprError::Malformed(
                if err.is::<http_body_util::LengthLimitError>() {
                    format!("the body is over {MAX_BODY_BYTES} bytes")
                } else {
                    "the body could not be read".to_owned()
                },
            ));
        }
        Err(_) => return Err(DaprError::Malformed("the body was not sent in time".into())),
    };
    serde_json::from_slice(&bytes).map_err(|err| DaprError::Malformed(format!("the body: {err}")))
}

/// What `GET /v1.0/metadata` says: the app, and each lock store as a component.
fn metadata(api: &DaprApi) -> serde_json::Value {
    let components: Vec<serde_json::Value> = api
        .store_names()
        .map(|name| serde_json::json!({ "name": name, "type": "lock.latchkey", "version": "v1" }))
        .collect();
    serde_json::json!({
        "id": api.app_id(),
        "runtimeVersion": concat!("latchkey-", env!("CARGO_PKG_VERSION")),
        "components": components,
        "extended": {},
    })
}

/// Dapr's number for an unlock status.
pub(crate) fn status_code(status: UnlockStatus) -> i32 {
    match status {
        UnlockStatus::Success => 0,
        UnlockStatus::LockDoesNotExist => 1,
        UnlockStatus::LockBelongsToOthers => 2,
    }
}

/// `err` as Dapr answers it over HTTP.
fn error(err: &DaprError) -> Response<Full<Bytes>> {
    let (status, code) = match err {
        DaprError::Unauthenticated => (StatusCode::UNAUTHORIZED, "ERR_UNAUTHORIZED"),
        DaprError::NoSuchStore(_) => (StatusCode::BAD_REQUEST, "ERR_LOCK_STORE_NOT_FOUND"),
        DaprError::Malformed(_) => (StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST"),
        DaprError::Denied(_) => (StatusCode::FORBIDDEN, "ERR_PERMISSION_DENIED"),
        DaprError::TooManyLocks(_) => (StatusCode::TOO_MANY_REQUESTS, "ERR_TRY_LOCK"),
        DaprError::Unavailable(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_LOCK_STORE_UNAVAILABLE",
        ),
    };
    dapr_error(status, code, &err.to_string())
}

/// Dapr's JSON error shape.
fn dapr_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({ "errorCode": code, "message": message }),
    )
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    response
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// A path short enough to quote.
fn short(path: &str) -> String {
    crate::calls::abbreviated(path)
}
