// Types of latchkey.js, the JavaScript guest SDK of latchkey:lock@0.2.1.

import type { Pollable } from 'wasi:io/poll@0.2.12';

export type ErrorKind =
  | 'no-such-store'
  | 'invalid-argument'
  | 'access-denied'
  | 'limit-exceeded'
  | 'unavailable';

export class LockError extends Error {
  readonly kind: ErrorKind;
}
export class NoSuchStoreError extends LockError {}
export class InvalidArgumentError extends LockError {}
export class AccessDeniedError extends LockError {}
export class LimitExceededError extends LockError {}
export class UnavailableError extends LockError {}

export type UnlockStatusValue = 'success' | 'lock-does-not-exist' | 'lock-belongs-to-others';
export const UnlockStatus: Readonly<{
  SUCCESS: 'success';
  LOCK_DOES_NOT_EXIST: 'lock-does-not-exist';
  LOCK_BELONGS_TO_OTHERS: 'lock-belongs-to-others';
}>;

declare class Grant implements Disposable {
  readonly fence: bigint;
  readonly lost: Pollable;
  extend(leaseMs: number): boolean;
  keepAlive(): void;
  held(): boolean;
  isLost(): boolean;
  [Symbol.dispose](): void;
}

export class Lock extends Grant {
  readonly resourceId: string;
  unlock(): UnlockStatusValue;
}

export class Permit extends Grant {
  readonly semaphoreId: string;
  release(): UnlockStatusValue;
}

export class Leadership extends Grant {
  readonly electionId: string;
  resign(): UnlockStatusValue;
}

export interface Leader {
  value: string;
  fence: bigint;
  leaseLeftMs: number;
}

export class Store implements Disposable {
  static open(name: string): Store;
  tryLock(resourceId: string, leaseMs: number): Lock | null;
  lock(resourceId: string, leaseMs: number, waitMs: number): Lock | null;
  acquirePermit(semaphoreId: string, limit: number, leaseMs: number, waitMs?: number): Permit | null;
  campaign(electionId: string, value: string, leaseMs: number, waitMs?: number): Leadership | null;
  leader(electionId: string): Leader | null;
  leaderChanges(electionId: string): Pollable;
  [Symbol.dispose](): void;
}

/** Runs `fn` holding the lock; an async `fn` keeps it until its promise settles, and
 * `withLock` then returns a promise. Times are whole milliseconds, 0 to 4294967295. */
export function withLock<T>(
  store: Store,
  resourceId: string,
  options: { leaseMs: number; waitMs?: number },
  fn: (lock: Lock) => Promise<T>,
): Promise<T> | null;
export function withLock<T>(
  store: Store,
  resourceId: string,
  options: { leaseMs: number; waitMs?: number },
  fn: (lock: Lock) => T,
): T | null;
