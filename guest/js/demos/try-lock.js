/**
 * Dapr's distributed lock sample, in JavaScript: lock `my_file_name` in `lockstore` for
 * 60 s, or say who won. `try-lock [--hold-ms N]`: while it holds the lock it works on the
 * file for N ms (default 1000), so that concurrent instances meet.
 */

import { Store, withLock } from '../latchkey.js';
import { args, sleep } from './wasi.js';

function holdMs() {
  const argv = args();
  const at = argv.indexOf('--hold-ms');
  return at >= 0 ? Number(argv[at + 1]) : 1000;
}

export const run = {
  run() {
    const store = Store.open('lockstore');
    const ran = withLock(store, 'my_file_name', { leaseMs: 60_000 }, () => {
      console.log('Success');
      sleep(holdMs());
      return true;
    });
    if (ran === null) console.log('Failed to lock my_file_name.');
  },
};
