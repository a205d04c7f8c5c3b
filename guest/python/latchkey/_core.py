"""What :mod:`latchkey` (WASI 0.2) and :mod:`latchkey.aio` (WASI 0.3) share: the errors,
the checks of every argument, the unlock statuses, who leads, and the parts of a grant and
a store that need no wait. Private: both import it, and neither imports the other's
private names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from types import TracebackType
from typing import Callable, Optional, Self, TypeVar, Union

from componentize_py_types import Err
from wit_world.imports import locks as _wit

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


ERRORS: dict[type, type[LockError]] = {
    _wit.Error_NoSuchStore: NoSuchStoreError,
    _wit.Error_InvalidArgument: InvalidArgumentError,
    _wit.Error_AccessDenied: AccessDeniedError,
    _wit.Error_LimitExceeded: LimitExceededError,
    _wit.Error_Unavailable: UnavailableError,
}


def call(function: Callable[..., _T], *args: object) -> _T:
    """Calls a binding, turning its ``Err`` into the matching :class:`LockError`."""
    try:
        return function(*args)
    except Err as err:
        raise ERRORS[type(err.value)](err.value.value) from None


MAX_MS = 2**32 - 1
"""The most milliseconds the host takes (the WIT's ``u32``)."""


def ms(name: str, length: Lease) -> int:
    """``length`` in whole milliseconds, checked: a finite, non-negative number of seconds
    or ``timedelta`` of at most :data:`MAX_MS` ms."""
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
    if millis > MAX_MS:
        raise InvalidArgumentError(f"{name} is {seconds:g} s; the most is {MAX_MS} ms")
    return millis


def text(name: str, value: object) -> str:
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


STATUSES = {
    _wit.UnlockStatus.SUCCESS: UnlockStatus.SUCCESS,
    _wit.UnlockStatus.LOCK_DOES_NOT_EXIST: UnlockStatus.LOCK_DOES_NOT_EXIST,
    _wit.UnlockStatus.LOCK_BELONGS_TO_OTHERS: UnlockStatus.LOCK_BELONGS_TO_OTHERS,
}


def count(name: str, value: object) -> int:
    """``value``, checked to be an ``int`` the host takes (a ``u32``)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_MS:
        raise InvalidArgumentError(f"{name} is {value}; it must be 0 to {MAX_MS}")
    return value


class GrantHandle:
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
        call(self._lock().keep_alive)

    def _release(self) -> None:
        if self._inner is not None:
            self._inner.__exit__(None, None, None)
            self._inner = None

    def __repr__(self) -> str:
        name = type(self).__name__
        if self._inner is None:
            return f"{name}(let go)"
        return f"{name}(resource_id={self.resource_id!r}, fence={self.fence})"


@dataclass(frozen=True)
class Leader:
    """Who leads an election."""

    value: str
    """What the leader published when it campaigned."""
    fence: int
    """Its leadership's fence: greater than every earlier leader's."""
    lease_left: timedelta
    """How long its lease has left unless renewed."""


class StoreHandle:
    """What a store is in both worlds: opening it, and closing it with its ``with`` block."""

    def __init__(self, inner: _wit.Store) -> None:
        self._inner: Optional[_wit.Store] = inner

    @classmethod
    def open(cls, name: str) -> Self:
        """Opens the store called ``name``."""
        return cls(call(_wit.open, text("name", name)))

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


def leader(found: Optional[_wit.Leader]) -> Optional[Leader]:
    """Who leads, from the binding's answer."""
    if found is None:
        return None
    return Leader(found.value, found.fence, timedelta(milliseconds=found.lease_left_ms))
