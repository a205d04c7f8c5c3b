"""A leased counting semaphore for WASI 0.3 (``latchkey.aio``): see :mod:`limiting`. Only
this task waits for a permit."""

from latchkey import aio
from limiting import rounds
from wit_world import exports
from wit_world.imports import monotonic_clock


async def sleep(ms: int) -> None:
    # componentize-py's event loop has no timers: WASI 0.3's clock does it.
    await monotonic_clock.wait_for(ms * 1_000_000)


class Run(exports.Run):
    async def run(self) -> None:
        await rounds(aio, sleep)
