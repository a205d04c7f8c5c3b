/**
 * Leader election: instances campaign for one election; one leads and works, the others
 * watch and print each change, and campaign again when the leader goes — the Rust `leader`
 * demo's flags and lines, in JavaScript.
 * `leader [--election ID] [--value V] [--lease-ms N] [--lead-ms N] [--tick-ms N] [--ignore-lost]`
 */

import { Store } from '../latchkey.js';
import { args, monotonicMs, nowUs, sleep } from './wasi.js';

function options() {
  const opts = { election: 'leader', value: 'replica', leaseMs: 1000, leadMs: 0, tickMs: 20, ignoreLost: false };
  const argv = args();
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--election': opts.election = argv[++i]; break;
      case '--value': opts.value = argv[++i]; break;
      case '--lease-ms': opts.leaseMs = Number(argv[++i]); break;
      case '--lead-ms': opts.leadMs = Number(argv[++i]); break;
      case '--tick-ms': opts.tickMs = Number(argv[++i]); break;
      case '--ignore-lost': opts.ignoreLost = true; break;
      default: throw new Error(`unknown flag ${argv[i]}`);
    }
  }
  return opts;
}

export const run = {
  run() {
    const opts = options();
    const store = Store.open('lockstore');
    for (;;) {
      // Watch before campaigning: a change in between is not missed.
      const changes = store.leaderChanges(opts.election);
      const leadership = store.campaign(opts.election, opts.value, opts.leaseMs);
      if (leadership === null) {
        const leader = store.leader(opts.election);
        console.log(leader === null ? 'follow none' : `follow ${leader.fence} ${leader.value}`);
        changes.block();
        changes[Symbol.dispose]();
        continue;
      }
      changes[Symbol.dispose]();
      const fence = leadership.fence;
      console.log(`lead ${fence} ${nowUs()}`);
      if (!opts.ignoreLost) leadership.keepAlive();
      const started = monotonicMs();
      for (;;) {
        if (leadership.isLost() && !opts.ignoreLost) {
          console.log(`lost ${fence} ${nowUs()}`);
          leadership[Symbol.dispose]();
          break;
        }
        if (opts.leadMs > 0 && monotonicMs() - started >= opts.leadMs) {
          const status = leadership.resign();
          console.log(`resign ${fence} ${status} ${nowUs()}`);
          return;
        }
        console.log(`tick ${fence} ${nowUs()}`);
        sleep(opts.tickMs);
      }
    }
  },
};
