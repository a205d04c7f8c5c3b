/**
 * latchkey: distributed locks for JavaScript guests.
 *
 * Take a lock on a named resource, shared with every other instance of your app, from a
 * WebAssembly component built with componentize-js for the world `latchkey:guest/command`,
 * whose WIT the npm package `latchkey-guest` carries under `wit/`. The host decides where the
 * locks live and keeps the credentials; the guest only names a store and a resource (by the
 * SDK's path: componentize-js does not resolve bare package names):
 *
 * ```js
 * import { Store, withLock } from './node_modules/latchkey-guest/latchkey.js';
 *
 * const store = Store.open('lockstore');
 * const ran = withLock(store, 'my_file_name', { leaseMs: 60_000 }, (lock) => {
 *   writeFile(lock.fence);          // a BigInt; the resource refuses older fences
 * });
 * if (ran === null) console.log('Failed to lock my_file_name.');
 * ```
 *
 * Times are whole milliseconds, from 0 to 4294967295 (the WIT's `u32`); anything else — a
 * fraction, a negative, NaN, a number past that range — throws {@link InvalidArgumentError}
 * before the host is asked, as do names and resource ids that are not well-formed text (a
 * lone surrogate would otherwise reach the host as U+FFFD, and `'\ud800'` and `'\ufffd'`
 * would be one lock). A call that fails throws a {@link LockError} subclass, one per kind
 * of failure; a lock held by someone else is not an error but `null`. Types: see
 * `latchkey.d.ts`.
 *
 * Beyond the mutex (`latchkey:lock@0.2.1`): a leased counting semaphore —
 * `store.acquirePermit(id, limit, leaseMs, waitMs)` gives a {@link Permit} while fewer than
 * `limit` are held — and leader election — `store.campaign(id, value, leaseMs, waitMs)`
 * gives a {@link Leadership}, `store.leader(id)` says who leads, and
 * `store.leaderChanges(id)` is a pollable that is ready when that changes.
 *
 * @module latchkey
 */

import { open as witOpen } from 'latchkey:lock/locks@0.2.1';

/** Why a lock call failed; `kind` is the WIT error's name, such as `invalid-argument`. */
export class LockError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = new.target.name;
    this.kind = kind;
  }

  toString() {
    return `${this.kind}: ${this.message}`;
  }
}

/** No lock store of this name is configured for this app. */
export class NoSuchStoreError extends LockError {
  constructor(message) {
    super('no-such-store', message);
  }
}

/** An argument is empty, too long or out of range; the message says which and why. */
export class InvalidArgumentError extends LockError {
  constructor(message) {
    super('invalid-argument', message);
  }
}

/** The host's policy does not let this app lock this resource id. */
export class AccessDeniedError extends LockError {
  constructor(message) {
    super('access-denied', message);
  }
}

/** This instance already holds as many locks as the host allows. */
export class LimitExceededError extends LockError {
  constructor(message) {
    super('limit-exceeded', message);
  }
}

/** The store could not be reached or did not answer in time. */
export class UnavailableError extends LockError {
  constructor(message) {
    super('unavailable', message);
  }
}

const ERRORS = {
  'no-such-store': NoSuchStoreError,
  'invalid-argument': InvalidArgumentError,
  'access-denied': AccessDeniedError,
  'limit-exceeded': LimitExceededError,
  unavailable: UnavailableError,
};

/** Calls a binding, turning the `ComponentError` it throws into the matching LockError. */
function call(binding) {
  try {
    return binding();
  } catch (err) {
    const payload = err?.payload;
    if (payload && payload.tag in ERRORS) {
      throw new ERRORS[payload.tag](payload.val);
    }
    throw err;
  }
}

/** The largest number of milliseconds the host takes (the WIT's `u32`). */
const MAX_MS = 0xffff_ffff;

/** `value` as milliseconds for the host, checked: a whole number from 0 to {@link MAX_MS}. */
function ms(name, value) {
  return u32(name, value, 'a whole number of milliseconds');
}

/** `value` checked to be what the WIT's `u32` takes: `what`, from 0 to {@link MAX_MS}. */
function u32(name, value, what) {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_MS) {
    throw new InvalidArgumentError(`${name} is ${String(value)}; it must be ${what} from 0 to ${MAX_MS}`);
  }
  return value;
}

/** `value` as text for the host, checked: a string of well-formed UTF-16, no lone surrogate. */
function text(name, value) {
  if (typeof value !== 'string') {
    throw new InvalidArgumentError(`${name} must be a string, not ${typeof value}`);
  }
  if (!value.isWellFormed()) {
    throw new InvalidArgumentError(`${name} holds a lone surrogate, which is not text`);
  }
  return value;
}

/** What an unlock found (the statuses of Dapr's Unlock). */
export const UnlockStatus = Object.freeze({
  /** The lock was still ours; now it is free. */
  SUCCESS: 'success',
  /** The lease had ended and nobody holds the lock. */
  LOCK_DOES_NOT_EXIST: 'lock-does-not-exist',
  /** The lease had ended and someone else holds the lock now. */
  LOCK_BELONGS_TO_OTHERS: 'lock-belongs-to-others',
});

/** What a lock, a permit and a leadership share: a grant with a lease and a fence. */
class Grant {
  #inner;
  #lost = null;

  constructor(inner) {
    this.#inner = inner;
  }

  #grant() {
    if (this.#inner === null) throw new Error(`this ${this.constructor.name.toLowerCase()} was let go`);
    return this.#inner;
  }

  /** The binding's `method`, called on the grant: for the subclasses' own calls. */
  _call(method) {
    return this.#grant()[method]();
  }

  /** The fencing token, a BigInt greater than that of every earlier grant of the same lock. */
  get fence() {
    return this.#grant().fence();
  }

  /** Sets the lease to end `leaseMs` from now; false if it had already ended. */
  extend(leaseMs) {
    ms('lease-ms', leaseMs);
    return call(() => this.#grant().extend(leaseMs));
  }

  /** Has the host renew the lease before it runs out, until the grant is let go or the
   * instance ends (or the operator's cap). */
  keepAlive() {
    call(() => this.#grant().keepAlive());
  }

  /** Asks the store whether this grant still holds (one round trip). */
  held() {
    return call(() => this.#grant().held());
  }

  /** A `wasi:io/poll` pollable, ready once the host knows the grant is lost. */
  get lost() {
    this.#lost ??= this.#grant().subscribeLost();
    return this.#lost;
  }

  /** Whether the grant is known to be lost, now, without waiting. */
  isLost() {
    return this.lost.ready();
  }

  /** Lets the grant go by the binding's `method` (`unlock`, `release`, `resign`); returns
   * what the store found, one of {@link UnlockStatus}. */
  _letGo(method) {
    const status = call(() => this.#grant()[method]());
    this[Symbol.dispose]();
    return status;
  }

  /** Lets go of the handle: the host releases the grant if it still holds. */
  [Symbol.dispose]() {
    this.#lost?.[Symbol.dispose]();
    this.#lost = null;
    this.#inner?.[Symbol.dispose]();
    this.#inner = null;
  }
}

/** A lock this instance holds. `unlock()`, or disposing of it, releases it. */
export class Lock extends Grant {
  /** The resource id this lock is on. */
  get resourceId() {
    return this._call('resourceId');
  }

  /** Releases the lock now; returns what the store found, one of {@link UnlockStatus}. */
  unlock() {
    return this._letGo('unlock');
  }
}

/** A permit of a semaphore: up to its limit hold at once. `release()`, or disposing of it,
 * releases it. */
export class Permit extends Grant {
  /** The semaphore this permit is of. */
  get semaphoreId() {
    return this._call('semaphoreId');
  }

  /** Releases the permit now; returns what the store found, one of {@link UnlockStatus}. */
  release() {
    return this._letGo('release');
  }
}

/** The leadership of an election. `resign()`, or disposing of it, steps down. */
export class Leadership extends Grant {
  /** The election this leadership is of. */
  get electionId() {
    return this._call('electionId');
  }

  /** Steps down now, so that a waiting campaign wins at once. */
  resign() {
    return this._letGo('resign');
  }
}

/** A lock store the host configured for this app. */
export class Store {
  #inner;

  constructor(inner) {
    this.#inner = inner;
  }

  /** Opens the store called `name`. */
  static open(name) {
    text('name', name);
    return new Store(call(() => witOpen(name)));
  }

  /** Takes the lock on `resourceId` for `leaseMs` if nobody holds it; null if someone does. */
  tryLock(resourceId, leaseMs) {
    text('resource-id', resourceId);
    ms('lease-ms', leaseMs);
    const inner = call(() => this.#inner.tryLock(resourceId, leaseMs));
    return inner ? new Lock(inner) : null;
  }

  /** Takes the lock, waiting up to `waitMs` for its holder to release it or for the
   * holder's lease to end; null if it is still held when the wait ends. */
  lock(resourceId, leaseMs, waitMs) {
    text('resource-id', resourceId);
    ms('lease-ms', leaseMs);
    ms('wait-ms', waitMs);
    const inner = call(() => this.#inner.lock(resourceId, leaseMs, waitMs));
    return inner ? new Lock(inner) : null;
  }

  /** Takes a permit of the semaphore `semaphoreId` for `leaseMs` if fewer than `limit` of
   * its permits are held, waiting up to `waitMs` (default 0) for one to be released or to
   * expire; null if all are still held then. */
  acquirePermit(semaphoreId, limit, leaseMs, waitMs = 0) {
    text('semaphore-id', semaphoreId);
    u32('limit', limit, 'a whole number');
    ms('lease-ms', leaseMs);
    ms('wait-ms', waitMs);
    const inner = call(() => this.#inner.acquirePermit(semaphoreId, limit, leaseMs, waitMs));
    return inner ? new Permit(inner) : null;
  }

  /** Campaigns to lead the election `electionId`, publishing `value`: leads now if nobody
   * does, or once the leader resigns or its lease ends within `waitMs` (default 0); null if
   * another still leads then. */
  campaign(electionId, value, leaseMs, waitMs = 0) {
    text('election-id', electionId);
    text('value', value);
    ms('lease-ms', leaseMs);
    ms('wait-ms', waitMs);
    const inner = call(() => this.#inner.campaign(electionId, value, leaseMs, waitMs));
    return inner ? new Leadership(inner) : null;
  }

  /** Who leads the election now — `{ value, fence, leaseLeftMs }` — or null if nobody. */
  leader(electionId) {
    text('election-id', electionId);
    return call(() => this.#inner.leader(electionId)) ?? null;
  }

  /** A `wasi:io/poll` pollable, ready when the election has another leader than now (or
   * the store could not be asked): read `leader` then, and take a new one to watch on. */
  leaderChanges(electionId) {
    text('election-id', electionId);
    return call(() => this.#inner.subscribeLeaderChange(electionId));
  }

  [Symbol.dispose]() {
    this.#inner?.[Symbol.dispose]();
    this.#inner = null;
  }
}

/**
 * Runs `fn(lock)` holding the lock on `resourceId`, and unlocks it afterwards, also when
 * `fn` throws. Waits up to `waitMs` (default 0: a try). Returns what `fn` returns, or null
 * if the lock was not had.
 *
 * An async `fn` (one that returns a promise) keeps the lock until its promise settles:
 * `withLock` then returns a promise of what it resolves to — await it.
 */
export function withLock(store, resourceId, { leaseMs, waitMs = 0 }, fn) {
  const lock =
    waitMs > 0 ? store.lock(resourceId, leaseMs, waitMs) : store.tryLock(resourceId, leaseMs);
  if (lock === null) return null;
  let result;
  try {
    result = fn(lock);
  } catch (err) {
    lock[Symbol.dispose]();
    throw err;
  }
  if (typeof result?.then === 'function') {
    // Released when the work is done, not when its promise is made.
    return Promise.resolve(result).finally(() => lock[Symbol.dispose]());
  }
  lock[Symbol.dispose]();
  return result;
}
