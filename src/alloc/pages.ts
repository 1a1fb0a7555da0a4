/**
 * Small and medium pages: taking and freeing blocks off the fast paths,
 * allocation lists, page transitions, idle purging, shared-heap ownership
 * and the lists of pages (the layout and the fast paths: page_layout.ts).
 */

import {
  type Arena,
  DESCRIPTORS_BYTE,
  H_BITMAP_BIAS,
  H_RELEASED_MEDIUM_HEAD,
  H_RELEASED_SMALL_HEAD,
  H_RETAINED_MEDIUM_HEAD,
  H_RETAINED_MEDIUM_TAIL,
  H_RETAINED_SMALL_HEAD,
  H_RETAINED_SMALL_TAIL,
  H_SECURE_KEY,
  H_TOP_UNIT,
  MEDIUM_UNITS,
  roundUp,
  S_COMMITTED,
  S_IN_USE_PAGE_BYTES,
  S_MADVISE_CALLS,
  S_META_COMMITTED,
  S_MPROTECT_CALLS,
  S_PEAK_COMMITTED,
  S_PURGED_BYTES,
  S_RETAIN_LIMIT,
  S_RETAINED_BYTES,
  UNIT_SIZE,
} from "../arena/arena.ts";
import {
  CLASS_COUNT,
  classBlockSize,
  classOfSize,
  LOOKUP_ENTRIES,
  LOOKUP_MAX_SIZE,
  MAX_SMALL_PAGE_BLOCK,
} from "./size_classes.ts";
import {
  OS_PAGE_SIZE,
  populatePages,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  protectMemory,
  releasePages,
} from "../os/libc.ts";
import { HeapError } from "../errors.ts";
import {
  claimOrphans,
  type HotCounters,
  lockGlobal,
  OwnerState,
  readOwnerCounters,
  Slot,
  slotOf,
  TOTAL_STORE_ORDER,
  unlockGlobal,
} from "../arena/owners.ts";
import type { LargeBlocks } from "./large.ts";
import {
  BitmapWords,
  ClassEntry,
  Desc,
  Granule,
  OsPage,
  PageState,
  purgedMaskWord,
  setState,
  Tables,
  takeBlockFast,
  Tally,
  Unit,
} from "./page_layout.ts";

/** Small classes with allocation lists: those of the size lookup (blocks up to 1 KiB). */
const SPLIT_CLASSES = classOfSize(LOOKUP_MAX_SIZE) + 1;

/** An empty head page stays on its class list only while it has committed this much or less. */
const KEPT_EMPTY_PAGE_BYTES = 16 * 1024;

/**
 * Purging in-use pages gives back runs of at least this many free OS pages:
 * one madvise call costs 15 to 400 us on this project's VM, so a lone free
 * OS page is not worth one.
 */
const MIN_PURGE_PAGES = 4;

/** The most a page's commit runs ahead of its bump pointer (see extendCommit). */
const POPULATE_AHEAD = 16 * 1024;

/** Page-level operations; the block-level fast paths live in heap.ts. */
export class Pages {
  readonly arena: Arena;
  private readonly u32: Uint32Array;
  /** Secure mode's key for free-list links and checksums; 0 when secure mode is off. */
  private readonly key: number;
  /** xorshift32 state for shuffling fresh pages in secure mode. */
  private shuffleState: number;
  /** Owner slot of this Heap object (0 for a heap that is not shared). */
  readonly owner: number;
  /**
   * Shared heaps: the owner slots of debug-mode Workers whose pages this
   * owner adopted, for the Heap to give back the blocks their quarantines
   * held (see modes/debug.ts); the Heap empties it.
   */
  readonly adoptedDebugOwners: number[] = [];
  /**
   * Per small class, the arena offset of the first block of its allocation
   * list (0 = empty; see "block fast paths"). Every block on it belongs to
   * the class's head page, is counted in that page's USED and in the tally's
   * handed-out blocks, has its live bit clear, and links to the next with a
   * plain offset. Always empty unless `splitLists`.
   */
  readonly allocLists = new Uint32Array(CLASS_COUNT);
  /** The heap's allocation counters (see Tally); stats() subtracts what waits on allocation lists. */
  readonly tally = new Float64Array(Tally.Words);
  /** Whether small classes allocate through allocation lists (a private heap in no special mode). */
  readonly splitLists: boolean;
  private readonly shared: boolean;
  /** See TOTAL_STORE_ORDER (owners.ts). */
  private readonly totalStoreOrder = TOTAL_STORE_ORDER;
  /** Shared heaps: words from a live bitmap to the same unit's handed-out bitmap. */
  private readonly handedOutDelta: number;
  /** Where this owner's available-list heads are: headBase + class * headStride. */
  private readonly headBase: number;
  private readonly headStride: number;
  /**
   * The idle budget (see giveBackIdle): idle memory may reach
   * max(idleFloor, idleRatio * allocated bytes) before the heap grows past
   * its peak. Infinity (and shared and secure heaps) turns purging off.
   */
  idleRatio = Infinity;
  idleFloor = 0;
  /** Whether OS pages of in-use pages may be purged: not with shared or secure heaps. */
  private readonly purgesInUsePages: boolean;
  /** The large blocks: their table's bytes are committed, and not idle. */
  private readonly large: LargeBlocks;
  /** committedBytes up to which growth does not look at the idle budget again. */
  private nextIdleCheck = 0;
  /** Scratch for scavengePage: which OS pages of a page hold live bytes. */
  private readonly pinned = new Uint8Array(MEDIUM_UNITS * UNIT_SIZE / OS_PAGE_SIZE);

  constructor(arena: Arena, large: LargeBlocks, owner = 0, splitLists = false) {
    this.arena = arena;
    this.large = large;
    this.splitLists = splitLists;
    // A slot taken over from a Worker that detached brings its counters along.
    if (owner !== 0) this.addCounters(readOwnerCounters(arena, owner));
    this.u32 = arena.u32;
    this.key = arena.u32[H_SECURE_KEY];
    this.shuffleState = this.key | 1;
    this.owner = owner;
    this.shared = owner !== 0;
    this.handedOutDelta = arena.handedOutU32 - arena.bitmapU32;
    this.headBase = owner === 0
      ? Tables.ClassU32 + ClassEntry.AvailHead
      : slotOf(arena, owner) + Slot.Heads;
    this.headStride = owner === 0 ? ClassEntry.Words : 1;
    this.purgesInUsePages = owner === 0 && this.key === 0;
  }

  /** Descriptor index of the unit that holds arena offset `offset`. */
  descriptorOf(offset: number): number {
    return Tables.DescriptorsU32 + ((offset - this.arena.dataStart) >>> Unit.Shift) * Desc.Words;
  }

  /**
   * Makes a page of class `cls` the head of its available list and returns
   * its descriptor, or 0 when no memory can be had.
   */
  acquire(cls: number): number {
    const u32 = this.u32;
    const ce = Tables.ClassU32 + cls * 4;
    const units = u32[ce + ClassEntry.Units];
    const medium = units === MEDIUM_UNITS;
    this.lockShared();
    let d = this.findPage(medium);
    if (d === 0) {
      // The empty fit page fit.ts keeps for its next block is all the room left.
      const kept = this.takeKeptFitPage();
      if (kept !== 0) this.retire(kept), d = this.findPage(medium);
    }
    this.unlockShared();
    if (d === 0) return 0;
    const blockSize = u32[ce + ClassEntry.BlockSize];
    const capacity = u32[ce + ClassEntry.Capacity];
    this.formatPage(
      d,
      medium ? PageState.Medium : PageState.Small,
      cls,
      blockSize,
      capacity,
      capacity * blockSize,
    );
    u32[d + Desc.Shift] = medium ? Granule.MediumShift : Granule.SmallShift;
    u32[d + Desc.RemoteFreed] = 0;
    Atomics.store(u32, d + Desc.Owner, this.owner);
    if (this.key !== 0) {
      u32[d + Desc.Checksum] = this.checksum(d);
      this.shuffleFresh(d);
    }
    const slot = this.headSlot(cls);
    const head = u32[slot];
    if (head !== 0 && u32[head + Desc.Used] === 0) {
      this.unlinkAvailable(head, slot), this.retire(head);
    }
    this.pushAvailable(d, slot);
    return d;
  }

  /**
   * A 1 MiB page for fit.ts, formatted as FIT (no class, no block size; the
   * live bitmap in 16-byte granules, like a small page's), or 0 when no
   * memory can be had. Private, non-secure heaps only.
   */
  acquireFitPage(): number {
    const d = this.findPage(true);
    if (d === 0) return 0;
    this.formatPage(d, PageState.Fit, CLASS_COUNT, 0, 0, MEDIUM_UNITS * UNIT_SIZE);
    this.u32[d + Desc.Shift] = Granule.SmallShift;
    return d;
  }

  /**
   * An off-list page of the kind asked for, from wherever there is one; 0 if
   * none, or if it would take the footprint past limitBytes (see
   * Arena.footprint) even after retained pages go back to the OS.
   */
  private findPage(medium: boolean): number {
    const units = medium ? MEDIUM_UNITS : 1;
    const bytes = units * UNIT_SIZE;
    if (!this.makeRoomUnderLimit(bytes, units)) return 0;
    const d = this.findAnyPage(medium);
    if (d !== 0) this.arena.f64[S_IN_USE_PAGE_BYTES] += bytes;
    return d;
  }

  /**
   * Whether the footprint may grow by `bytes` (and the metadata of `units`
   * carved units) under limitBytes, once retained pages, oldest first, have
   * gone back to the OS as far as that takes.
   */
  makeRoomUnderLimit(bytes: number, units = 0): boolean {
    if (this.arena.withinLimit(bytes, units)) return true;
    this.lockShared(); // re-entrant: findPage calls this under the lock
    try {
      while (!this.arena.withinLimit(bytes, units)) {
        if (this.releaseOldestRetained() < 0) return false;
      }
      return true;
    } finally {
      this.unlockShared();
    }
  }

  private findAnyPage(medium: boolean): number {
    let d = this.takeRetained(medium);
    if (d === 0) d = this.takeReleased(medium);
    if (d === 0 && !medium) d = this.splitRetainedMedium();
    if (d === 0) d = this.carve(medium ? MEDIUM_UNITS : 1);
    if (d === 0) d = this.convertReleased(medium);
    return d;
  }

  /** Descriptor words of a page about to be used (empty; committed memory below COMMIT_END is dirty). */
  private formatPage(
    d: number,
    state: PageState,
    cls: number,
    blockSize: number,
    capacity: number,
    bumpBytes: number,
  ): void {
    const u32 = this.u32;
    const start = u32[d + Desc.PageStart];
    u32[d + Desc.Free] = 0;
    u32[d + Desc.Bump] = start;
    u32[d + Desc.BumpEnd] = start + bumpBytes;
    u32[d + Desc.Used] = 0;
    u32[d + Desc.SyncedUsed] = 0;
    u32[d + Desc.BlockSize] = blockSize;
    u32[d + Desc.Class] = cls;
    setState(u32, d, state);
    u32[d + Desc.ZeroFrom] = u32[d + Desc.CommitEnd];
    u32[d + Desc.Capacity] = capacity;
    u32[d + Desc.LocalPageStart] = start;
    u32[d + Desc.LocalCapacity] = capacity;
    u32[d + Desc.LocalBlockSize] = blockSize;
    // A page with purged OS pages is released, never retained, so none are left here.
    u32[d + Desc.Unlisted] = 0;
    u32[d + Desc.ScanFrom] = 0;
  }

  /** fit.ts: a fit page that emptied goes where empty pages go. */
  retireFitPage(d: number): void {
    this.retire(d);
  }

  /** fit.ts: fit page `d` is about to be written up to `end` (see extendCommit). */
  commitFitPage(d: number, end: number): void {
    if (end > this.u32[d + Desc.CommitEnd]) this.extendCommit(d, end);
  }

  /**
   * fit.ts: gives back the OS pages in `[from, to)` (page-aligned, below
   * COMMIT_END) of fit page `d`, which no chunk header or live block
   * touches; marks them purged. Returns the bytes newly given back.
   */
  purgeFitRange(d: number, from: number, to: number): number {
    const start = this.u32[d + Desc.PageStart];
    let fresh = 0;
    for (let p = (from - start) >>> OsPage.Shift; p < (to - start) >>> OsPage.Shift; p++) {
      if (!this.isPurged(d, p)) this.markPurged(d, p, true), fresh++;
    }
    if (fresh === 0) return 0;
    releasePages(this.arena.base + from, to - from);
    this.arena.f64[S_MADVISE_CALLS]++;
    this.u32[d + Desc.PurgedPages] += fresh;
    this.arena.f64[S_PURGED_BYTES] += fresh * OS_PAGE_SIZE;
    this.arena.addCommitted(-fresh * OS_PAGE_SIZE);
    return fresh * OS_PAGE_SIZE;
  }

  /**
   * fit.ts: the purged OS pages of fit page `d` that `[from, to)` touches
   * are about to be written: counted as committed again and faulted in.
   * `unmarkOnly` (a trimmed page end, above the new COMMIT_END) just forgets
   * them. Returns how many there were.
   */
  recommitFitRange(d: number, from: number, to: number, unmarkOnly = false): number {
    const u32 = this.u32;
    if (u32[d + Desc.PurgedPages] === 0) return 0;
    const start = u32[d + Desc.PageStart];
    let count = 0;
    for (let p = (from - start) >>> OsPage.Shift; p <= (to - 1 - start) >>> OsPage.Shift; p++) {
      if (this.isPurged(d, p)) this.markPurged(d, p, false), count++;
    }
    if (count === 0) return 0;
    u32[d + Desc.PurgedPages] -= count;
    this.arena.f64[S_PURGED_BYTES] -= count * OS_PAGE_SIZE;
    if (unmarkOnly) return count;
    this.giveBackIdle(count * OS_PAGE_SIZE);
    this.arena.addCommitted(count * OS_PAGE_SIZE);
    const first = start + (((from - start) >>> OsPage.Shift) << OsPage.Shift);
    if (populatePages(this.arena.base + first, roundUp(to, OS_PAGE_SIZE) - first)) {
      this.arena.f64[S_MADVISE_CALLS]++;
    }
    return count;
  }

  /** fit.ts: gives back committed memory of fit pages that no block uses; returns the bytes. */
  trimFitPages: (wanted: number) => number = () => 0;
  /** fit.ts: takes the empty fit page it keeps off its lists and returns it (0 if none). */
  takeKeptFitPage: () => number = () => 0;

  // ---- block slow paths ------------------------------------------------------

  /** Fills the class table and size lookup of a freshly created arena. */
  static formatTables(arena: Arena, secure: boolean): void {
    const { u32, u8 } = arena;
    if (secure) {
      const key = new Uint32Array(1);
      while (key[0] === 0) crypto.getRandomValues(key);
      u32[H_SECURE_KEY] = key[0];
    }
    // Secure mode keeps the last OS page of every page inaccessible.
    const guard = secure ? OS_PAGE_SIZE : 0;
    if (
      Tables.DescriptorsU32 * 4 !== DESCRIPTORS_BYTE || 1 << OsPage.Shift !== OS_PAGE_SIZE
    ) {
      throw new Error("arena layout mismatch");
    }
    for (let c = 0; c < CLASS_COUNT; c++) {
      const e = Tables.ClassU32 + c * ClassEntry.Words;
      const blockSize = classBlockSize(c);
      const units = blockSize <= MAX_SMALL_PAGE_BLOCK && blockSize <= UNIT_SIZE - guard
        ? 1
        : MEDIUM_UNITS;
      u32[e + ClassEntry.BlockSize] = blockSize;
      u32[e + ClassEntry.Units] = units;
      u32[e + ClassEntry.Capacity] = Math.floor((units * UNIT_SIZE - guard) / blockSize);
    }
    for (let i = 0; i < LOOKUP_ENTRIES; i++) u8[Tables.LookupU8 + i] = classOfSize(i << 4);
  }

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
      return takeBlockFast(u32, this.allocLists, u32[H_BITMAP_BIAS], cls);
    }
    const slot = this.headSlot(cls);
    let d = u32[slot];
    if (d !== 0 && u32[d + Desc.Used] === u32[d + Desc.Capacity]) {
      this.dropFullHead(d); // full: see the list rules above
      d = u32[slot];
    }
    if (d === 0 && this.shared) {
      // Blocks other Workers freed come first, then pages of Workers that are
      // gone: looking for those costs two system calls per attached Worker
      // (see claimOrphans), so only when a page would be acquired otherwise.
      this.collectRemoteFrees();
      d = u32[slot];
      if (d === 0) {
        this.adoptOrphans();
        d = u32[slot];
      }
    }
    if (d === 0) {
      d = this.acquire(cls);
      if (d === 0) return 0;
    }
    if (this.key !== 0) this.verifyChecksum(d);
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
    if (this.splitLists) this.syncPage(d), u32[d + Desc.SyncedUsed]++;
    const used = u32[d + Desc.Used] + 1;
    u32[d + Desc.Used] = used;
    if (used === u32[d + Desc.Capacity]) this.dropFullHead(d);
    if (this.shared) this.handOut(d, block);
    else this.flipLiveBit(d, block);
    this.countHanded(1, u32[d + Desc.BlockSize]);
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
    const slot = this.headSlot(cls);
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
        return this.handToList(cls, d, first, listed);
      }
      const bump = u32[d + Desc.Bump];
      if (bump < u32[d + Desc.BumpEnd]) {
        if (bump + blockSize > u32[d + Desc.CommitEnd]) {
          // Before committing more, the free blocks of the next page on the list.
          const next = u32[d + Desc.Next];
          if (next !== 0 && u32[next + Desc.Free] !== 0) {
            this.unlinkAvailable(d, slot);
            if (u32[d + Desc.Used] === 0) this.retire(d); // an empty page is only ever a head
            else this.insertAfter(next, d);
            continue;
          }
          this.extendCommit(d, bump + blockSize);
        }
        const end = Math.min(u32[d + Desc.BumpEnd], u32[d + Desc.CommitEnd]);
        const count = Math.floor((end - bump) / blockSize);
        for (let i = 1, b = bump; i < count; i++, b += blockSize) u32[b >>> 2] = b + blockSize;
        u32[(bump + (count - 1) * blockSize) >>> 2] = 0;
        u32[d + Desc.Bump] = bump + count * blockSize;
        if (u32[d + Desc.ZeroFrom] < u32[d + Desc.Bump]) {
          u32[d + Desc.ZeroFrom] = u32[d + Desc.Bump];
        }
        return this.handToList(cls, d, bump, count);
      }
      if (u32[d + Desc.Unlisted] !== 0) {
        const block = this.takeUnlisted(d);
        u32[block >>> 2] = 0;
        return this.handToList(cls, d, block, 1);
      }
      this.dropFullHead(d);
    }
  }

  /** refill(): `count` blocks of page `d` from `first` on become class `cls`'s allocation list. */
  private handToList(cls: number, d: number, first: number, count: number): number {
    const u32 = this.u32;
    this.syncPage(d);
    u32[d + Desc.Used] += count;
    u32[d + Desc.SyncedUsed] += count;
    this.countHanded(count, count * u32[d + Desc.BlockSize]);
    this.allocLists[cls] = first;
    return first;
  }

  /**
   * Puts the blocks waiting on class `cls`'s allocation list back on its
   * head page's free list (before anything changes the head page or reads
   * free lists to purge): the page then holds all its free blocks again.
   */
  private flushAllocList(cls: number): void {
    const u32 = this.u32;
    let block = this.allocLists[cls];
    if (block === 0) return;
    const d = u32[this.headSlot(cls)];
    let count = 0;
    while (block !== 0) {
      const next = u32[block >>> 2];
      u32[block >>> 2] = u32[d + Desc.Free];
      u32[d + Desc.Free] = block;
      block = next;
      count++;
    }
    this.allocLists[cls] = 0;
    u32[d + Desc.Used] -= count;
    u32[d + Desc.SyncedUsed] -= count;
    this.countHanded(-count, -count * u32[d + Desc.BlockSize]);
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
      const d = u32[this.headSlot(c)];
      if (d === 0) continue;
      let live = 0;
      for (let w = 0; w < BitmapWords.Small; w++) {
        for (let bits = u32[u32[d + Desc.Bitmap] + w]; bits !== 0; bits &= bits - 1) live++;
      }
      this.tally[Tally.HandedBlocks] -= u32[d + Desc.Used] - live;
      u32[d + Desc.Used] = live;
      this.syncPage(d);
      this.rebuildFreeList(d);
    }
  }

  /** flushAllocList for every class. */
  private flushAllocLists(): void {
    for (let c = 0; c < SPLIT_CLASSES; c++) this.flushAllocList(c);
  }

  /**
   * Blocks and bytes waiting on allocation lists: handed out in the tally,
   * not to a caller. Walks the lists, each bounded by its page's capacity.
   */
  waitingOnAllocLists(): { blocks: number; bytes: number } {
    let blocks = 0;
    let bytes = 0;
    for (let c = 0; c < SPLIT_CLASSES; c++) {
      const count = this.allocListLength(c);
      blocks += count;
      bytes += count * this.u32[Tables.ClassU32 + c * ClassEntry.Words + ClassEntry.BlockSize];
    }
    return { blocks, bytes };
  }

  /** Blocks waiting on allocation lists, by the descriptor of the (head) page they belong to. */
  waitingByPage(): Map<number, number> {
    const byPage = new Map<number, number>();
    for (let c = 0; c < SPLIT_CLASSES; c++) {
      const count = this.allocListLength(c);
      if (count !== 0) byPage.set(this.u32[this.headSlot(c)], count);
    }
    return byPage;
  }

  /** Length of class `cls`'s allocation list; throws corrupt past a page's capacity (a cycle). */
  private allocListLength(cls: number): number {
    const u32 = this.u32;
    const limit = u32[Tables.ClassU32 + cls * ClassEntry.Words + ClassEntry.Capacity];
    let count = 0;
    for (let b = this.allocLists[cls]; b !== 0 && count <= limit; b = u32[b >>> 2]) count++;
    if (count > limit) {
      throw new HeapError(
        "corrupt",
        this.arena.base + this.allocLists[cls],
        `class ${cls}: its allocation list is longer than a page (a block was written after free)`,
      );
    }
    return count;
  }

  /** Counts blocks handed out (negative: taken back) and raises the peak. */
  countHanded(blocks: number, bytes: number): void {
    const tally = this.tally;
    tally[Tally.HandedBlocks] += blocks;
    const upper = tally[Tally.UpperBytes] + bytes;
    tally[Tally.UpperBytes] = upper;
    if (upper > tally[Tally.PeakBytes]) tally[Tally.PeakBytes] = upper;
  }

  /** Shared heaps: adds the counters of an owner slot this owner takes over (see HotCounters). */
  addCounters(taken: HotCounters): void {
    const tally = this.tally;
    tally[Tally.HandedBlocks] += taken.allocs;
    tally[Tally.FreedBlocks] += taken.frees;
    tally[Tally.UpperBytes] += taken.allocated;
    tally[Tally.PeakBytes] += taken.peakAllocated;
  }

  /** Counts blocks freed (or bytes given back by shrinking in place). */
  countFreed(blocks: number, bytes: number): void {
    this.tally[Tally.FreedBlocks] += blocks;
    this.tally[Tally.UpperBytes] -= bytes;
  }

  /** With allocation lists: subtracts the frees of page `d` not counted yet (see "Counting"). */
  private syncPage(d: number): void {
    const u32 = this.u32;
    const used = u32[d + Desc.Used];
    this.tally[Tally.UpperBytes] -= (u32[d + Desc.SyncedUsed] - used) * u32[d + Desc.BlockSize];
    u32[d + Desc.SyncedUsed] = used;
  }

  /**
   * The counters as stats() shows them (see "Counting" in page_layout.ts).
   * With allocation lists, live blocks and bytes come from the pages' USED,
   * less what waits on the lists (handed out there, not to a caller): a
   * walk over the pages.
   */
  counters(): HotCounters {
    const tally = this.tally;
    if (!this.splitLists) {
      return {
        allocated: tally[Tally.UpperBytes],
        peakAllocated: tally[Tally.PeakBytes],
        allocs: tally[Tally.HandedBlocks],
        frees: tally[Tally.FreedBlocks],
      };
    }
    const waiting = this.waitingOnAllocLists();
    const used = this.usedInClassPages();
    const allocs = tally[Tally.HandedBlocks] - waiting.blocks;
    return {
      allocated: used.bytes - waiting.bytes + tally[Tally.OtherBytes],
      peakAllocated: tally[Tally.PeakBytes],
      allocs,
      frees: allocs - (used.blocks - waiting.blocks + tally[Tally.OtherBlocks]),
    };
  }

  /**
   * Blocks and bytes counted in the USED of this owner's (or a private
   * heap's) size-class pages: live, or waiting on an allocation list.
   */
  usedInClassPages(): { blocks: number; bytes: number } {
    const u32 = this.u32;
    let blocks = 0;
    let bytes = 0;
    const top = u32[H_TOP_UNIT];
    for (let unit = 0; unit < top;) {
      const d = Tables.DescriptorsU32 + unit * Desc.Words;
      const state = u32[d + Desc.State];
      if (state === PageState.Small || state === PageState.Medium) {
        blocks += u32[d + Desc.Used];
        bytes += u32[d + Desc.Used] * u32[d + Desc.BlockSize];
      }
      unit += u32[d + Desc.Units];
    }
    return { blocks, bytes };
  }

  /**
   * Frees a block of page `d` that the caller proved live (small or medium
   * page), with whatever page transition follows. Returns its size.
   */
  freeLive(d: number, offset: number): number {
    const u32 = this.u32;
    if (this.key !== 0) this.verifyChecksum(d);
    // Read now: once the page retires, another Worker may reformat it.
    const blockSize = u32[d + Desc.BlockSize];
    if (this.shared) this.takeBackLocal(d, offset);
    else this.flipLiveBit(d, offset);
    u32[offset >>> 2] = this.encodeNext(offset, u32[d + Desc.Free]);
    u32[d + Desc.Free] = offset;
    const used = u32[d + Desc.Used] - 1;
    u32[d + Desc.Used] = used;
    if (this.splitLists) this.syncPage(d);
    else this.countFreed(1, blockSize);
    // A full page is on no list, unless it is its class's head.
    const unlisted = used + 1 === u32[d + Desc.Capacity] &&
      u32[this.headSlot(u32[d + Desc.Class])] !== d;
    if (used === 0) {
      if (unlisted) this.retire(d); // a page of one block: full, then empty
      else if (!this.staysWhenEmpty(d)) this.retireEmptied(d);
    } else if (unlisted) {
      this.readmit(d);
    }
    return blockSize;
  }

  /** Calls `visit(offset, blockSize)` for every live block in a size-class page. */
  forEachLiveBlock(visit: (offset: number, blockSize: number) => void): void {
    const u32 = this.u32;
    const top = u32[H_TOP_UNIT];
    for (let unit = 0; unit < top; unit++) {
      const d = Tables.DescriptorsU32 + unit * Desc.Words;
      const state = u32[d + Desc.State];
      if (state !== PageState.Small && state !== PageState.Medium) continue;
      const words = state === PageState.Small ? BitmapWords.Small : BitmapWords.Medium;
      for (let w = 0; w < words; w++) {
        let bits = u32[u32[d + Desc.Bitmap] + w];
        while (bits !== 0) {
          const b = 31 - Math.clz32(bits);
          bits &= ~(1 << b);
          visit(this.blockAtGranule(d, w * 32 + b), u32[d + Desc.BlockSize]);
        }
      }
    }
  }

  /**
   * The free block after `block` on page `d`'s free list. In secure mode the
   * link is stored encoded with the heap's key and the block's own offset,
   * and (when `verify`) a link that does not decode to a free block of this
   * page is reported before it is followed.
   */
  nextFree(d: number, block: number, verify: boolean): number {
    const u32 = this.u32;
    const stored = u32[block >>> 2];
    if (this.key === 0) return stored;
    const next = (stored ^ this.key ^ Math.imul(block, 0x9e3779b1)) >>> 0;
    if (verify && next !== 0) {
      const start = u32[d + Desc.PageStart];
      if (
        next < start || next >= u32[d + Desc.BumpEnd] ||
        (next - start) % u32[d + Desc.BlockSize] !== 0 || this.isLive(d, next)
      ) {
        this.rebuildFreeList(d);
        throw new HeapError(
          "corrupt",
          this.arena.base + block,
          "the free-list link stored in this freed block was overwritten (secure mode); " +
            "the page's free list was rebuilt from its live bitmap",
        );
      }
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
    const shift = u32[d + Desc.Shift];
    const handedOut = u32[d + Desc.Bitmap] + this.handedOutDelta;
    let next = 0;
    for (let block = u32[d + Desc.Bump] - blockSize; block >= start; block -= blockSize) {
      const granule = (block - start) >>> shift;
      const waiting = this.shared &&
        (u32[handedOut + (granule >>> 5)] & (1 << (granule & 31))) !== 0;
      if (!this.isLive(d, block) && !waiting) {
        u32[block >>> 2] = this.encodeNext(block, next);
        next = block;
      }
    }
    u32[d + Desc.Free] = next;
  }

  private encodeNext(block: number, next: number): number {
    return this.key === 0 ? next : (next ^ this.key ^ Math.imul(block, 0x9e3779b1)) >>> 0;
  }

  /** Secure mode: a keyed hash of the descriptor words that stay fixed while a page is in use. */
  checksum(d: number): number {
    const u32 = this.u32;
    let h = this.key;
    for (
      const word of [
        Desc.BlockSize,
        Desc.Class,
        Desc.PageStart,
        Desc.Capacity,
        Desc.Bitmap,
        Desc.Shift,
      ]
    ) {
      h = Math.imul(h ^ u32[d + word], 0x01000193) ^ (h >>> 15);
    }
    return h >>> 0;
  }

  private verifyChecksum(d: number): void {
    if (this.u32[d + Desc.Checksum] !== this.checksum(d)) {
      throw new HeapError(
        "corrupt",
        this.arena.base + this.u32[d + Desc.PageStart],
        "page metadata fails its checksum (secure mode)",
      );
    }
  }

  /**
   * Secure mode: links every block of a freshly formatted page into its free
   * list in random order, so that allocation order does not predict
   * addresses. The whole page is committed at once.
   */
  private shuffleFresh(d: number): void {
    const u32 = this.u32;
    const start = u32[d + Desc.PageStart];
    const blockSize = u32[d + Desc.BlockSize];
    const capacity = u32[d + Desc.Capacity];
    const order = new Uint32Array(capacity);
    for (let i = 0; i < capacity; i++) order[i] = i;
    let x = this.shuffleState;
    for (let i = capacity - 1; i > 0; i--) {
      x ^= x << 13, x ^= x >>> 17, x ^= x << 5;
      const j = (x >>> 0) % (i + 1);
      const t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    this.shuffleState = x;
    const end = u32[d + Desc.BumpEnd];
    if (end > u32[d + Desc.CommitEnd]) this.extendCommit(d, end);
    let next = 0;
    for (let i = capacity - 1; i >= 0; i--) {
      const block = start + order[i] * blockSize;
      u32[block >>> 2] = this.encodeNext(block, next);
      next = block;
    }
    u32[d + Desc.Free] = next;
    u32[d + Desc.Bump] = end;
  }

  /**
   * The offset of the block of page `d` that starts in bitmap granule
   * `granule`, or -1 if none does. (Medium pages have one bit per 8 KiB, and
   * their blocks, all larger than 8 KiB, start in distinct granules.)
   */
  blockAtGranule(d: number, granule: number): number {
    const u32 = this.u32;
    const shift = u32[d + Desc.Shift];
    const blockSize = u32[d + Desc.BlockSize];
    const relative = Math.ceil((granule * 2 ** shift) / blockSize) * blockSize;
    return Math.floor(relative / 2 ** shift) === granule ? u32[d + Desc.PageStart] + relative : -1;
  }

  /** True if the block at `offset` of in-use page `d` is live. */
  isLive(d: number, offset: number): boolean {
    const u32 = this.u32;
    const granule = (offset - u32[d + Desc.PageStart]) >>> u32[d + Desc.Shift];
    return (u32[u32[d + Desc.Bitmap] + (granule >>> 5)] & (1 << (granule & 31))) !== 0;
  }

  private flipLiveBit(d: number, offset: number): void {
    const u32 = this.u32;
    const granule = (offset - u32[d + Desc.PageStart]) >>> u32[d + Desc.Shift];
    u32[u32[d + Desc.Bitmap] + (granule >>> 5)] ^= 1 << (granule & 31);
  }

  /**
   * Shared heaps: sets a block's live and handed-out bits. Other Workers
   * clear live bits of this owner's pages (see freeRemote), so the owner
   * changes its live bitmap words with atomic operations only: a plain
   * read-modify-write would undo a remote free.
   */
  private handOut(d: number, offset: number): void {
    const u32 = this.u32;
    const granule = (offset - u32[d + Desc.PageStart]) >>> u32[d + Desc.Shift];
    const word = u32[d + Desc.Bitmap] + (granule >>> 5);
    const bit = 1 << (granule & 31);
    Atomics.or(u32, word, bit);
    u32[word + this.handedOutDelta] |= bit;
  }

  /** Shared heaps: the owner frees a block of its own page (live and handed-out bits). */
  private takeBackLocal(d: number, offset: number): void {
    const u32 = this.u32;
    const granule = (offset - u32[d + Desc.PageStart]) >>> u32[d + Desc.Shift];
    const word = u32[d + Desc.Bitmap] + (granule >>> 5);
    const bit = 1 << (granule & 31);
    this.clearLiveBit(word, bit, offset);
    u32[word + this.handedOutDelta] &= ~bit;
  }

  /**
   * Shared heaps: clears a live bit and throws "double-free", changing
   * nothing, if it was clear already: whoever clears the bit first owns the
   * free, so a block two Workers free at once is freed exactly once.
   */
  private clearLiveBit(word: number, bit: number, offset: number): void {
    if ((Atomics.and(this.u32, word, ~bit) & bit) === 0) {
      throw new HeapError(
        "double-free",
        this.arena.base + offset,
        "free: the block was already freed",
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
    if (end > u32[d + Desc.CommitEnd]) this.extendCommit(d, end);
    u32[d + Desc.Bump] = end;
    return block;
  }

  /**
   * Counts page `d` as committed up to the OS page that holds `end`, and some
   * way past it as the page proves used (as much again as it has committed,
   * up to POPULATE_AHEAD, never past BUMP_END), faulting all of that in with
   * one call: a page fault costs about 12 us here, a populated page about 1 us.
   * (COMMIT_END is read again after giveBackIdle, which may trim this page.)
   */
  private extendCommit(d: number, end: number): void {
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
    this.lockShared();
    this.arena.addCommitted(newEnd - from);
    this.unlockShared();
    u32[d + Desc.CommitEnd] = newEnd;
    if (populatePages(this.arena.base + from, newEnd - from)) this.arena.f64[S_MADVISE_CALLS]++;
  }

  /** The head page of its class list is full: take it off the list. */
  private dropFullHead(d: number): void {
    const u32 = this.u32;
    u32[d + Desc.FastFree] = 0; // its next free puts it back (readmit)
    const next = u32[d + Desc.Next];
    u32[this.headSlot(u32[d + Desc.Class])] = next;
    if (next !== 0) u32[next + Desc.Prev] = 0;
    u32[d + Desc.Next] = 0;
  }

  /**
   * A full page got a block back: it goes back on its class list, at the head,
   * or second while the head page's blocks wait on the allocation list.
   */
  private readmit(d: number): void {
    const u32 = this.u32;
    const cls = u32[d + Desc.Class];
    const slot = this.headSlot(cls);
    const head = u32[slot];
    if (cls < SPLIT_CLASSES && this.allocLists[cls] !== 0) {
      // The allocation list belongs to the head page: the page goes second,
      // and is allocated from once the list runs dry.
      this.insertAfter(head, d);
      u32[d + Desc.FastFree] = 1;
      return;
    }
    if (head !== 0 && u32[head + Desc.Used] === 0) {
      this.unlinkAvailable(head, slot), this.retire(head);
    }
    this.pushAvailable(d, slot);
  }

  /**
   * Whether an emptied page stays on its class list: only a small page that
   * is its class's head and has committed at most KEPT_EMPTY_PAGE_BYTES does,
   * so that a malloc/free pair does not churn pages. Any other empty page
   * retires at once, where every class of its kind can reuse its committed
   * memory; kept as a head it would hold up to 1 MiB for one class.
   */
  private staysWhenEmpty(d: number): boolean {
    const u32 = this.u32;
    // Secure mode commits (and shuffles) whole pages when it formats them: keep its heads.
    return u32[d + Desc.Units] === 1 && u32[this.headSlot(u32[d + Desc.Class])] === d &&
      (this.committedExtent(d) <= KEPT_EMPTY_PAGE_BYTES || this.key !== 0);
  }

  /** A page that just emptied and does not stay: it leaves the list and retires. */
  private retireEmptied(d: number): void {
    this.unlinkAvailable(d, this.headSlot(this.u32[d + Desc.Class]));
    this.retire(d);
  }

  /** Releases every empty page (retained ones and this owner's empty class heads); returns bytes released. */
  trim(): number {
    const u32 = this.u32;
    if (this.shared) {
      this.collectRemoteFrees();
      this.adoptOrphans();
      this.collectStranded();
    }
    this.flushAllocLists();
    this.lockShared();
    const kept = this.takeKeptFitPage();
    let released = kept === 0 ? 0 : this.release(this.leavesUse(kept));
    for (let c = 0; c < CLASS_COUNT; c++) {
      const slot = this.headSlot(c);
      const head = u32[slot];
      if (head !== 0 && u32[head + Desc.Used] === 0) {
        this.unlinkAvailable(head, slot);
        released += this.release(this.leavesUse(head));
      }
    }
    released += this.releaseAllIdle();
    this.unlockShared();
    return released;
  }

  // ---- idle memory ---------------------------------------------------------------
  //
  // Free blocks keep memory of in-use pages committed that holds nothing:
  // the heap's idle memory (committedBytes less allocatedBytes, metadata, the
  // large-block table and retained empty pages, which retainBytes governs). When the heap is about
  // to commit memory past its peak (a bump pointer reaches a new OS page, or
  // a large block is mapped) and its idle memory exceeds the idle budget, it
  // first purges, starting with the pages that hold the most, the OS pages of
  // in-use pages that hold no live byte (madvise DONTNEED). The free blocks that
  // touch a purged OS page leave the free list, since writing a link into
  // them would fault the page back in: they are UNLISTED, and handed out
  // again (their OS pages counted as committed again) once the page's free
  // list and bump area are used up. A page with purged OS pages that empties
  // is released rather than retained. Retained pages count too: growth past
  // the peak first releases the oldest of them, as many as offset it, while
  // they hold more than the idle floor (a heap that grows in one class while
  // pages emptied in others sit retained would otherwise reach a peak of
  // both; the floor keeps the page the next acquire is likely to take). So
  // the footprint grows past its peak only while idle memory is within
  // budget or cannot be given back; trim() gives back all of it, and every
  // retained page.

  /** Called before committed memory grows: gives idle memory back while it is over budget. */
  giveBackIdle(growth: number): void {
    const f64 = this.arena.f64;
    if (this.idleRatio === Infinity) return;
    // Only growth past the peak...
    let past = f64[S_COMMITTED] + growth - f64[S_PEAK_COMMITTED];
    while (past > 0 && f64[S_RETAINED_BYTES] > this.idleFloor) {
      const released = this.releaseOldestRetained();
      if (released < 0) break;
      past -= released;
    }
    // ...and past where the last look at in-use pages left off.
    const committed = f64[S_COMMITTED];
    if (committed + growth <= Math.max(f64[S_PEAK_COMMITTED], this.nextIdleCheck)) return;
    const busy = this.counters().allocated + this.large.tableBytes;
    const budget = Math.max(this.idleFloor, busy * this.idleRatio);
    const idle = committed - f64[S_META_COMMITTED] - busy - f64[S_RETAINED_BYTES];
    // One look per step of growth: a heap that churns at its peak trades
    // pages between classes, and a madvise call per such trade would cost
    // more than the memory is worth.
    const step = Math.max(budget / 4, 16 * OS_PAGE_SIZE);
    // Enough to offset the growth and the next step, not all of the excess:
    // idle memory at the peak is often what the next allocations reuse.
    if (idle > budget) this.scavenge(Math.min(idle - budget, growth + step));
    this.nextIdleCheck = f64[S_COMMITTED] + step;
  }

  /** For trim(): releases every retained page and purges every in-use page; returns the bytes. */
  private releaseAllIdle(): number {
    let released = 0;
    for (let bytes = this.releaseOldestRetained(); bytes >= 0;) {
      released += bytes;
      bytes = this.releaseOldestRetained();
    }
    return released + this.scavenge(Infinity);
  }

  /** Purges free OS pages of in-use pages, those with the most idle bytes first; returns the bytes. */
  private scavenge(wanted: number): number {
    if (!this.purgesInUsePages) return 0;
    const u32 = this.u32;
    this.flushAllocLists(); // the pages' free lists then hold every free block
    // The free ends of fit pages first: one call each, and nothing to relink.
    let released = this.trimFitPages(wanted);
    const candidates: number[] = [];
    const top = u32[H_TOP_UNIT];
    for (let unit = 0; unit < top;) {
      const d = Tables.DescriptorsU32 + unit * Desc.Words;
      const state = u32[d + Desc.State];
      if (
        (state === PageState.Small || state === PageState.Medium) &&
        this.committedExtent(d) - u32[d + Desc.Used] * u32[d + Desc.BlockSize] >= OS_PAGE_SIZE
      ) {
        candidates.push(d);
      }
      unit += u32[d + Desc.Units];
    }
    // Pages being allocated from (their class's head) last: what is purged there comes back first.
    const idleOf = (d: number) =>
      this.committedExtent(d) - u32[d + Desc.Used] * u32[d + Desc.BlockSize] -
      (u32[this.headSlot(u32[d + Desc.Class])] === d ? 2 ** 32 : 0);
    candidates.sort((a, b) => idleOf(b) - idleOf(a));
    for (const d of candidates) {
      if (released >= wanted) break;
      released += this.scavengePage(d);
    }
    return released;
  }

  /**
   * Gives back the OS pages of in-use page `d` that hold no live byte: the
   * committed tail past the bump pointer, and whole OS pages below it.
   * Relinks the free list without the blocks that touch a purged OS page.
   * Returns the bytes given back.
   */
  private scavengePage(d: number): number {
    const u32 = this.u32;
    const base = this.arena.base;
    const start = u32[d + Desc.PageStart];
    const blockSize = u32[d + Desc.BlockSize];
    const bump = u32[d + Desc.Bump];
    let released = 0;
    // The tail: committed (a reused page's earlier life) but past the bump
    // pointer, beyond what extendCommit would have faulted in ahead anyway.
    const bumpEnd = roundUp(bump, OS_PAGE_SIZE) + POPULATE_AHEAD;
    const commitEnd = u32[d + Desc.CommitEnd];
    if (commitEnd - bumpEnd >= MIN_PURGE_PAGES * OS_PAGE_SIZE) {
      releasePages(base + bumpEnd, commitEnd - bumpEnd);
      this.arena.f64[S_MADVISE_CALLS]++;
      // (Purged OS pages all lie below the bump pointer, which only moves up.)
      released += commitEnd - bumpEnd;
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
      if (!this.isLive(d, start + relative)) continue;
      const last = Math.min((relative + blockSize - 1) >>> OsPage.Shift, osPages - 1);
      for (let p = relative >>> OsPage.Shift; p <= last; p++) pinned[p] = 1;
    }
    let purged = 0;
    for (let p = 0, run = -1, fresh = 0; p <= osPages; p++) {
      if (p < osPages && pinned[p] === 0) {
        // Purged pages inside a run go along: one call for the whole stretch.
        if (run < 0) run = p, fresh = 0;
        if (!this.isPurged(d, p)) fresh++;
        continue;
      }
      if (run >= 0 && fresh >= MIN_PURGE_PAGES) {
        releasePages(base + start + run * OS_PAGE_SIZE, (p - run) * OS_PAGE_SIZE);
        this.arena.f64[S_MADVISE_CALLS]++;
        for (let q = run; q < p; q++) this.markPurged(d, q, true);
        purged += fresh;
      }
      run = -1;
    }
    released += purged * OS_PAGE_SIZE;
    this.arena.addCommitted(-released);
    if (purged === 0) return released;
    u32[d + Desc.PurgedPages] += purged;
    this.arena.f64[S_PURGED_BYTES] += purged * OS_PAGE_SIZE;
    // Relink the free blocks that touch no purged OS page, lowest address first.
    let next = 0;
    let listed = 0;
    for (let i = blocks - 1; i >= 0; i--) {
      const block = start + i * blockSize;
      if (this.isLive(d, block) || this.touchesPurged(d, block)) continue;
      u32[block >>> 2] = next;
      next = block;
      listed++;
    }
    u32[d + Desc.Free] = next;
    u32[d + Desc.Unlisted] = blocks - u32[d + Desc.Used] - listed;
    u32[d + Desc.ScanFrom] = 0;
    return released;
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
      if (this.isLive(d, block)) continue;
      u32[d + Desc.ScanFrom] = i + 1;
      u32[d + Desc.Unlisted]--;
      let recommitted = 0;
      const first = (block - start) >>> OsPage.Shift;
      const last = (block - start + blockSize - 1) >>> OsPage.Shift;
      for (let p = first; p <= last; p++) {
        if (this.isPurged(d, p)) this.markPurged(d, p, false), recommitted++;
      }
      u32[d + Desc.PurgedPages] -= recommitted;
      this.arena.f64[S_PURGED_BYTES] -= recommitted * OS_PAGE_SIZE;
      this.arena.addCommitted(recommitted * OS_PAGE_SIZE);
      if (recommitted > 1 && populatePages(this.arena.base + block, blockSize)) {
        this.arena.f64[S_MADVISE_CALLS]++;
      }
      return block;
    }
    throw new HeapError(
      "corrupt",
      this.arena.base + start,
      "page counts unlisted free blocks but has none",
    );
  }

  /** Whether OS page `p` (counted from the page start) of page `d` is purged. */
  isPurged(d: number, p: number): boolean {
    return (this.u32[purgedMaskWord(d, p)] & (1 << (p & 15))) !== 0;
  }

  private markPurged(d: number, p: number, purged: boolean): void {
    const word = purgedMaskWord(d, p);
    if (purged) this.u32[word] |= 1 << (p & 15);
    else this.u32[word] &= ~(1 << (p & 15));
  }

  /** Whether the block at `block` of page `d` touches a purged OS page. */
  touchesPurged(d: number, block: number): boolean {
    const relative = block - this.u32[d + Desc.PageStart];
    const last = (relative + this.u32[d + Desc.BlockSize] - 1) >>> OsPage.Shift;
    for (let p = relative >>> OsPage.Shift; p <= last; p++) {
      if (this.isPurged(d, p)) return true;
    }
    return false;
  }

  private clearPurged(d: number): void {
    const u32 = this.u32;
    for (let unit = 0; unit < u32[d + Desc.Units]; unit++) {
      u32[d + unit * Desc.Words + Desc.PurgedMask] = 0;
    }
    this.arena.f64[S_PURGED_BYTES] -= u32[d + Desc.PurgedPages] * OS_PAGE_SIZE;
    u32[d + Desc.PurgedPages] = 0;
    u32[d + Desc.Unlisted] = 0;
    u32[d + Desc.ScanFrom] = 0;
  }

  /** The u32 index of this owner's available-list head for class `cls`. */
  headSlot(cls: number): number {
    return this.headBase + cls * this.headStride;
  }

  // ---- shared heaps -------------------------------------------------------------

  private lockShared(): void {
    if (this.shared) lockGlobal(this.arena, this.owner);
  }

  private unlockShared(): void {
    if (this.shared) unlockGlobal(this.arena);
  }

  /**
   * Frees a live block of a page that another Worker owns: clears its live
   * bit, and flags the page for its owner (see the top of this file).
   * Returns its size.
   */
  freeRemote(d: number, offset: number): number {
    const u32 = this.u32;
    // Read now: once the bit is clear, the owner may take the block back and retire the page.
    const blockSize = u32[d + Desc.BlockSize];
    const granule = (offset - u32[d + Desc.PageStart]) >>> u32[d + Desc.Shift];
    this.clearLiveBit(u32[d + Desc.Bitmap] + (granule >>> 5), 1 << (granule & 31), offset);
    // A page already flagged is already on its owner's stack: a load, no write
    // (a plain one with total store order: the atomic and above orders it).
    const flagged = this.totalStoreOrder
      ? u32[d + Desc.RemoteFreed]
      : Atomics.load(u32, d + Desc.RemoteFreed);
    if (flagged === 0 && Atomics.exchange(u32, d + Desc.RemoteFreed, 1) === 0) {
      const stack = slotOf(this.arena, Atomics.load(u32, d + Desc.Owner)) + Slot.Pending;
      let top: number;
      do {
        top = Atomics.load(u32, stack);
        Atomics.store(u32, d + Desc.PendingNext, top);
      } while (Atomics.compareExchange(u32, stack, top, d) !== top);
    }
    return blockSize;
  }

  /** Takes back every block other Workers freed on this owner's pages (and on pages it adopted). */
  collectRemoteFrees(): void {
    const stack = slotOf(this.arena, this.owner) + Slot.Pending;
    if (Atomics.load(this.u32, stack) === 0) return;
    for (const d of this.drainPendingStack(stack)) {
      this.collectIfMine(d);
    }
  }

  /**
   * Empties an owner's stack of pages with remote frees and returns them.
   * The whole stack is read before any page is touched: a page whose flag is
   * cleared may be pushed again at once, rewriting its link.
   */
  private drainPendingStack(stack: number): number[] {
    const u32 = this.u32;
    const pages = new Set<number>();
    // A stale entry (a page that changed hands) may link into another stack;
    // stop at the first page seen twice rather than follow a merged chain round.
    for (
      let d = Atomics.exchange(u32, stack, 0);
      d !== 0 && !pages.has(d);
      d = Atomics.load(u32, d + Desc.PendingNext)
    ) {
      pages.add(d);
    }
    return [...pages];
  }

  /**
   * Collects a page with remote frees if this owner owns it. A page listed
   * here that another owner holds now (it changed hands after the freer
   * looked) is left alone: touching another owner's page is never safe, and
   * its blocks wait for that owner's collectStranded (trim, adoption).
   */
  private collectIfMine(d: number): void {
    if (Atomics.load(this.u32, d + Desc.Owner) === this.owner) this.collectPage(d);
  }

  /** Collects every page of this owner flagged REMOTE_FREED (trim, adoption). */
  private collectStranded(): void {
    const u32 = this.u32;
    const top = u32[H_TOP_UNIT];
    for (let unit = 0; unit < top; unit++) {
      const d = Tables.DescriptorsU32 + unit * Desc.Words;
      const state = u32[d + Desc.State];
      if (
        (state === PageState.Small || state === PageState.Medium) &&
        Atomics.load(u32, d + Desc.Owner) === this.owner &&
        Atomics.load(u32, d + Desc.RemoteFreed) !== 0
      ) {
        this.collectPage(d);
      }
    }
  }

  /** Takes back a page's remotely freed blocks (owner only), with the page transition that follows. */
  private collectPage(d: number): void {
    const u32 = this.u32;
    // A full page is on no list, unless it is its class's head.
    const unlisted = u32[d + Desc.Used] === u32[d + Desc.Capacity] &&
      u32[this.headSlot(u32[d + Desc.Class])] !== d;
    if (!this.collectBlocks(d)) return;
    const used = u32[d + Desc.Used];
    if (unlisted) {
      if (used === 0) this.retire(d);
      else this.readmit(d);
    } else if (used === 0 && !this.staysWhenEmpty(d)) {
      this.retireEmptied(d);
    }
  }

  /**
   * Puts the blocks of page `d` that other Workers freed (handed out, no
   * longer live) on its free list; false if there were none. The flag is
   * cleared before the bitmaps are read: a free that clears a live bit after
   * that read finds the flag clear and flags the page again. A flag may also
   * come late, after the owner took the block back on an earlier flag and
   * even retired the page: then there is nothing to take, and the page is
   * left as it is.
   */
  private collectBlocks(d: number): boolean {
    const u32 = this.u32;
    if (Atomics.exchange(u32, d + Desc.RemoteFreed, 0) === 0) return false;
    const start = u32[d + Desc.PageStart];
    const shift = u32[d + Desc.Shift];
    const bitmap = u32[d + Desc.Bitmap];
    const words = (((u32[d + Desc.Bump] - start) >>> shift) + 31) >>> 5;
    const small = shift === Granule.SmallShift;
    let used = u32[d + Desc.Used];
    let free = u32[d + Desc.Free];
    for (let w = 0; w < words; w++) {
      const handedOut = u32[bitmap + this.handedOutDelta + w];
      if (handedOut === 0) continue;
      // A plain load: the exchange above orders it (and an Atomics call costs more than the rest).
      const freed = handedOut & ~u32[bitmap + w];
      if (freed === 0) continue;
      u32[bitmap + this.handedOutDelta + w] = handedOut ^ freed;
      for (let bits = freed; bits !== 0; bits &= bits - 1) {
        const granule = (w << 5) + (31 - Math.clz32(bits & -bits));
        const block = small
          ? start + (granule << Granule.SmallShift)
          : this.blockAtGranule(d, granule);
        u32[block >>> 2] = this.encodeNext(block, free);
        free = block;
        used--;
      }
    }
    if (used === u32[d + Desc.Used]) return false;
    u32[d + Desc.Free] = free;
    u32[d + Desc.Used] = used;
    return true;
  }

  /**
   * Takes over the pages of Workers that detached or exited without closing
   * their heap: their blocks stay valid and their free space is reused.
   */
  adoptOrphans(): void {
    const orphans = claimOrphans(this.arena, this.owner);
    if (orphans.length === 0) return;
    const u32 = this.u32;
    // Take the orphans' stacks of pages with remote frees first, while their
    // links are stable (a page is pushed again only after it is collected).
    const pending = orphans.flatMap((orphan) =>
      this.drainPendingStack(slotOf(this.arena, orphan) + Slot.Pending)
    );
    for (const orphan of orphans) {
      // The orphan's class lists are rebuilt here as this owner's: forget them.
      const slot = slotOf(this.arena, orphan);
      u32.fill(0, slot + Slot.Heads, slot + Slot.Heads + CLASS_COUNT);
    }
    this.lockShared();
    const top = u32[H_TOP_UNIT];
    const adopted: number[] = [];
    for (let unit = 0; unit < top; unit++) {
      const d = Tables.DescriptorsU32 + unit * Desc.Words;
      const state = u32[d + Desc.State];
      if (
        (state === PageState.Small || state === PageState.Medium) &&
        orphans.includes(u32[d + Desc.Owner])
      ) {
        Atomics.store(u32, d + Desc.Owner, this.owner);
        adopted.push(d);
      }
    }
    this.unlockShared();
    for (const d of adopted) {
      u32[d + Desc.Next] = 0;
      u32[d + Desc.Prev] = 0;
      this.collectBlocks(d);
      const used = u32[d + Desc.Used];
      if (used === 0) this.retire(d);
      else if (used < u32[d + Desc.Capacity]) this.readmit(d);
    }
    for (const d of pending) this.collectIfMine(d);
    // The orphans' counters join this owner's and their slots go back for reuse.
    for (const orphan of orphans) {
      this.addCounters(readOwnerCounters(this.arena, orphan));
      if (this.u32[slotOf(this.arena, orphan) + Slot.Debug] === 1) {
        this.adoptedDebugOwners.push(orphan);
      }
      Atomics.store(this.arena.i32, slotOf(this.arena, orphan) + Slot.State, OwnerState.Free);
    }
    this.collectStranded();
  }

  // ---- lists ---------------------------------------------------------------

  private pushAvailable(d: number, slot: number): void {
    const u32 = this.u32;
    let head = u32[slot];
    if (head !== 0 && u32[head + Desc.Used] === u32[head + Desc.Capacity]) {
      this.dropFullHead(head); // only a head may be full
      head = u32[slot];
    }
    u32[d + Desc.Prev] = 0;
    u32[d + Desc.Next] = head;
    if (head !== 0) u32[head + Desc.Prev] = d;
    u32[slot] = d;
    if (u32[d + Desc.State] === PageState.Small) u32[d + Desc.FastFree] = 1;
  }

  /** Puts page `d` on a list right behind page `after`. */
  private insertAfter(after: number, d: number): void {
    const u32 = this.u32;
    const next = u32[after + Desc.Next];
    u32[d + Desc.Prev] = after;
    u32[d + Desc.Next] = next;
    if (next !== 0) u32[next + Desc.Prev] = d;
    u32[after + Desc.Next] = d;
  }

  /** Takes page `d` off the doubly linked list whose head is at u32 index `slot` (also fit.ts's page list). */
  unlinkAvailable(d: number, slot: number): void {
    const u32 = this.u32;
    const prev = u32[d + Desc.Prev];
    const next = u32[d + Desc.Next];
    if (prev !== 0) u32[prev + Desc.Next] = next;
    else u32[slot] = next;
    if (next !== 0) u32[next + Desc.Prev] = prev;
    u32[d + Desc.Next] = 0;
    u32[d + Desc.Prev] = 0;
  }

  /** Puts an empty page on its retained list, then enforces the retain limit. */
  private retire(d: number): void {
    this.lockShared();
    this.retireLocked(d);
    this.unlockShared();
  }

  private retireLocked(d: number): void {
    const u32 = this.u32;
    const f64 = this.arena.f64;
    this.leavesUse(d);
    if (u32[d + Desc.PurgedPages] !== 0) {
      // Partly given back already: reused, its holes would fault in uncounted.
      this.release(d);
      return;
    }
    this.pushRetained(d);
    while (f64[S_RETAINED_BYTES] > f64[S_RETAIN_LIMIT]) this.releaseOldestRetained();
  }

  /** Page `d` is no longer in use (see Arena.footprint); returns `d`. */
  private leavesUse(d: number): number {
    this.arena.f64[S_IN_USE_PAGE_BYTES] -= this.u32[d + Desc.Units] * UNIT_SIZE;
    return d;
  }

  /** Releases the oldest retained page, medium before small as they hold more; -1 if none. */
  private releaseOldestRetained(): number {
    const oldest = this.u32[H_RETAINED_MEDIUM_TAIL] || this.u32[H_RETAINED_SMALL_TAIL];
    if (oldest === 0) return -1;
    this.unlinkRetained(oldest);
    return this.release(oldest);
  }

  /** Puts an empty page at the head of its kind's retained list. */
  private pushRetained(d: number): void {
    const u32 = this.u32;
    const medium = u32[d + Desc.Units] === MEDIUM_UNITS;
    const headSlot = medium ? H_RETAINED_MEDIUM_HEAD : H_RETAINED_SMALL_HEAD;
    const tailSlot = medium ? H_RETAINED_MEDIUM_TAIL : H_RETAINED_SMALL_TAIL;
    setState(u32, d, PageState.Retained);
    const head = u32[headSlot];
    u32[d + Desc.Prev] = 0;
    u32[d + Desc.Next] = head;
    if (head !== 0) u32[head + Desc.Prev] = d;
    else u32[tailSlot] = d;
    u32[headSlot] = d;
    this.arena.f64[S_RETAINED_BYTES] += this.committedExtent(d);
  }

  private takeRetained(medium: boolean): number {
    const d = this.u32[medium ? H_RETAINED_MEDIUM_HEAD : H_RETAINED_SMALL_HEAD];
    if (d !== 0) this.unlinkRetained(d);
    return d;
  }

  private unlinkRetained(d: number): void {
    const u32 = this.u32;
    const medium = u32[d + Desc.Units] === MEDIUM_UNITS;
    const headSlot = medium ? H_RETAINED_MEDIUM_HEAD : H_RETAINED_SMALL_HEAD;
    const tailSlot = medium ? H_RETAINED_MEDIUM_TAIL : H_RETAINED_SMALL_TAIL;
    const prev = u32[d + Desc.Prev];
    const next = u32[d + Desc.Next];
    if (prev !== 0) u32[prev + Desc.Next] = next;
    else u32[headSlot] = next;
    if (next !== 0) u32[next + Desc.Prev] = prev;
    else u32[tailSlot] = prev;
    u32[d + Desc.Next] = 0;
    u32[d + Desc.Prev] = 0;
    this.arena.f64[S_RETAINED_BYTES] -= this.committedExtent(d);
  }

  private takeReleased(medium: boolean): number {
    const u32 = this.u32;
    const slot = medium ? H_RELEASED_MEDIUM_HEAD : H_RELEASED_SMALL_HEAD;
    const d = u32[slot];
    if (d !== 0) {
      u32[slot] = u32[d + Desc.Next];
      u32[d + Desc.Next] = 0;
    }
    return d;
  }

  /** Gives an off-list empty page's memory back to the OS; returns the bytes released. */
  private release(d: number): number {
    const u32 = this.u32;
    const arena = this.arena;
    const start = u32[d + Desc.PageStart];
    const extent = this.committedExtent(d);
    if (extent > 0) {
      // Up to COMMIT_END, over any purged OS pages, so that all of it reads zero.
      releasePages(arena.base + start, u32[d + Desc.CommitEnd] - start);
      arena.f64[S_MADVISE_CALLS]++;
      arena.addCommitted(-extent);
    }
    u32[d + Desc.CommitEnd] = start;
    setState(u32, d, PageState.Released);
    this.clearPurged(d);
    const slot = u32[d + Desc.Units] === MEDIUM_UNITS
      ? H_RELEASED_MEDIUM_HEAD
      : H_RELEASED_SMALL_HEAD;
    u32[d + Desc.Next] = u32[slot];
    u32[slot] = d;
    return extent;
  }

  /** Bytes of page `d` counted in committedBytes: up to COMMIT_END, less the purged OS pages. */
  private committedExtent(d: number): number {
    const u32 = this.u32;
    return u32[d + Desc.CommitEnd] - u32[d + Desc.PageStart] -
      u32[d + Desc.PurgedPages] * OS_PAGE_SIZE;
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
      const d = this.takeReleased(true);
      if (d === 0) return 0;
      const first = (d - Tables.DescriptorsU32) / Desc.Words;
      if (this.key !== 0 && !this.setGuards(first, PROT_NONE)) {
        // Out of map entries: the medium page stays whole (secure pages need their guards).
        u32[d + Desc.Next] = u32[H_RELEASED_MEDIUM_HEAD];
        u32[H_RELEASED_MEDIUM_HEAD] = d;
        return 0;
      }
      for (let i = MEDIUM_UNITS - 1; i >= 0; i--) {
        this.formatReleasedUnit(first + i, 1);
        if (i > 0) {
          const c = d + i * Desc.Words;
          u32[c + Desc.Next] = u32[H_RELEASED_SMALL_HEAD];
          u32[H_RELEASED_SMALL_HEAD] = c;
        }
      }
      return d;
    }
    // Find 16 adjacent released small units.
    const top = u32[H_TOP_UNIT];
    let run = 0;
    for (let unit = 0; unit < top; unit++) {
      const c = Tables.DescriptorsU32 + unit * Desc.Words;
      const free = u32[c + Desc.State] === PageState.Released && u32[c + Desc.Units] === 1;
      run = free ? run + 1 : 0;
      if (run < MEDIUM_UNITS) continue;
      const first = unit - MEDIUM_UNITS + 1;
      if (this.key !== 0 && !this.setGuards(first, PROT_READ | PROT_WRITE)) return 0;
      // Unlink them from the released small list (a rare path: rebuild the list).
      let kept = 0;
      for (let p = u32[H_RELEASED_SMALL_HEAD]; p !== 0;) {
        const next = u32[p + Desc.Next];
        const u = (p - Tables.DescriptorsU32) / Desc.Words;
        if (u < first || u > unit) u32[p + Desc.Next] = kept, kept = p;
        p = next;
      }
      u32[H_RELEASED_SMALL_HEAD] = kept;
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
    if (this.key !== 0) return 0;
    const d = this.takeRetained(true);
    if (d === 0) return 0;
    const u32 = this.u32;
    const first = (d - Tables.DescriptorsU32) / Desc.Words;
    const start = u32[d + Desc.PageStart];
    const committedEnd = u32[d + Desc.CommitEnd];
    for (let i = MEDIUM_UNITS - 1; i >= 0; i--) {
      this.formatReleasedUnit(first + i, 1);
      const c = d + i * Desc.Words;
      const unitStart = start + i * UNIT_SIZE;
      const end = Math.min(Math.max(committedEnd, unitStart), unitStart + UNIT_SIZE);
      u32[c + Desc.CommitEnd] = end;
      if (i === 0) continue;
      if (end > unitStart) {
        this.pushRetained(c);
      } else {
        u32[c + Desc.Next] = u32[H_RELEASED_SMALL_HEAD];
        u32[H_RELEASED_SMALL_HEAD] = c;
      }
    }
    return d;
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
    u32[d + Desc.Bitmap] = arena.bitmapU32 + first * (512 >>> 2);
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
    arena.f64[S_MPROTECT_CALLS]++;
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
    if (this.key !== 0 && !this.setGuard(first, units, PROT_NONE)) return 0;
    return Tables.DescriptorsU32 + first * Desc.Words;
  }
}
