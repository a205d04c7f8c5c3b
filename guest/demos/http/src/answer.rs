//! What the demo handlers share: reading a query string, and sending a short text answer.
//! `guest/demos/nolock` includes this file too, so that it differs from the demo by the
//! lock alone.

use std::io::Write as _;

use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// Splits a request's `path?query`.
pub fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

/// The value of `name` in a query string, if it is there.
pub fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

pub fn has(query: &str, name: &str) -> bool {
    param(query, name).is_some()
}

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
