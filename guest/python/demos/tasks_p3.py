"""Three tasks of one WASI 0.3 instance, one lock — the Python twin of
``guest/demos/tasks-p3``: ``latchkey run tasks.wasm``.

The writer takes the lock ``ledger`` and works for 300 ms; the reader asks for the same
lock and waits for it; the ticker takes no lock and ticks every 50 ms. Each line says when
it happened, in ms from the start. The ticks between the writer's grant and the reader's
show that a wait suspends the waiting task alone (``asyncio.gather`` on componentize-py's
event loop, each host call a component-model subtask).
"""

import asyncio
import time

from latchkey import aio
from wit_world import exports
from wit_world.imports import monotonic_clock


async def sleep(ms: int) -> None:
    # componentize-py's event loop has no timers (`asyncio.sleep`): WASI 0.3's clock does it.
    await monotonic_clock.wait_for(ms * 1_000_000)


class Run(exports.Run):
    async def run(self) -> None:
        # Read here, not at import: componentize-py runs the imports when it builds.
        start = time.monotonic()

        def say(who: str, what: str) -> None:
            print(f"{round((time.monotonic() - start) * 1000):4} {who}: {what}")

        store = aio.Store.open("lockstore")

        async def writer() -> None:
            lock = await store.try_lock("ledger", 10)
            if lock is None:
                return say("writer", "ledger is taken")
            say("writer", f"granted ledger fence {lock.fence}")
            await sleep(300)
            say("writer", f"unlocked {(await lock.unlock()).value}")

        async def reader() -> None:
            say("reader", "waiting for ledger")
            asked = time.monotonic()
            lock = await store.lock("ledger", lease=10, wait=5)
            if lock is None:
                return say("reader", "ledger stayed taken")
            waited = round((time.monotonic() - asked) * 1000)
            say("reader", f"granted ledger fence {lock.fence} after {waited} ms")

        async def ticker() -> None:
            for tick in range(1, 9):
                await sleep(50)
                say("ticker", f"tick {tick}")

        await asyncio.gather(writer(), reader(), ticker())
