"""The API of :mod:`latchkey` for WASI 0.2 guests, which imports the bindings
(``wit_world``): :mod:`latchkey` imports it only where they exist, so that ``python -m latchkey``
runs on a build machine, where there are none."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Optional, Self

from latchkey import _core
from latchkey._core import (
    AccessDeniedError,
    InvalidArgumentError,
    Leader,
    Lease,
    LimitExceededError,
    LockError,
    NoSuchStoreError,
    UnavailableError,
    UnlockStatus,
)

if TYPE_CHECKING:
    # Only the 0.2 world has `wasi:io/poll`; `latchkey.aio`, for WASI 0.3, imports this
    # module too.
    from wit_world.imports import locks as _wit
    from wit_world.imports import poll as _poll


class _Grant(_core.GrantHandle):
    """What a lock, a permit and a leadership share in the WASI 0.2 world."""

    def __init__(self, inner: _wit.Lock) -> None:
        super().__init__(inner)
        self._lost: Optional[_poll.Pollable] = None

    def extend(self, lease: Lease) -> bool:
        """Sets the lease to end ``lease`` from now; ``False`` if it had already ended (stop
        using the resource: someone else may hold it)."""
        return _core.call(self._lock().extend, _core.ms("lease", lease))

    def held(self) -> bool:
        """Asks the store whether this grant still holds the lock (one round trip)."""
        return _core.call(self._lock().held)

    @property
    def lost(self) -> _poll.Pollable:
        """A ``wasi:io/poll`` pollable, ready once the host knows the lock is lost: poll it
        with your own timers and streams."""
        if self._lost is None:
            self._lost = self._lock().subscribe_lost()
        return self._lost

    def is_lost(self) -> bool:
        """Whether the lock is known to be lost, now, without waiting."""
        return self.lost.ready()

    def _let_go(self, method: str) -> UnlockStatus:
        """Calls the binding's ``method`` that lets the grant go, and says what it found."""
        status = _core.call(getattr(self._lock(), method))
        self._release()
        return _core.STATUSES[status]

    def _release(self) -> None:
        if self._lost is not None:
            self._lost.__exit__(None, None, None)
            self._lost = None
        super()._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        # Dropping the handle lets the grant go.
        self._release()


class Lock(_Grant):
    """A lock this instance holds. Leaving a ``with`` block, or being collected, unlocks it."""

    def unlock(self) -> UnlockStatus:
        """Releases the lock now and says what the store found."""
        return self._let_go("unlock")


class Permit(_Grant):
    """A permit of a semaphore this instance holds: a lock of which up to the semaphore's
    limit hold at once. Leaving a ``with`` block, or being collected, releases it."""

    _ID = "semaphore_id"

    @property
    def semaphore_id(self) -> str:
        """The semaphore this permit is of."""
        return self.resource_id

    def release(self) -> UnlockStatus:
        """Releases the permit now and says what the store found."""
        return self._let_go("release")


class Leadership(_Grant):
    """The leadership of an election, held by this instance. Leaving a ``with`` block, or
    being collected, resigns it."""

    _ID = "election_id"

    @property
    def election_id(self) -> str:
        """The election this leadership is of."""
        return self.resource_id

    def resign(self) -> UnlockStatus:
        """Steps down now, so that a waiting campaign wins at once."""
        return self._let_go("resign")


class Store(_core.StoreHandle):
    """A lock store the host configured for this app. Leaving a ``with`` block closes it."""

    def try_lock(self, resource_id: str, lease: Lease) -> Optional[Lock]:
        """Takes the lock on ``resource_id`` for ``lease`` if nobody holds it; ``None`` if
        someone does."""
        args = (_core.text("resource-id", resource_id), _core.ms("lease", lease))
        inner = _core.call(self._store().try_lock, *args)
        return None if inner is None else Lock(inner)

    def lock(self, resource_id: str, lease: Lease, wait: Lease) -> Optional[Lock]:
        """Takes the lock on ``resource_id`` for ``lease``, waiting up to ``wait`` for its
        holder to release it or for the holder's lease to end; ``None`` if it is still held
        when the wait ends."""
        args = (_core.text("resource-id", resource_id), _core.ms("lease", lease), _core.ms("wait", wait))
        inner = _core.call(self._store().lock, *args)
        return None if inner is None else Lock(inner)

    def acquire_permit(
        self, semaphore_id: str, limit: int, lease: Lease, wait: Lease = 0
    ) -> Optional[Permit]:
        """Takes a permit of the semaphore ``semaphore_id`` for ``lease`` if fewer than
        ``limit`` of its permits are held, waiting up to ``wait`` for one to be released or
        to expire; ``None`` if all are still held when the wait ends. Never more than
        ``limit`` hold at once, among callers that agree on ``limit``."""
        args = (
            _core.text("semaphore-id", semaphore_id),
            _core.count("limit", limit),
            _core.ms("lease", lease),
            _core.ms("wait", wait),
        )
        inner = _core.call(self._store().acquire_permit, *args)
        return None if inner is None else Permit(inner)

    def campaign(
        self, election_id: str, value: str, lease: Lease, wait: Lease = 0
    ) -> Optional[Leadership]:
        """Campaigns to lead the election ``election_id``, publishing ``value`` to whoever
        asks :meth:`leader`: leads now if nobody does, or once the leader resigns or its
        lease ends within ``wait``; ``None`` if another still leads then."""
        args = (
            _core.text("election-id", election_id),
            _core.text("value", value),
            _core.ms("lease", lease),
            _core.ms("wait", wait),
        )
        inner = _core.call(self._store().campaign, *args)
        return None if inner is None else Leadership(inner)

    def leader(self, election_id: str) -> Optional[Leader]:
        """Who leads the election ``election_id`` now; ``None`` if nobody does."""
        return _core.leader(_core.call(self._store().leader, _core.text("election-id", election_id)))

    def leader_changes(self, election_id: str) -> _poll.Pollable:
        """A ``wasi:io/poll`` pollable, ready when the election has another leader than now
        (a new one, or none) or the store could not be asked: read :meth:`leader` then,
        and take a new one to watch on."""
        return _core.call(self._store().subscribe_leader_change, _core.text("election-id", election_id))
