//! The HTTP demo (`guest/demos/http`) as a WASI 0.3 handler: one instance serves many
//! requests, one after another and at once, and each request owns the locks it takes.
//!
//! - `POST /jobs/{id}[?ms=N][&lease=MS]` runs job `id` at most once at a time: it try-locks
//!   `id` (a 30 s lease unless `lease` says) and, when granted, works for N ms (default 100) — an async wait, so the
//!   instance serves other requests meanwhile — answers `200` with `ran ID fence F` and
//!   unlocks. While another request holds the job: `409 Conflict` with `Retry-After: 1`.
//! - `POST /counter[?nolock]` adds one to the number in `/data/counter` under the lock
//!   `counter`, and answers with the new value; `?nolock` is the control that loses
//!   updates.
//!
//! Every answer says which instance served it and how many requests that instance has
//! served (`x-instance`, `x-instance-requests`), to show reuse. To see what the host does
//! with a handler that misbehaves while it holds a lock, a job takes `&then=leak` (it
//! forgets the lock's handle, never unlocking it), `&then=stash` (it keeps the handle for a
//! later request: `POST /stashed` then tries it and says what it found), `&then=panic` (the
//! handler traps), `&then=spin` (it loops until its deadline) or `&then=sleep` (it waits ten
//! minutes: time to hang up on it). `POST /later` answers with a body it leaves open, and
//! `&then=finish-later` has a job finish that body while it holds its lock: a request whose
//! task is over long before its response is.

use std::cell::RefCell;
use std::time::Duration;

use futures::FutureExt as _;
use latchkey::Error;
use latchkey::p3::{Lock, Store};
use wasip3::http::types::{ErrorCode, Method, Request, Response};
use wasip3::wit_bindgen::StreamWriter;

use answer::{Answer, count_request, sleep};
use target::{has, param, split_target};

mod answer;
#[path = "../../http/src/target.rs"]
mod target;

/// A job's lease: longer than any job here runs.
const JOB_LEASE: Duration = Duration::from_secs(30);

thread_local! {
    /// A lock a request kept past its end (`&then=stash`).
    static STASHED: RefCell<Option<Lock>> = const { RefCell::new(None) };
    /// The body of a `POST /later` response, left for a job to finish.
    static LATER: RefCell<Option<StreamWriter<u8>>> = const { RefCell::new(None) };
}

struct Demo;

wasip3::http::service::export!(Demo);

impl wasip3::exports::http::handler::Guest for Demo {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        count_request();
        let target = request.get_path_with_query().unwrap_or_default();
        let (path, query) = split_target(&target);
        let answer = match (request.get_method(), path.strip_prefix("/jobs/"), path) {
            (Method::Post, Some(id), _) if !id.is_empty() => job(id, query).await,
            (Method::Post, None, "/counter") => counter(!has(query, "nolock")).await,
            (Method::Post, None, "/stashed") => stashed().await,
            (Method::Post, None, "/later") => return later(),
            (Method::Post, _, _) => {
                Answer::text(404, "no such route: POST /jobs/{id} or /counter\n")
            }
            _ => Answer::text(405, "use POST\n"),
        };
        answer.into_response()
    }
}

/// `POST /jobs/{id}`: run the job if nobody is running it.
async fn job(id: &str, query: &str) -> Answer {
    let work = param(query, "ms")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(100);
    let lease = param(query, "lease")
        .and_then(|ms| ms.parse().ok())
        .map_or(JOB_LEASE, Duration::from_millis);
    let store = match Store::open("lockstore") {
        Ok(store) => store,
        Err(err) => return failed(&err),
    };
    let lock = match store.try_lock(id, lease).await {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Answer::text(409, &format!("job {id} is running elsewhere\n"))
                .header("retry-after", "1");
        }
        Err(err) => return failed(&err),
    };
    let fence = lock.fence();
    match param(query, "then") {
        Some("panic") => panic!("job {id} failed while holding its lock"),
        Some("spin") => loop {
            std::hint::black_box(());
        },
        Some("sleep") => sleep(Duration::from_secs(600)).await,
        Some("stash") => {
            STASHED.set(Some(lock));
            return Answer::text(200, &format!("stashed {id} fence {fence}\n"));
        }
        Some("finish-later") => {
            // Another request's response ends here, while this one holds its lock.
            if let Some(mut body) = LATER.take() {
                let _ = body
                    .write_all(format!("finished by {id}\n").into_bytes())
                    .await;
            }
            sleep(Duration::from_millis(work)).await;
        }
        Some("leak") => {
            // The handle is never dropped: only the end of this request frees the lock.
            std::mem::forget(lock);
            return Answer::text(200, &format!("leaked {id} fence {fence}\n"));
        }
        // `ms=0` works not at all: the benchmark's request, the no-lock handler's plus the lock.
        _ if work == 0 => {}
        _ => sleep(Duration::from_millis(work)).await,
    }
    match lock.unlock().await {
        Ok(status) => Answer::text(200, &format!("ran {id} fence {fence} unlock {status}\n")),
        Err(err) => failed(&err),
    }
}

/// `POST /later`: a response whose body this request leaves open for a later job to finish
/// (`&then=finish-later`): its task is over long before its response is.
fn later() -> Result<Response, ErrorCode> {
    let (response, writer, _) = Answer::text(200, "").into_parts()?;
    LATER.set(Some(writer));
    Ok(response)
}

/// `POST /counter`: one locked read-modify-write of `/data/counter`.
async fn counter(locked: bool) -> Answer {
    let lock = if locked {
        let store = match Store::open("lockstore") {
            Ok(store) => store,
            Err(err) => return failed(&err),
        };
        match store
            .lock("counter", Duration::from_secs(10), Duration::from_secs(30))
            .await
        {
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
    sleep(Duration::from_millis(1)).await;
    if let Err(err) = std::fs::write("/data/counter", format!("{value}\n")) {
        return Answer::text(500, &format!("cannot write /data/counter: {err}\n"));
    }
    if let Some(lock) = lock
        && let Err(err) = lock.unlock().await
    {
        return failed(&err);
    }
    Answer::text(200, &format!("{value}\n"))
}

/// `POST /stashed`: what the lock a past request kept can still do — nothing, if its
/// request's end released it: `lost true held false extend false unlock lock-does-not-exist`.
async fn stashed() -> Answer {
    let Some(lock) = STASHED.take() else {
        return Answer::text(404, "nothing stashed\n");
    };
    let lost = lock.lost().now_or_never().is_some();
    let report = async {
        let held = lock.held().await?;
        let extended = lock.extend(Duration::from_secs(30)).await?;
        let status = lock.unlock().await?;
        Ok::<_, Error>(format!(
            "lost {lost} held {held} extend {extended} unlock {status}\n"
        ))
    };
    match report.await {
        Ok(text) => Answer::text(200, &text),
        Err(err) => failed(&err),
    }
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
