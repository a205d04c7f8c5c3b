/**
 * latchkey: distributed locks for JavaScript guests.
 *
 * Take a lock on a named resource, shared with every other instance of your app, from a
 * WebAssembly component built with componentize-js for the world `latchkey:guest/command`
 * (`guest/wit`). The host decides where the locks live and keeps the credentials; the guest
 * only names a store and a resource:
 *
 * ```js
 * import { Store, withLock } from './latchkey.js';
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
 * @module latchkey
 */

import { open as witOpen } from 'latchkey:lock/locks@0.2.0';

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
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_MS) {
    throw new InvalidArgumentError(
      `${name} is ${String(value)}; it must be a whole number of milliseconds from 0 to ${MAX_MS}`,
    );
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

/** A lock this instance holds. `unlock()`, or disposing of it, releases it. */
export class Lock {
  #inner;
  #lost = null;

  constructor(inner) {
    this.#inner = inner;
  }

  #lock() {
    if (this.#inner === null) throw new Error('this lock was unlocked');
    return this.#inner;
  }

  /** The resource id this lock is on. */
  get resourceId() {
    return this.#lock().resourceId();
  }

  /** The fencing token, a BigInt greater than that of every earlier grant of this resource. */
  get fence() {
    return this.#lock().fence();
  }

  /** Sets the lease to end `leaseMs` from now; false if it had already ended. */
  extend(leaseMs) {
    ms('lease-ms', leaseMs);
    return call(() => this.#lock().extend(leaseMs));
  }

  /** Has the host renew the lease before it runs out, until the lock is unlocked or the
   * instance ends (or the operator's cap). */
  keepAlive() {
    call(() => this.#lock().keepAlive());
  }

  /** Asks the store whether this grant still holds the lock (one round trip). */
  held() {
    return call(() => this.#lock().held());
  }

  /** A `wasi:io/poll` pollable, ready once the host knows the lock is lost. */
  get lost() {
    this.#lost ??= this.#lock().subscribeLost();
    return this.#lost;
  }

  /** Whether the lock is known to be lost, now, without waiting. */
  isLost() {
    return this.lost.ready();
  }

  /** Releases the lock now; returns what the store found, one of {@link UnlockStatus}. */
  unlock() {
    const status = call(() => this.#lock().unlock());
    this[Symbol.dispose]();
    return status;
  }

  /** Lets go of the handle: the host releases the lock if it is still held. */
  [Symbol.dispose]() {
    this.#lost?.[Symbol.dispose]();
    this.#lost = null;
    this.#inner?.[Symbol.dispose]();
    this.#inner = null;
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
