/**
 * Small and medium pages, each of one size class: taking and freeing blocks
 * off the fast paths, refilling allocation lists, and the page transitions
 * (see "Which list a page is on" in page_layout.ts, which draws the layout
 * and holds the fast paths). Pages come from and go back to the page source;
 * their committed memory grows through idle.ts.
 */

import { type Arena, HeaderU32, MEDIUM_UNITS, UNIT_SIZE } from "../arena/arena.ts";
import { CLASS_COUNT } from "./size_classes.ts";
import { OS_PAGE_SIZE } from "../os/libc.ts";
import { type Fail, HeapError } from "../errors.ts";
import { type ClassLists, SPLIT_CLASSES } from "./class_lists.ts";
import type { IdleMemory } from "./idle.ts";
import {
  BitmapWords,
  blockAtGranule,
  ClassEntry,
  classPagesIn,
  Desc,
  formatPage,
  Granule,
  isLive,
  PageState,
  Tables,
  takeBlockFast,
  Tally,
} from "./page_layout.ts";
import { insertAfter, pushFront, unlink } from "./page_list.ts";
import { committedExtent, isPurged, recommit, touchesPurged, unpurgeRange } from "./page_memory.ts";
import type { PageSource } from "./page_source.ts";
import type { FreeListCodec, PageOwnership, PageTransitions } from "./policies.ts";

/** An empty head page stays on its class list only while it has committed this much or less. */
const KEPT_EMPTY_PAGE_BYTES = 16 * 1024;

/** Pages of size classes: taking and freeing blocks off the fast paths, and the page transitions. */
export class ClassPages implements PageTransitions {
  private readonly arena: Arena;
  private readonly u32: Uint32Array;
  private readonly source: PageSource;
  private readonly lists: ClassLists;
  private readonly idle: IdleMemory;
  /** How free blocks link to the next (secure mode's encodes); check.ts reads it too. */
  readonly codec: FreeListCodec;
  /** Who may change live bits (shared heaps': any Worker may free). */
  private readonly ownership: PageOwnership;
  /** Owner slot of this Heap object (0 for a heap that is not shared). */
  private readonly owner: number;
  private readonly splitLists: boolean;
  private readonly allocLists: Uint32Array;

  constructor(
    arena: Arena,
    source: PageSource,
    lists: ClassLists,
    idle: IdleMemory,
    codec: FreeListCodec,
    ownership: PageOwnership,
    owner: number,
  ) {
    this.arena = arena;
    this.u32 = arena.u32;
    this.source = source;
    this.lists = lists;
    this.idle = idle;
    this.codec = codec;
    this.ownership = ownership;
    this.owner = owner;
    this.splitLists = lists.splitLists;
    this.allocLists = lists.allocLists;
  }

  /**
   * Makes a page of class `cls` the head of its available list and returns
   * its descriptor, or 0 when no memory can be had.
   */
  acquire(cls: number): number {
    const u32 = this.u32;
    const ce = Tables.ClassU32 + cls * ClassEntry.Words;
    const medium = u32[ce + ClassEntry.Units] === MEDIUM_UNITS;
    const d = this.source.take(medium);
    if (d === 0) return 0;
    const blockSize = u32[ce + ClassEntry.BlockSize];
    const capacity = u32[ce + ClassEntry.Capacity];
    formatPage(
      u32,
      d,
      medium ? PageState.Medium : PageState.Small,
      cls,
      blockSize,
      capacity,
      capacity * blockSize,
      medium ? Granule.MediumShift : Granule.SmallShift,
    );
    u32[d + Desc.RemoteFreed] = 0;
    Atomics.store(u32, d + Desc.Owner, this.owner);
    this.codec.formatted(d);
    const slot = this.lists.headSlot(cls);
    const head = u32[slot];
    if (head !== 0 && u32[head + Desc.Used] === 0) {
      unlink(u32, slot, head), this.source.retire(head);
    }
    this.pushAvailable(d, slot);
    return d;
  }

  // ---- block slow paths ------------------------------------------------------

  /**
   * Takes a block of class `cls` whatever it takes: a new page, a page that
   * fills up, commit accounting. Returns its arena offset, or 0 when out of
   * memory.
   */
  take(cls: number): number {
    const u32 = this.u32;
    if (this.splitLists && cls < SPLIT_CLASSES) {
      // The fast path's pop, after a refill when the list is empty.
      if (this.allocLists[cls] === 0 && this.refill(cls) === 0) return 0;
      return takeBlockFast(u32, this.allocLists, u32[HeaderU32.BitmapBias], cls);
    }
    const slot = this.lists.headSlot(cls);
    let d = u32[slot];
    if (d !== 0 && u32[d + Desc.Used] === u32[d + Desc.Capacity]) {
      this.dropFullHead(d); // full: see "Which list a page is on" in page_layout.ts
      d = u32[slot];
    }
    if (d === 0) {
      this.ownership.replenish(this, slot); // shared heaps: blocks other Workers freed
      d = u32[slot];
    }
    if (d === 0) {
      d = this.acquire(cls);
      if (d === 0) return 0;
    }
    this.verifyIntact(d);
    let block = u32[d + Desc.Free];
    if (block !== 0) {
      u32[d + Desc.Free] = this.nextFree(d, block, true);
    } else if (
      u32[d + Desc.Unlisted] !== 0 &&
      u32[d + Desc.Bump] + u32[d + Desc.BlockSize] > u32[d + Desc.BumpEnd]
    ) {
      block = this.takeUnlisted(d);
    } else {
      block = this.bump(d);
    }
    if (this.splitLists) this.lists.syncPage(d), u32[d + Desc.SyncedUsed]++;
    const used = u32[d + Desc.Used] + 1;
    u32[d + Desc.Used] = used;
    if (used === u32[d + Desc.Capacity]) this.dropFullHead(d);
    this.ownership.handOut(d, block);
    this.lists.countHanded(1, u32[d + Desc.BlockSize]);
    return block;
  }

  /**
   * Fills the empty allocation list of small class `cls` from its head page
   * (the page's whole free list, else a batch of never-used blocks, else one
   * unlisted block), moving to the next page, or a new one, when the head is
   * full. Returns the list's first block (the list is left in allocLists
   * from its second), or 0 when out of memory.
   */
  private refill(cls: number): number {
    const u32 = this.u32;
    const slot = this.lists.headSlot(cls);
    for (;;) {
      let d = u32[slot];
      if (d === 0) {
        d = this.acquire(cls);
        if (d === 0) return 0;
      }
      const blockSize = u32[d + Desc.BlockSize];
      const used = u32[d + Desc.Used];
      const first = u32[d + Desc.Free];
      if (first !== 0) {
        // USED + free + UNLISTED + unbumped = CAPACITY gives the list's length.
        const unbumped = (u32[d + Desc.BumpEnd] - u32[d + Desc.Bump]) / blockSize;
        const listed = u32[d + Desc.Capacity] - used - u32[d + Desc.Unlisted] - unbumped;
        u32[d + Desc.Free] = 0;
        return this.lists.handToList(cls, d, first, listed);
      }
      const bump = u32[d + Desc.Bump];
      if (bump < u32[d + Desc.BumpEnd]) {
        if (bump + blockSize > u32[d + Desc.CommitEnd]) {
          // Before committing more, the free blocks of the next page on the list.
          const next = u32[d + Desc.Next];
          if (next !== 0 && u32[next + Desc.Free] !== 0) {
            unlink(u32, slot, d);
            if (u32[d + Desc.Used] === 0) this.source.retire(d); // an empty page is only ever a head
            else insertAfter(u32, next, d);
            continue;
          }
          this.idle.extendCommit(d, bump + blockSize);
        }
        const end = Math.min(u32[d + Desc.BumpEnd], u32[d + Desc.CommitEnd]);
        const count = Math.floor((end - bump) / blockSize);
        for (let i = 1, b = bump; i < count; i++, b += blockSize) u32[b >>> 2] = b + blockSize;
        u32[(bump + (count - 1) * blockSize) >>> 2] = 0;
        u32[d + Desc.Bump] = bump + count * blockSize;
        if (u32[d + Desc.ZeroFrom] < u32[d + Desc.Bump]) {
          u32[d + Desc.ZeroFrom] = u32[d + Desc.Bump];
        }
        return this.lists.handToList(cls, d, bump, count);
      }
      if (u32[d + Desc.Unlisted] !== 0) {
        const block = this.takeUnlisted(d);
        u32[block >>> 2] = 0;
        return this.lists.handToList(cls, d, block, 1);
      }
      this.dropFullHead(d);
    }
  }

  /**
   * After check() found damage: every allocation list is dropped without
   * following it (a block written after it was freed may have sent its links
   * anywhere), and its head page's free list rebuilt from the live bitmap,
   * so that malloc follows no damaged link.
   */
  dropAllocLists(): void {
    const u32 = this.u32;
    for (let c = 0; c < SPLIT_CLASSES; c++) {
      if (this.allocLists[c] === 0) continue;
      this.allocLists[c] = 0;
      const d = u32[this.lists.headSlot(c)];
      if (d === 0) continue;
      let live = 0;
      for (let w = 0; w < BitmapWords.Small; w++) {
        for (let bits = u32[u32[d + Desc.Bitmap] + w]; bits !== 0; bits &= bits - 1) live++;
      }
      this.lists.tally[Tally.HandedBlocks] -= u32[d + Desc.Used] - live;
      u32[d + Desc.Used] = live;
      this.lists.syncPage(d);
      this.rebuildFreeList(d);
    }
  }

  /**
   * Frees a block of page `d` that the caller proved live (small or medium
   * page), with whatever page transition follows. Returns its size.
   */
  freeLive(d: number, offset: number): number {
    const u32 = this.u32;
    this.verifyIntact(d);
    // Read now: once the page retires, another Worker may reformat it.
    const blockSize = u32[d + Desc.BlockSize];
    this.ownership.takeBack(d, offset);
    u32[offset >>> 2] = this.codec.encode(offset, u32[d + Desc.Free]);
    u32[d + Desc.Free] = offset;
    const used = u32[d + Desc.Used] - 1;
    u32[d + Desc.Used] = used;
    if (this.splitLists) this.lists.syncPage(d);
    else this.lists.countFreed(1, blockSize);
    // A full page is on no list, unless it is its class's head.
    const offList = used + 1 === u32[d + Desc.Capacity] &&
      u32[this.lists.headSlot(u32[d + Desc.Class])] !== d;
    if (used === 0) {
      if (offList) this.source.retire(d); // a page of one block: full, then empty
      else this.emptied(d);
    } else if (offList) {
      this.readmit(d);
    }
    return blockSize;
  }

  /** Calls `visit(offset, blockSize)` for every live block in a size-class page. */
  forEachLiveBlock(visit: (offset: number, blockSize: number) => void): void {
    const u32 = this.u32;
    for (const d of classPagesIn(u32, u32[HeaderU32.TopUnit])) {
      const words = u32[d + Desc.State] === PageState.Small
        ? BitmapWords.Small
        : BitmapWords.Medium;
      for (let w = 0; w < words; w++) {
        let bits = u32[u32[d + Desc.Bitmap] + w];
        while (bits !== 0) {
          const b = 31 - Math.clz32(bits);
          bits &= ~(1 << b);
          visit(blockAtGranule(u32, d, w * 32 + b), u32[d + Desc.BlockSize]);
        }
      }
    }
  }

  /**
   * The free block after `block` on page `d`'s free list. When `verify`, a
   * link the codec finds overwritten (secure mode) is reported before it is
   * followed, and the page's free list rebuilt.
   */
  nextFree(d: number, block: number, verify: boolean): number {
    const next = this.codec.decode(d, block, verify);
    if (next < 0) {
      this.rebuildFreeList(d);
      throw new HeapError(
        "corrupt",
        this.arena.base + block,
        "the free-list link stored in this freed block was overwritten (secure mode); " +
          "the page's free list was rebuilt from its live bitmap",
      );
    }
    return next;
  }

  /**
   * Relinks every block below the bump pointer that is not live: repairs a
   * damaged list (secure mode's checked links, and check()'s findings). In a
   * shared heap, blocks another Worker freed that this owner has not taken
   * back yet (still handed out) stay off the list: the owner's collection
   * links them.
   */
  rebuildFreeList(d: number): void {
    const u32 = this.u32;
    const start = u32[d + Desc.PageStart];
    const blockSize = u32[d + Desc.BlockSize];
    let next = 0;
    for (let block = u32[d + Desc.Bump] - blockSize; block >= start; block -= blockSize) {
      if (!isLive(u32, d, block) && !this.ownership.awaitsCollection(d, block)) {
        u32[block >>> 2] = this.codec.encode(block, next);
        next = block;
      }
    }
    u32[d + Desc.Free] = next;
  }

  /** Throws corrupt if page `d`'s fixed descriptor words are not as formatted (secure mode). */
  private verifyIntact(d: number): void {
    if (!this.codec.intact(d)) {
      throw new HeapError(
        "corrupt",
        this.arena.base + this.u32[d + Desc.PageStart],
        "page metadata fails its checksum (secure mode)",
      );
    }
  }

  // ---- page transitions ---------------------------------------------------------

  /**
   * Hands out the page's next never-used block (the caller saw an empty free
   * list, and a page with room has one), counting the OS page it reaches as
   * committed.
   */
  private bump(d: number): number {
    const u32 = this.u32;
    const block = u32[d + Desc.Bump];
    const end = block + u32[d + Desc.BlockSize];
    // Before BUMP moves: a scavenge pass must not see the block as free.
    if (end > u32[d + Desc.CommitEnd]) this.idle.extendCommit(d, end);
    u32[d + Desc.Bump] = end;
    return block;
  }

  /** The head page of its class list is full: take it off the list. */
  private dropFullHead(d: number): void {
    const u32 = this.u32;
    u32[d + Desc.FastFree] = 0; // its next free puts it back (readmit)
    const next = u32[d + Desc.Next];
    u32[this.lists.headSlot(u32[d + Desc.Class])] = next;
    if (next !== 0) u32[next + Desc.Prev] = 0;
    u32[d + Desc.Next] = 0;
  }

  /**
   * A full page got a block back: it goes back on its class list, at the head,
   * or second while the head page's blocks wait on the allocation list.
   */
  readmit(d: number): void {
    const u32 = this.u32;
    const cls = u32[d + Desc.Class];
    const slot = this.lists.headSlot(cls);
    const head = u32[slot];
    if (cls < SPLIT_CLASSES && this.allocLists[cls] !== 0) {
      // The allocation list belongs to the head page: the page goes second,
      // and is allocated from once the list runs dry.
      insertAfter(u32, head, d);
      u32[d + Desc.FastFree] = 1;
      return;
    }
    if (head !== 0 && u32[head + Desc.Used] === 0) {
      unlink(u32, slot, head), this.source.retire(head);
    }
    this.pushAvailable(d, slot);
  }

  /**
   * Page `d`, on its class list, emptied. Only a small page that is its
   * class's head and has committed at most KEPT_EMPTY_PAGE_BYTES stays, so
   * that a malloc/free pair does not churn pages (and, whatever it has
   * committed, a head whose codec formats whole pages). Any other empty page
   * retires at once, where every class of its kind can reuse its committed
   * memory; kept as a head it would hold up to 1 MiB for one class.
   */
  emptied(d: number): void {
    const u32 = this.u32;
    const slot = this.lists.headSlot(u32[d + Desc.Class]);
    if (
      u32[d + Desc.Units] === 1 && u32[slot] === d &&
      (committedExtent(u32, d) <= KEPT_EMPTY_PAGE_BYTES || this.codec.formatsWholePages)
    ) {
      return;
    }
    unlink(u32, slot, d);
    this.source.retire(d);
  }

  isFullOffList(d: number): boolean {
    const u32 = this.u32;
    // A full page is on no list, unless it is its class's head.
    return u32[d + Desc.Used] === u32[d + Desc.Capacity] &&
      u32[this.lists.headSlot(u32[d + Desc.Class])] !== d;
  }

  retire(d: number): void {
    this.source.retire(d);
  }

  /** Releases every empty page (retained ones and this owner's empty class heads); returns bytes released. */
  trim(): number {
    const u32 = this.u32;
    this.ownership.collectAll(this);
    this.lists.flushAll();
    this.source.lock();
    try {
      let released = this.source.releaseKeptFitPage();
      for (let c = 0; c < CLASS_COUNT; c++) {
        const slot = this.lists.headSlot(c);
        const head = u32[slot];
        if (head !== 0 && u32[head + Desc.Used] === 0) {
          unlink(u32, slot, head);
          released += this.source.releaseEmpty(head);
        }
      }
      return released + this.idle.releaseAll();
    } finally {
      this.source.unlock();
    }
  }

  /**
   * The page's free list and bump area are used up: hands out its first
   * unlisted block, counting the purged OS pages it touches as committed.
   */
  private takeUnlisted(d: number): number {
    const u32 = this.u32;
    const start = u32[d + Desc.PageStart];
    const blockSize = u32[d + Desc.BlockSize];
    const blocks = (u32[d + Desc.Bump] - start) / blockSize;
    // The free list is empty, so every free block below the bump pointer is
    // unlisted; those below SCAN_FROM were taken since the last scavenge.
    for (let i = u32[d + Desc.ScanFrom]; i < blocks; i++) {
      const block = start + i * blockSize;
      if (isLive(u32, d, block)) continue;
      u32[d + Desc.ScanFrom] = i + 1;
      u32[d + Desc.Unlisted]--;
      const count = unpurgeRange(this.arena, d, block, block + blockSize);
      recommit(this.arena, d, block, block + blockSize, count);
      return block;
    }
    throw new HeapError(
      "corrupt",
      this.arena.base + start,
      "page counts unlisted free blocks but has none",
    );
  }

  // ---- lists ---------------------------------------------------------------

  private pushAvailable(d: number, slot: number): void {
    const u32 = this.u32;
    let head = u32[slot];
    if (head !== 0 && u32[head + Desc.Used] === u32[head + Desc.Capacity]) {
      this.dropFullHead(head); // only a head may be full
      head = u32[slot];
    }
    pushFront(u32, slot, d);
    if (u32[d + Desc.State] === PageState.Small) u32[d + Desc.FastFree] = 1;
  }

  // ---- validation (check()) -------------------------------------------------

  /**
   * After check() found damage: every page whose free list is damaged (a link
   * out of the page, onto a live block, or a cycle: a write into a freed
   * block) gets a new list from its live bitmap. Pages whose descriptor is
   * damaged are left alone: nothing safe to rebuild from.
   */
  repairFreeLists(): void {
    const u32 = this.u32;
    const arena = this.arena;
    for (const d of classPagesIn(u32, Math.min(u32[HeaderU32.TopUnit], arena.unitCount))) {
      const unit = (d - Tables.DescriptorsU32) / Desc.Words;
      const start = arena.dataStart + unit * UNIT_SIZE;
      const blockSize = u32[d + Desc.BlockSize];
      const bump = u32[d + Desc.Bump];
      const pageEnd = start + u32[d + Desc.Units] * UNIT_SIZE;
      if (
        u32[d + Desc.PageStart] !== start || blockSize === 0 || bump < start || bump > pageEnd ||
        u32[d + Desc.Bitmap] !== arena.bitmapU32 + unit * BitmapWords.Small
      ) {
        continue; // the page itself is damaged: nothing safe to rebuild from
      }
      let steps = 0;
      let intact = true;
      for (let f = u32[d + Desc.Free]; f !== 0; f = this.nextFree(d, f, false)) {
        if (
          ++steps > u32[d + Desc.Capacity] || f < start || f >= bump ||
          (f - start) % blockSize !== 0 || isLive(u32, d, f)
        ) {
          intact = false;
          break;
        }
      }
      if (!intact) this.rebuildFreeList(d);
    }
  }

  /**
   * check(): validates in-use page `d`, whose `remotelyFreed` blocks (on its allocation
   * list, or freed by other Workers and waiting for their owner) are counted in
   * USED, neither live nor on the free list; returns its live block count.
   */
  validatePage(
    d: number,
    start: number,
    remotelyFreed: Set<number>,
    fail: Fail,
  ): number {
    const u32 = this.u32;
    const arena = this.arena;
    const where = arena.base + start;
    const cls = u32[d + Desc.Class];
    if (cls >= CLASS_COUNT) fail(where, `page has class ${cls}`);
    const ce = Tables.ClassU32 + cls * ClassEntry.Words;
    const blockSize = u32[d + Desc.BlockSize];
    const capacity = u32[d + Desc.Capacity];
    const medium = u32[d + Desc.State] === PageState.Medium;
    if (
      blockSize !== u32[ce + ClassEntry.BlockSize] || capacity !== u32[ce + ClassEntry.Capacity] ||
      u32[d + Desc.Units] !== u32[ce + ClassEntry.Units] ||
      medium !== (u32[d + Desc.Units] === MEDIUM_UNITS) ||
      u32[d + Desc.Shift] !== (medium ? Granule.MediumShift : Granule.SmallShift)
    ) {
      fail(where, "page geometry does not match its size class");
    }
    if (
      u32[d + Desc.LocalPageStart] !== start ||
      u32[d + Desc.LocalCapacity] !== capacity || u32[d + Desc.LocalBlockSize] !== blockSize
    ) {
      fail(where, "the fast paths' copies of the page geometry differ from it");
    }
    const bump = u32[d + Desc.Bump];
    const bumpEnd = u32[d + Desc.BumpEnd];
    if (
      bumpEnd !== start + capacity * blockSize || bumpEnd > start + u32[d + Desc.Units] * UNIT_SIZE
    ) {
      fail(where, "page bump end is wrong");
    }
    if (bump < start || bump > bumpEnd || (bump - start) % blockSize !== 0) {
      fail(where, "page bump pointer is wrong");
    }
    if (u32[d + Desc.CommitEnd] < bump) {
      fail(where, "page hands out memory it has not counted as committed");
    }
    if (u32[d + Desc.ZeroFrom] < start) fail(where, "page zero mark is below the page");
    // Free list: inside the used area, on block boundaries, not live, no cycle.
    let free = 0;
    if (!this.codec.intact(d)) {
      fail(where, "page metadata fails its checksum");
    }
    for (let f = u32[d + Desc.Free]; f !== 0; f = this.nextFree(d, f, false)) {
      if (++free > capacity) fail(where, "page free list has a cycle or too many entries");
      if (f < start || f >= bump || (f - start) % blockSize !== 0) {
        fail(arena.base + f, "free list link points outside the page's blocks");
      }
      if (isLive(u32, d, f)) fail(arena.base + f, "a live block is on the free list");
      if (remotelyFreed.has(f)) {
        fail(
          arena.base + f,
          "a block counted as handed out (on an allocation list, or freed by another Worker) is on the free list",
        );
      }
      if (touchesPurged(u32, d, f)) {
        fail(arena.base + f, "a listed free block touches a purged page");
      }
    }
    // Purged OS pages: counted, below the bump pointer, free of live blocks.
    let purged = 0;
    let unlisted = 0;
    for (let p = 0; p < (u32[d + Desc.Units] * UNIT_SIZE) / OS_PAGE_SIZE; p++) {
      if (!isPurged(u32, d, p)) continue;
      purged++;
      if (start + (p + 1) * OS_PAGE_SIZE > bump) {
        fail(where + p * OS_PAGE_SIZE, "a purged OS page above the bump pointer");
      }
    }
    if (purged !== u32[d + Desc.PurgedPages]) {
      fail(where, `page counts ${u32[d + Desc.PurgedPages]} purged OS pages but marks ${purged}`);
    }
    for (let block = start; block < bump; block += blockSize) {
      if (!touchesPurged(u32, d, block)) continue;
      if (isLive(u32, d, block)) fail(arena.base + block, "a live block touches a purged OS page");
      unlisted++;
    }
    if (unlisted > u32[d + Desc.Unlisted]) {
      fail(
        where,
        `page has ${unlisted} free blocks on purged OS pages but counts ${
          u32[d + Desc.Unlisted]
        } unlisted`,
      );
    }
    // Live bitmap: set bits mark block starts below the bump pointer.
    let used = 0;
    const shift = u32[d + Desc.Shift];
    const words = medium ? BitmapWords.Medium : BitmapWords.Small;
    for (let w = 0; w < words; w++) {
      let bits = u32[u32[d + Desc.Bitmap] + w];
      while (bits !== 0) {
        const b = 31 - Math.clz32(bits);
        bits &= ~(1 << b);
        const offset = blockAtGranule(u32, d, w * 32 + b);
        if (offset < 0 || offset >= bump) {
          fail(
            arena.base + start + ((w * 32 + b) << shift),
            "live bit set where no block was handed out",
          );
        }
        used++;
      }
    }
    if (used + remotelyFreed.size !== u32[d + Desc.Used]) {
      fail(
        where,
        `page counts ${u32[d + Desc.Used]} used blocks but its bitmap has ${used} live ` +
          `and ${remotelyFreed.size} on its allocation list or freed by other Workers`,
      );
    }
    if (
      u32[d + Desc.Used] + free + u32[d + Desc.Unlisted] + (bumpEnd - bump) / blockSize !== capacity
    ) {
      fail(where, "live + free + never-used blocks do not add up to the page's capacity");
    }
    return used;
  }
}
