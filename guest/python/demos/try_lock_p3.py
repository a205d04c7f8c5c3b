"""Dapr's distributed lock sample for WASI 0.3, in Python: lock ``my_file_name`` in
``lockstore`` for 60 s, or say who won. ``try_lock [--hold-ms N]`` holds it N ms (default
1000), so that concurrent instances meet."""

import sys

from latchkey import aio
from wit_world import exports
from wit_world.imports import monotonic_clock


def hold_ms() -> int:
    args = sys.argv[1:]
    return int(args[args.index("--hold-ms") + 1]) if "--hold-ms" in args else 1000


class Run(exports.Run):
    async def run(self) -> None:
        store = aio.Store.open("lockstore")
        lock = await store.try_lock("my_file_name", 60)
        if lock is None:
            print("Failed to lock my_file_name.")
            return
        async with lock:
            print("Success")
            await monotonic_clock.wait_for(hold_ms() * 1_000_000)
