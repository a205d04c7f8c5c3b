//! What the WASI 0.2 demo handlers share: sending a short text answer. `guest/demos/nolock`
//! includes this file too, so that it differs from the demo by the lock alone.

use std::io::Write as _;

use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// A response: status, headers and a short text body.
pub struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Answer {
    pub fn text(status: u16, body: &str) -> Self {
        Answer {
            status,
            headers: vec![("content-type", "text/plain; charset=utf-8".into())],
            body: body.to_owned(),
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn send(self, out: ResponseOutparam) {
        let fields = Fields::new();
        for (name, value) in &self.headers {
            fields
                .append(name, value.as_bytes())
                .expect("a valid header");
        }
        let response = OutgoingResponse::new(fields);
        response
            .set_status_code(self.status)
            .expect("a valid status");
        let body = response.body().expect("a fresh response has a body");
        ResponseOutparam::set(out, Ok(response));
        let mut stream = body.write().expect("a fresh body has a stream");
        // A client that hung up gets nothing: there is nobody to tell.
        if stream.write_all(self.body.as_bytes()).is_ok() {
            let _ = stream.flush();
        }
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}
