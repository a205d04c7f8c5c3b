/**
 * Read-modify-write of a number in a shared file, under the lock, M times.
 * `counter [--iterations M] [--file PATH] [--pause-ms N] [--no-lock]`: each step reads the
 * number, pauses (as real work would), and writes it + 1. With the lock no step is lost
 * however many instances run; `--no-lock` is the control that loses updates.
 */

import { Store, withLock } from '../latchkey.js';
import { args, readText, sleep, writeText } from './wasi.js';

function options() {
  const opts = { iterations: 10, file: '/data/counter', pauseMs: 1, locked: true };
  const argv = args();
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--iterations': opts.iterations = Number(argv[++i]); break;
      case '--file': opts.file = argv[++i]; break;
      case '--pause-ms': opts.pauseMs = Number(argv[++i]); break;
      case '--no-lock': opts.locked = false; break;
      default: throw new Error(`unknown flag ${argv[i]}`);
    }
  }
  return opts;
}

function increment({ file, pauseMs }) {
  const value = Number((readText(file) ?? '0').trim() || 0);
  sleep(pauseMs);
  writeText(file, `${value + 1}\n`);
  return value + 1;
}

export const run = {
  run() {
    const opts = options();
    const store = Store.open('lockstore');
    let last = 0;
    for (let i = 0; i < opts.iterations; i++) {
      if (!opts.locked) {
        last = increment(opts);
        continue;
      }
      const wrote = withLock(store, 'counter', { leaseMs: 10_000, waitMs: 120_000 }, () =>
        increment(opts),
      );
      if (wrote === null) throw new Error('the counter stayed locked for two minutes');
      last = wrote;
    }
    console.log(`${opts.iterations} increments, last wrote ${last}`);
  },
};
