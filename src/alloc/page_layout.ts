/**
 * The layout of small and medium pages, and the block fast paths that read
 * it (in this module, so that V8 sees its const enums as literals; the
 * slow paths are class_pages.ts's).
 *
 * Small and medium pages: the blocks of one size class, carved from the arena.
 *
 * A page is one 64 KiB unit (blocks up to 64 KiB: 4096 of 16 bytes down to
 * one of 36 to 64 KiB) or sixteen (a 1 MiB medium page, blocks above 64 KiB;
 * in secure mode, from 64 KiB). Each unit has a 128-byte descriptor in the arena's
 * metadata; a medium page's descriptor is its first unit's, and the other
 * fifteen units point back to it (state CONTINUATION).
 *
 *   page   +---------+---------+---------+-- ... --+---------+---------+----+
 *          | block 0 | block 1 | block 2 |         | bump -> |  never  |tail|
 *          | live    | free  --+-> ...   |         | used    |  used   |    |
 *          +---------+---------+---------+-- ... --+---------+---------+----+
 *          ^ PAGE_START                             ^ BUMP    BUMP_END ^
 *
 * Blocks are handed out from the page's free list first, then by bumping
 * BUMP towards BUMP_END, so a fresh page is touched (and counted as
 * committed, up to COMMIT_END) only as far as it is used, and a little
 * ahead: extendCommit faults memory in with one call, not page by page.
 * A free block's first 4 bytes hold the offset of the next free block.
 * Classes up to 1 KiB of a private heap in no special mode take the free
 * list, or a batch of bumped blocks, onto their allocation list in one go
 * (see "block fast paths" below); the page's own free list then collects
 * what free() gives back.
 *
 * Each unit also owns 512 bytes of live bitmap: one bit per 16-byte granule
 * of a small page, set at a live block's first granule (medium pages use one
 * bit per 8 KiB, which still separates their blocks, all larger). Free checks
 * the bit, which makes double-free and interior-pointer detection exact.
 *
 * Shared heaps: each unit has a second bitmap, the handed-out bitmap, that
 * only the page's owner writes: the blocks it handed out and has not seen
 * freed. Other Workers free its blocks by clearing live bits alone (see
 * modes/shared.ts).
 *
 * Descriptor, 32 u32 words on two cache lines. The first holds what the
 * page's owner writes as it allocates and frees; the second what stays fixed
 * while the page is in use, which every Worker that frees a block of the page
 * reads (shared heaps): a remote free then does not pull the line the owner
 * keeps writing away from it.
 *
 *   line 0 (bytes 0..63), written on the owner's malloc and free
 *   0 FREE        offset of the first free block, 0 = none
 *   1 BUMP        offset of the next never-used block
 *   2 USED        blocks handed out, less those the page's owner saw freed
 *                        invariant: USED + free + UNLISTED + unbumped = CAPACITY
 *   3 NEXT        list link (descriptor index, 0 = none)
 *   4 PREV        list link (descriptor index, 0 = none)
 *   5 COMMIT_END  bytes below this offset are counted in committedBytes (4 KiB-rounded)
 *   6 ZERO_FROM   memory at or above this offset is still zero from the OS
 *   7 UNLISTED    free blocks on no list: they touch a purged OS page
 *   8 SCAN_FROM   block index where the search for an unlisted block resumes
 *   9 PURGED_PAGES OS pages given back to the OS while the page is in use
 *  10 PURGED_MASK one bit per 4 KiB OS page of this unit (a medium page's
 *                 continuation descriptors hold the bits of their units)
 *  11 FAST_FREE   1 while STATE is SMALL and the page is on its class list
 *                 (free's fast path may push onto its free list), else 0
 *  12,14,15 PAGE_START, CAPACITY, BLOCK_SIZE again: the fast paths of a
 *                 private heap read these, and so one line of the descriptor
 *  13 SYNCED_USED USED when the heap's counters last counted the page
 *
 *   line 1 (bytes 64..127), fixed while the page is in use
 *  16 BLOCK_SIZE  bytes per block
 *  17 CLASS       size class
 *  18 STATE       UNUSED | SMALL | MEDIUM | RETAINED | RELEASED | CONTINUATION | FIT
 *  19 PAGE_START  offset of the page's first byte
 *  20 BUMP_END    end of the last whole block that fits
 *  21 CAPACITY    blocks the page holds
 *  22 BITMAP      u32 index of the live bitmap
 *  23 UNITS       1 or 16
 *  24 SHIFT       granule shift of the bitmap: 4 (small) or 13 (medium)
 *  25 CHECKSUM    secure mode: a keyed hash of BLOCK_SIZE, CLASS, PAGE_START,
 *                 CAPACITY, BITMAP and SHIFT
 *  26 OWNER       shared heaps: owner slot of the Worker that allocates here
 *  27 REMOTE_FREED shared heaps: 1 once another Worker freed a block here,
 *                 until the owner takes the blocks back (written once per
 *                 such round, not per free)
 *  28 PENDING_NEXT shared heaps: link in the owner's stack of such pages
 *  29-31          spare
 *
 * Which list a page is on:
 *  - SMALL/MEDIUM page with room (USED < CAPACITY): its class's available
 *    list. A full page is on no list, except that the head may be full
 *    (its blocks live or waiting on the allocation list): ClassPages.take and
 *    refill drop a full head when they find one, and so does pushing a
 *    page in front of it. A free to a full page that is not listed puts it
 *    back at the head, or second while the head's blocks wait on the
 *    allocation list (or retires it, when the page holds one block: full,
 *    then empty). FAST_FREE is 0 exactly while a small page is full and
 *    off its list.
 *  - An in-use page with USED = 0 may only be the head of its class list:
 *    a small page that has committed at most 16 KiB (or any small page in
 *    secure mode) stays there so that a malloc/free pair does not churn
 *    pages; any other page that empties is retired at once (ClassPages.emptied).
 *    With a shared heap, each owner (Worker) has its own class lists.
 *  - FIT: a 1 MiB page of fit.ts (blocks above 1 KiB of a private heap), on
 *    the list of fit pages in the arena header, never on a class list (the
 *    one kept empty is on none); taken and retired like a medium page.
 *  - RETAINED or RELEASED: empty, on the page source's lists (see
 *    page_source.ts).
 */

/** Descriptor words (u32 offsets from a descriptor index); see the table above. */
export const enum Desc {
  // Line 0: written by the page's owner as it allocates and frees.
  Free = 0,
  Bump = 1,
  Used = 2,
  Next = 3,
  Prev = 4,
  CommitEnd = 5,
  ZeroFrom = 6,
  /** Free blocks that are on no list because they touch a purged OS page (see scavengePage). */
  Unlisted = 7,
  /** Block index from which the next unlisted block is searched. */
  ScanFrom = 8,
  /** OS pages of the page given back to the OS while the page stays in use. */
  PurgedPages = 9,
  /**
   * Bit per OS page of this 64 KiB unit, set = purged. Every unit of a medium
   * page keeps the bits of its own 16 OS pages (in its CONTINUATION descriptor).
   */
  PurgedMask = 10,
  /**
   * 1 while STATE is SMALL and the page is on its class list, else 0: the
   * one flag free's fast path reads. A full page taken off its list gets 0,
   * so its next free takes the slow path, which puts it back (readmit).
   * LOCAL_PAGE_START, LOCAL_CAPACITY and LOCAL_BLOCK_SIZE copy line 1 onto
   * the owner's line, so that a private heap's free touches one line.
   */
  FastFree = 11,
  LocalPageStart = 12,
  /** With allocation lists: USED when the Tally last counted this page (see "Counting"). */
  SyncedUsed = 13,
  LocalCapacity = 14,
  LocalBlockSize = 15,
  // Line 1: fixed while the page is in use (read by Workers that free its blocks).
  BlockSize = 16,
  Class = 17,
  State = 18,
  PageStart = 19,
  BumpEnd = 20,
  Capacity = 21,
  Bitmap = 22,
  Units = 23,
  Shift = 24,
  /** Secure mode: checksum of the words that stay fixed while the page is in use. */
  Checksum = 25,
  /** Shared heaps: the owner slot whose Worker allocates from this page (0 = not shared). */
  Owner = 26,
  /** Shared heaps: 1 from another Worker's free of a block here until the owner takes it back. */
  RemoteFreed = 27,
  /** Shared heaps: link in the owner's stack of pages with remote frees. */
  PendingNext = 28,
  /** Words per descriptor. */
  Words = 32,
}

export const enum PageState {
  Unused = 0,
  Small = 1,
  Medium = 2,
  Retained = 3,
  Released = 4,
  Continuation = 5,
  /** A fit page (see fit.ts): blocks of any size above 1 KiB, coalesced when freed. */
  Fit = 6,
}

/**
 * Where the page tables sit in the arena (see the layout in arena.ts), in
 * u32 words, or bytes for the u8 lookup. Const enums, because Deno inlines a
 * const enum's values only inside the module that declares it: the block fast
 * paths below then index with literals. Other modules read them as objects.
 */
export const enum Tables {
  /** Class table: ClassEntry.Words words per size class. */
  ClassU32 = 512,
  /** Size -> class lookup (u8 per 16-byte step of size up to LOOKUP_MAX_SIZE). */
  LookupU8 = 3584,
  /** Page descriptors: Desc.Words words per 64 KiB unit. */
  DescriptorsU32 = 1024,
}

/** Words of one class-table entry. */
export const enum ClassEntry {
  BlockSize = 0,
  /** Descriptor index of the first page with room, 0 = none. */
  AvailHead = 1,
  /** Blocks a page of this class holds. */
  Capacity = 2,
  /** 1 (small page) or MEDIUM_UNITS. */
  Units = 3,
  Words = 4,
}

/** Sets a page's STATE, and FAST_FREE with it (every STATE write goes through here). */
export function setState(u32: Uint32Array, d: number, state: PageState): void {
  u32[d + Desc.State] = state;
  u32[d + Desc.FastFree] = state === PageState.Small ? 1 : 0;
}

/** The u32 index of the purge-mask word that holds OS page `p` of page `d` (16 per unit). */
export function purgedMaskWord(d: number, p: number): number {
  return d + (p >>> 4) * Desc.Words + Desc.PurgedMask;
}

/** Descriptor index of the 64 KiB unit that holds arena offset `offset` (data at `dataStart`). */
export function descriptorOf(dataStart: number, offset: number): number {
  return Tables.DescriptorsU32 + ((offset - dataStart) >>> Unit.Shift) * Desc.Words;
}

/** Descriptor index of the page that holds arena offset `offset` (a medium page's first unit's). */
export function pageDescriptorOf(u32: Uint32Array, dataStart: number, offset: number): number {
  const d = descriptorOf(dataStart, offset);
  return u32[d + Desc.State] === PageState.Continuation
    ? descriptorOf(dataStart, u32[d + Desc.PageStart])
    : d;
}

/** The u32 index of the live-bitmap word that holds the bit of the block at `offset` of in-use page `d`. */
export function liveWord(u32: Uint32Array, d: number, offset: number): number {
  return u32[d + Desc.Bitmap] +
    (((offset - u32[d + Desc.PageStart]) >>> u32[d + Desc.Shift]) >>> 5);
}

/** That block's bit in its live-bitmap word (see liveWord). */
export function liveBit(u32: Uint32Array, d: number, offset: number): number {
  return 1 << (((offset - u32[d + Desc.PageStart]) >>> u32[d + Desc.Shift]) & 31);
}

/** True if the block at `offset` of in-use page `d` is live. */
export function isLive(u32: Uint32Array, d: number, offset: number): boolean {
  return (u32[liveWord(u32, d, offset)] & liveBit(u32, d, offset)) !== 0;
}

/**
 * The offset of the block of page `d` that starts in bitmap granule
 * `granule`, or -1 if none does. (Medium pages have one bit per 8 KiB, and
 * their blocks, all larger than 8 KiB, start in distinct granules.)
 */
export function blockAtGranule(u32: Uint32Array, d: number, granule: number): number {
  const shift = u32[d + Desc.Shift];
  const blockSize = u32[d + Desc.BlockSize];
  const relative = Math.ceil((granule * 2 ** shift) / blockSize) * blockSize;
  return Math.floor(relative / 2 ** shift) === granule ? u32[d + Desc.PageStart] + relative : -1;
}

/**
 * Writes the descriptor words of a page about to be used (empty; committed
 * memory below COMMIT_END is dirty): class pages with their class, fit
 * pages with none.
 */
export function formatPage(
  u32: Uint32Array,
  d: number,
  state: PageState,
  cls: number,
  blockSize: number,
  capacity: number,
  bumpBytes: number,
  shift: number,
): void {
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
  u32[d + Desc.Shift] = shift;
  u32[d + Desc.LocalPageStart] = start;
  u32[d + Desc.LocalCapacity] = capacity;
  u32[d + Desc.LocalBlockSize] = blockSize;
  // A page with purged OS pages is released, never retained, so none are left here.
  u32[d + Desc.Unlisted] = 0;
  u32[d + Desc.ScanFrom] = 0;
}

/** log2 of OS_PAGE_SIZE, for the purge masks (checked in formatTables). */
export const enum OsPage {
  Shift = 12,
}

/** Words of live bitmap a page uses: 4096 granules of 16 bytes (small), 128 of 8 KiB (medium). */
export const enum BitmapWords {
  Small = 128,
  Medium = 4,
}

/** Bitmap granule shifts: one bit per 16 bytes (small pages), per 8 KiB (medium pages). */
export const enum Granule {
  SmallShift = 4,
  MediumShift = 13,
}

/** 64 KiB units: the shift that turns a data offset into a unit number. */
export const enum Unit {
  Shift = 16,
}

// ---- block fast paths --------------------------------------------------------
//
// A private heap's malloc and free for blocks up to 1 KiB, after mimalloc's
// split free lists. Each small class has an allocation list: free blocks of
// the class's head page, taken off that page in one go (its free list, or a
// batch of never-used blocks) and already counted in its USED. malloc pops
// that list and sets the block's live bit; it never reads a descriptor. free
// pushes the block onto its own page's free list and decrements USED; the
// page's FAST_FREE flag and the new USED tell, with two compares, that
// nothing else must happen (the page neither emptied nor was full and off
// its list). Everything else, including refilling an empty allocation list,
// is ClassPages.take and ClassPages.freeLive (a live block of a small page
// goes straight there: liveSmallPage). Both functions use literals only (the
// const enums of this module) so that V8 inlines them into Heap.malloc/free
// and those into the caller's loop. Neither counts anything: a counter
// updated on every call is a chain of loads and stores from one call to the
// next, and cost more than the rest of free (see bench/fast_path.bench.ts).
//
// Secure, shared and debug heaps keep their allocation lists empty and their
// Heap sends every free to the slow path: their modes live off these paths.
//
// Counting (the Tally, read by stats()). Every block handed out is counted
// when it is: one by one on the slow paths, a batch at a time when it goes
// onto an allocation list. With allocation lists, a free on the fast path
// only lowers its page's USED, so live blocks and bytes are derived when
// stats() runs, from the USED of every page less what waits on allocation
// lists. UPPER_BYTES bounds allocated bytes from above at every moment: it
// rises with every block handed out and falls when a slow path counts a
// page's USED again (SYNCED_USED: what it was when last counted), so the
// fast frees of a page are subtracted the next time its page goes through
// a slow path. The peak is UPPER_BYTES at its highest: above the true peak
// by at most the free blocks of partly used pages not counted again since,
// and the blocks waiting on allocation lists. Without allocation lists,
// every free is counted as it happens, and UPPER_BYTES is exact.

/** Counters of a heap's allocations, in a Float64Array (past 2^31 with no change of representation). */
export const enum Tally {
  /** Blocks handed out (to a caller, or onto an allocation list), less those taken back from a list. */
  HandedBlocks = 0,
  /** Frees counted as they happen (all of them, without allocation lists). */
  FreedBlocks = 1,
  /** Allocated bytes or more (see "Counting" above). */
  UpperBytes = 2,
  /** The highest UpperBytes seen when blocks were handed out. */
  PeakBytes = 3,
  /** Live fit-page and large blocks, and their bytes. */
  OtherBlocks = 4,
  OtherBytes = 5,
  Words = 6,
}

/**
 * Pops a block of small class `cls` off its allocation list, marks it live
 * and returns its arena offset; 0 (nothing changed) when the list is empty.
 */
export function takeBlockFast(
  u32: Uint32Array,
  allocLists: Uint32Array,
  bitmapBias: number,
  cls: number,
): number {
  const block = allocLists[cls];
  if (block !== 0) {
    allocLists[cls] = u32[block >>> 2];
    u32[bitmapBias + (block >>> 9)] |= 1 << ((block >>> 4) & 31);
  }
  return block;
}

/**
 * Frees the block at arena offset `offset` (`unitOffset`: the same from the
 * data start, an integer from 0 that is a multiple of 16) if it is a live
 * block of a listed small page that does not empty; returns false having
 * changed nothing otherwise.
 */
export function freeBlockFast(
  u32: Uint32Array,
  bitmapBias: number,
  offset: number,
  unitOffset: number,
): boolean {
  const d = Tables.DescriptorsU32 + (unitOffset >>> Unit.Shift) * Desc.Words;
  const word = bitmapBias + (offset >>> 9);
  const bit = 1 << ((offset >>> 4) & 31);
  const bits = u32[word];
  const used = u32[d + Desc.Used] - 1;
  if ((bits & bit) === 0 || u32[d + Desc.FastFree] !== 1 || used === 0) return false;
  u32[word] = bits ^ bit;
  u32[offset >>> 2] = u32[d + Desc.Free];
  u32[d + Desc.Free] = offset;
  u32[d + Desc.Used] = used;
  return true;
}

/**
 * The descriptor of the small page that holds a live block at arena offset
 * `offset` (`unitOffset` as for freeBlockFast), or 0: free's slow path
 * hands such a block straight to ClassPages.freeLive, without locating it again.
 */
export function liveSmallPage(u32: Uint32Array, offset: number, unitOffset: number): number {
  const d = Tables.DescriptorsU32 + (unitOffset >>> Unit.Shift) * Desc.Words;
  return u32[d + Desc.State] === PageState.Small && isLive(u32, d, offset) ? d : 0;
}

/** Whether `d` is the descriptor index of one of the first `units` units: checked before a link is followed. */
export function isDescriptor(d: number, units: number): boolean {
  return d >= Tables.DescriptorsU32 && d < Tables.DescriptorsU32 + units * Desc.Words &&
    (d - Tables.DescriptorsU32) % Desc.Words === 0;
}

/** The descriptors of the in-use class pages (SMALL or MEDIUM) among the first `units` units, lowest first. */
export function classPagesIn(u32: Uint32Array, units: number): number[] {
  const pages: number[] = [];
  for (let d = Tables.DescriptorsU32, end = d + units * Desc.Words; d < end; d += Desc.Words) {
    const state = u32[d + Desc.State];
    if (state === PageState.Small || state === PageState.Medium) pages.push(d);
  }
  return pages;
}
