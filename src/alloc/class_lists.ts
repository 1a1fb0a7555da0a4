/**
 * Per size class, what a heap (or a shared heap's owner) hands blocks out
 * from: the list of the class's pages with room (its head in the class
 * table, or in the owner's slot), the allocation list taken from the head
 * page (see "block fast paths" in page_layout.ts), and the tally of blocks
 * handed out, from which stats() derives its counters (see "Counting").
 */

import {
  type Arena,
  DESCRIPTORS_BYTE,
  HeaderU32,
  MAX_OWNERS,
  MEDIUM_UNITS,
  UNIT_SIZE,
} from "../arena/arena.ts";
import { type HotCounters, OwnerState, readOwnerCounters, Slot, slotOf } from "../arena/owners.ts";
import { type Fail, HeapError } from "../errors.ts";
import {
  ClassEntry,
  classPagesIn,
  Desc,
  isDescriptor,
  isLive,
  OsPage,
  PageState,
  Tables,
  Tally,
} from "./page_layout.ts";
import {
  CLASS_COUNT,
  classBlockSize,
  classOfSize,
  LOOKUP_ENTRIES,
  LOOKUP_MAX_SIZE,
  MAX_SMALL_PAGE_BLOCK,
} from "./size_classes.ts";
import { touchesPurged } from "./page_memory.ts";
import { OS_PAGE_SIZE } from "../os/libc.ts";

/** Small classes with allocation lists: those of the size lookup (blocks up to 1 KiB). */
export const SPLIT_CLASSES = classOfSize(LOOKUP_MAX_SIZE) + 1;

/**
 * Fills the class table and size lookup of a freshly created arena. Pages
 * end in `guardBytes` that hold no block (secure mode's guard page).
 */
export function formatClassTable(arena: Arena, guardBytes: number): void {
  const { u32, u8 } = arena;
  if (Tables.DescriptorsU32 * 4 !== DESCRIPTORS_BYTE || 1 << OsPage.Shift !== OS_PAGE_SIZE) {
    throw new Error("arena layout mismatch");
  }
  for (let c = 0; c < CLASS_COUNT; c++) {
    const e = Tables.ClassU32 + c * ClassEntry.Words;
    const blockSize = classBlockSize(c);
    const units = blockSize <= MAX_SMALL_PAGE_BLOCK && blockSize <= UNIT_SIZE - guardBytes
      ? 1
      : MEDIUM_UNITS;
    u32[e + ClassEntry.BlockSize] = blockSize;
    u32[e + ClassEntry.Units] = units;
    u32[e + ClassEntry.Capacity] = Math.floor((units * UNIT_SIZE - guardBytes) / blockSize);
  }
  for (let i = 0; i < LOOKUP_ENTRIES; i++) u8[Tables.LookupU8 + i] = classOfSize(i << 4);
}

export class ClassLists {
  private readonly arena: Arena;
  private readonly u32: Uint32Array;
  /**
   * Per small class, the arena offset of the first block of its allocation
   * list (0 = empty). Every block on it belongs to the class's head page, is
   * counted in that page's USED and in the tally's handed-out blocks, has
   * its live bit clear, and links to the next with a plain offset. Always
   * empty unless `splitLists`.
   */
  readonly allocLists = new Uint32Array(CLASS_COUNT);
  /** The heap's allocation counters (see Tally); stats() subtracts what waits on allocation lists. */
  readonly tally = new Float64Array(Tally.Words);
  /** Whether small classes allocate through allocation lists (a private heap in no special mode). */
  readonly splitLists: boolean;
  /** Where the available-list heads are: headBase + class * headStride. */
  private readonly headBase: number;
  private readonly headStride: number;

  constructor(arena: Arena, owner: number, splitLists: boolean) {
    this.arena = arena;
    this.u32 = arena.u32;
    this.splitLists = splitLists;
    this.headBase = owner === 0
      ? Tables.ClassU32 + ClassEntry.AvailHead
      : slotOf(arena, owner) + Slot.Heads;
    this.headStride = owner === 0 ? ClassEntry.Words : 1;
    // A slot taken over from a Worker that detached brings its counters along.
    if (owner !== 0) this.addCounters(readOwnerCounters(arena, owner));
  }

  /** The u32 index of the head of class `cls`'s list of pages with room. */
  headSlot(cls: number): number {
    return this.headBase + cls * this.headStride;
  }

  /** `count` blocks of page `d` from `first` on become class `cls`'s allocation list. */
  handToList(cls: number, d: number, first: number, count: number): number {
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
  flush(cls: number): void {
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

  /** flush() for every class. */
  flushAll(): void {
    for (let c = 0; c < SPLIT_CLASSES; c++) this.flush(c);
  }

  /**
   * Blocks and bytes waiting on allocation lists: handed out in the tally,
   * not to a caller. Walks the lists, each bounded by its page's capacity.
   */
  waiting(): { blocks: number; bytes: number } {
    let blocks = 0;
    let bytes = 0;
    for (let c = 0; c < SPLIT_CLASSES; c++) {
      const count = this.length(c);
      blocks += count;
      bytes += count * this.u32[Tables.ClassU32 + c * ClassEntry.Words + ClassEntry.BlockSize];
    }
    return { blocks, bytes };
  }

  /** Blocks waiting on allocation lists, by the descriptor of the (head) page they belong to. */
  waitingByPage(): Map<number, number> {
    const byPage = new Map<number, number>();
    for (let c = 0; c < SPLIT_CLASSES; c++) {
      const count = this.length(c);
      if (count !== 0) byPage.set(this.u32[this.headSlot(c)], count);
    }
    return byPage;
  }

  /** Length of class `cls`'s allocation list; throws corrupt past a page's capacity (a cycle). */
  private length(cls: number): number {
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

  // ---- counting -----------------------------------------------------------------

  /** Counts blocks handed out (negative: taken back) and raises the peak. */
  countHanded(blocks: number, bytes: number): void {
    const tally = this.tally;
    tally[Tally.HandedBlocks] += blocks;
    const upper = tally[Tally.UpperBytes] + bytes;
    tally[Tally.UpperBytes] = upper;
    if (upper > tally[Tally.PeakBytes]) tally[Tally.PeakBytes] = upper;
  }

  /** Counts blocks freed (or bytes given back by shrinking in place). */
  countFreed(blocks: number, bytes: number): void {
    this.tally[Tally.FreedBlocks] += blocks;
    this.tally[Tally.UpperBytes] -= bytes;
  }

  /**
   * Counts a fit-page or large block handed out (blocks 1), freed (-1), or
   * resized in place (0): bytes is the change of usable bytes.
   */
  countOther(blocks: number, bytes: number): void {
    this.tally[Tally.OtherBlocks] += blocks;
    this.tally[Tally.OtherBytes] += bytes;
    if (blocks < 0) this.countFreed(-blocks, -bytes);
    else this.countHanded(blocks, bytes);
  }

  /** Shared heaps: adds the counters of an owner slot this owner takes over (see HotCounters). */
  addCounters(taken: HotCounters): void {
    const tally = this.tally;
    tally[Tally.HandedBlocks] += taken.allocs;
    tally[Tally.FreedBlocks] += taken.frees;
    tally[Tally.UpperBytes] += taken.allocated;
    tally[Tally.PeakBytes] += taken.peakAllocated;
  }

  /** With allocation lists: subtracts page `d`'s frees not counted yet ("Counting", page_layout.ts). */
  syncPage(d: number): void {
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
    const waiting = this.waiting();
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
   * Blocks and bytes counted in the USED of the size-class pages (a private
   * heap's: only private heaps have allocation lists): live, or waiting on
   * an allocation list.
   */
  private usedInClassPages(): { blocks: number; bytes: number } {
    const u32 = this.u32;
    let blocks = 0;
    let bytes = 0;
    for (const d of classPagesIn(u32, u32[HeaderU32.TopUnit])) {
      blocks += u32[d + Desc.Used];
      bytes += u32[d + Desc.Used] * u32[d + Desc.BlockSize];
    }
    return { blocks, bytes };
  }

  /**
   * check(): validates the allocation lists: each holds blocks of its
   * class's head page, below the bump pointer, on block boundaries, not live,
   * touching no purged OS page, at most a page's capacity of them. Every link
   * is range-checked before it is followed. Returns them by page descriptor.
   */
  validateAllocLists(fail: Fail): Map<number, Set<number>> {
    const u32 = this.u32;
    const arena = this.arena;
    const byPage = new Map<number, Set<number>>();
    this.allocLists.forEach((first, c) => {
      if (first === 0) return;
      const d = u32[Tables.ClassU32 + c * ClassEntry.Words + ClassEntry.AvailHead];
      if (!this.splitLists || d === 0 || u32[d + Desc.Class] !== c) {
        fail(arena.base + first, `class ${c}: an allocation list without a head page`);
      }
      const start = u32[d + Desc.PageStart];
      const blockSize = u32[d + Desc.BlockSize];
      const blocks = new Set<number>();
      for (let b = first; b !== 0; b = u32[b >>> 2]) {
        if (
          b < start || b >= u32[d + Desc.Bump] || (b - start) % blockSize !== 0 ||
          blocks.has(b) || blocks.size >= u32[d + Desc.Capacity]
        ) {
          fail(arena.base + b, `class ${c}: allocation list link outside its page's free blocks`);
        }
        if (isLive(u32, d, b)) {
          fail(arena.base + b, `class ${c}: a live block is on the allocation list`);
        }
        if (touchesPurged(u32, d, b)) {
          fail(arena.base + b, `class ${c}: a block on the allocation list touches a purged page`);
        }
        blocks.add(b);
      }
      byPage.set(d, blocks);
    });
    return byPage;
  }
}

/**
 * check(): validates every owner's class lists (a heap that is not shared
 * has one set, owner 0): each holds in-use pages of its class, with room
 * (only the head may be full, or empty), owned by the owner, linked both
 * ways, without a cycle; each page of `inUseWithRoom` is found once (and
 * deleted from it).
 */
export function validateClassLists(arena: Arena, inUseWithRoom: Set<number>, fail: Fail): void {
  const u32 = arena.u32;
  const top = u32[HeaderU32.TopUnit];
  const owners = [0];
  for (let owner = 1; owner < MAX_OWNERS; owner++) {
    if (u32[slotOf(arena, owner) + Slot.State] !== OwnerState.Free) owners.push(owner);
  }
  for (const owner of owners) {
    for (let c = 0; c < CLASS_COUNT; c++) {
      const headSlot = owner === 0
        ? Tables.ClassU32 + c * ClassEntry.Words + ClassEntry.AvailHead
        : slotOf(arena, owner) + Slot.Heads + c;
      let prev = 0;
      let steps = 0;
      for (let d = u32[headSlot]; d !== 0; prev = d, d = u32[d + Desc.Next]) {
        if (!isDescriptor(d, top)) fail(arena.base, `class ${c}: list link ${d} is not a page`);
        const where = arena.base + (u32[d + Desc.PageStart]);
        if (++steps > top) fail(where, `class ${c}: available list has a cycle`);
        const fullHead = prev === 0 && u32[d + Desc.Used] === u32[d + Desc.Capacity] &&
          (u32[d + Desc.State] === PageState.Small || u32[d + Desc.State] === PageState.Medium);
        if (!fullHead && !inUseWithRoom.delete(d)) {
          fail(where, `class ${c}: listed page is not an in-use page with room (or a full head)`);
        }
        if (u32[d + Desc.Class] !== c) {
          fail(where, `class ${c}: listed page belongs to class ${u32[d + Desc.Class]}`);
        }
        if (u32[d + Desc.Prev] !== prev) fail(where, `class ${c}: broken back link`);
        if (u32[d + Desc.Owner] !== owner) {
          fail(
            where,
            `class ${c}: a page of owner ${u32[d + Desc.Owner]} is on owner ${owner}'s list`,
          );
        }
        if (u32[d + Desc.Used] === 0 && prev !== 0) {
          fail(where, `class ${c}: empty page not at the head`);
        }
        if (u32[d + Desc.State] === PageState.Small && u32[d + Desc.FastFree] !== 1) {
          fail(where, `class ${c}: a listed small page is marked off its list`);
        }
      }
    }
  }
  if (inUseWithRoom.size > 0) {
    const d = inUseWithRoom.values().next().value!;
    fail(arena.base + (u32[d + Desc.PageStart]), "page with room is missing from its class list");
  }
}
