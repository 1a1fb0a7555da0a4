/**
 * The page source: where empty pages come from and go to. Class pages
 * (class_pages.ts) and fit pages (fit.ts) take pages here and give them back
 * when they empty; everything here happens under a shared heap's global
 * lock, since every Worker's pages come from the one arena.
 *
 * An empty page is, from most to least ready for reuse:
 *  - RETAINED: still committed, on its kind's retained list (most recent
 *    first, the oldest released first when retained bytes pass the heap's
 *    `retainBytes`, or when the footprint must stay under `limitBytes`);
 *  - RELEASED: given back with madvise(MADV_DONTNEED), on its kind's stack;
 *    reads zero when reused;
 *  - never carved: above the arena's top unit.
 * A page is taken from the first of these that has one of the kind wanted
 * (small: one unit, medium: sixteen). When none has, a retained medium page
 * is split into sixteen small ones; once the arena is carved to the top,
 * released pages of the other kind are split or merged. A page with OS
 * pages purged while in use (page_memory.ts) is released, never retained.
 *
 * Secure mode keeps the last OS page of every page inaccessible (a guard
 * page; a medium page's fifteen inner guards come and go as it is merged and
 * split).
 *
 * The fit page fit.ts keeps when it empties (HeaderU32.FitEmpty, on no list) is
 * the last resort: when no page can be had otherwise, or limitBytes leaves
 * no room for a page or a large block, it is retired (and may be taken
 * again at once).
 */

import { type Arena, HeaderU32, MEDIUM_UNITS, StatF64, UNIT_SIZE } from "../arena/arena.ts";
import { lockGlobal, unlockGlobal } from "../arena/owners.ts";
import {
  OS_PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  protectMemory,
  releasePages,
} from "../os/libc.ts";
import { BitmapWords, Desc, isDescriptor, PageState, setState, Tables } from "./page_layout.ts";
import { popStack, pushFront, pushStack, unlink } from "./page_list.ts";
import { clearPurged, committedExtent } from "./page_memory.ts";
import type { Fail } from "../errors.ts";

/** The header words of the retained list of medium or small pages: its head and its tail. */
function retainedList(medium: boolean): [number, number] {
  return medium
    ? [HeaderU32.RetainedMediumHead, HeaderU32.RetainedMediumTail]
    : [HeaderU32.RetainedSmallHead, HeaderU32.RetainedSmallTail];
}

export class PageSource {
  private readonly arena: Arena;
  private readonly u32: Uint32Array;
  /** Owner slot of the Worker this source serves (0: a heap that is not shared: no lock). */
  private readonly owner: number;
  /** Secure mode: pages have guard pages. */
  private readonly guarded: boolean;

  constructor(arena: Arena, owner: number) {
    this.arena = arena;
    this.u32 = arena.u32;
    this.owner = owner;
    this.guarded = arena.u32[HeaderU32.SecureKey] !== 0;
  }

  /** Shared heaps: takes the global lock (re-entrant); nothing for a private heap. */
  lock(): void {
    if (this.owner !== 0) lockGlobal(this.arena, this.owner);
  }

  unlock(): void {
    if (this.owner !== 0) unlockGlobal(this.arena);
  }

  /**
   * An empty page of the kind asked for, off every list, counted as in use;
   * 0 if none can be had, or if it would take the footprint past limitBytes
   * (see Arena.footprint) even after retained pages go back to the OS. Its
   * descriptor still needs formatting (formatPage).
   */
  take(medium: boolean): number {
    this.lock();
    try {
      let d = this.find(medium);
      if (d === 0 && this.retireKeptFitPage()) d = this.find(medium);
      return d;
    } finally {
      this.unlock();
    }
  }

  private find(medium: boolean): number {
    const units = medium ? MEDIUM_UNITS : 1;
    const bytes = units * UNIT_SIZE;
    if (!this.makeRoomUnderLimit(bytes, units)) return 0;
    let d = this.takeRetained(medium);
    if (d === 0) {
      d = popStack(this.u32, medium ? HeaderU32.ReleasedMediumHead : HeaderU32.ReleasedSmallHead);
    }
    if (d === 0 && !medium) d = this.splitRetainedMedium();
    if (d === 0) d = this.carve(units);
    if (d === 0) d = this.convertReleased(medium);
    if (d !== 0) this.arena.f64[StatF64.InUsePageBytes] += bytes;
    return d;
  }

  /**
   * Whether the footprint may grow by `bytes` (and the metadata of `units`
   * carved units) under limitBytes, once retained pages, oldest first, have
   * gone back to the OS as far as that takes, and then the empty fit page
   * fit.ts keeps (retired, it counts only what it has committed).
   */
  makeRoomUnderLimit(bytes: number, units = 0): boolean {
    if (this.arena.withinLimit(bytes, units)) return true;
    this.lock();
    try {
      while (!this.arena.withinLimit(bytes, units)) {
        if (this.releaseOldestRetained() < 0 && !this.retireKeptFitPage()) return false;
      }
      return true;
    } finally {
      this.unlock();
    }
  }

  /** An in-use page emptied, off every list: it is retained (within retainBytes) or released. */
  retire(d: number): void {
    const u32 = this.u32;
    const f64 = this.arena.f64;
    this.lock();
    try {
      this.leavesUse(d);
      if (u32[d + Desc.PurgedPages] !== 0) {
        // Partly given back already: reused, its holes would fault in uncounted.
        this.release(d);
      } else {
        this.pushRetained(d);
        while (f64[StatF64.RetainedBytes] > f64[StatF64.RetainLimit]) this.releaseOldestRetained();
      }
    } finally {
      this.unlock();
    }
  }

  /** trim(): an in-use page emptied, off every list, goes back to the OS at once; returns the bytes. */
  releaseEmpty(d: number): number {
    this.lock();
    try {
      this.leavesUse(d);
      return this.release(d);
    } finally {
      this.unlock();
    }
  }

  /**
   * No page to be had otherwise: the empty fit page fit.ts keeps for its
   * next block, if any, retires (and may be taken at once); false if none.
   */
  private retireKeptFitPage(): boolean {
    const kept = this.u32[HeaderU32.FitEmpty];
    if (kept === 0) return false;
    this.u32[HeaderU32.FitEmpty] = 0;
    this.retire(kept);
    return true;
  }

  /** trim(): releases the empty fit page fit.ts keeps, if any; returns the bytes. */
  releaseKeptFitPage(): number {
    const kept = this.u32[HeaderU32.FitEmpty];
    if (kept === 0) return 0;
    this.u32[HeaderU32.FitEmpty] = 0;
    return this.releaseEmpty(kept);
  }

  /** Releases the oldest retained page, medium before small as they hold more; -1 if none. */
  releaseOldestRetained(): number {
    this.lock(); // before the lists are read: another Worker may be taking that page
    try {
      const oldest = this.u32[HeaderU32.RetainedMediumTail] ||
        this.u32[HeaderU32.RetainedSmallTail];
      if (oldest === 0) return -1;
      this.unlinkRetained(oldest);
      return this.release(oldest);
    } finally {
      this.unlock();
    }
  }

  /** Page `d` is no longer in use (see Arena.footprint). */
  private leavesUse(d: number): void {
    this.arena.f64[StatF64.InUsePageBytes] -= this.u32[d + Desc.Units] * UNIT_SIZE;
  }

  private pushRetained(d: number): void {
    const [head, tail] = retainedList(this.u32[d + Desc.Units] === MEDIUM_UNITS);
    setState(this.u32, d, PageState.Retained);
    pushFront(this.u32, head, d, tail);
    this.arena.f64[StatF64.RetainedBytes] += committedExtent(this.u32, d);
  }

  private takeRetained(medium: boolean): number {
    const d = this.u32[retainedList(medium)[0]];
    if (d !== 0) this.unlinkRetained(d);
    return d;
  }

  private unlinkRetained(d: number): void {
    const [head, tail] = retainedList(this.u32[d + Desc.Units] === MEDIUM_UNITS);
    unlink(this.u32, head, d, tail);
    this.arena.f64[StatF64.RetainedBytes] -= committedExtent(this.u32, d);
  }

  /** Gives an off-list empty page's memory back to the OS; returns the bytes released. */
  private release(d: number): number {
    const u32 = this.u32;
    const arena = this.arena;
    const start = u32[d + Desc.PageStart];
    const extent = committedExtent(u32, d);
    if (extent > 0) {
      // Up to COMMIT_END, over any purged OS pages, so that all of it reads zero.
      releasePages(arena.base + start, u32[d + Desc.CommitEnd] - start);
      arena.f64[StatF64.MadviseCalls]++;
      arena.addCommitted(-extent);
    }
    u32[d + Desc.CommitEnd] = start;
    setState(u32, d, PageState.Released);
    clearPurged(arena, d);
    pushStack(
      u32,
      u32[d + Desc.Units] === MEDIUM_UNITS
        ? HeaderU32.ReleasedMediumHead
        : HeaderU32.ReleasedSmallHead,
      d,
    );
    return extent;
  }

  /**
   * The arena is carved to the top: make a page of the wanted kind out of
   * released pages of the other kind, releasing retained pages first. A
   * medium page splits into 16 small ones; 16 adjacent released small pages
   * merge into a medium one. Returns the descriptor, or 0.
   */
  private convertReleased(medium: boolean): number {
    const u32 = this.u32;
    for (let r = this.takeRetained(!medium); r !== 0; r = this.takeRetained(!medium)) {
      this.release(r);
    }
    if (!medium) {
      const d = popStack(u32, HeaderU32.ReleasedMediumHead);
      if (d === 0) return 0;
      const first = (d - Tables.DescriptorsU32) / Desc.Words;
      if (this.guarded && !this.setGuards(first, PROT_NONE)) {
        // Out of map entries: the medium page stays whole (secure pages need their guards).
        pushStack(u32, HeaderU32.ReleasedMediumHead, d);
        return 0;
      }
      this.splitMedium(d);
      for (let i = MEDIUM_UNITS - 1; i > 0; i--) {
        pushStack(u32, HeaderU32.ReleasedSmallHead, d + i * Desc.Words);
      }
      return d;
    }
    // Find 16 adjacent released small units.
    const top = u32[HeaderU32.TopUnit];
    let run = 0;
    for (let unit = 0; unit < top; unit++) {
      const c = Tables.DescriptorsU32 + unit * Desc.Words;
      const free = u32[c + Desc.State] === PageState.Released && u32[c + Desc.Units] === 1;
      run = free ? run + 1 : 0;
      if (run < MEDIUM_UNITS) continue;
      const first = unit - MEDIUM_UNITS + 1;
      if (this.guarded && !this.setGuards(first, PROT_READ | PROT_WRITE)) return 0;
      // Unlink them from the released small stack (a rare path: rebuild the stack).
      let kept = 0;
      for (let p = u32[HeaderU32.ReleasedSmallHead]; p !== 0;) {
        const next = u32[p + Desc.Next];
        const u = (p - Tables.DescriptorsU32) / Desc.Words;
        if (u < first || u > unit) u32[p + Desc.Next] = kept, kept = p;
        p = next;
      }
      u32[HeaderU32.ReleasedSmallHead] = kept;
      this.formatReleasedUnit(first, MEDIUM_UNITS);
      return Tables.DescriptorsU32 + first * Desc.Words;
    }
    return 0;
  }

  /**
   * A small page is wanted and none is retained or released: rather than
   * carve (and commit) new units, split an empty retained medium page into
   * sixteen small ones, each keeping the committed memory it covers. Not in
   * secure mode, whose small pages need guard pages of their own.
   */
  private splitRetainedMedium(): number {
    if (this.guarded) return 0;
    const d = this.takeRetained(true);
    if (d === 0) return 0;
    const u32 = this.u32;
    const start = u32[d + Desc.PageStart];
    const committedEnd = u32[d + Desc.CommitEnd];
    this.splitMedium(d);
    for (let i = MEDIUM_UNITS - 1; i >= 0; i--) {
      const c = d + i * Desc.Words;
      const unitStart = start + i * UNIT_SIZE;
      const end = Math.min(Math.max(committedEnd, unitStart), unitStart + UNIT_SIZE);
      u32[c + Desc.CommitEnd] = end;
      if (i === 0) continue;
      if (end > unitStart) this.pushRetained(c);
      else pushStack(u32, HeaderU32.ReleasedSmallHead, c);
    }
    return d;
  }

  /** Lays out the sixteen units of medium page `d` as small released pages (descriptors only). */
  private splitMedium(d: number): void {
    const first = (d - Tables.DescriptorsU32) / Desc.Words;
    for (let i = MEDIUM_UNITS - 1; i >= 0; i--) this.formatReleasedUnit(first + i, 1);
  }

  /** Lays out released (empty, uncommitted) descriptors for a page of `units` units at `first`. */
  private formatReleasedUnit(first: number, units: number): void {
    const u32 = this.u32;
    const arena = this.arena;
    const d = Tables.DescriptorsU32 + first * Desc.Words;
    const start = arena.dataStart + first * UNIT_SIZE;
    setState(u32, d, PageState.Released);
    u32[d + Desc.PageStart] = start;
    u32[d + Desc.CommitEnd] = start;
    u32[d + Desc.Units] = units;
    u32[d + Desc.Next] = 0;
    u32[d + Desc.Bitmap] = arena.bitmapU32 + first * BitmapWords.Small;
    for (let i = 1; i < units; i++) {
      const c = d + i * Desc.Words;
      setState(u32, c, PageState.Continuation);
      u32[c + Desc.PageStart] = start;
      u32[c + Desc.Units] = 0;
    }
  }

  /** Secure mode: sets the protection of the last OS page of the page of `units` units at `first`. */
  private setGuard(first: number, units: number, prot: number): boolean {
    const arena = this.arena;
    const guard = arena.base + arena.dataStart + (first + units) * UNIT_SIZE - OS_PAGE_SIZE;
    arena.f64[StatF64.MprotectCalls]++;
    return protectMemory(guard, OS_PAGE_SIZE, prot);
  }

  /**
   * Secure mode: sets the guard pages of the first 15 of the 16 small units
   * at `first` (a medium page's units) to `prot`, all or none: false, with
   * every guard as it was, when the OS refuses one (out of map entries).
   */
  private setGuards(first: number, prot: number): boolean {
    const undo = prot === PROT_NONE ? PROT_READ | PROT_WRITE : PROT_NONE;
    for (let i = 0; i < MEDIUM_UNITS - 1; i++) {
      if (!this.setGuard(first + i, 1, prot)) {
        while (--i >= 0) this.setGuard(first + i, 1, undo);
        return false;
      }
    }
    return true;
  }

  /** Carves a never-used page of `units` units; returns its descriptor or 0. */
  private carve(units: number): number {
    const first = this.arena.carveUnits(units);
    if (first < 0) return 0;
    this.formatReleasedUnit(first, units);
    if (this.guarded && !this.setGuard(first, units, PROT_NONE)) return 0;
    return Tables.DescriptorsU32 + first * Desc.Words;
  }
}

/** check(): an empty page (retained or released) has no live or handed-out bit. */
export function validateEmptyPage(
  arena: Arena,
  d: number,
  where: number,
  fail: Fail,
): void {
  const bitmap = arena.u32[d + Desc.Bitmap];
  const handedOut = bitmap + (arena.handedOutU32 - arena.bitmapU32);
  const shared = arena.u32[HeaderU32.Shared] === 1;
  for (let w = 0; w < BitmapWords.Small; w++) {
    if (arena.u32[bitmap + w] !== 0) fail(where, "an empty page has live bits");
    if (shared && arena.u32[handedOut + w] !== 0) {
      fail(where, "an empty page has blocks handed out");
    }
  }
}

/**
 * check(): validates the retained lists (each page of `retained` once, on
 * its kind's list, linked both ways, the tails right, their committed bytes
 * as counted) and the released stacks (each page of `released` once).
 */
export function validateEmptyPageLists(
  arena: Arena,
  retained: Set<number>,
  released: Set<number>,
  fail: Fail,
): void {
  const u32 = arena.u32;
  const f64 = arena.f64;
  const top = u32[HeaderU32.TopUnit];
  let retainedBytes = 0;
  for (
    const [headSlot, tailSlot] of [retainedList(false), retainedList(true)]
  ) {
    let prev = 0;
    for (let d = u32[headSlot]; d !== 0; prev = d, d = u32[d + Desc.Next]) {
      if (!isDescriptor(d, top)) fail(arena.base, `retained list: link ${d} is not a page`);
      const where = arena.base + u32[d + Desc.PageStart];
      if (!retained.delete(d)) {
        fail(where, "retained list holds a page that is not retained (or a cycle)");
      }
      if (u32[d + Desc.Prev] !== prev) fail(where, "retained list: broken back link");
      if ((u32[d + Desc.Units] === MEDIUM_UNITS) !== (headSlot === HeaderU32.RetainedMediumHead)) {
        fail(where, "retained page on the wrong kind's list");
      }
      retainedBytes += u32[d + Desc.CommitEnd] - u32[d + Desc.PageStart];
    }
    if (u32[tailSlot] !== prev) fail(arena.base, "retained list tail is wrong");
  }
  if (retained.size > 0) fail(arena.base, `${retained.size} retained pages are on no list`);
  if (retainedBytes !== f64[StatF64.RetainedBytes]) {
    fail(
      arena.base,
      `retained bytes ${f64[StatF64.RetainedBytes]} but the lists hold ${retainedBytes}`,
    );
  }
  for (const slot of [HeaderU32.ReleasedSmallHead, HeaderU32.ReleasedMediumHead]) {
    for (let d = u32[slot]; d !== 0; d = u32[d + Desc.Next]) {
      if (!isDescriptor(d, top)) fail(arena.base, `released list: link ${d} is not a page`);
      if (!released.delete(d)) {
        fail(
          arena.base + u32[d + Desc.PageStart],
          "released list holds a page that is not released (or a cycle)",
        );
      }
    }
  }
  if (released.size > 0) fail(arena.base, `${released.size} released pages are on no list`);
}
