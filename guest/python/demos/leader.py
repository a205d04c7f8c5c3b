"""Leader election: instances campaign for one election; one leads and works, the others
watch and print each change, and campaign again when the leader goes — the Rust
``leader`` demo's flags and lines, in Python.

Flags: :mod:`leading`.
"""

import time

import flags
import latchkey
from leading import Options, now_us
from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        opts = flags.parse(Options())
        store = latchkey.Store.open("lockstore")
        lease = opts.lease_ms / 1000
        while True:
            # Watch before campaigning: a change in between is not missed.
            changes = store.leader_changes(opts.election)
            leadership = store.campaign(opts.election, opts.value, lease)
            if leadership is None:
                leader = store.leader(opts.election)
                print("follow none" if leader is None else f"follow {leader.fence} {leader.value}")
                changes.block()
                continue
            fence = leadership.fence
            print(f"lead {fence} {now_us()}")
            if not opts.ignore_lost:
                leadership.keep_alive()
            started = time.monotonic()
            while True:
                if leadership.is_lost() and not opts.ignore_lost:
                    print(f"lost {fence} {now_us()}")
                    break
                if opts.lead_ms and time.monotonic() - started >= opts.lead_ms / 1000:
                    status = leadership.resign()
                    print(f"resign {fence} {status.value} {now_us()}")
                    return
                print(f"tick {fence} {now_us()}")
                time.sleep(opts.tick_ms / 1000)
