"""Read-modify-write of a number in a shared file, under the lock, M times.

``counter [--iterations M] [--file PATH] [--pause-ms N] [--no-lock]``: each step reads the
number, pauses (as real work would), and writes it + 1. With the lock no step is lost
however many instances run; ``--no-lock`` is the control that loses updates.
"""

import sys
import time
from dataclasses import dataclass

import latchkey
from wit_world import exports


@dataclass
class Options:
    iterations: int = 10
    file: str = "/data/counter"
    pause_ms: int = 1
    no_lock: bool = False


def options() -> Options:
    # By hand: argparse reaches for modules (locale) that the component does not carry.
    opts = Options()
    args = iter(sys.argv[1:])
    for flag in args:
        if flag == "--iterations":
            opts.iterations = int(next(args))
        elif flag == "--file":
            opts.file = next(args)
        elif flag == "--pause-ms":
            opts.pause_ms = int(next(args))
        elif flag == "--no-lock":
            opts.no_lock = True
        else:
            raise ValueError(f"unknown flag {flag}")
    return opts


def increment(path: str, pause: float) -> int:
    """Adds one to the number in ``path`` and returns it."""
    try:
        with open(path) as file:
            value = int(file.read().strip() or 0)
    except FileNotFoundError:
        value = 0
    time.sleep(pause)
    with open(path, "w") as file:
        file.write(f"{value + 1}\n")
    return value + 1


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
