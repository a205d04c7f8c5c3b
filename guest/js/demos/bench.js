/**
 * The guest side of benchmark B7, the JavaScript twin of `guest/demos/src/bin/bench.rs`:
 * `bench pairs N ID` makes N uncontended try-lock + unlock pairs on ID and prints the
 * latency of each, in ns, one per line, after the loop.
 */

import { now } from 'wasi:clocks/monotonic-clock@0.2.12';
import { Store } from '../latchkey.js';
import { args } from './wasi.js';

export const run = {
  run() {
    const [, count, id] = args();
    const store = Store.open('lockstore');
    const latencies = [];
    for (let i = 0; i < Number(count); i++) {
      const started = now();
      store.tryLock(id, 10_000).unlock();
      latencies.push(now() - started);
    }
    console.log(latencies.join('\n'));
  },
};
