"""The steps of ``lockctl``, written once for both worlds: as a coroutine over either SDK,
:mod:`latchkey` (WASI 0.2, where nothing suspends) or :mod:`latchkey.aio` (WASI 0.3,
where the calls that may wait are coroutines). ``lockctl.py`` and ``lockctl_p3.py`` are
their front ends.

Steps (locks are kept in a stack; ``extend`` and ``unlock`` act on the top):
``open NAME``, ``try ID LEASE_MS``, ``lock ID LEASE_MS WAIT_MS``, ``extend LEASE_MS``,
``unlock``, ``swap``, ``sleep MS``. Times may be any float (``nan``, ``inf``, ``-5000``).
A failed step prints ``error KIND: MESSAGE`` — after checking that the error arrived as the
``latchkey`` exception class of its kind.

And steps that try the SDK's edges: ``try-surrogate LEASE_MS`` and ``try-bytes LEASE_MS``
(a resource id of a lone surrogate, or of bytes), ``open-int`` (a store named by a number),
``closed`` (a store used after its ``with`` block), ``unlocked`` (a lock used after its
unlock).
"""

import inspect
import time
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Coroutine

import latchkey

CLASSES = {
    "no-such-store": latchkey.NoSuchStoreError,
    "invalid-argument": latchkey.InvalidArgumentError,
    "access-denied": latchkey.AccessDeniedError,
    "limit-exceeded": latchkey.LimitExceededError,
    "unavailable": latchkey.UnavailableError,
}


async def done(value: Any) -> Any:
    """``value``, awaited if the SDK's call was a coroutine."""
    return await value if inspect.isawaitable(value) else value


async def script(sdk: ModuleType, steps: Iterable[str]) -> None:
    """Runs ``steps`` through ``sdk``'s ``Store`` and ``Lock``."""
    args = iter(steps)
    store = None
    locks = []
    for step in args:
        try:
            if step == "open":
                name = next(args)
                store = sdk.Store.open(name)
                print(f"opened {name}")
            elif step in ("try", "lock", "try-surrogate", "try-bytes"):
                resource_id = {"try-surrogate": "\ud800", "try-bytes": b"abc"}.get(step)
                resource_id = resource_id if resource_id is not None else next(args)
                lease = float(next(args)) / 1000
                if step == "lock":
                    wait = float(next(args)) / 1000
                    lock = await done(store.lock(resource_id, lease, wait))
                else:
                    lock = await done(store.try_lock(resource_id, lease))
                if lock is None:
                    print(f"held {resource_id}")
                else:
                    locks.append(lock)
                    print(f"granted {resource_id} fence={lock.fence}")
            elif step == "extend":
                extended = await done(locks[-1].extend(float(next(args)) / 1000))
                print(f"extended {str(extended).lower()}")
            elif step == "unlock":
                print(f"unlocked {(await done(locks.pop().unlock())).value}")
            elif step == "swap":
                locks[-1], locks[-2] = locks[-2], locks[-1]
            elif step == "open-int":
                sdk.Store.open(123)
            elif step == "closed":
                with sdk.Store.open("lockstore") as closed:
                    pass
                await done(closed.try_lock("a", 1))
            elif step == "unlocked":
                lock = await done(store.try_lock("unlocked", 60))
                await done(lock.unlock())
                await done(lock.extend(60))
            elif step == "sleep":
                time.sleep(int(next(args)) / 1000)
            else:
                raise ValueError(f"unknown step {step}")
        except latchkey.LockError as err:
            assert type(err) is CLASSES[err.kind], f"{err.kind} came as {type(err)}"
            print(f"error {err}")


def to_the_end(coroutine: Coroutine[Any, Any, None]) -> None:
    """Runs a coroutine that never suspends — :func:`script` over the 0.2 SDK — to its end."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise AssertionError("a step suspended: the 0.2 SDK's calls do not")
