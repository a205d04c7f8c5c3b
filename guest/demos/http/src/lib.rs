//! HTTP handlers that take locks, for `latchkey serve`: one component, two routes.
//!
//! - `POST /jobs/{id}[?ms=N]` runs job `id` at most once at a time: it try-locks `id` (30 s
//!   lease) and, when granted, works for N ms (default 100), answers `200` with
//!   `ran ID fence F` and unlocks. While another request holds the job: `409 Conflict` with
//!   `Retry-After: 1`.
//! - `POST /counter[?nolock]` adds one to the number in `/data/counter` (give the server a
//!   directory: `--dir HOST::/data`) under the lock `counter`, and answers with the new
//!   value. `?nolock` does the same without the lock: the control that loses updates.
//!
//! To see what the host does with a handler that misbehaves while it holds a lock, a job
//! takes `&then=panic` (the handler traps), `&then=spin` (it loops until its deadline) or
//! `&then=sleep` (it waits a minute: time to hang up on it).

use std::io::Write as _;
use std::time::Duration;

use latchkey::{Error, Store};
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// A job's lease: longer than any job here runs.
const JOB_LEASE: Duration = Duration::from_secs(30);

struct Demo;

impl Guest for Demo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let answer = match (request.method(), path.strip_prefix("/jobs/"), path) {
            (Method::Post, Some(id), _) if !id.is_empty() => job(id, query),
            (Method::Post, None, "/counter") => counter(!has(query, "nolock")),
            (Method::Post, _, _) => {
                Answer::text(404, "no such route: POST /jobs/{id} or /counter\n")
            }
            _ => Answer::text(405, "use POST\n"),
        };
        answer.send(out);
    }
}

wasip2::http::proxy::export!(Demo);

/// `POST /jobs/{id}`: run the job if nobody is running it.
fn job(id: &str, query: &str) -> Answer {
    let work = param(query, "ms")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(100);
    let store = match Store::open("lockstore") {
        Ok(store) => store,
        Err(err) => return Answer::failed(&err),
    };
    let lock = match store.try_lock(id, JOB_LEASE) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Answer::text(409, &format!("job {id} is running elsewhere\n"))
                .header("retry-after", "1");
        }
        Err(err) => return Answer::failed(&err),
    };
    match param(query, "then") {
        Some("panic") => panic!("job {id} failed while holding its lock"),
        Some("spin") => loop {
            std::hint::black_box(());
        },
        Some("sleep") => std::thread::sleep(Duration::from_secs(60)),
        _ => std::thread::sleep(Duration::from_millis(work)),
    }
    let fence = lock.fence();
    match lock.unlock() {
        Ok(_) => Answer::text(200, &format!("ran {id} fence {fence}\n")),
        Err(err) => Answer::failed(&err),
    }
}

/// `POST /counter`: one locked read-modify-write of `/data/counter`.
fn counter(locked: bool) -> Answer {
    let lock = if locked {
        let lock = Store::open("lockstore").and_then(|store| {
            store.lock("counter", Duration::from_secs(10), Duration::from_secs(30))
        });
        match lock {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => return Answer::text(503, "the counter stayed locked for 30 s\n"),
            Err(err) => return Answer::failed(&err),
        }
    } else {
        None
    };
    let value = std::fs::read_to_string("/data/counter")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    // As real work would, give a concurrent request the time to read the same value.
    std::thread::sleep(Duration::from_millis(1));
    if let Err(err) = std::fs::write("/data/counter", format!("{value}\n")) {
        return Answer::text(500, &format!("cannot write /data/counter: {err}\n"));
    }
    if let Some(lock) = lock
        && let Err(err) = lock.unlock()
    {
        return Answer::failed(&err);
    }
    Answer::text(200, &format!("{value}\n"))
}

/// The value of `name` in a query string, if it is there.
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

fn has(query: &str, name: &str) -> bool {
    param(query, name).is_some()
}

/// A response: status, headers and a short text body.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Answer {
    fn text(status: u16, body: &str) -> Self {
        Answer {
            status,
            headers: vec![("content-type", "text/plain; charset=utf-8".into())],
            body: body.to_owned(),
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// A lock call that failed: the store is down (`503`), or the host's policy refused
    /// it (`403` for access, `400` for a bad argument, `500` otherwise).
    fn failed(err: &Error) -> Self {
        let status = match err {
            Error::Unavailable(_) => 503,
            Error::AccessDenied(_) => 403,
            Error::InvalidArgument(_) => 400,
            _ => 500,
        };
        Answer::text(status, &format!("{err}\n"))
    }

    fn send(self, out: ResponseOutparam) {
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
