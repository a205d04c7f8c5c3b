"""Read-modify-write of a number in a shared file, under the lock, M times (the flags are
:mod:`counting`'s).
"""

import latchkey
from counting import increment, options
from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        opts = options()
        store = latchkey.Store.open("lockstore")
        last = 0
        for _ in range(opts.iterations):
            if opts.no_lock:
                last = increment(opts.file, opts.pause_ms / 1000)
                continue
            lock = store.lock("counter", lease=10, wait=120)
            if lock is None:
                raise RuntimeError("the counter stayed locked for two minutes")
            with lock:
                last = increment(opts.file, opts.pause_ms / 1000)
        print(f"{opts.iterations} increments, last wrote {last}")
