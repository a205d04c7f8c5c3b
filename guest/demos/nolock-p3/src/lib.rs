//! `POST /jobs/{id}` of `guest/demos/http-p3`, without the lock: it answers `200` with
//! `ran ID` at once. What `latchkey serve` costs for a WASI 0.3 handler that takes no lock,
//! beside `wasmtime serve` running the same component (P11 in BENCHMARKS.md); the demo's
//! own `POST /jobs/{id}?ms=0` differs from it by the lock alone.

use wasip3::http::types::{ErrorCode, Method, Request, Response};

use answer::{Answer, count_request};
use target::split_target;

#[path = "../../http/src/target.rs"]
#[allow(dead_code)] // The demo uses more of it.
mod target;

#[path = "../../http-p3/src/answer.rs"]
#[allow(dead_code)] // The demo uses more of it.
mod answer;

struct NoLock;

wasip3::http::service::export!(NoLock);

impl wasip3::exports::http::handler::Guest for NoLock {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        count_request();
        let target = request.get_path_with_query().unwrap_or_default();
        let (path, _query) = split_target(&target);
        let answer = match (request.get_method(), path.strip_prefix("/jobs/")) {
            (Method::Post, Some(id)) if !id.is_empty() => Answer::text(200, &format!("ran {id}\n")),
            _ => Answer::text(404, "POST /jobs/{id}\n"),
        };
        answer.into_response()
    }
}
