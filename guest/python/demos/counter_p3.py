"""The counter for WASI 0.3 (flags as :mod:`counting` says): each locked read-modify-write
awaits its lock, so that only this task waits for it."""

from counting import increment, options
from latchkey import aio
from wit_world import exports


class Run(exports.Run):
    async def run(self) -> None:
        opts = options()
        store = aio.Store.open("lockstore")
        last = 0
        for _ in range(opts.iterations):
            if opts.no_lock:
                last = increment(opts.file, opts.pause_ms / 1000)
                continue
            lock = await store.lock("counter", lease=10, wait=120)
            if lock is None:
                raise RuntimeError("the counter stayed locked for two minutes")
            async with lock:
                last = increment(opts.file, opts.pause_ms / 1000)
        print(f"{opts.iterations} increments, last wrote {last}")
