//! WASI 0.3 handlers: instances reused across requests, as `wasmtime serve` reuses them
//! (wasmtime-wasi-http's `ProxyHandler` runs the instances), with each request a guest task
//! that owns the locks it takes.
//!
//! A request's task begins when an instance accepts it ([`WorkerState::on_request_start`]
//! hands over its task id) and ends at the first of: its response body finished (the last
//! frame goes out only once its locks are released, so a client that has the whole
//! response can count on them being free), its deadline, its client going away, an error
//! instead of a response. Its instance lives on for other requests. A trap retires the
//! instance: the requests it was serving fail, and all its locks are released when it is
//! dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use wasmtime::component::GuestTaskId;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept,
    WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use super::{Common, InstanceReuse, plain, shutting_down};
use crate::TaskLocks;
use crate::sandbox::GuestState;

/// Serves requests with reused instances of one handler.
pub(super) struct Reused {
    handler: ProxyHandler<Instances>,
}

/// A [`Reused`] for `pre`.
pub(super) fn handler(
    common: Arc<Common>,
    pre: ServicePre<GuestState>,
    reuse: InstanceReuse,
) -> Reused {
    Reused {
        handler: ProxyHandler::new(Instances {
            common,
            pre: ProxyPre::P3(pre),
            reuse,
            next_instance: AtomicU64::new(1),
        }),
    }
}

impl Reused {
    /// Serves request `id`: the response, whose body holds `slot` and ends the request's
    /// task when it is finished or dropped.
    pub(super) async fn handle(
        &self,
        common: &Arc<Common>,
        id: u64,
        request: Request<Incoming>,
        slot: OwnedSemaphorePermit,
    ) -> Response<HyperOutgoingBody> {
        let deadline = common
            .limits
            .deadline
            .map(|after| tokio::time::Instant::now() + after);
        let task = Arc::new(RequestTask::new(id));
        // Ends the task if this future is dropped: the client went away.
        let mut end = TaskEnd {
            task: task.clone(),
            releases: common.requests.clone(),
        };
        let request =
            request.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
        let err = match self.handler.handle(task, request).await {
            Ok(response) => {
                return response
                    .map(|body| TaskBody::new(body, end, slot, deadline).boxed_unsync());
            }
            Err(err) => err,
        };
        let past_deadline = deadline.is_some_and(|at| tokio::time::Instant::now() >= at);
        let response = if err.is::<ExpirationError>() || past_deadline {
            tracing::warn!(request = id, "the handler ran past its deadline");
            plain(StatusCode::GATEWAY_TIMEOUT, "the handler ran out of time\n")
        } else if common.stop_all.is_cancelled() {
            shutting_down()
        } else if let Some(code) = err.downcast_ref::<ErrorCode>() {
            tracing::warn!(request = id, "the handler answered with an error: {code:?}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "the handler failed\n")
        } else {
            // A trap, or a failure of the host's: the instance cannot be trusted with
            // another request.
            tracing::warn!(request = id, "the handler failed: {}", err.root_cause());
            tracing::debug!(request = id, "failure: {err:?}");
            end.retire_instance();
            plain(StatusCode::INTERNAL_SERVER_ERROR, "the handler failed\n")
        };
        // Its locks are released before the answer goes out, as when it succeeds.
        if let Some(release) = end.now() {
            release.await;
        }
        response
    }
}

/// Makes the instances: what `ProxyHandler` asks for each new one.
struct Instances {
    common: Arc<Common>,
    pre: ProxyPre<GuestState>,
    reuse: InstanceReuse,
    next_instance: AtomicU64,
}

impl HandlerState for Instances {
    type StoreData = GuestState;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<GuestState, Expiry, Worker>> {
        let common = &self.common;
        let number = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let mut store = common
            .sandbox
            .new_store(common.guest_state(number)?, common.limits)?;
        let instantiate = self.pre.instantiate_async(&mut store);
        let proxy = match common.limits.deadline {
            Some(deadline) => tokio::time::timeout(deadline, instantiate)
                .await
                .map_err(|_| wasmtime::format_err!("instantiation ran past the deadline"))??,
            None => instantiate.await?,
        };
        tracing::debug!(instance = number, "instantiated");
        // Retired when it traps, or with every other at shutdown.
        let retire = common.stop_all.child_token();
        let overran = Arc::new(AtomicBool::new(false));
        Ok(Instance {
            store,
            proxy,
            view: <GuestState as WasiHttpView>::http,
            expiration: Expiry {
                reuse: self.reuse,
                deadline: common.limits.deadline,
                retire: Mutex::new(Box::pin(retire.clone().cancelled_owned())),
                timer: Mutex::new(Box::pin(tokio::time::sleep(Duration::ZERO))),
                armed_for: None,
                overran: overran.clone(),
            },
            state: Worker {
                common: common.clone(),
                number,
                reuse: self.reuse,
                retire,
                overran,
                _alive: common.requests.token(),
            },
        })
    }
}

/// One instance's side of serving: how many requests it takes, where their tasks begin,
/// and its end.
struct Worker {
    common: Arc<Common>,
    number: u64,
    reuse: InstanceReuse,
    /// Cancelled to retire the instance at once.
    retire: CancellationToken,
    /// Set when the instance is dropped for running past a request's deadline.
    overran: Arc<AtomicBool>,
    /// Keeps [`super::Handler::stop_all`] waiting until the instance is gone.
    _alive: TaskTrackerToken,
}

impl WorkerState for Worker {
    type StoreData = GuestState;
    type RequestData = Arc<RequestTask>;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse.max_requests {
            ShouldAccept::Never
        } else if concurrent >= self.reuse.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, GuestState>,
        request: Arc<RequestTask>,
        task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        let limits = self.common.limits;
        if let Some(fuel) = limits.fuel
            && let Ok(left) = store.get_fuel()
        {
            // Each request brings its own budget.
            let _ = store.set_fuel(left.saturating_add(fuel));
        }
        let locks = store.data_mut().locks_mut().begin_task(task);
        tracing::debug!(request = request.id, instance = self.number, "started");
        request.start(locks, self.retire.clone(), &self.common.requests);
        match limits.deadline {
            Some(deadline) => Box::pin(tokio::time::sleep(deadline)),
            None => Box::pin(std::future::pending()),
        }
    }

    fn drop(&self, mut store: Store<GuestState>, result: wasmtime::Result<()>) {
        let instance = self.number;
        match result {
            Ok(()) => tracing::debug!(instance, "retired"),
            Err(_) if self.common.stop_all.is_cancelled() => {
                tracing::info!(instance, "stopped: the server is shutting down");
            }
            Err(_) if self.retire.is_cancelled() => {
                tracing::warn!(instance, "dropped: one of its requests failed");
            }
            Err(_) if self.overran.load(Ordering::Relaxed) => {
                tracing::warn!(instance, "dropped: it ran past a request's deadline");
            }
            Err(err) => tracing::warn!(
                instance,
                "dropped: it failed, and the requests it was serving with it: {}",
                err.root_cause()
            ),
        }
        self.common.requests.spawn(async move {
            store.data_mut().locks_mut().release_all().await;
        });
    }
}

/// When an instance is dropped: idle past [`InstanceReuse::idle`], a request or the work
/// after its responses far past the deadline, retired after a trap, or at shutdown.
struct Expiry {
    reuse: InstanceReuse,
    deadline: Option<Duration>,
    retire: Mutex<Pin<Box<WaitForCancellationFutureOwned>>>,
    timer: Mutex<Pin<Box<tokio::time::Sleep>>>,
    armed_for: Option<Instant>,
    overran: Arc<AtomicBool>,
}

impl WorkerExpiration for Expiry {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        since: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        let retire = this.retire.get_mut().unwrap_or_else(|e| e.into_inner());
        if retire.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let allowed = match status {
            WorkerStatus::Idle => Some(this.reuse.idle),
            // `since` is when the latest of its requests started: past the deadline, all
            // are. A request's own expiry normally comes first, but it cannot while a guest
            // spins; this one can. Its task cannot be cancelled alone (wasmtime 48), so the
            // instance is dropped.
            WorkerStatus::Requests | WorkerStatus::PostReturn => this.deadline,
        };
        let Some(allowed) = allowed else {
            return Poll::Pending;
        };
        let until = since + allowed;
        let timer = this.timer.get_mut().unwrap_or_else(|e| e.into_inner());
        if this.armed_for != Some(until) {
            timer.as_mut().reset(until.into());
            this.armed_for = Some(until);
        }
        ready!(timer.as_mut().poll(cx));
        if status != WorkerStatus::Idle {
            this.overran.store(true, Ordering::Relaxed);
        }
        Poll::Ready(())
    }
}

/// A request as its task: shared by the request's side, which learns when it ends, and the
/// instance's, which learns when it begins.
struct RequestTask {
    id: u64,
    state: Mutex<TaskState>,
}

enum TaskState {
    /// Not accepted by an instance yet.
    Queued,
    /// Running in an instance, with its locks, and the instance's retirement.
    Running(TaskLocks, CancellationToken),
    /// Over: it takes no lock, from the moment it starts if it has not yet.
    Over,
}

impl RequestTask {
    fn new(id: u64) -> Self {
        RequestTask {
            id,
            state: Mutex::new(TaskState::Queued),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TaskState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task begins in an instance. One that is over already (its client left while it
    /// was queued) is ended at once: it runs, but takes no lock.
    fn start(&self, locks: TaskLocks, retire: CancellationToken, releases: &TaskTracker) {
        let mut state = self.state();
        match *state {
            TaskState::Over => {
                releases.spawn(locks.end());
            }
            _ => *state = TaskState::Running(locks, retire),
        }
    }
}

/// Ends a request's task, once: when asked, or when dropped.
struct TaskEnd {
    task: Arc<RequestTask>,
    releases: TaskTracker,
}

impl TaskEnd {
    /// Ends the task now: the release of its locks, to await.
    fn now(&mut self) -> Option<impl Future<Output = ()> + Send + use<>> {
        let ended = std::mem::replace(&mut *self.task.state(), TaskState::Over);
        match ended {
            TaskState::Running(locks, _) => Some(locks.end()),
            TaskState::Queued | TaskState::Over => None,
        }
    }

    /// Retires the task's instance, which the task broke (a trap).
    fn retire_instance(&self) {
        if let TaskState::Running(_, retire) = &*self.task.state() {
            retire.cancel();
        }
    }
}

impl Drop for TaskEnd {
    fn drop(&mut self) {
        if let Some(release) = self.now() {
            self.releases.spawn(release);
        }
    }
}

/// A response body that ends its request's task when it is finished — its locks released
/// before the last frame goes out — or dropped unfinished, and that is cut off at the
/// request's deadline.
struct TaskBody {
    body: WasiBody,
    stage: Stage,
    deadline: Option<tokio::time::Instant>,
    /// The timer of the deadline, set once the body is first pending: a body ready at once
    /// — the usual one — costs no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The request's place among those served at once.
    _slot: OwnedSemaphorePermit,
}

enum Stage {
    Streaming(TaskEnd),
    /// Releasing the task's locks, if it holds any; then the end, or this error.
    Releasing(
        Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
        Option<wasmtime_wasi_http::Error>,
    ),
    Done,
}

impl TaskBody {
    fn new(
        body: WasiBody,
        end: TaskEnd,
        slot: OwnedSemaphorePermit,
        deadline: Option<tokio::time::Instant>,
    ) -> Self {
        TaskBody {
            body,
            stage: Stage::Streaming(end),
            deadline,
            timer: None,
            _slot: slot,
        }
    }

    /// Ends the task: its locks are released before `error`, or the end, is given out.
    fn finish(&mut self, error: Option<wasmtime_wasi_http::Error>) {
        let Stage::Streaming(end) = &mut self.stage else {
            return;
        };
        let release = end.now().map(|release| Box::pin(release) as Pin<Box<_>>);
        self.stage = Stage::Releasing(release, error);
    }

    /// Whether the deadline has passed: read off the clock while the body keeps being
    /// ready, and by a timer, which wakes the body, once it waits.
    fn past_deadline(&mut self, cx: &mut Context<'_>, waiting: bool) -> bool {
        let Some(at) = self.deadline else {
            return false;
        };
        if !waiting {
            return tokio::time::Instant::now() >= at;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Body for TaskBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            match &mut this.stage {
                Stage::Streaming(_) => {
                    let polled = Pin::new(&mut this.body).poll_frame(cx);
                    if this.past_deadline(cx, polled.is_pending()) {
                        tracing::warn!("a response body ran past its request's deadline");
                        this.finish(Some(wasmtime_wasi_http::Error::HttpResponseTimeout));
                        continue;
                    }
                    match ready!(polled) {
                        Some(Ok(frame)) => return Poll::Ready(Some(Ok(frame))),
                        Some(Err(err)) => this.finish(Some(err)),
                        None => this.finish(None),
                    }
                }
                Stage::Releasing(release, error) => {
                    if let Some(release) = release {
                        ready!(release.as_mut().poll(cx));
                    }
                    let error = error.take();
                    this.stage = Stage::Done;
                    return Poll::Ready(error.map(Err));
                }
                Stage::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.stage {
            Stage::Streaming(_) => self.body.size_hint(),
            _ => SizeHint::with_exact(0),
        }
    }
}
