/**
 * Small and medium pages: the blocks of one size class, carved from the arena.
 *
 * A page is one 64 KiB unit (blocks up to 8 KiB) or sixteen (a 1 MiB medium
 * page, blocks above 8 KiB). Each unit has a 64-byte descriptor in the arena's
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
 * committed, in 4 KiB steps up to COMMIT_END) only as far as it is used.
 * A free block's first 4 bytes hold the offset of the next free block.
 *
 * Each unit also owns 512 bytes of live bitmap: one bit per 16-byte granule
 * of a small page, set at a live block's first granule (medium pages use one
 * bit per 8 KiB, which still separates blocks larger than 8 KiB). Free checks
 * the bit, which makes double-free and interior-pointer detection exact.
 *
 * Descriptor, 16 u32 words:
 *
 *   0 FREE        offset of the first free block, 0 = none
 *   1 BUMP        offset of the next never-used block
 *   2 BUMP_END    end of the last whole block that fits
 *   3 USED        live blocks                  invariant: USED + free + unbumped = CAPACITY
 *   4 BLOCK_SIZE  bytes per block
 *   5 CLASS       size class
 *   6 STATE       UNUSED | SMALL | MEDIUM | RETAINED | RELEASED | CONTINUATION
 *   7 NEXT        list link (descriptor index, 0 = none)
 *   8 PREV        list link (descriptor index, 0 = none)
 *   9 PAGE_START  offset of the page's first byte
 *  10 COMMIT_END  bytes below this offset are counted in committedBytes (4 KiB-rounded)
 *  11 ZERO_FROM   memory at or above this offset is still zero from the OS
 *  12 CAPACITY    blocks the page holds
 *  13 BITMAP      u32 index of the live bitmap
 *  14 UNITS       1 or 16
 *  15 SHIFT       granule shift of the bitmap: 4 (small) or 13 (medium)
 *
 * Which list a page is on:
 *  - SMALL/MEDIUM page with room (USED < CAPACITY): its class's available
 *    list. A full page is on no list; its first free puts it back at the head.
 *  - An in-use page with USED = 0 may only be the head of its class list
 *    (kept so that a malloc/free pair does not churn pages); any other page
 *    that empties is retired at once.
 *  - RETAINED: empty and still committed, on its kind's retained list (most
 *    recent first). Reused first. When retained bytes exceed the heap's
 *    `retainBytes`, the oldest are released.
 *  - RELEASED: returned to the OS with madvise(MADV_DONTNEED), on its kind's
 *    released list; reads zero when reused.
 */

import {
  Arena,
  C_AVAIL_HEAD,
  C_BLOCK_SIZE,
  C_CAPACITY,
  C_UNITS,
  CLASS_U32,
  DESC_U32,
  H_RELEASED_MEDIUM_HEAD,
  H_RELEASED_SMALL_HEAD,
  H_RETAINED_MEDIUM_HEAD,
  H_RETAINED_MEDIUM_TAIL,
  H_RETAINED_SMALL_HEAD,
  H_RETAINED_SMALL_TAIL,
  MEDIUM_UNITS,
  roundUp,
  S_MADVISE_CALLS,
  S_RETAIN_LIMIT,
  S_RETAINED_BYTES,
  UNIT_SHIFT,
  UNIT_SIZE,
} from "./arena.ts";
import { CLASS_COUNT } from "./size_classes.ts";
import { OS_PAGE_SIZE, releasePages } from "./os.ts";

export const D_FREE = 0;
export const D_BUMP = 1;
export const D_BUMP_END = 2;
export const D_USED = 3;
export const D_BLOCK_SIZE = 4;
export const D_CLASS = 5;
export const D_STATE = 6;
export const D_NEXT = 7;
export const D_PREV = 8;
export const D_PAGE_START = 9;
export const D_COMMIT_END = 10;
export const D_ZERO_FROM = 11;
export const D_CAPACITY = 12;
export const D_BITMAP = 13;
export const D_UNITS = 14;
export const D_SHIFT = 15;
export const DESC_WORDS = 16;

export const STATE_UNUSED = 0;
export const STATE_SMALL = 1;
export const STATE_MEDIUM = 2;
export const STATE_RETAINED = 3;
export const STATE_RELEASED = 4;
export const STATE_CONTINUATION = 5;

const SMALL_SHIFT = 4;
const MEDIUM_SHIFT = 13;

/** Page-level operations; the block-level fast paths live in heap.ts. */
export class Pages {
  readonly arena: Arena;
  private readonly u32: Uint32Array;
  private readonly dataStart: number;

  constructor(arena: Arena) {
    this.arena = arena;
    this.u32 = arena.u32;
    this.dataStart = arena.dataStart;
  }

  /** Descriptor index of the unit that holds arena offset `offset`. */
  descriptorOf(offset: number): number {
    return DESC_U32 + ((offset - this.arena.dataStart) >>> UNIT_SHIFT) * DESC_WORDS;
  }

  /** Arena offset of the first byte of the unit described by `d`. */
  unitStart(d: number): number {
    return this.arena.dataStart + ((d - DESC_U32) / DESC_WORDS) * UNIT_SIZE;
  }

  /**
   * Makes a page of class `cls` the head of its available list and returns
   * its descriptor, or 0 when no memory can be had.
   */
  acquire(cls: number): number {
    const u32 = this.u32;
    const ce = CLASS_U32 + cls * 4;
    const units = u32[ce + C_UNITS];
    const medium = units === MEDIUM_UNITS;
    let d = this.takeRetained(medium);
    if (d === 0) d = this.takeReleased(medium);
    if (d === 0) d = this.carve(units);
    if (d === 0) return 0;
    const start = u32[d + D_PAGE_START];
    const blockSize = u32[ce + C_BLOCK_SIZE];
    const capacity = u32[ce + C_CAPACITY];
    u32[d + D_FREE] = 0;
    u32[d + D_BUMP] = start;
    u32[d + D_BUMP_END] = start + capacity * blockSize;
    u32[d + D_USED] = 0;
    u32[d + D_BLOCK_SIZE] = blockSize;
    u32[d + D_CLASS] = cls;
    u32[d + D_STATE] = medium ? STATE_MEDIUM : STATE_SMALL;
    u32[d + D_ZERO_FROM] = u32[d + D_COMMIT_END];
    u32[d + D_CAPACITY] = capacity;
    u32[d + D_SHIFT] = medium ? MEDIUM_SHIFT : SMALL_SHIFT;
    const head = u32[ce + C_AVAIL_HEAD];
    if (head !== 0 && u32[head + D_USED] === 0) this.unlinkAvailable(head, ce), this.retire(head);
    this.pushAvailable(d, ce);
    return d;
  }

  // ---- block fast paths (see heap.ts for why they are kept this small) -------

  /** Takes a block of class `cls`; returns its arena offset, or 0 when out of memory. */
  take(cls: number): number {
    const u32 = this.u32;
    let d = u32[CLASS_U32 + (cls << 2) + C_AVAIL_HEAD];
    if (d === 0) {
      d = this.acquire(cls);
      if (d === 0) return 0;
    }
    let block = u32[d + D_FREE];
    if (block !== 0) u32[d + D_FREE] = u32[block >>> 2];
    else block = this.bump(d);
    const used = u32[d + D_USED] + 1;
    u32[d + D_USED] = used;
    if (used === u32[d + D_CAPACITY]) this.dropFullHead(d);
    const granule = (block - u32[d + D_PAGE_START]) >>> u32[d + D_SHIFT];
    u32[u32[d + D_BITMAP] + (granule >>> 5)] |= 1 << (granule & 31);
    return block;
  }

  /**
   * Frees the block at arena `offset` if it is a live block of a small page
   * and returns its size; returns 0, changing nothing, for anything else
   * (medium pages, misuse), which the caller sorts out on its slow path.
   */
  freeSmall(offset: number): number {
    const u32 = this.u32;
    const d = DESC_U32 + (((offset - this.dataStart) >>> UNIT_SHIFT) << 4);
    if (u32[d + D_STATE] !== STATE_SMALL) return 0;
    const relative = offset - u32[d + D_PAGE_START];
    const granule = relative >>> SMALL_SHIFT;
    const word = u32[d + D_BITMAP] + (granule >>> 5);
    const bit = 1 << (granule & 31);
    const bits = u32[word];
    if ((granule << SMALL_SHIFT) !== relative || (bits & bit) === 0) return 0;
    u32[word] = bits ^ bit;
    return this.pushFree(d, offset);
  }

  /** Frees a block of page `d` already proven live by the caller; returns its size. */
  freeLocated(d: number, offset: number): number {
    const u32 = this.u32;
    const granule = (offset - u32[d + D_PAGE_START]) >>> u32[d + D_SHIFT];
    u32[u32[d + D_BITMAP] + (granule >>> 5)] &= ~(1 << (granule & 31));
    return this.pushFree(d, offset);
  }

  /** Pushes a block whose live bit is already clear onto its page's free list. */
  private pushFree(d: number, offset: number): number {
    const u32 = this.u32;
    u32[offset >>> 2] = u32[d + D_FREE];
    u32[d + D_FREE] = offset;
    const used = u32[d + D_USED] - 1;
    u32[d + D_USED] = used;
    if (used === 0) {
      // The head page stays even when empty, so a malloc/free pair does not churn pages.
      if (u32[CLASS_U32 + (u32[d + D_CLASS] << 2) + C_AVAIL_HEAD] !== d) this.retireEmptied(d);
    } else if (used + 1 === u32[d + D_CAPACITY]) {
      this.readmit(d);
    }
    return u32[d + D_BLOCK_SIZE];
  }

  // ---- page transitions ---------------------------------------------------------

  /**
   * Hands out the page's next never-used block (the caller saw an empty free
   * list, and a page with room has one), counting the OS page it reaches as
   * committed.
   */
  private bump(d: number): number {
    const u32 = this.u32;
    const block = u32[d + D_BUMP];
    const end = block + u32[d + D_BLOCK_SIZE];
    u32[d + D_BUMP] = end;
    const commitEnd = u32[d + D_COMMIT_END];
    if (end > commitEnd) {
      const newEnd = roundUp(end, OS_PAGE_SIZE);
      this.arena.addCommitted(newEnd - commitEnd);
      u32[d + D_COMMIT_END] = newEnd;
    }
    return block;
  }

  /** The head page of its class list just became full: take it off the list. */
  private dropFullHead(d: number): void {
    const u32 = this.u32;
    const ce = CLASS_U32 + u32[d + D_CLASS] * 4;
    const next = u32[d + D_NEXT];
    u32[ce + C_AVAIL_HEAD] = next;
    if (next !== 0) u32[next + D_PREV] = 0;
    u32[d + D_NEXT] = 0;
  }

  /** A full page got a block back: it goes to the head of its class list. */
  private readmit(d: number): void {
    const u32 = this.u32;
    const ce = CLASS_U32 + u32[d + D_CLASS] * 4;
    const head = u32[ce + C_AVAIL_HEAD];
    if (head !== 0 && u32[head + D_USED] === 0) this.unlinkAvailable(head, ce), this.retire(head);
    this.pushAvailable(d, ce);
  }

  /** A page other than its class's head just emptied: it leaves the list and retires. */
  private retireEmptied(d: number): void {
    this.unlinkAvailable(d, CLASS_U32 + this.u32[d + D_CLASS] * 4);
    this.retire(d);
  }

  /** Releases every empty page (retained ones and empty class heads); returns bytes released. */
  trim(): number {
    const u32 = this.u32;
    let released = 0;
    for (let c = 0; c < CLASS_COUNT; c++) {
      const ce = CLASS_U32 + c * 4;
      const head = u32[ce + C_AVAIL_HEAD];
      if (head !== 0 && u32[head + D_USED] === 0) {
        this.unlinkAvailable(head, ce);
        released += this.release(head);
      }
    }
    for (const medium of [false, true]) {
      for (let d = this.takeRetained(medium); d !== 0; d = this.takeRetained(medium)) {
        released += this.release(d);
      }
    }
    return released;
  }

  // ---- lists ---------------------------------------------------------------

  private pushAvailable(d: number, ce: number): void {
    const u32 = this.u32;
    const head = u32[ce + C_AVAIL_HEAD];
    u32[d + D_PREV] = 0;
    u32[d + D_NEXT] = head;
    if (head !== 0) u32[head + D_PREV] = d;
    u32[ce + C_AVAIL_HEAD] = d;
  }

  private unlinkAvailable(d: number, ce: number): void {
    const u32 = this.u32;
    const prev = u32[d + D_PREV];
    const next = u32[d + D_NEXT];
    if (prev !== 0) u32[prev + D_NEXT] = next;
    else u32[ce + C_AVAIL_HEAD] = next;
    if (next !== 0) u32[next + D_PREV] = prev;
    u32[d + D_NEXT] = 0;
    u32[d + D_PREV] = 0;
  }

  /** Puts an empty page on its retained list, then enforces the retain limit. */
  private retire(d: number): void {
    const u32 = this.u32;
    const f64 = this.arena.f64;
    const medium = u32[d + D_UNITS] === MEDIUM_UNITS;
    const headSlot = medium ? H_RETAINED_MEDIUM_HEAD : H_RETAINED_SMALL_HEAD;
    const tailSlot = medium ? H_RETAINED_MEDIUM_TAIL : H_RETAINED_SMALL_TAIL;
    u32[d + D_STATE] = STATE_RETAINED;
    const head = u32[headSlot];
    u32[d + D_PREV] = 0;
    u32[d + D_NEXT] = head;
    if (head !== 0) u32[head + D_PREV] = d;
    else u32[tailSlot] = d;
    u32[headSlot] = d;
    f64[S_RETAINED_BYTES] += this.committedExtent(d);
    while (f64[S_RETAINED_BYTES] > f64[S_RETAIN_LIMIT]) {
      // The oldest page goes first; medium pages before small ones, as they hold more.
      const oldest = u32[H_RETAINED_MEDIUM_TAIL] || u32[H_RETAINED_SMALL_TAIL];
      this.unlinkRetained(oldest);
      this.release(oldest);
    }
  }

  private takeRetained(medium: boolean): number {
    const d = this.u32[medium ? H_RETAINED_MEDIUM_HEAD : H_RETAINED_SMALL_HEAD];
    if (d !== 0) this.unlinkRetained(d);
    return d;
  }

  private unlinkRetained(d: number): void {
    const u32 = this.u32;
    const medium = u32[d + D_UNITS] === MEDIUM_UNITS;
    const headSlot = medium ? H_RETAINED_MEDIUM_HEAD : H_RETAINED_SMALL_HEAD;
    const tailSlot = medium ? H_RETAINED_MEDIUM_TAIL : H_RETAINED_SMALL_TAIL;
    const prev = u32[d + D_PREV];
    const next = u32[d + D_NEXT];
    if (prev !== 0) u32[prev + D_NEXT] = next;
    else u32[headSlot] = next;
    if (next !== 0) u32[next + D_PREV] = prev;
    else u32[tailSlot] = prev;
    u32[d + D_NEXT] = 0;
    u32[d + D_PREV] = 0;
    this.arena.f64[S_RETAINED_BYTES] -= this.committedExtent(d);
  }

  private takeReleased(medium: boolean): number {
    const u32 = this.u32;
    const slot = medium ? H_RELEASED_MEDIUM_HEAD : H_RELEASED_SMALL_HEAD;
    const d = u32[slot];
    if (d !== 0) {
      u32[slot] = u32[d + D_NEXT];
      u32[d + D_NEXT] = 0;
    }
    return d;
  }

  /** Gives an off-list empty page's memory back to the OS; returns the bytes released. */
  private release(d: number): number {
    const u32 = this.u32;
    const arena = this.arena;
    const start = u32[d + D_PAGE_START];
    const extent = this.committedExtent(d);
    if (extent > 0) {
      releasePages(arena.base + start, extent);
      arena.f64[S_MADVISE_CALLS]++;
      arena.addCommitted(-extent);
    }
    u32[d + D_COMMIT_END] = start;
    u32[d + D_STATE] = STATE_RELEASED;
    const slot = u32[d + D_UNITS] === MEDIUM_UNITS ? H_RELEASED_MEDIUM_HEAD : H_RELEASED_SMALL_HEAD;
    u32[d + D_NEXT] = u32[slot];
    u32[slot] = d;
    return extent;
  }

  private committedExtent(d: number): number {
    return this.u32[d + D_COMMIT_END] - this.u32[d + D_PAGE_START];
  }

  /** Carves a never-used page of `units` units; returns its descriptor or 0. */
  private carve(units: number): number {
    const arena = this.arena;
    const u32 = this.u32;
    const first = arena.carveUnits(units);
    if (first < 0) return 0;
    const d = DESC_U32 + first * DESC_WORDS;
    const start = arena.dataStart + first * UNIT_SIZE;
    u32[d + D_PAGE_START] = start;
    u32[d + D_COMMIT_END] = start;
    u32[d + D_UNITS] = units;
    u32[d + D_BITMAP] = arena.bitmapU32 + first * (512 >>> 2);
    for (let i = 1; i < units; i++) {
      const c = d + i * DESC_WORDS;
      u32[c + D_STATE] = STATE_CONTINUATION;
      u32[c + D_PAGE_START] = start;
      u32[c + D_UNITS] = 0;
    }
    return d;
  }
}
