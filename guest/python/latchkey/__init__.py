"""latchkey: distributed locks for Python guests.

Take a lock on a named resource, shared with every other instance of your app, from a
WebAssembly component built with componentize-py for the world ``latchkey:guest/command``
(``guest/wit``). The host decides where the locks live and keeps the credentials; the guest
only names a store and a resource::

    import latchkey

    store = latchkey.Store.open("lockstore")
    lock = store.try_lock("my_file_name", 60)          # a 60 s lease
    if lock is None:
        print("Failed to lock my_file_name.")
    else:
        with lock:                                      # unlocked when the block ends
            write_file(fence=lock.fence)

Beyond the mutex (``latchkey:lock@0.2.1``): a leased counting semaphore —
:meth:`Store.acquire_permit` gives a :class:`Permit` while fewer than ``limit`` are held —
and leader election — :meth:`Store.campaign` gives a :class:`Leadership`,
:meth:`Store.leader` says who leads, :meth:`Store.leader_changes` is a pollable that is
ready when that changes::

    with store.acquire_permit("db-pool", 3, lease=2, wait=30) as permit:   # at most 3 inside
        permit.keep_alive()
        query(fence=permit.fence)

    leadership = store.campaign("scheduler", "10.0.0.7:8080", lease=1)
    if leadership is None:
        print("led by", store.leader("scheduler"))

For WASI 0.3 guests (world ``latchkey:guest/command-p3``), :mod:`latchkey.aio` is the
same API for locks with every call that may wait a coroutine.

Leases and waits are seconds (``int`` or ``float``) or ``datetime.timedelta``, sent to the
host in whole milliseconds (at most 4294967295). A call that fails raises a
:class:`LockError` subclass, one per kind of failure; a lock held by someone else is not an
error but ``None``. Bad input — a negative, NaN or infinite time, a name or resource id that
is not a ``str`` or holds a lone surrogate, a store used after its ``with`` block or a lock
after its unlock — raises :class:`InvalidArgumentError` before the host is asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from types import TracebackType
from typing import TYPE_CHECKING, Callable, Optional, Self, TypeVar, Union

from componentize_py_types import Err
from wit_world.imports import locks as _wit

if TYPE_CHECKING:
    # Only the 0.2 world has `wasi:io/poll`; `latchkey.aio`, for WASI 0.3, imports this
    # module too.
    from wit_world.imports import poll as _poll

__all__ = [
    "AccessDeniedError",
    "InvalidArgumentError",
    "Leader",
    "Leadership",
    "Lease",
    "LimitExceededError",
    "Lock",
    "LockError",
    "NoSuchStoreError",
    "Permit",
    "Store",
    "UnavailableError",
    "UnlockStatus",
]

Lease = Union[int, float, timedelta]
"""A length of time: seconds, or a ``timedelta``."""

_T = TypeVar("_T")


class LockError(Exception):
    """Why a lock call failed. Its :attr:`kind` is the WIT error's name."""

    kind: str = "lock-error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        """The host's explanation."""

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class NoSuchStoreError(LockError):
    """No lock store of this name is configured for this app."""

    kind = "no-such-store"


class InvalidArgumentError(LockError):
    """An argument is empty, too long or out of range; the message says which and why."""

    kind = "invalid-argument"


class AccessDeniedError(LockError):
    """The host's policy does not let this app lock this resource id."""

    kind = "access-denied"


class LimitExceededError(LockError):
    """This instance already holds as many locks as the host allows."""

    kind = "limit-exceeded"


class UnavailableError(LockError):
    """The store could not be reached or did not answer in time."""

    kind = "unavailable"


_ERRORS: dict[type, type[LockError]] = {
    _wit.Error_NoSuchStore: NoSuchStoreError,
    _wit.Error_InvalidArgument: InvalidArgumentError,
    _wit.Error_AccessDenied: AccessDeniedError,
    _wit.Error_LimitExceeded: LimitExceededError,
    _wit.Error_Unavailable: UnavailableError,
}


def _call(function: Callable[..., _T], *args: object) -> _T:
    """Calls a binding, turning its ``Err`` into the matching :class:`LockError`."""
    try:
        return function(*args)
    except Err as err:
        raise _ERRORS[type(err.value)](err.value.value) from None


_MAX_MS = 2**32 - 1
"""The most milliseconds the host takes (the WIT's ``u32``)."""


def _ms(name: str, length: Lease) -> int:
    """``length`` in whole milliseconds, checked: a finite, non-negative number of seconds
    or ``timedelta`` of at most :data:`_MAX_MS` ms."""
    if isinstance(length, timedelta):
        seconds = length.total_seconds()
    elif isinstance(length, (int, float)) and not isinstance(length, bool):
        seconds = float(length)
    else:
        raise InvalidArgumentError(
            f"{name} must be seconds (int or float) or a timedelta, not {type(length).__name__}"
        )
    if math.isnan(seconds) or math.isinf(seconds):
        raise InvalidArgumentError(f"{name} is {seconds}; it must be a finite number of seconds")
    if seconds < 0:
        raise InvalidArgumentError(f"{name} is {seconds:g} s; it must not be negative")
    millis = round(seconds * 1000)
    if millis > _MAX_MS:
        raise InvalidArgumentError(f"{name} is {seconds:g} s; the most is {_MAX_MS} ms")
    return millis


def _text(name: str, value: object) -> str:
    """``value``, checked to be a ``str`` that is text (no lone surrogate)."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{name} holds a lone surrogate, which is not text") from None
    return value


class UnlockStatus(Enum):
    """What an unlock found (the statuses of Dapr's Unlock)."""

    SUCCESS = "success"
    """The lock was still ours; now it is free."""
    LOCK_DOES_NOT_EXIST = "lock-does-not-exist"
    """The lease had ended and nobody holds the lock."""
    LOCK_BELONGS_TO_OTHERS = "lock-belongs-to-others"
    """The lease had ended and someone else holds the lock now."""


_STATUSES = {
    _wit.UnlockStatus.SUCCESS: UnlockStatus.SUCCESS,
    _wit.UnlockStatus.LOCK_DOES_NOT_EXIST: UnlockStatus.LOCK_DOES_NOT_EXIST,
    _wit.UnlockStatus.LOCK_BELONGS_TO_OTHERS: UnlockStatus.LOCK_BELONGS_TO_OTHERS,
}


def _count(name: str, value: object) -> int:
    """``value``, checked to be an ``int`` the host takes (a ``u32``)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _MAX_MS:
        raise InvalidArgumentError(f"{name} is {value}; it must be 0 to {_MAX_MS}")
    return value


class _LockHandle:
    """What a grant is in both worlds: the handle, and what reading it needs no wait for."""

    _ID = "resource_id"
    """The binding's method that names what the grant is on."""

    def __init__(self, inner: _wit.Lock) -> None:
        self._inner: Optional[_wit.Lock] = inner

    def _lock(self) -> _wit.Lock:
        if self._inner is None:
            raise InvalidArgumentError(f"this {type(self).__name__.lower()} was let go")
        return self._inner

    @property
    def resource_id(self) -> str:
        """The resource id this lock is on (a permit's semaphore, a leadership's election)."""
        return getattr(self._lock(), self._ID)()

    @property
    def fence(self) -> int:
        """The fencing token: greater than that of every earlier grant of this resource.

        Hand it to the resource you protect, so that it can refuse a holder whose lease ended.
        """
        return self._lock().fence()

    def keep_alive(self) -> None:
        """Has the host renew the lease before it runs out, to the length last asked for,
        until the lock is unlocked or its holder ends (or the operator's cap)."""
        _call(self._lock().keep_alive)

    def _release(self) -> None:
        if self._inner is not None:
            self._inner.__exit__(None, None, None)
            self._inner = None

    def __repr__(self) -> str:
        name = type(self).__name__
        if self._inner is None:
            return f"{name}(let go)"
        return f"{name}(resource_id={self.resource_id!r}, fence={self.fence})"


class _Grant(_LockHandle):
    """What a lock, a permit and a leadership share in the WASI 0.2 world."""

    def __init__(self, inner: _wit.Lock) -> None:
        super().__init__(inner)
        self._lost: Optional[_poll.Pollable] = None

    def extend(self, lease: Lease) -> bool:
        """Sets the lease to end ``lease`` from now; ``False`` if it had already ended (stop
        using the resource: someone else may hold it)."""
        return _call(self._lock().extend, _ms("lease", lease))

    def held(self) -> bool:
        """Asks the store whether this grant still holds the lock (one round trip)."""
        return _call(self._lock().held)

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
        status = _call(getattr(self._lock(), method))
        self._release()
        return _STATUSES[status]

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


@dataclass(frozen=True)
class Leader:
    """Who leads an election."""

    value: str
    """What the leader published when it campaigned."""
    fence: int
    """Its leadership's fence: greater than every earlier leader's."""
    lease_left: timedelta
    """How long its lease has left unless renewed."""


class _StoreHandle:
    """What a store is in both worlds: opening it, and closing it with its ``with`` block."""

    def __init__(self, inner: _wit.Store) -> None:
        self._inner: Optional[_wit.Store] = inner

    @classmethod
    def open(cls, name: str) -> Self:
        """Opens the store called ``name``."""
        return cls(_call(_wit.open, _text("name", name)))

    def _store(self) -> _wit.Store:
        if self._inner is None:
            raise InvalidArgumentError("this store was closed (its with block ended)")
        return self._inner

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if self._inner is not None:
            self._inner.__exit__(exc_type, exc_value, traceback)
            self._inner = None


class Store(_StoreHandle):
    """A lock store the host configured for this app. Leaving a ``with`` block closes it."""

    def try_lock(self, resource_id: str, lease: Lease) -> Optional[Lock]:
        """Takes the lock on ``resource_id`` for ``lease`` if nobody holds it; ``None`` if
        someone does."""
        args = (_text("resource-id", resource_id), _ms("lease", lease))
        inner = _call(self._store().try_lock, *args)
        return None if inner is None else Lock(inner)

    def lock(self, resource_id: str, lease: Lease, wait: Lease) -> Optional[Lock]:
        """Takes the lock on ``resource_id`` for ``lease``, waiting up to ``wait`` for its
        holder to release it or for the holder's lease to end; ``None`` if it is still held
        when the wait ends."""
        args = (_text("resource-id", resource_id), _ms("lease", lease), _ms("wait", wait))
        inner = _call(self._store().lock, *args)
        return None if inner is None else Lock(inner)

    def acquire_permit(
        self, semaphore_id: str, limit: int, lease: Lease, wait: Lease = 0
    ) -> Optional[Permit]:
        """Takes a permit of the semaphore ``semaphore_id`` for ``lease`` if fewer than
        ``limit`` of its permits are held, waiting up to ``wait`` for one to be released or
        to expire; ``None`` if all are still held when the wait ends. Never more than
        ``limit`` hold at once, among callers that agree on ``limit``."""
        args = (
            _text("semaphore-id", semaphore_id),
            _count("limit", limit),
            _ms("lease", lease),
            _ms("wait", wait),
        )
        inner = _call(self._store().acquire_permit, *args)
        return None if inner is None else Permit(inner)

    def campaign(
        self, election_id: str, value: str, lease: Lease, wait: Lease = 0
    ) -> Optional[Leadership]:
        """Campaigns to lead the election ``election_id``, publishing ``value`` to whoever
        asks :meth:`leader`: leads now if nobody does, or once the leader resigns or its
        lease ends within ``wait``; ``None`` if another still leads then."""
        args = (
            _text("election-id", election_id),
            _text("value", value),
            _ms("lease", lease),
            _ms("wait", wait),
        )
        inner = _call(self._store().campaign, *args)
        return None if inner is None else Leadership(inner)

    def leader(self, election_id: str) -> Optional[Leader]:
        """Who leads the election ``election_id`` now; ``None`` if nobody does."""
        found = _call(self._store().leader, _text("election-id", election_id))
        if found is None:
            return None
        return Leader(found.value, found.fence, timedelta(milliseconds=found.lease_left_ms))

    def leader_changes(self, election_id: str) -> _poll.Pollable:
        """A ``wasi:io/poll`` pollable, ready when the election has another leader than now
        (a new one, or none) or the store could not be asked: read :meth:`leader` then,
        and take a new one to watch on."""
        return _call(self._store().subscribe_leader_change, _text("election-id", election_id))
