"""latchkey for WASI 0.3 guests: the same locks, every call that may wait a coroutine.

For a component built with componentize-py for the world ``latchkey:guest/command-p3``
(``guest/wit``), whose ``run`` is async. While one task awaits a lock or a round trip to
the store, the instance's other tasks run on::

    import asyncio
    from latchkey import aio

    async def job(store: aio.Store) -> None:
        lock = await store.lock("ledger", lease=10, wait=30)
        if lock is not None:
            async with lock:                       # unlocked when the block ends
                write_ledger(fence=lock.fence)

    store = aio.Store.open("lockstore")
    await asyncio.gather(job(store), job(store))   # one at a time, the other one waiting

Semaphores and elections (``latchkey:lock@0.3.1``): :meth:`Store.acquire_permit` gives a
:class:`Permit`, :meth:`Store.campaign` a :class:`Leadership`; :meth:`Store.leader` says who
leads, and :meth:`Store.leader_change` returns once another leads than the one last seen::

    seen = None
    while True:
        leader = await store.leader_change("scheduler", seen)   # at once if already changed
        seen = None if leader is None else leader.fence
        print("now led by", leader)

Errors, bad input, leases and statuses are those of :mod:`latchkey`.

Ownership: each lock belongs to the task (one call into the component, and what it spawns)
that took it. When that task ends, the host releases every lock it still holds, and a
:class:`Lock` kept past it finds the lock gone: ``unlock`` says
:attr:`~latchkey.UnlockStatus.LOCK_DOES_NOT_EXIST`, ``extend`` and ``held`` say ``False``.

Cancellation: componentize-py 0.25.1 cannot cancel a call into the host. Do not cancel an
asyncio task while it awaits ``try_lock``, ``lock``, ``lost`` or another call of this
module: its answer would later arrive for a future that was cancelled, which traps the
instance (the host then releases its locks). Bound a wait with ``lock``'s ``wait`` instead.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Awaitable, Callable, Optional, Self, TypeVar

from componentize_py_types import Err

from latchkey import _core
from latchkey._core import InvalidArgumentError, Leader, Lease, LockError, UnlockStatus

__all__ = ["Leadership", "Lock", "Permit", "Store"]

_T = TypeVar("_T")


async def _await(function: Callable[..., Awaitable[_T]], *args: object) -> _T:
    """Awaits an async binding, turning its ``Err`` into the matching :class:`LockError`."""
    try:
        return await function(*args)
    except Err as err:
        raise _core.ERRORS[type(err.value)](err.value.value) from None


class _Grant(_core.GrantHandle):
    """What a lock, a permit and a leadership share in the WASI 0.3 world."""

    _LET_GO = "unlock"
    """The binding's method that lets the grant go."""

    _watching = 0
    """How many ``lost`` calls are pending: each borrows the handle."""

    _unwatched: Optional[asyncio.Future[None]] = None
    """Resolved when the last pending ``lost`` call returns."""

    async def extend(self, lease: Lease) -> bool:
        """Sets the lease to end ``lease`` from now; ``False`` if it had already ended (stop
        using the resource: someone else may hold it)."""
        return await _await(self._lock().extend, _core.ms("lease", lease))

    async def held(self) -> bool:
        """Asks the store whether this grant still holds (one round trip)."""
        return await _await(self._lock().held)

    async def lost(self) -> None:
        """Returns once the host knows the grant is lost — its lease ran out unrenewed, a
        renewal found it gone, it was let go, or its task ended. Await it in a task of its
        own, beside the work it guards."""
        call = self._lock().lost()
        self._watching += 1
        try:
            await call
        finally:
            self._watching -= 1
            if self._watching == 0 and self._unwatched is not None:
                self._unwatched.set_result(None)
                self._unwatched = None

    async def _let_go(self) -> UnlockStatus:
        """Lets the grant go now and says what the store found. A pending ``lost`` call
        borrows the handle, and dropping a borrowed handle traps the instance: the handle
        is dropped once they return — at once, since letting go is a loss."""
        status = await _await(getattr(self._lock(), self._LET_GO))
        while self._watching:
            self._unwatched = asyncio.get_running_loop().create_future()
            await self._unwatched
        self._release()
        return _core.STATUSES[status]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if self._inner is None:
            return
        try:
            await self._let_go()
        except LockError:
            # Dropping the handle has the host release it in the background instead; an
            # error already on its way out is the one to report.
            self._release()
            if exc_type is None:
                raise


class Lock(_Grant):
    """A lock this task holds. Leaving an ``async with`` block unlocks it."""

    async def unlock(self) -> UnlockStatus:
        """Releases the lock now and says what the store found."""
        return await self._let_go()


class Permit(_Grant):
    """A permit of a semaphore this task holds. Leaving an ``async with`` block releases it."""

    _ID = "semaphore_id"
    _LET_GO = "release"

    async def release(self) -> UnlockStatus:
        """Releases the permit now and says what the store found."""
        return await self._let_go()


class Leadership(_Grant):
    """The leadership of an election, held by this task. Leaving an ``async with`` block
    resigns it."""

    _ID = "election_id"
    _LET_GO = "resign"

    async def resign(self) -> UnlockStatus:
        """Steps down now, so that a waiting campaign wins at once."""
        return await self._let_go()


class Store(_core.StoreHandle):
    """A lock store the host configured for this app. Leaving a ``with`` block closes it."""

    async def try_lock(self, resource_id: str, lease: Lease) -> Optional[Lock]:
        """Takes the lock on ``resource_id`` for ``lease`` if nobody holds it; ``None`` if
        someone does."""
        args = (_core.text("resource-id", resource_id), _core.ms("lease", lease))
        inner = await _await(self._store().try_lock, *args)
        return None if inner is None else Lock(inner)

    async def lock(self, resource_id: str, lease: Lease, wait: Lease) -> Optional[Lock]:
        """Takes the lock on ``resource_id`` for ``lease``, waiting up to ``wait`` for its
        holder to release it or for the holder's lease to end; ``None`` if it is still held
        when the wait ends. Only this task waits: the instance's other tasks run on."""
        args = (_core.text("resource-id", resource_id), _core.ms("lease", lease), _core.ms("wait", wait))
        inner = await _await(self._store().lock, *args)
        return None if inner is None else Lock(inner)

    async def acquire_permit(
        self, semaphore_id: str, limit: int, lease: Lease, wait: Lease = 0
    ) -> Optional[Permit]:
        """Takes a permit of the semaphore ``semaphore_id`` for ``lease`` if fewer than
        ``limit`` are held, waiting up to ``wait`` (only this task waits)."""
        args = (
            _core.text("semaphore-id", semaphore_id),
            _core.count("limit", limit),
            _core.ms("lease", lease),
            _core.ms("wait", wait),
        )
        inner = await _await(self._store().acquire_permit, *args)
        return None if inner is None else Permit(inner)

    async def campaign(
        self, election_id: str, value: str, lease: Lease, wait: Lease = 0
    ) -> Optional[Leadership]:
        """Campaigns to lead ``election_id``, publishing ``value``: leads now if nobody does,
        or once the leader resigns or its lease ends within ``wait``."""
        args = (
            _core.text("election-id", election_id),
            _core.text("value", value),
            _core.ms("lease", lease),
            _core.ms("wait", wait),
        )
        inner = await _await(self._store().campaign, *args)
        return None if inner is None else Leadership(inner)

    async def leader(self, election_id: str) -> Optional[Leader]:
        """Who leads ``election_id`` now; ``None`` if nobody does."""
        return _core.leader(await _await(self._store().leader, _core.text("election-id", election_id)))

    async def leader_change(self, election_id: str, seen: Optional[int]) -> Optional[Leader]:
        """Returns once ``election_id`` is led by another than the leader whose fence is
        ``seen`` (``None``: nobody) — at once if it already is — and says who leads then."""
        if seen is not None and (
            not isinstance(seen, int) or isinstance(seen, bool) or not 0 <= seen < 2**64
        ):
            raise InvalidArgumentError(f"seen is {seen!r}; it must be a fence, or None")
        found = await _await(self._store().leader_change, _core.text("election-id", election_id), seen)
        return _core.leader(found)
