"""A leased counting semaphore — the Rust ``limited`` demo's flags and lines, in Python for
WASI 0.2: see :mod:`limiting`."""

import time

import latchkey
from limiting import rounds
from scripting import to_the_end
from wit_world import exports


async def sleep(ms: int) -> None:
    time.sleep(ms / 1000)


class Run(exports.Run):
    def run(self) -> None:
        to_the_end(rounds(latchkey, sleep))
