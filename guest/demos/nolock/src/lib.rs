//! `POST /jobs/{id}` of `guest/demos/http`, without the lock: it answers `200` with
//! `ran ID` at once. What `latchkey serve` costs for a handler that takes no lock, beside
//! `wasmtime serve` running the same component (B6 in BENCHMARKS.md); the demo's own
//! `POST /jobs/{id}?ms=0` differs from it by the lock alone.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

use answer::Answer;
use target::split_target;

#[path = "../../http/src/target.rs"]
#[allow(dead_code)] // The demo uses more of it.
mod target;

#[path = "../../http/src/answer.rs"]
#[allow(dead_code)] // The demo uses more of it.
mod answer;

struct NoLock;

impl Guest for NoLock {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, _query) = split_target(&target);
        let answer = match (request.method(), path.strip_prefix("/jobs/")) {
            (Method::Post, Some(id)) if !id.is_empty() => Answer::text(200, &format!("ran {id}\n")),
            _ => Answer::text(404, "POST /jobs/{id}\n"),
        };
        answer.send(out);
    }
}

wasip2::http::proxy::export!(NoLock);
