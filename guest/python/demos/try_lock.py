"""Dapr's distributed lock sample, in Python: lock ``my_file_name`` in ``lockstore`` for
60 s, or say who won.

``try_lock [--hold-ms N]``: while it holds the lock it works on the file for N ms
(default 1000), so that concurrent instances meet.
"""

import sys
import time

import latchkey
from wit_world import exports


def hold_ms() -> int:
    args = sys.argv[1:]
    return int(args[args.index("--hold-ms") + 1]) if "--hold-ms" in args else 1000


class Run(exports.Run):
    def run(self) -> None:
        store = latchkey.Store.open("lockstore")
        lock = store.try_lock("my_file_name", 60)
        if lock is None:
            print("Failed to lock my_file_name.")
            return
        with lock:
            print("Success")
            time.sleep(hold_ms() / 1000)
