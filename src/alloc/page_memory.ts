/**
 * Which memory of an in-use page is committed: the page is counted in
 * committedBytes up to its COMMIT_END, less the OS pages given back since
 * (purged: madvise DONTNEED) while the page stayed in use. Each purged OS
 * page has its bit in the purge mask of its 64 KiB unit's descriptor
 * (PURGED_MASK, 16 bits a unit), and the page counts them (PURGED_PAGES).
 * Class pages and fit pages purge and recommit through these functions;
 * what to purge, and when, is idle.ts's.
 */

import { type Arena, roundUp, StatF64 } from "../arena/arena.ts";
import { OS_PAGE_SIZE, populatePages, releasePages } from "../os/libc.ts";
import { Desc, OsPage, purgedMaskWord } from "./page_layout.ts";

/** Whether OS page `p` (counted from the page start) of page `d` is purged. */
export function isPurged(u32: Uint32Array, d: number, p: number): boolean {
  return (u32[purgedMaskWord(d, p)] & (1 << (p & 15))) !== 0;
}

function markPurged(u32: Uint32Array, d: number, p: number, purged: boolean): void {
  const word = purgedMaskWord(d, p);
  if (purged) u32[word] |= 1 << (p & 15);
  else u32[word] &= ~(1 << (p & 15));
}

/** Whether the block at `block` of class page `d` touches a purged OS page. */
export function touchesPurged(u32: Uint32Array, d: number, block: number): boolean {
  const relative = block - u32[d + Desc.PageStart];
  const last = (relative + u32[d + Desc.BlockSize] - 1) >>> OsPage.Shift;
  for (let p = relative >>> OsPage.Shift; p <= last; p++) {
    if (isPurged(u32, d, p)) return true;
  }
  return false;
}

/** Bytes of page `d` counted in committedBytes: up to COMMIT_END, less the purged OS pages. */
export function committedExtent(u32: Uint32Array, d: number): number {
  return u32[d + Desc.CommitEnd] - u32[d + Desc.PageStart] -
    u32[d + Desc.PurgedPages] * OS_PAGE_SIZE;
}

/**
 * Gives back the OS pages in `[from, to)` (OS-page-aligned, below
 * COMMIT_END) of page `d`, with one madvise call, and marks them purged.
 * Returns the bytes newly given back (those not purged already).
 */
export function purgeRange(arena: Arena, d: number, from: number, to: number): number {
  const u32 = arena.u32;
  const start = u32[d + Desc.PageStart];
  let fresh = 0;
  for (let p = (from - start) >>> OsPage.Shift; p < (to - start) >>> OsPage.Shift; p++) {
    if (!isPurged(u32, d, p)) markPurged(u32, d, p, true), fresh++;
  }
  if (fresh === 0) return 0;
  releasePages(arena.base + from, to - from);
  arena.f64[StatF64.MadviseCalls]++;
  u32[d + Desc.PurgedPages] += fresh;
  arena.f64[StatF64.PurgedBytes] += fresh * OS_PAGE_SIZE;
  arena.addCommitted(-fresh * OS_PAGE_SIZE);
  return fresh * OS_PAGE_SIZE;
}

/**
 * Forgets the purge marks of the OS pages of page `d` that `[from, to)`
 * touches; returns how many there were. The caller counts them as committed
 * again (recommit) or drops them with the memory above a new COMMIT_END.
 */
export function unpurgeRange(arena: Arena, d: number, from: number, to: number): number {
  const u32 = arena.u32;
  if (u32[d + Desc.PurgedPages] === 0) return 0;
  const start = u32[d + Desc.PageStart];
  let count = 0;
  for (let p = (from - start) >>> OsPage.Shift; p <= (to - 1 - start) >>> OsPage.Shift; p++) {
    if (isPurged(u32, d, p)) markPurged(u32, d, p, false), count++;
  }
  u32[d + Desc.PurgedPages] -= count;
  arena.f64[StatF64.PurgedBytes] -= count * OS_PAGE_SIZE;
  return count;
}

/**
 * Counts `count` OS pages of `[from, to)` of page `d`, unmarked by
 * unpurgeRange, as committed again, and faults the range in with one call
 * when more than one is written at once.
 */
export function recommit(arena: Arena, d: number, from: number, to: number, count: number): void {
  if (count === 0) return;
  arena.addCommitted(count * OS_PAGE_SIZE);
  if (count === 1) return;
  const start = arena.u32[d + Desc.PageStart];
  const first = start + (((from - start) >>> OsPage.Shift) << OsPage.Shift);
  if (populatePages(arena.base + first, roundUp(to, OS_PAGE_SIZE) - first)) {
    arena.f64[StatF64.MadviseCalls]++;
  }
}

/** Forgets every purge mark of page `d` (its memory is released whole, or reformatted). */
export function clearPurged(arena: Arena, d: number): void {
  const u32 = arena.u32;
  for (let unit = 0; unit < u32[d + Desc.Units]; unit++) {
    u32[d + unit * Desc.Words + Desc.PurgedMask] = 0;
  }
  arena.f64[StatF64.PurgedBytes] -= u32[d + Desc.PurgedPages] * OS_PAGE_SIZE;
  u32[d + Desc.PurgedPages] = 0;
  u32[d + Desc.Unlisted] = 0;
  u32[d + Desc.ScanFrom] = 0;
}
