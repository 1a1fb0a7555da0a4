/**
 * Idle memory: committed memory that holds nothing, and when the heap gives
 * it back to the OS.
 *
 * Free blocks keep memory of in-use pages committed that holds nothing:
 * the heap's idle memory (committedBytes less allocatedBytes, metadata, the
 * large-block table and retained empty pages, which retainBytes governs).
 * Every growth of a page's committed memory goes through extendCommit here,
 * and every other growth (a large block mapped, a fit page's purged memory
 * written again) calls giveBackIdle first; a class page's unlisted block
 * counts its purged OS pages again without it (a scavenge of that page,
 * mid-hand-out, would see the block as free). When the heap is about to
 * commit memory past its peak and its idle memory exceeds the idle budget,
 * it first purges (madvise DONTNEED), starting with the pages that hold the most,
 * the OS pages of in-use pages that hold no live byte: the free ends and
 * free chunks of fit pages (fit_chunks.ts), then those of class pages. In a
 * class page, the free blocks that touch a purged OS page leave the free
 * list, since writing a link into them would fault the page back in: they
 * are UNLISTED, and handed out again (their OS pages counted as committed
 * again) once the page's free list and bump area are used up (class_pages.ts). A
 * page with purged OS pages that empties is released rather than retained.
 * Retained pages count too: growth past the peak first releases the oldest
 * of them, as many as offset it, while they hold more than the idle floor (a
 * heap that grows in one class while pages emptied in others sit retained
 * would otherwise reach a peak of both; the floor keeps the page the next
 * acquire is likely to take). So the footprint grows past its peak only
 * while idle memory is within budget or cannot be given back; trim() gives
 * back all of it, and every retained page.
 */

import {
  type Arena,
  HeaderU32,
  MEDIUM_UNITS,
  roundUp,
  StatF64,
  UNIT_SIZE,
} from "../arena/arena.ts";
import { OS_PAGE_SIZE, populatePages, releasePages } from "../os/libc.ts";
import type { ClassLists } from "./class_lists.ts";
import { purgeFreeChunks } from "./fit_chunks.ts";
import type { LargeBlocks } from "./large.ts";
import { classPagesIn, Desc, isLive, OsPage } from "./page_layout.ts";
import { committedExtent, isPurged, purgeRange, touchesPurged } from "./page_memory.ts";
import type { PageSource } from "./page_source.ts";

/**
 * Purging in-use pages gives back runs of at least this many free OS pages:
 * one madvise call costs as much as thousands of mallocs (docs/performance.md),
 * so a lone free OS page is not worth one.
 */
const MIN_PURGE_PAGES = 4;

/** The most a page's commit runs ahead of its bump pointer (see extendCommit). */
const POPULATE_AHEAD = 16 * 1024;

export class IdleMemory {
  private readonly arena: Arena;
  private readonly u32: Uint32Array;
  private readonly source: PageSource;
  private readonly lists: ClassLists;
  /** The large blocks: their table's bytes are committed, and not idle. */
  private readonly large: LargeBlocks;
  /** Whether OS pages of in-use pages may be purged: not with shared or secure heaps. */
  private readonly purgesInUsePages: boolean;
  /**
   * The idle budget (see giveBackIdle): idle memory may reach
   * max(idleFloor, idleRatio * allocated bytes) before the heap grows past
   * its peak. Infinity (and shared and secure heaps) turns purging off.
   */
  idleRatio = Infinity;
  idleFloor = 0;
  /** The fit page fit.ts is cutting a chunk from (0: none): purging leaves it alone. */
  busyFitPage = 0;
  /** committedBytes up to which growth does not look at the idle budget again. */
  private nextIdleCheck = 0;
  /** Scratch for scavengePage: which OS pages of a page hold live bytes. */
  private readonly pinned = new Uint8Array(MEDIUM_UNITS * UNIT_SIZE / OS_PAGE_SIZE);

  constructor(
    arena: Arena,
    source: PageSource,
    lists: ClassLists,
    large: LargeBlocks,
    purgesInUsePages: boolean,
  ) {
    this.arena = arena;
    this.u32 = arena.u32;
    this.source = source;
    this.lists = lists;
    this.large = large;
    this.purgesInUsePages = purgesInUsePages;
  }

  /**
   * Counts page `d` as committed up to the OS page that holds `end`, and some
   * way past it as the page proves used (as much again as it has committed,
   * up to POPULATE_AHEAD, never past BUMP_END), faulting all of that in with
   * one call: a page faulted in by its first touch costs about ten times one
   * populated with the rest (docs/performance.md).
   * (COMMIT_END is read again after giveBackIdle, which may trim this page.)
   */
  extendCommit(d: number, end: number): void {
    const u32 = this.u32;
    const extent = u32[d + Desc.CommitEnd] - u32[d + Desc.PageStart];
    const ahead = Math.min(extent, POPULATE_AHEAD);
    const limit = roundUp(u32[d + Desc.BumpEnd], OS_PAGE_SIZE);
    const newEnd = Math.min(
      roundUp(Math.max(end, u32[d + Desc.CommitEnd] + ahead), OS_PAGE_SIZE),
      limit,
    );
    // The heap is about to grow: idle memory over budget goes back first.
    this.giveBackIdle(newEnd - u32[d + Desc.CommitEnd]);
    const from = u32[d + Desc.CommitEnd];
    this.source.lock();
    this.arena.addCommitted(newEnd - from);
    this.source.unlock();
    u32[d + Desc.CommitEnd] = newEnd;
    if (populatePages(this.arena.base + from, newEnd - from)) {
      this.arena.f64[StatF64.MadviseCalls]++;
    }
  }

  /** Called before committed memory grows: gives idle memory back while it is over budget. */
  giveBackIdle(growth: number): void {
    const f64 = this.arena.f64;
    if (this.idleRatio === Infinity) return;
    // Only growth past the peak...
    let past = f64[StatF64.Committed] + growth - f64[StatF64.PeakCommitted];
    while (past > 0 && f64[StatF64.RetainedBytes] > this.idleFloor) {
      const released = this.source.releaseOldestRetained();
      if (released < 0) break;
      past -= released;
    }
    // ...and past where the last look at in-use pages left off.
    const committed = f64[StatF64.Committed];
    if (committed + growth <= Math.max(f64[StatF64.PeakCommitted], this.nextIdleCheck)) return;
    const busy = this.lists.counters().allocated + this.large.tableBytes;
    const budget = Math.max(this.idleFloor, busy * this.idleRatio);
    const idle = committed - f64[StatF64.MetaCommitted] - busy - f64[StatF64.RetainedBytes];
    // One look per step of growth: a heap that churns at its peak trades
    // pages between classes, and a madvise call per such trade would cost
    // more than the memory is worth.
    const step = Math.max(budget / 4, 16 * OS_PAGE_SIZE);
    // Enough to offset the growth and the next step, not all of the excess:
    // idle memory at the peak is often what the next allocations reuse.
    if (idle > budget) this.scavenge(Math.min(idle - budget, growth + step));
    this.nextIdleCheck = f64[StatF64.Committed] + step;
  }

  /** For trim(): releases every retained page and purges every in-use page; returns the bytes. */
  releaseAll(): number {
    let released = 0;
    for (let bytes = this.source.releaseOldestRetained(); bytes >= 0;) {
      released += bytes;
      bytes = this.source.releaseOldestRetained();
    }
    return released + this.scavenge(Infinity);
  }

  /** Purges free OS pages of in-use pages, those with the most idle bytes first; returns the bytes. */
  private scavenge(wanted: number): number {
    if (!this.purgesInUsePages) return 0;
    const u32 = this.u32;
    this.lists.flushAll(); // the pages' free lists then hold every free block
    // The free ends of fit pages first: one call each, and nothing to relink.
    let released = purgeFreeChunks(this.arena, wanted, this.busyFitPage);
    const candidates = classPagesIn(u32, u32[HeaderU32.TopUnit]).filter((d) =>
      committedExtent(u32, d) - u32[d + Desc.Used] * u32[d + Desc.BlockSize] >= OS_PAGE_SIZE
    );
    // Pages being allocated from (their class's head) last: what is purged there comes back first.
    const idleOf = (d: number) =>
      committedExtent(u32, d) - u32[d + Desc.Used] * u32[d + Desc.BlockSize] -
      (u32[this.lists.headSlot(u32[d + Desc.Class])] === d ? 2 ** 32 : 0);
    candidates.sort((a, b) => idleOf(b) - idleOf(a));
    for (const d of candidates) {
      if (released >= wanted) break;
      released += this.scavengePage(d);
    }
    return released;
  }

  /**
   * Gives back the OS pages of in-use class page `d` that hold no live byte:
   * the committed tail past the bump pointer, and whole OS pages below it.
   * Relinks the free list without the blocks that touch a purged OS page.
   * Returns the bytes given back.
   */
  private scavengePage(d: number): number {
    const u32 = this.u32;
    const arena = this.arena;
    const start = u32[d + Desc.PageStart];
    const blockSize = u32[d + Desc.BlockSize];
    const bump = u32[d + Desc.Bump];
    let released = 0;
    // The tail: committed (a reused page's earlier life) but past the bump
    // pointer, beyond what extendCommit would have faulted in ahead anyway.
    const bumpEnd = roundUp(bump, OS_PAGE_SIZE) + POPULATE_AHEAD;
    const commitEnd = u32[d + Desc.CommitEnd];
    if (commitEnd - bumpEnd >= MIN_PURGE_PAGES * OS_PAGE_SIZE) {
      releasePages(arena.base + bumpEnd, commitEnd - bumpEnd);
      arena.f64[StatF64.MadviseCalls]++;
      // (Purged OS pages all lie below the bump pointer, which only moves up.)
      released += commitEnd - bumpEnd;
      arena.addCommitted(bumpEnd - commitEnd);
      u32[d + Desc.CommitEnd] = bumpEnd;
      if (u32[d + Desc.ZeroFrom] > bumpEnd) u32[d + Desc.ZeroFrom] = bumpEnd;
    }
    // Whole OS pages below the bump pointer that no live block touches.
    const osPages = Math.floor((bump - start) / OS_PAGE_SIZE);
    const pinned = this.pinned;
    pinned.fill(0, 0, osPages);
    const blocks = (bump - start) / blockSize;
    for (let i = 0; i < blocks; i++) {
      const relative = i * blockSize;
      if (!isLive(u32, d, start + relative)) continue;
      const last = Math.min((relative + blockSize - 1) >>> OsPage.Shift, osPages - 1);
      for (let p = relative >>> OsPage.Shift; p <= last; p++) pinned[p] = 1;
    }
    let purged = 0;
    for (let p = 0, run = -1, fresh = 0; p <= osPages; p++) {
      if (p < osPages && pinned[p] === 0) {
        // Purged pages inside a run go along: one call for the whole stretch.
        if (run < 0) run = p, fresh = 0;
        if (!isPurged(u32, d, p)) fresh++;
        continue;
      }
      if (run >= 0 && fresh >= MIN_PURGE_PAGES) {
        purged += purgeRange(
          arena,
          d,
          start + run * OS_PAGE_SIZE,
          start + p * OS_PAGE_SIZE,
        );
      }
      run = -1;
    }
    released += purged;
    if (purged === 0) return released;
    // Relink the free blocks that touch no purged OS page, lowest address first.
    let next = 0;
    let listed = 0;
    for (let i = blocks - 1; i >= 0; i--) {
      const block = start + i * blockSize;
      if (isLive(u32, d, block) || touchesPurged(u32, d, block)) continue;
      u32[block >>> 2] = next;
      next = block;
      listed++;
    }
    u32[d + Desc.Free] = next;
    u32[d + Desc.Unlisted] = blocks - u32[d + Desc.Used] - listed;
    u32[d + Desc.ScanFrom] = 0;
    return released;
  }
}
