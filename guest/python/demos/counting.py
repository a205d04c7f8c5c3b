"""What both counters share (``counter.py`` for WASI 0.2, ``counter_p3.py`` for 0.3): the
flags, and one read-modify-write of the shared file.

``counter [--iterations M] [--file PATH] [--pause-ms N] [--no-lock]``: each step reads the
number, pauses (as real work would), and writes it + 1. With the lock no step is lost
however many instances run; ``--no-lock`` is the control that loses updates.
"""

import time
from dataclasses import dataclass

import flags


@dataclass
class Options:
    iterations: int = 10
    file: str = "/data/counter"
    pause_ms: int = 1
    no_lock: bool = False


def options() -> Options:
    return flags.parse(Options())


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
