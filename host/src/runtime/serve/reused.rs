//! WASI 0.3 handlers: instances reused across requests, as `wasmtime serve` reuses them,
//! with each request a guest task that owns the locks it takes.
//!
//! Requests are dispatched to instances here, not by wasmtime-wasi-http's `ProxyHandler`,
//! because an instance whose guest computes serves none of its other requests meanwhile —
//! its tasks share one thread of execution, and wasmtime 48 cannot interrupt one task —
//! and `ProxyHandler` cannot tell: it kept handing new requests to a computing instance,
//! where they waited for its computation to end. Here every instance keeps how long its
//! guest has been running without a break ([`Stint`]); past a few ticks it is **busy**:
//! it gets no new request, those it was given but had not begun go to another instance
//! (one is started if none can take them), and it is given requests again once its guest
//! yields. Requests it had begun wait for it: nothing can run them elsewhere.
//!
//! A request's task begins when its instance takes it, and ends at the first of: its
//! response body finished (the last frame goes out only once its locks are released, so a
//! client that has the whole response can count on them being free), its deadline, its
//! client going away, an error instead of a response. Its instance lives on for other
//! requests. A trap retires the instance: the requests it was serving fail, and all its
//! locks are released when it is dropped.
//!
//! # Layout
//!
//! - [`Reused`] and [`Pool`]: the instances of one handler, and the dispatch of a request
//!   to one of them ([`Pool::dispatch`]);
//! - [`Load`]: what one instance has been given, and whether it is busy;
//! - [`Pool::run_instance`]: one instance's life — instantiated, serving what it is given
//!   inside `run_concurrent`, dropped when idle, spent, past a deadline, trapped or at
//!   shutdown;
//! - [`RequestTask`], [`TaskEnd`], [`TaskBody`]: one request's task and its end.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime::component::Accessor;
use wasmtime::{AsContextMut as _, Store};
use wasmtime_wasi_http::handler::{ExpirationError, Prepared, Proxy};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use super::{Common, InstanceReuse, plain, shutting_down};
use crate::ctx::TaskLocks;
use crate::runtime::sandbox::{Computing, GuestState, Stint};

/// How many epoch ticks an instance runs guest code without a break before it is busy:
/// 2–3 ms, so that a request's ordinary work does not count, one that computes does.
const BUSY_AFTER_TICKS: u64 = 3;

/// Serves requests with reused instances of one handler.
pub(super) struct Reused {
    pool: Arc<Pool>,
}

/// The instances of one handler, and what dispatching to them needs.
struct Pool {
    common: Arc<Common>,
    pre: ServicePre<GuestState>,
    reuse: InstanceReuse,
    /// The instances that may be given requests: not retiring.
    instances: Mutex<Vec<Arc<Load>>>,
    next_instance: AtomicU64,
    /// Itself, for the instances it starts, which dispatch what a busy one gives back.
    this: Weak<Pool>,
}

/// A request waiting for an instance to take it.
struct Queued {
    task: Arc<RequestTask>,
    request: wasmtime_wasi_http::handler::Request,
    respond: oneshot::Sender<wasmtime::Result<wasmtime_wasi_http::handler::Response>>,
}

/// A [`Reused`] for `pre`.
pub(super) fn handler(
    common: Arc<Common>,
    pre: ServicePre<GuestState>,
    reuse: InstanceReuse,
) -> Reused {
    let pool = Arc::new_cyclic(|this| Pool {
        common,
        pre,
        reuse,
        instances: Mutex::default(),
        next_instance: AtomicU64::new(1),
        this: this.clone(),
    });
    Reused { pool }
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
        let deadline = common.limits.deadline.map(|after| Instant::now() + after);
        let task = Arc::new(RequestTask::new(id));
        // Ends the task if this future is dropped: the client went away.
        let mut end = TaskEnd {
            task: task.clone(),
            releases: common.requests.clone(),
        };
        let request =
            request.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
        let (respond, response) = oneshot::channel();
        self.pool.dispatch(Queued {
            task,
            request,
            respond,
        });
        let err = match response.await {
            Ok(Ok(response)) => {
                return response
                    .map(|body| TaskBody::new(body, end, slot, deadline).boxed_unsync());
            }
            Ok(Err(err)) => err,
            // The instance was dropped before it answered: it trapped, or failed to start.
            Err(_) => wasmtime::format_err!("the instance serving it ended"),
        };
        let past_deadline = deadline.is_some_and(|at| Instant::now() >= at);
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

impl Pool {
    fn instances(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Load>>> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `queued` to an instance that can take it now — not busy, not retiring, below
    /// its caps — or to a new one.
    fn dispatch(&self, queued: Queued) {
        let mut queued = Some(queued);
        let mut instances = self.instances();
        for load in instances.iter() {
            queued = load.offer(queued.take().expect("one request"), self.reuse);
            if queued.is_none() {
                return;
            }
        }
        let number = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let load = Arc::new(Load::new(number, self.this.clone()));
        let refused = load.offer(queued.take().expect("one request"), self.reuse);
        debug_assert!(refused.is_none(), "a new instance takes a request");
        instances.push(load.clone());
        drop(instances);
        let pool = self.this.upgrade().expect("the pool dispatches");
        self.common.requests.spawn(pool.run_instance(load));
    }

    /// Takes `load` off the instances that may be given requests.
    fn forget(&self, load: &Arc<Load>) {
        self.instances().retain(|other| !Arc::ptr_eq(other, load));
    }

    /// One instance's life: instantiated, serving what it is given, dropped at the end —
    /// see the [module](self) docs.
    async fn run_instance(self: Arc<Self>, load: Arc<Load>) {
        let common = self.common.clone();
        let number = load.number;
        let store = match self.instantiate(&load).await {
            Ok(store) => store,
            Err(err) => {
                tracing::warn!(instance = number, "could not start an instance: {err:#}");
                self.forget(&load);
                for queued in load.close() {
                    let _ = queued.respond.send(Err(wasmtime::format_err!("{err:#}")));
                }
                return;
            }
        };
        let (mut store, service) = store;
        let proxy = Proxy::P3(service);
        // Retired when it traps, or with every other at shutdown.
        let retire = common.stop_all.child_token();
        let status = Mutex::new((Status::Requests, Instant::now()));
        let result = {
            let serving = store.run_concurrent(async |accessor| {
                self.serve(accessor, &proxy, &load, &retire, &status).await
            });
            let mut serving = std::pin::pin!(serving);
            let overran = AtomicBool::new(false);
            let outcome = tokio::select! {
                biased;
                result = &mut serving => result.and_then(|r| r),
                () = retire.cancelled() => Err(wasmtime::format_err!("retired")),
                () = overrun(&status, common.limits.deadline) => {
                    overran.store(true, Ordering::Relaxed);
                    Err(wasmtime::format_err!("it ran past a request's deadline"))
                }
            };
            (outcome, overran.load(Ordering::Relaxed))
        };
        self.forget(&load);
        // What it was given but never began goes elsewhere.
        for queued in load.close() {
            self.dispatch(queued);
        }
        match result {
            (Ok(()), _) => tracing::debug!(instance = number, "retired"),
            (Err(_), _) if common.stop_all.is_cancelled() => {
                tracing::info!(instance = number, "stopped: the server is shutting down");
            }
            (Err(_), true) => {
                tracing::warn!(
                    instance = number,
                    "dropped: it ran past a request's deadline"
                );
            }
            (Err(_), _) if retire.is_cancelled() => {
                tracing::warn!(instance = number, "dropped: one of its requests failed");
            }
            (Err(err), _) => tracing::warn!(
                instance = number,
                "dropped: it failed, and the requests it was serving with it: {}",
                err.root_cause()
            ),
        }
        store.data_mut().locks_mut().release_all().await;
    }

    /// A new instance's wasmtime store, told of the ticks it computes, and the instance.
    async fn instantiate(
        &self,
        load: &Arc<Load>,
    ) -> wasmtime::Result<(Store<GuestState>, wasmtime_wasi_http::p3::bindings::Service)> {
        let common = &self.common;
        let state = common.guest_state(load.number)?.telling(load.clone());
        let mut store = common.sandbox.new_store(state, common.limits)?;
        let instantiate = self.pre.instantiate_async(&mut store);
        let service = match common.limits.deadline {
            Some(deadline) => tokio::time::timeout(deadline, instantiate)
                .await
                .map_err(|_| wasmtime::format_err!("instantiation ran past the deadline"))??,
            None => instantiate.await?,
        };
        tracing::debug!(instance = load.number, "instantiated");
        Ok((store, service))
    }

    /// The serving loop of one instance, inside its `run_concurrent`: starts each request
    /// it is given, and ends once it may take no more (idle too long, spent, a request
    /// past its deadline) and its guest has nothing left to do.
    async fn serve(
        &self,
        accessor: &Accessor<GuestState>,
        proxy: &Proxy,
        load: &Arc<Load>,
        retire: &CancellationToken,
        status: &Mutex<(Status, Instant)>,
    ) -> wasmtime::Result<()> {
        let set = |now: Status| {
            let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
            if status.0 != now || now == Status::Requests {
                *status = (now, Instant::now());
            }
        };
        let mut running = FuturesUnordered::new();
        let mut accepting = true;
        loop {
            while accepting && let Some(queued) = load.take() {
                set(Status::Requests);
                running.push(self.start(accessor, proxy, queued, retire)?);
            }
            if running.is_empty() {
                set(Status::PostReturn);
                let settled = std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx));
                tokio::select! {
                    () = settled => {}
                    () = load.arrived.notified(), if accepting => continue,
                }
                if !accepting || load.spent(self.reuse) {
                    return Ok(());
                }
                set(Status::Idle);
                let idle = sleep_until(Instant::now() + self.reuse.idle);
                tokio::select! {
                    () = load.arrived.notified() => continue,
                    () = idle => {
                        // Only if nothing was given meanwhile: then nothing will be.
                        if load.close_if_idle() {
                            return Ok(());
                        }
                        continue;
                    }
                }
            }
            tokio::select! {
                done = running.next() => {
                    load.finished();
                    if !done.expect("a request runs")? {
                        // Past its deadline: the instance takes no more, and ends once
                        // the others are over.
                        accepting = false;
                        self.forget(load);
                        for queued in load.close() {
                            self.dispatch(queued);
                        }
                    }
                }
                () = load.arrived.notified(), if accepting => {}
            }
        }
    }

    /// Starts `queued` in the instance: its task begins, with its deadline.
    fn start<'a>(
        &self,
        accessor: &'a Accessor<GuestState>,
        proxy: &'a Proxy,
        queued: Queued,
        retire: &CancellationToken,
    ) -> wasmtime::Result<impl Future<Output = wasmtime::Result<bool>> + 'a> {
        let Queued {
            task,
            request,
            respond,
        } = queued;
        let common = &self.common;
        let limits = common.limits;
        let prepared =
            accessor.with(|mut store| -> wasmtime::Result<Prepared<'a, GuestState>> {
                let prepared = Prepared::new(
                    store.as_context_mut(),
                    proxy,
                    request,
                    <GuestState as WasiHttpView>::http,
                    respond,
                )?;
                let Prepared::P3 { call, .. } = &prepared else {
                    unreachable!("a WASI 0.3 handler's call");
                };
                let id = call.task();
                let mut store = store.as_context_mut();
                if let Some(fuel) = limits.fuel
                    && let Ok(left) = store.get_fuel()
                {
                    // Each request brings its own budget.
                    let _ = store.set_fuel(left.saturating_add(fuel));
                }
                let locks = store.data_mut().locks_mut().begin_task(id);
                task.start(locks, retire.clone(), &common.requests);
                Ok(prepared)
            })?;
        tracing::debug!(request = task.id, "started");
        let deadline = limits.deadline;
        Ok(async move {
            let expiry = async move {
                match deadline {
                    Some(deadline) => tokio::time::sleep(deadline).await,
                    None => std::future::pending().await,
                }
            };
            prepared.run(accessor, expiry).await
        })
    }
}

/// What an instance is doing, as the watch kept outside its event loop reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Serving requests: since the latest began.
    Requests,
    /// Its requests are over; its guest still has work of theirs to finish.
    PostReturn,
    /// Waiting for a request.
    Idle,
}

/// Resolves once the instance has run past a request's deadline: its requests, or the
/// work after them, since the latest began plus the deadline. A request's own expiry
/// comes first, but it cannot while the guest computes without yielding to its event
/// loop; this can (it is polled outside it). Its task cannot be cancelled alone
/// (wasmtime 48), so the instance is dropped.
async fn overrun(status: &Mutex<(Status, Instant)>, deadline: Option<Duration>) {
    let Some(deadline) = deadline else {
        return std::future::pending().await;
    };
    loop {
        let (now, since) = *status.lock().unwrap_or_else(|e| e.into_inner());
        let until = since + deadline;
        if now != Status::Idle && Instant::now() >= until {
            return;
        }
        // Looked at again at the deadline of what it is doing now, or in a while if idle.
        let next = if now == Status::Idle {
            Instant::now() + deadline
        } else {
            until
        };
        sleep_until(next).await;
    }
}

/// What one instance has been given and is running, and whether it is busy computing.
struct Load {
    number: u64,
    inbox: Mutex<Inbox>,
    /// Woken when the instance is given a request.
    arrived: Notify,
    /// Its pool, to which a busy instance gives back what it has not begun.
    pool: Weak<Pool>,
    /// How long its guest has been computing.
    stint: Stint,
}

#[derive(Default)]
struct Inbox {
    /// Given, not begun.
    queued: VecDeque<Queued>,
    /// Begun, not over.
    running: usize,
    /// Given in all.
    given: usize,
    /// Takes no more requests.
    closed: bool,
}

impl Load {
    fn new(number: u64, pool: Weak<Pool>) -> Self {
        Load {
            number,
            inbox: Mutex::default(),
            arrived: Notify::new(),
            pool,
            stint: Stint::default(),
        }
    }

    fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the guest is computing for requests it began: busy, given nothing new.
    /// (While it is instantiated it computes for none: what it is given waits for it.)
    fn computing(&self, inbox: &Inbox) -> bool {
        inbox.running > 0 && self.stint.ticks() >= BUSY_AFTER_TICKS
    }

    /// Offers the instance `queued`: taken if it can take it now, given back if not.
    fn offer(&self, queued: Queued, reuse: InstanceReuse) -> Option<Queued> {
        let mut inbox = self.inbox();
        let full = inbox.running + inbox.queued.len() >= reuse.max_concurrent
            || inbox.given >= reuse.max_requests;
        if inbox.closed || full || self.computing(&inbox) {
            return Some(queued);
        }
        inbox.given += 1;
        inbox.queued.push_back(queued);
        drop(inbox);
        self.arrived.notify_one();
        None
    }

    /// The next request given, to begin now.
    fn take(&self) -> Option<Queued> {
        let mut inbox = self.inbox();
        let queued = inbox.queued.pop_front()?;
        inbox.running += 1;
        Some(queued)
    }

    /// A request it began is over.
    fn finished(&self) {
        self.inbox().running -= 1;
    }

    /// Whether it has been given all the requests it may serve.
    fn spent(&self, reuse: InstanceReuse) -> bool {
        self.inbox().given >= reuse.max_requests
    }

    /// Takes no more requests; what it was given and has not begun, to go elsewhere.
    fn close(&self) -> Vec<Queued> {
        let mut inbox = self.inbox();
        inbox.closed = true;
        inbox.queued.drain(..).collect()
    }

    /// Takes no more requests if it has none; whether it closed.
    fn close_if_idle(&self) -> bool {
        let mut inbox = self.inbox();
        if inbox.queued.is_empty() && inbox.running == 0 {
            inbox.closed = true;
            if let Some(pool) = self.pool.upgrade() {
                drop(inbox);
                pool.instances()
                    .retain(|other| !std::ptr::eq(Arc::as_ptr(other), self));
            }
            return true;
        }
        false
    }
}

impl Computing for Load {
    fn stint(&self) -> &Stint {
        &self.stint
    }

    /// A tick computing: once the instance is busy, what it was given but has not begun
    /// goes to another instance.
    fn ticked(&self) {
        let given_back: Vec<Queued> = {
            let mut inbox = self.inbox();
            if inbox.queued.is_empty() || !self.computing(&inbox) {
                return;
            }
            inbox.given -= inbox.queued.len();
            inbox.queued.drain(..).collect()
        };
        tracing::debug!(instance = self.number, "busy computing");
        if let Some(pool) = self.pool.upgrade() {
            for queued in given_back {
                pool.dispatch(queued);
            }
        }
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
