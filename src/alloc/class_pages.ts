/**
 * Small and medium pages, each of one size class: taking and freeing blocks
 * off the fast paths, refilling allocation lists, and the page transitions
 * (see "Which list a page is on" in page_layout.ts, which draws the layout
 * and holds the fast paths). Pages come from and go back to the page source;
 * their committed memory grows through idle.ts.
 */

import {
  type Arena,
  DESCRIPTORS_BYTE,
  H_BITMAP_BIAS,
  H_SECURE_KEY,
  H_TOP_UNIT,
  MEDIUM_UNITS,
  UNIT_SIZE,
} from "../arena/arena.ts";
import {
  CLASS_COUNT,
  classBlockSize,
  classOfSize,
  LOOKUP_ENTRIES,
  MAX_SMALL_PAGE_BLOCK,
} from "./size_classes.ts";
import { OS_PAGE_SIZE } from "../os/libc.ts";
import { HeapError } from "../errors.ts";
import {
  claimOrphans,
  OwnerState,
  readOwnerCounters,
  Slot,
  slotOf,
  TOTAL_STORE_ORDER,
} from "../arena/owners.ts";
import { type ClassLists, SPLIT_CLASSES } from "./class_lists.ts";
import type { IdleMemory } from "./idle.ts";
import {
  BitmapWords,
  blockAtGranule,
  ClassEntry,
  Desc,
  formatPage,
  Granule,
  isLive,
  OsPage,
  PageState,
  Tables,
  takeBlockFast,
  Tally,
} from "./page_layout.ts";
import { insertAfter, pushFront, unlink } from "./page_list.ts";
import { committedExtent, recommit, unpurgeRange } from "./page_memory.ts";
import type { PageSource } from "./page_source.ts";

/** An empty head page stays on its class list only while it has committed this much or less. */
const KEPT_EMPTY_PAGE_BYTES = 16 * 1024;

/** Pages of size classes: taking and freeing blocks off the fast paths, and the page transitions. */
export class ClassPages {
  readonly arena: Arena;
  private readonly u32: Uint32Array;
  private readonly source: PageSource;
  private readonly lists: ClassLists;
  private readonly idle: IdleMemory;
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
  private readonly splitLists: boolean;
  private readonly allocLists: Uint32Array;
  private readonly shared: boolean;
  /** See TOTAL_STORE_ORDER (owners.ts). */
  private readonly totalStoreOrder = TOTAL_STORE_ORDER;
  /** Shared heaps: words from a live bitmap to the same unit's handed-out bitmap. */
  private readonly handedOutDelta: number;

  constructor(
    arena: Arena,
    source: PageSource,
    lists: ClassLists,
    idle: IdleMemory,
    owner: number,
  ) {
    this.arena = arena;
    this.u32 = arena.u32;
    this.source = source;
    this.lists = lists;
    this.idle = idle;
    this.splitLists = lists.splitLists;
    this.allocLists = lists.allocLists;
    this.key = arena.u32[H_SECURE_KEY];
    this.shuffleState = this.key | 1;
    this.owner = owner;
    this.shared = owner !== 0;
    this.handedOutDelta = arena.handedOutU32 - arena.bitmapU32;
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
    if (this.key !== 0) {
      u32[d + Desc.Checksum] = this.checksum(d);
      this.shuffleFresh(d);
    }
    const slot = this.lists.headSlot(cls);
    const head = u32[slot];
    if (head !== 0 && u32[head + Desc.Used] === 0) {
      unlink(u32, slot, head), this.source.retire(head);
    }
    this.pushAvailable(d, slot);
    return d;
  }

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
    const slot = this.lists.headSlot(cls);
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
    if (this.splitLists) this.lists.syncPage(d), u32[d + Desc.SyncedUsed]++;
    const used = u32[d + Desc.Used] + 1;
    u32[d + Desc.Used] = used;
    if (used === u32[d + Desc.Capacity]) this.dropFullHead(d);
    if (this.shared) this.handOut(d, block);
    else this.flipLiveBit(d, block);
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
    if (this.key !== 0) this.verifyChecksum(d);
    // Read now: once the page retires, another Worker may reformat it.
    const blockSize = u32[d + Desc.BlockSize];
    if (this.shared) this.takeBackLocal(d, offset);
    else this.flipLiveBit(d, offset);
    u32[offset >>> 2] = this.encodeNext(offset, u32[d + Desc.Free]);
    u32[d + Desc.Free] = offset;
    const used = u32[d + Desc.Used] - 1;
    u32[d + Desc.Used] = used;
    if (this.splitLists) this.lists.syncPage(d);
    else this.lists.countFreed(1, blockSize);
    // A full page is on no list, unless it is its class's head.
    const unlisted = used + 1 === u32[d + Desc.Capacity] &&
      u32[this.lists.headSlot(u32[d + Desc.Class])] !== d;
    if (used === 0) {
      if (unlisted) this.source.retire(d); // a page of one block: full, then empty
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
          visit(blockAtGranule(u32, d, w * 32 + b), u32[d + Desc.BlockSize]);
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
        (next - start) % u32[d + Desc.BlockSize] !== 0 || isLive(u32, d, next)
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
      if (!isLive(u32, d, block) && !waiting) {
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
    if (end > u32[d + Desc.CommitEnd]) this.idle.extendCommit(d, end);
    let next = 0;
    for (let i = capacity - 1; i >= 0; i--) {
      const block = start + order[i] * blockSize;
      u32[block >>> 2] = this.encodeNext(block, next);
      next = block;
    }
    u32[d + Desc.Free] = next;
    u32[d + Desc.Bump] = end;
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
  private readmit(d: number): void {
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
   * Whether an emptied page stays on its class list: only a small page that
   * is its class's head and has committed at most KEPT_EMPTY_PAGE_BYTES does,
   * so that a malloc/free pair does not churn pages. Any other empty page
   * retires at once, where every class of its kind can reuse its committed
   * memory; kept as a head it would hold up to 1 MiB for one class.
   */
  private staysWhenEmpty(d: number): boolean {
    const u32 = this.u32;
    // Secure mode commits (and shuffles) whole pages when it formats them: keep its heads.
    return u32[d + Desc.Units] === 1 && u32[this.lists.headSlot(u32[d + Desc.Class])] === d &&
      (committedExtent(u32, d) <= KEPT_EMPTY_PAGE_BYTES || this.key !== 0);
  }

  /** A page that just emptied and does not stay: it leaves the list and retires. */
  private retireEmptied(d: number): void {
    unlink(this.u32, this.lists.headSlot(this.u32[d + Desc.Class]), d);
    this.source.retire(d);
  }

  /** Releases every empty page (retained ones and this owner's empty class heads); returns bytes released. */
  trim(): number {
    const u32 = this.u32;
    if (this.shared) {
      this.collectRemoteFrees();
      this.adoptOrphans();
      this.collectStranded();
    }
    this.lists.flushAll();
    this.source.lock();
    let released = this.source.releaseKeptFitPage();
    for (let c = 0; c < CLASS_COUNT; c++) {
      const slot = this.lists.headSlot(c);
      const head = u32[slot];
      if (head !== 0 && u32[head + Desc.Used] === 0) {
        unlink(u32, slot, head);
        released += this.source.releaseEmpty(head);
      }
    }
    released += this.idle.releaseAll();
    this.source.unlock();
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

  // ---- shared heaps -------------------------------------------------------------

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
      u32[this.lists.headSlot(u32[d + Desc.Class])] !== d;
    if (!this.collectBlocks(d)) return;
    const used = u32[d + Desc.Used];
    if (unlisted) {
      if (used === 0) this.source.retire(d);
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
          : blockAtGranule(u32, d, granule);
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
    this.source.lock();
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
    this.source.unlock();
    for (const d of adopted) {
      u32[d + Desc.Next] = 0;
      u32[d + Desc.Prev] = 0;
      this.collectBlocks(d);
      const used = u32[d + Desc.Used];
      if (used === 0) this.source.retire(d);
      else if (used < u32[d + Desc.Capacity]) this.readmit(d);
    }
    for (const d of pending) this.collectIfMine(d);
    // The orphans' counters join this owner's and their slots go back for reuse.
    for (const orphan of orphans) {
      this.lists.addCounters(readOwnerCounters(this.arena, orphan));
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
    pushFront(u32, slot, d);
    if (u32[d + Desc.State] === PageState.Small) u32[d + Desc.FastFree] = 1;
  }
}
