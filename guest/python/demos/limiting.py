"""What both ``limited`` demos share (``limited.py`` for WASI 0.2, ``limited_p3.py`` for
0.3): the flags, and the rounds, written once as a coroutine over either SDK — each round
takes a permit of ``--limit`` and counts itself in and out of a shared file while it holds
it, printing ``inside N fence=F`` as it enters.

``limited [--semaphore ID] [--limit N] [--rounds N] [--work-ms N] [--file PATH] [--no-permit]``
"""

from dataclasses import dataclass
from types import ModuleType
from typing import Awaitable, Callable

import flags
from scripting import done


@dataclass
class Options:
    semaphore: str = "limited"
    limit: int = 3
    rounds: int = 3
    work_ms: int = 30
    file: str = "/data/inside"
    no_permit: bool = False


async def count(store: object, path: str, change: int) -> int:
    """Adds ``change`` to the count in ``path``, under a lock: the new count."""
    lock = await done(store.lock("inside-count", lease=10, wait=60))
    if lock is None:
        raise RuntimeError("the count stayed locked for a minute")
    try:
        with open(path) as f:
            inside = int(f.read().strip() or 0)
    except FileNotFoundError:
        inside = 0
    inside += change
    with open(path, "w") as f:
        f.write(f"{inside}\n")
    await done(lock.unlock())
    return inside


async def rounds(sdk: ModuleType, sleep: Callable[[int], Awaitable[None]]) -> None:
    """The demo, over ``sdk`` (:mod:`latchkey` or :mod:`latchkey.aio`), sleeping by
    ``sleep`` (ms)."""
    opts = flags.parse(Options())
    store = sdk.Store.open("lockstore")
    for _ in range(opts.rounds):
        permit = None
        if not opts.no_permit:
            permit = await done(store.acquire_permit(opts.semaphore, opts.limit, 10, 120))
            if permit is None:
                raise RuntimeError("no permit within two minutes")
        fence = 0 if permit is None else permit.fence
        print(f"inside {await count(store, opts.file, 1)} fence={fence}")
        await sleep(opts.work_ms)
        await count(store, opts.file, -1)
        if permit is not None:
            await done(permit.release())
