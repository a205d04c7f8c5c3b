"""Leader election for WASI 0.3 (``latchkey.aio``) — the Rust ``leader`` demo's flags and
lines. A follower awaits ``leader_change`` from the leader it saw, so it misses no change;
a leader asks the store whether it still leads before each tick (a task awaiting ``lost``
would borrow the leadership's handle, which ``resign`` then could not let go).

``leader [--election ID] [--value V] [--lease-ms N] [--lead-ms N] [--tick-ms N] [--ignore-lost]``
"""

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
            started = time.monotonic()
            while True:
                if not opts.ignore_lost and not await leadership.held():
                    print(f"lost {fence} {now_us()}")
                    break
                if opts.lead_ms and time.monotonic() - started >= opts.lead_ms / 1000:
                    status = await leadership.resign()
                    print(f"resign {fence} {status.value} {now_us()}")
                    return
                print(f"tick {fence} {now_us()}")
                await monotonic_clock.wait_for(opts.tick_ms * 1_000_000)
