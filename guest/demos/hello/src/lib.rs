//! `GET` anything: `200 hello`. A handler that takes no lock — what `latchkey serve` costs
//! without locks, beside `wasmtime serve` running the same component (B6 in BENCHMARKS.md).

use std::io::Write as _;

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("a fresh response has a body");
        ResponseOutparam::set(out, Ok(response));
        let mut stream = body.write().expect("a fresh body has a stream");
        stream
            .write_all(b"hello\n")
            .expect("the client takes the body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("the body ends");
    }
}

wasip2::http::proxy::export!(Hello);
