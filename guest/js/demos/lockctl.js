/**
 * A scripted lock client, the JavaScript twin of `guest/demos/src/bin/lockctl.rs`: the same
 * steps, the same one line of output per step, so that tests drive every language alike.
 *
 * Steps (locks are kept in a stack; `extend` and `unlock` act on the top): `open NAME`,
 * `try ID LEASE_MS`, `lock ID LEASE_MS WAIT_MS`, `extend LEASE_MS`, `unlock`, `swap`,
 * `sleep MS`. A failed step prints `error KIND: MESSAGE`, after checking that the error
 * arrived as the latchkey error class of its kind.
 *
 * And steps that try the SDK's edges: `try-surrogate LEASE_MS` (a resource id of a lone
 * surrogate); `with-async ID LEASE_MS`, which holds ID through `withLock` with an async
 * callback that, after an `await`, tries ID again as a rival would: `with-async rival=held`
 * (or `granted`, if the lock was let go too soon).
 */

import {
  AccessDeniedError,
  InvalidArgumentError,
  LimitExceededError,
  LockError,
  NoSuchStoreError,
  Store,
  UnavailableError,
  withLock,
} from '../latchkey.js';
import { args, sleep } from './wasi.js';

const CLASSES = {
  'no-such-store': NoSuchStoreError,
  'invalid-argument': InvalidArgumentError,
  'access-denied': AccessDeniedError,
  'limit-exceeded': LimitExceededError,
  unavailable: UnavailableError,
};

export const run = {
  async run() {
    const steps = args();
    let store = null;
    const locks = [];
    while (steps.length > 0) {
      const step = steps.shift();
      try {
        switch (step) {
          case 'open': {
            const name = steps.shift();
            store = Store.open(name);
            console.log(`opened ${name}`);
            break;
          }
          case 'try':
          case 'lock': {
            const id = steps.shift();
            const lease = Number(steps.shift());
            const lock =
              step === 'lock'
                ? store.lock(id, lease, Number(steps.shift()))
                : store.tryLock(id, lease);
            if (lock === null) {
              console.log(`held ${id}`);
            } else {
              locks.push(lock);
              console.log(`granted ${id} fence=${lock.fence}`);
            }
            break;
          }
          case 'extend':
            console.log(`extended ${locks.at(-1).extend(Number(steps.shift()))}`);
            break;
          case 'unlock':
            console.log(`unlocked ${locks.pop().unlock()}`);
            break;
          case 'swap':
            locks.push(locks.pop(), locks.pop());
            break;
          case 'sleep':
            sleep(Number(steps.shift()));
            break;
          case 'try-surrogate': {
            const lock = store.tryLock('\ud800', Number(steps.shift()));
            console.log(lock === null ? 'held <lone surrogate>' : 'granted <lone surrogate>');
            lock?.unlock();
            break;
          }
          case 'with-async': {
            const id = steps.shift();
            const lease = Number(steps.shift());
            const rival = await withLock(store, id, { leaseMs: lease }, async () => {
              await Promise.resolve();
              const other = store.tryLock(id, lease);
              other?.unlock();
              return other === null ? 'held' : 'granted';
            });
            console.log(`with-async rival=${rival}`);
            break;
          }
          default:
            throw new Error(`unknown step ${step}`);
        }
      } catch (err) {
        if (!(err instanceof LockError)) throw err;
        if (!(err instanceof CLASSES[err.kind])) throw new Error(`${err.kind} came as ${err.name}`);
        console.log(`error ${err}`);
      }
    }
  },
};
