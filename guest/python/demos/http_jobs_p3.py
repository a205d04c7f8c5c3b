"""The jobs route of the HTTP demo as a WASI 0.3 handler, in Python: ``latchkey serve``
reuses its instance for many requests, and each request owns the lock it takes.

``POST /jobs/{id}[?ms=N]`` runs job ``id`` at most once at a time: it try-locks ``id``
(30 s lease) and, when granted, works for N ms (default 0) — an async wait, so the instance
serves other requests meanwhile — answers ``200`` with ``ran ID fence F`` and unlocks.
While another request holds the job: ``409 Conflict``. The guest of P11's Python row.
"""

from componentize_py_async_support import spawn
from componentize_py_types import Ok
import latchkey
from latchkey import aio
from wit_world import byte_stream, exports
from wit_world import (
    result_option_wasi_http_types_fields_wasi_http_types_error_code_future as trailers_future,
)
from wit_world.imports import monotonic_clock
from wit_world.imports import wasi_http_types as http

JOB_LEASE = 30


class Handler(exports.Handler):
    async def handle(self, request: http.Request) -> http.Response:
        path, _, query = (request.get_path_with_query() or "").partition("?")
        job_id = path.removeprefix("/jobs/")
        if isinstance(request.get_method(), http.Method_Post) and job_id and job_id != path:
            status, text = await job(job_id, query)
        else:
            status, text = 404, "POST /jobs/{id}\n"
        return respond(status, text)


async def job(job_id: str, query: str) -> tuple[int, str]:
    params = dict(pair.partition("=")[::2] for pair in query.split("&") if pair)
    try:
        store = aio.Store.open("lockstore")
        lock = await store.try_lock(job_id, JOB_LEASE)
        if lock is None:
            return 409, f"job {job_id} is running elsewhere\n"
        fence = lock.fence
        work_ms = int(params.get("ms") or 0)
        if work_ms > 0:
            await monotonic_clock.wait_for(work_ms * 1_000_000)
        await lock.unlock()
        return 200, f"ran {job_id} fence {fence}\n"
    except latchkey.LockError as err:
        return (503 if isinstance(err, latchkey.UnavailableError) else 500), f"{err}\n"


def respond(status: int, text: str) -> http.Response:
    """A response whose body a task of its own writes as the host reads it."""
    headers = http.Fields.from_list([("content-type", b"text/plain; charset=utf-8")])
    body_writer, body = byte_stream()
    trailers_writer, trailers = trailers_future(lambda: Ok(None))
    trailers_writer.__exit__(None, None, None)
    response, _sent = http.Response.new(headers, body, trailers)
    response.set_status_code(status)
    spawn(write(body_writer, text.encode()))
    return response


async def write(writer, data: bytes) -> None:
    with writer:
        await writer.write_all(data)
