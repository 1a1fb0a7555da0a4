/**
 * Shared helpers for the tsmalloc test suite: a seeded PRNG, error matchers,
 * byte patterns and resident-memory readings. Nothing here depends on timing.
 */

import assert from "node:assert/strict";
import { type Heap, HeapError, type HeapErrorCode, type HeapStats } from "../mod.ts";
import { residentSetBytes } from "./native_memory.ts";

export const KiB = 1024;
export const MiB = 1024 * 1024;

/** mulberry32: a tiny, fast, seeded 32-bit PRNG. Same seed, same sequence. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A seeded random source with the few draws the tests need. */
export class Rng {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** Integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
  /** Fisher-Yates shuffle, in place. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const t = items[i];
      items[i] = items[j];
      items[j] = t;
    }
    return items;
  }
}

/** Runs `fn` and asserts it throws a HeapError with exactly this code and address. */
export function assertHeapError(
  fn: () => unknown,
  code: HeapErrorCode,
  address: number,
  what = "",
): HeapError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, `${what}: expected HeapError ${code}, nothing was thrown`);
  assert.ok(
    caught instanceof HeapError,
    `${what}: expected HeapError ${code}, got ${String(caught)}`,
  );
  assert.equal(caught.code, code, `${what}: error code (${caught.message})`);
  assert.equal(caught.address, address, `${what}: error address (${caught.message})`);
  return caught;
}

/** Pattern byte `i` of a block tagged with `seed`. */
export function patternByte(seed: number, i: number): number {
  return (seed + Math.imul(i, 31) + (i >>> 8)) & 0xff;
}

/** Writes the pattern at offsets [0, min(8, size)) and [size - 8, size) of the block's first `size` bytes. */
export function writeEnds(heap: Heap, p: number, size: number, seed: number): void {
  if (size === 0) return;
  const b = heap.bytes(p, size);
  const head = Math.min(8, size);
  for (let i = 0; i < head; i++) b[i] = patternByte(seed, i);
  for (let i = Math.max(head, size - 8); i < size; i++) b[i] = patternByte(seed, i);
}

/**
 * Checks the pattern written by writeEnds, restricted to offsets below
 * `limit` (the prefix a realloc keeps). Returns a description of the first
 * mismatch, or null.
 */
export function endsMismatch(
  heap: Heap,
  p: number,
  size: number,
  seed: number,
  limit = size,
): string | null {
  if (size === 0 || limit === 0) return null;
  const n = Math.min(size, limit);
  const b = heap.bytes(p, n);
  const head = Math.min(8, size);
  for (let i = 0; i < Math.min(head, n); i++) {
    if (b[i] !== patternByte(seed, i)) return `byte ${i} is ${b[i]}, not ${patternByte(seed, i)}`;
  }
  for (let i = Math.max(head, size - 8); i < n; i++) {
    if (b[i] !== patternByte(seed, i)) return `byte ${i} is ${b[i]}, not ${patternByte(seed, i)}`;
  }
  return null;
}

/** Index of the first non-zero byte, or -1. */
export function firstNonZero(bytes: Uint8Array): number {
  // Compare 8 bytes at a time where the view is aligned for it.
  if (bytes.byteOffset % 8 === 0) {
    const words = Math.floor(bytes.length / 8);
    const w = new BigUint64Array(bytes.buffer, bytes.byteOffset, words);
    for (let i = 0; i < words; i++) {
      if (w[i] !== 0n) {
        for (let j = i * 8; j < i * 8 + 8; j++) if (bytes[j] !== 0) return j;
      }
    }
    for (let j = words * 8; j < bytes.length; j++) if (bytes[j] !== 0) return j;
    return -1;
  }
  for (let j = 0; j < bytes.length; j++) if (bytes[j] !== 0) return j;
  return -1;
}

/** Asserts that every one of the block's first `size` bytes is zero. */
export function assertZero(heap: Heap, p: number, size: number, what = ""): void {
  const at = firstNonZero(heap.bytes(p, size));
  assert.equal(at, -1, `${what}: byte ${at} of ${size} at 0x${p.toString(16)} is not zero`);
}

/**
 * Resident memory of this process outside the JS heap, in bytes: resident
 * pages from /proc/self/statm (see residentSetBytes) minus the JS heap's committed
 * size. Garbage left by earlier tests (hundreds of thousands of views) may be
 * collected in the middle of a measurement and shrink RSS by more than the
 * heap under test moves it; subtracting `heapTotal` keeps the GC out of the
 * figure.
 */
export function rss(): number {
  return residentSetBytes() - Deno.memoryUsage().heapTotal;
}

/** Calls heap.check() and returns heap.stats(), for "the heap is consistent" assertions. */
export function checked(heap: Heap): HeapStats {
  heap.check();
  return heap.stats();
}

/** Asserts that the heap can still allocate, write and free a few blocks of every kind. */
export function assertStillWorks(heap: Heap): void {
  for (const size of [1, 100, 20 * KiB, 300 * KiB]) {
    const p = heap.malloc(size);
    assert.notEqual(p, 0, `malloc(${size}) after the error`);
    heap.bytes(p, size).fill(0x5a);
    assert.equal(heap.bytes(p, size)[size - 1], 0x5a);
    heap.free(p);
  }
  heap.check();
}

/**
 * For `it(name, { skip: needs("run", "net") }, fn)`: the library's tests run
 * with `deno test --allow-ffi` alone; a test that needs more (a subprocess, a
 * socket, files) says which permission it lacks and is skipped, instead of failing.
 */
export function needs(...names: Deno.PermissionName[]): string | false {
  const missing = names.filter((name) => Deno.permissions.querySync({ name }).state !== "granted");
  return missing.length === 0 ? false : `needs --allow-${missing.join(", --allow-")}`;
}
