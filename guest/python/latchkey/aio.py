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

from types import TracebackType
from typing import Awaitable, Callable, Optional, TypeVar

from componentize_py_types import Err

from latchkey import (
    _ERRORS,
    _STATUSES,
    Lease,
    LockError,
    UnlockStatus,
    _LockHandle,
    _ms,
    _StoreHandle,
    _text,
)

__all__ = ["Lock", "Store"]

_T = TypeVar("_T")


async def _await(function: Callable[..., Awaitable[_T]], *args: object) -> _T:
    """Awaits an async binding, turning its ``Err`` into the matching :class:`LockError`."""
    try:
        return await function(*args)
    except Err as err:
        raise _ERRORS[type(err.value)](err.value.value) from None


class Lock(_LockHandle):
    """A lock this task holds. Leaving an ``async with`` block unlocks it."""

    async def extend(self, lease: Lease) -> bool:
        """Sets the lease to end ``lease`` from now; ``False`` if it had already ended (stop
        using the resource: someone else may hold it)."""
        return await _await(self._lock().extend, _ms("lease", lease))

    async def held(self) -> bool:
        """Asks the store whether this grant still holds the lock (one round trip)."""
        return await _await(self._lock().held)

    async def lost(self) -> None:
        """Returns once the host knows the lock is lost — its lease ran out unrenewed, a
        renewal found it gone, it was unlocked, or its task ended. Await it in a task of its
        own, beside the work it guards."""
        await self._lock().lost()

    async def unlock(self) -> UnlockStatus:
        """Releases the lock now and says what the store found."""
        inner = self._lock()
        status = await _await(inner.unlock)
        self._release()
        return _STATUSES[status]

    async def __aenter__(self) -> Lock:
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
            await self.unlock()
        except LockError:
            # Dropping the handle has the host release it in the background instead; an
            # error already on its way out is the one to report.
            self._release()
            if exc_type is None:
                raise


class Store(_StoreHandle):
    """A lock store the host configured for this app. Leaving a ``with`` block closes it."""

    async def try_lock(self, resource_id: str, lease: Lease) -> Optional[Lock]:
        """Takes the lock on ``resource_id`` for ``lease`` if nobody holds it; ``None`` if
        someone does."""
        args = (_text("resource-id", resource_id), _ms("lease", lease))
        inner = await _await(self._store().try_lock, *args)
        return None if inner is None else Lock(inner)

    async def lock(self, resource_id: str, lease: Lease, wait: Lease) -> Optional[Lock]:
        """Takes the lock on ``resource_id`` for ``lease``, waiting up to ``wait`` for its
        holder to release it or for the holder's lease to end; ``None`` if it is still held
        when the wait ends. Only this task waits: the instance's other tasks run on."""
        args = (_text("resource-id", resource_id), _ms("lease", lease), _ms("wait", wait))
        inner = await _await(self._store().lock, *args)
        return None if inner is None else Lock(inner)
