"""latchkey: distributed locks for Python guests.

Take a lock on a named resource, shared with every other instance of your app, from a
WebAssembly component built with componentize-py for the world ``latchkey:guest/command``,
whose WIT this package carries (``python -m latchkey wit`` prints its directory, for
componentize-py's ``-d``). The host decides where the locks live and keeps the credentials; the guest
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

from pathlib import Path

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
    "wit_dir",
]


def wit_dir() -> Path:
    """The directory of the WIT this package is built against: the worlds
    ``latchkey:guest/command``, ``command-p3`` and ``service-p3`` with every package they use."""
    return Path(__file__).parent / "wit"


# The API imports the bindings componentize-py generates (`wit_world`), which exist only
# while it builds a component and inside it. componentize-py keeps only what was imported
# when it built the component, so the API is imported here, eagerly; on a build machine —
# `python -m latchkey wit` — it is left out, and only `wit_dir` is there.
try:
    from latchkey._sync import (
        AccessDeniedError,
        InvalidArgumentError,
        Leader,
        Leadership,
        Lease,
        LimitExceededError,
        Lock,
        LockError,
        NoSuchStoreError,
        Permit,
        Store,
        UnavailableError,
        UnlockStatus,
    )
except ModuleNotFoundError as missing:
    if missing.name not in ("wit_world", "componentize_py_types"):
        raise

    def __getattr__(name: str) -> object:
        if name in __all__:
            raise ImportError(
                f"latchkey.{name} runs inside a component: build with componentize-py "
                '-d "$(python -m latchkey wit)"'
            )
        raise AttributeError(f"module 'latchkey' has no attribute {name!r}")
