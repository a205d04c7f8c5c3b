//! HTTP handlers that take locks, for `latchkey serve`: one component, two routes.
//!
//! - `POST /jobs/{id}[?ms=N]` runs job `id` at most once at a time: it try-locks `id` (30 s
//!   lease) and, when granted, works for N ms (default 100), answers `200` with
//!   `ran ID fence F` and unlocks. While another request holds the job: `409 Conflict` with
//!   `Retry-After: 1`.
//! - `POST /counter[?nolock]` adds one to the number in `/data/counter` (give the server a
//!   directory: `--dir HOST::/data`) under the lock `counter`, and answers with the new
//!   value. `?nolock` does the same without the lock: the control that loses updates.
//! - `POST /upload` reads the whole request body and answers `read N bytes`: a handler that
//!   waits on its client.
//!
//! To see what the host does with a handler that misbehaves while it holds a lock, a job
//! takes `&then=panic` (the handler traps), `&then=spin` (it loops until its deadline),
//! `&then=sleep` (it waits a minute: time to hang up on it) or `&then=shout` (it writes
//! 4 MiB to stderr before its work).

use std::time::Duration;

use latchkey::Error;
use latchkey::p2::Store;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};
use wasip2::io::streams::StreamError;

use answer::Answer;
use target::{has, param, split_target};

mod answer;
mod target;

/// A job's lease: longer than any job here runs.
const JOB_LEASE: Duration = Duration::from_secs(30);

struct Demo;

impl Guest for Demo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = split_target(&target);
        let answer = match (request.method(), path.strip_prefix("/jobs/"), path) {
            (Method::Post, Some(id), _) if !id.is_empty() => job(id, query),
            (Method::Post, None, "/counter") => counter(!has(query, "nolock")),
            (Method::Post, None, "/upload") => upload(request),
            (Method::Post, _, _) => {
                Answer::text(404, "no such route: POST /jobs/{id}, /counter or /upload\n")
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
        Err(err) => return failed(&err),
    };
    let lock = match store.try_lock(id, JOB_LEASE) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Answer::text(409, &format!("job {id} is running elsewhere\n"))
                .header("retry-after", "1");
        }
        Err(err) => return failed(&err),
    };
    match param(query, "then") {
        Some("panic") => panic!("job {id} failed while holding its lock"),
        Some("spin") => loop {
            std::hint::black_box(());
        },
        Some("sleep") => std::thread::sleep(Duration::from_secs(60)),
        Some("shout") => {
            let line = format!("{}\n", "a".repeat(1023));
            for _ in 0..4096 {
                eprint!("{line}");
            }
        }
        _ if work > 0 => std::thread::sleep(Duration::from_millis(work)),
        _ => {}
    }
    let fence = lock.fence();
    match lock.unlock() {
        Ok(_) => Answer::text(200, &format!("ran {id} fence {fence}\n")),
        Err(err) => failed(&err),
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
            Err(err) => return failed(&err),
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
        return failed(&err);
    }
    Answer::text(200, &format!("{value}\n"))
}

/// `POST /upload`: reads the whole body, and says how long it was.
fn upload(request: IncomingRequest) -> Answer {
    let Ok(body) = request.consume() else {
        return Answer::text(400, "the body was taken\n");
    };
    let Ok(stream) = body.stream() else {
        return Answer::text(400, "the body was taken\n");
    };
    let mut total: u64 = 0;
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => total += chunk.len() as u64,
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => {
                return Answer::text(400, "the body broke off\n");
            }
        }
    }
    Answer::text(200, &format!("read {total} bytes\n"))
}

/// A lock call that failed: the store is down (`503`), or the host's policy refused it
/// (`403` for access, `400` for a bad argument, `500` otherwise).
fn failed(err: &Error) -> Answer {
    let status = match err {
        Error::Unavailable(_) => 503,
        Error::AccessDenied(_) => 403,
        Error::InvalidArgument(_) => 400,
        _ => 500,
    };
    Answer::text(status, &format!("{err}\n"))
}
