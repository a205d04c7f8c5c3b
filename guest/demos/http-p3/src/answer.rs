//! What the p3 handlers here share: the answer, which says which instance served it, and
//! sleeping. `http-p3-nolock` includes this file.

use std::cell::Cell;
use std::time::Duration;

use wasip3::clocks::monotonic_clock::wait_for;
use wasip3::http::types::{ErrorCode, Fields, Response};
use wasip3::wit_bindgen::StreamWriter;
use wasip3::{wit_future, wit_stream};

thread_local! {
    /// This instance's name, made on its first request.
    static INSTANCE: Cell<u64> = const { Cell::new(0) };
    /// Requests this instance has been given.
    static SERVED: Cell<u64> = const { Cell::new(0) };
}

/// Counts a request to this instance, naming the instance on its first.
pub fn count_request() {
    SERVED.set(SERVED.get() + 1);
    if INSTANCE.get() == 0 {
        INSTANCE.set(wasip3::random::random::get_random_u64() >> 12);
    }
}

/// Waits `how_long`: suspends this request alone.
pub async fn sleep(how_long: Duration) {
    wait_for(how_long.as_nanos().try_into().unwrap_or(u64::MAX)).await;
}

/// A response: status, headers and a short text body.
pub struct Answer {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: String,
}

impl Answer {
    pub fn text(status: u16, body: &str) -> Self {
        Answer {
            status,
            headers: vec![("content-type".into(), b"text/plain; charset=utf-8".to_vec())],
            body: body.to_owned(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.as_bytes().to_vec()));
        self
    }

    /// The response, its body written by a task of its own as the host reads it.
    pub fn into_response(self) -> Result<Response, ErrorCode> {
        let (response, mut writer, body) = self.into_parts()?;
        wasip3::spawn_local(async move {
            // A client that hung up gets nothing: there is nobody to tell.
            let _ = writer.write_all(body).await;
        });
        Ok(response)
    }

    /// The response, its body's writer, and what the body should say: for a handler that
    /// writes it later, or leaves it to another request.
    pub fn into_parts(self) -> Result<(Response, StreamWriter<u8>, Vec<u8>), ErrorCode> {
        let Answer {
            status,
            mut headers,
            body,
        } = self;
        headers.push((
            "x-instance".into(),
            format!("{:x}", INSTANCE.get()).into_bytes(),
        ));
        headers.push((
            "x-instance-requests".into(),
            SERVED.get().to_string().into_bytes(),
        ));
        let fields = Fields::from_list(&headers)
            .map_err(|err| ErrorCode::InternalError(Some(format!("{err:?}"))))?;
        let (writer, contents) = wit_stream::new();
        let (trailers_writer, trailers) = wit_future::new(|| Ok(None));
        drop(trailers_writer);
        let (response, _sent) = Response::new(fields, Some(contents), trailers);
        response
            .set_status_code(status)
            .map_err(|()| ErrorCode::InternalError(Some("a bad status".into())))?;
        Ok((response, writer, body.into_bytes()))
    }
}
