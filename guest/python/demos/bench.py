"""The guest side of benchmark B7, the Python twin of ``guest/demos/src/bin/bench.rs``:
``bench pairs N ID`` makes N uncontended try-lock + unlock pairs on ID and prints the
latency of each, in ns, one per line, after the loop."""

import sys
import time

import latchkey
from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        _, count, resource_id = sys.argv[1:4]
        store = latchkey.Store.open("lockstore")
        latencies = []
        for _ in range(int(count)):
            started = time.perf_counter_ns()
            lock = store.try_lock(resource_id, 10)
            lock.unlock()
            latencies.append(time.perf_counter_ns() - started)
        print("\n".join(map(str, latencies)))
