/**
 * A leased counting semaphore: each round takes a permit of `--limit` and counts itself in
 * and out of a shared file while it holds it — the Rust `limited` demo's flags and lines,
 * in JavaScript.
 * `limited [--semaphore ID] [--limit N] [--rounds N] [--work-ms N] [--file PATH] [--no-permit]`
 */

import { Store, withLock } from '../latchkey.js';
import { args, readText, sleep, writeText } from './wasi.js';

function options() {
  const opts = { semaphore: 'limited', limit: 3, rounds: 3, workMs: 30, file: '/data/inside', permit: true };
  const argv = args();
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--semaphore': opts.semaphore = argv[++i]; break;
      case '--limit': opts.limit = Number(argv[++i]); break;
      case '--rounds': opts.rounds = Number(argv[++i]); break;
      case '--work-ms': opts.workMs = Number(argv[++i]); break;
      case '--file': opts.file = argv[++i]; break;
      case '--no-permit': opts.permit = false; break;
      default: throw new Error(`unknown flag ${argv[i]}`);
    }
  }
  return opts;
}

/** Adds `change` to the count in `file`, under a lock: the new count. */
function count(store, file, change) {
  const inside = withLock(store, 'inside-count', { leaseMs: 10_000, waitMs: 60_000 }, () => {
    const now = Number((readText(file) ?? '0').trim() || 0) + change;
    writeText(file, `${now}\n`);
    return now;
  });
  if (inside === null) throw new Error('the count stayed locked for a minute');
  return inside;
}

export const run = {
  run() {
    const opts = options();
    const store = Store.open('lockstore');
    for (let round = 0; round < opts.rounds; round++) {
      let permit = null;
      if (opts.permit) {
        permit = store.acquirePermit(opts.semaphore, opts.limit, 10_000, 120_000);
        if (permit === null) throw new Error('no permit within two minutes');
      }
      console.log(`inside ${count(store, opts.file, 1)} fence=${permit?.fence ?? 0}`);
      sleep(opts.workMs);
      count(store, opts.file, -1);
      permit?.release();
    }
  },
};
