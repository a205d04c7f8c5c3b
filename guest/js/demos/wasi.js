/**
 * What the JavaScript demos need of WASI beyond latchkey: arguments, a blocking sleep and
 * a whole-file read and write. (componentize-js offers no `process` or `fs`.)
 */

import { getArguments } from 'wasi:cli/environment@0.2.12';
import { now as monotonicNow, subscribeDuration } from 'wasi:clocks/monotonic-clock@0.2.12';
import { now as wallNow } from 'wasi:clocks/wall-clock@0.2.12';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

/** The arguments after the program's name. */
export function args() {
  return getArguments().slice(1);
}

/** The wall clock in µs, a BigInt: the lines of every instance on one machine share it. */
export function nowUs() {
  const { seconds, nanoseconds } = wallNow();
  return seconds * 1_000_000n + BigInt(nanoseconds) / 1000n;
}

/** A monotonic clock in milliseconds. */
export function monotonicMs() {
  return Number(monotonicNow() / 1_000_000n);
}

/** Blocks for `ms` milliseconds. */
export function sleep(ms) {
  const timer = subscribeDuration(BigInt(Math.round(ms * 1e6)));
  timer.block();
  timer[Symbol.dispose]();
}

/** The preopened directory holding `path`, and the path within it. */
function locate(path) {
  for (const [dir, mount] of getDirectories()) {
    const prefix = mount.endsWith('/') ? mount : `${mount}/`;
    if (path.startsWith(prefix)) return [dir, path.slice(prefix.length)];
  }
  throw new Error(`no preopened directory holds ${path}`);
}

/** The text of the file at `path`, or null if there is none. */
export function readText(path) {
  const [dir, name] = locate(path);
  let file;
  try {
    file = dir.openAt({}, name, {}, { read: true });
  } catch {
    return null;
  }
  const [bytes] = file.read(1n << 20n, 0n);
  file[Symbol.dispose]();
  return new TextDecoder().decode(bytes);
}

/** Replaces the file at `path` with `text`. */
export function writeText(path, text) {
  const [dir, name] = locate(path);
  const file = dir.openAt({}, name, { create: true, truncate: true }, { write: true });
  file.write(new TextEncoder().encode(text), 0n);
  file[Symbol.dispose]();
}
