"""Leader election for WASI 0.3 (``latchkey.aio``) — the Rust ``leader`` demo's flags and
lines. A follower awaits ``leader_change`` from the leader it saw, so it misses no change;
a leader watches its own loss in a task beside its ticks.

``leader [--election ID] [--value V] [--lease-ms N] [--lead-ms N] [--tick-ms N] [--ignore-lost]``
"""

import asyncio
import time

import flags
from latchkey import aio
from leading import Options, now_us
from wit_world import exports
from wit_world.imports import monotonic_clock


class Run(exports.Run):
    async def run(self) -> None:
        opts = flags.parse(Options())
        store = aio.Store.open("lockstore")
        lease = opts.lease_ms / 1000
        seen = None
        while True:
            leadership = await store.campaign(opts.election, opts.value, lease)
            if leadership is None:
                leader = await store.leader(opts.election)
                print("follow none" if leader is None else f"follow {leader.fence} {leader.value}")
                seen = None if leader is None else leader.fence
                await store.leader_change(opts.election, seen)
                continue
            fence = leadership.fence
            print(f"lead {fence} {now_us()}")
            if not opts.ignore_lost:
                leadership.keep_alive()
            lost = asyncio.ensure_future(leadership.lost())
            started = time.monotonic()
            while True:
                if lost.done() and not opts.ignore_lost:
                    print(f"lost {fence} {now_us()}")
                    break
                if opts.lead_ms and time.monotonic() - started >= opts.lead_ms / 1000:
                    # Resigning is a loss: the watching task ends with it.
                    status = await leadership.resign()
                    print(f"resign {fence} {status.value} {now_us()}")
                    return
                print(f"tick {fence} {now_us()}")
                await monotonic_clock.wait_for(opts.tick_ms * 1_000_000)
