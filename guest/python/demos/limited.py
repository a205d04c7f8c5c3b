"""A leased counting semaphore: each round takes a permit of ``--limit`` and counts itself
in and out of a shared file while it holds it — the Rust ``limited`` demo's flags and lines,
in Python.

``limited [--semaphore ID] [--limit N] [--rounds N] [--work-ms N] [--file PATH] [--no-permit]``
"""

import time
from dataclasses import dataclass

import flags
import latchkey
from wit_world import exports


@dataclass
class Options:
    semaphore: str = "limited"
    limit: int = 3
    rounds: int = 3
    work_ms: int = 30
    file: str = "/data/inside"
    no_permit: bool = False


def options() -> Options:
    return flags.parse(Options())


def count(store: latchkey.Store, path: str, change: int) -> int:
    """Adds ``change`` to the count in ``path``, under a lock: the new count."""
    lock = store.lock("inside-count", lease=10, wait=60)
    if lock is None:
        raise RuntimeError("the count stayed locked for a minute")
    with lock:
        try:
            with open(path) as f:
                inside = int(f.read().strip() or 0)
        except FileNotFoundError:
            inside = 0
        inside += change
        with open(path, "w") as f:
            f.write(f"{inside}\n")
    return inside


class Run(exports.Run):
    def run(self) -> None:
        opts = options()
        store = latchkey.Store.open("lockstore")
        for _ in range(opts.rounds):
            permit = None
            if not opts.no_permit:
                permit = store.acquire_permit(opts.semaphore, opts.limit, lease=10, wait=120)
                if permit is None:
                    raise RuntimeError("no permit within two minutes")
            fence = 0 if permit is None else permit.fence
            print(f"inside {count(store, opts.file, 1)} fence={fence}")
            time.sleep(opts.work_ms / 1000)
            count(store, opts.file, -1)
            if permit is not None:
                permit.release()
