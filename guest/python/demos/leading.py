"""What both ``leader`` demos share (``leader.py`` for WASI 0.2, ``leader_p3.py`` for 0.3):
the flags, and the clock their lines carry.

``leader [--election ID] [--value V] [--lease-ms N] [--lead-ms N] [--tick-ms N] [--ignore-lost]``
"""

import time
from dataclasses import dataclass


@dataclass
class Options:
    election: str = "leader"
    value: str = "replica"
    lease_ms: int = 1000
    lead_ms: int = 0
    tick_ms: int = 20
    ignore_lost: bool = False


def now_us() -> int:
    """The wall clock in µs: the lines of every instance on one machine share it."""
    return time.time_ns() // 1000
