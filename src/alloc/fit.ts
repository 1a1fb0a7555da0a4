/**
 * Fit pages: blocks above 1 KiB (up to 128 KiB) of a private heap, cut to the
 * 16 bytes from 1 MiB pages and merged with their free neighbours when freed.
 *
 * Size classes waste little inside a block, but each class keeps pages of
 * its own: a program with a few live blocks in each of dozens of classes
 * holds a partly used page per class, and the free blocks of one class serve
 * no other. Above 1 KiB, where blocks are few and classes many, that idle
 * memory is most of the footprint (gcc-cc1's trace: 1.32x its live bytes
 * with classes). Here any free space serves any size, and freed neighbours
 * merge, as in glibc's and jemalloc's allocators for these sizes.
 *
 *   fit page (16 units)
 *   +--------+--------------+--------+-----------------+--------+--------------------------+
 *   | header | block        | header | free            | header | free to the page's end   |
 *   +--------+--------------+--------+-----------------+--------+--------------------------+
 *   ^ chunk: header + block  ^ chunk                    ^ chunk (committed only as used)
 *
 *   chunk header, 16 bytes (u32 words)
 *     0 SIZE       bytes of the chunk, header included (a multiple of 16); bit 0: free
 *     1 PREV_SIZE  bytes of the chunk just below (0 for a page's first chunk)
 *     2 NEXT_FREE  free chunks: next chunk of the same bin (arena offset, 0 = none)
 *     3 PREV_FREE  free chunks: previous chunk of the same bin (0 = none)
 *
 * Invariants: a page's chunks tile it exactly; no two free chunks are
 * neighbours; every free chunk is on the bin of its size; a live chunk's
 * block (chunk + 16) has its live bit set (the small-page bitmap formula,
 * 16-byte granules: the 16 units' bitmaps are consecutive), and no other bit
 * of the page is set. Free blocks keep their memory: only headers are written.
 *
 * Bins: 4 per doubling of the chunk size from 32 bytes to 1 MiB (61 bins,
 * heads in the arena header, one bit per non-empty bin). malloc looks at the
 * first chunks of the bin of its size for one that fits, then takes the
 * first chunk of the next non-empty bin above, whose every chunk fits, and
 * splits off the rest; a new page when none does. A page whose chunks are all
 * free again retires like any empty page, except one, kept (H_FIT_EMPTY) so
 * that a block that comes and goes does not take and retire a page each time.
 * Memory is committed as chunks are handed out. Idle memory here is what
 * free chunks hold past their headers: the idle budget (and trim()) gives
 * it back before that of class pages (Pages.trimFitPages), a page's free end
 * by lowering its COMMIT_END, a free chunk inside by purging its whole OS
 * pages, which count as committed again when a chunk cut from it touches
 * them (PURGED_PAGES and the purge masks, as for class pages).
 */

import {
  type Arena,
  H_BITMAP_BIAS,
  H_FIT_BIN_HEADS,
  H_FIT_BIN_MAP,
  H_FIT_EMPTY,
  H_FIT_PAGES,
  H_TOP_UNIT,
  MEDIUM_UNITS,
  S_MADVISE_CALLS,
  UNIT_SIZE,
} from "../arena/arena.ts";
import type { Pages } from "./pages.ts";
import { Desc, PageState } from "./page_layout.ts";
import { OS_PAGE_SIZE, releasePages } from "../os/libc.ts";
import { HeapError } from "../errors.ts";

/** Requests above this many bytes (and up to MAX_CLASS_SIZE) go to fit pages. */
export const FIT_MIN_REQUEST = 1024;
export const FIT_PAGE_BYTES = MEDIUM_UNITS * UNIT_SIZE;
export const CHUNK_HEADER = 16;
/** A split leaves at least this much as a free chunk; less stays with the block. */
const MIN_FREE_CHUNK = 64;
export const FIT_BINS = 64;
/** How many chunks of the request's own bin malloc looks at before going up a bin. */
const BIN_SCAN = 8;
const FREE = 1;
/** Free memory of a fit page is given back in runs of at least this many OS pages. */
const MIN_TRIM_PAGES = 4;

/** Words of a chunk header (16 bytes before a block); NEXT_FREE and PREV_FREE link free chunks. */
export const enum Chunk {
  Size = 0,
  PrevSize = 1,
  NextFree = 2,
  PrevFree = 3,
}

function roundUpPage(offset: number): number {
  return Math.ceil(offset / OS_PAGE_SIZE) * OS_PAGE_SIZE;
}

/** The bin of a chunk of `size` bytes (32 <= size <= 1 MiB): 4 per doubling. */
export function binOf(size: number): number {
  const k = 31 - Math.clz32(size);
  return ((k - 5) << 2) + ((size >>> (k - 2)) & 3);
}

/** The chunk bytes a request of `size` bytes needs. */
export function chunkFor(size: number): number {
  return ((size + 15) & ~15) + CHUNK_HEADER;
}

export class FitPages {
  private readonly arena: Arena;
  private readonly pages: Pages;
  private readonly u32: Uint32Array;
  /** Whether the last alloc() handed out memory still zero from the OS (for calloc). */
  lastWasZero = false;
  /** The page alloc() or growInPlace() is cutting a chunk from: purgeFree leaves it alone. */
  private busyPage = 0;

  constructor(arena: Arena, pages: Pages) {
    this.arena = arena;
    this.pages = pages;
    this.u32 = arena.u32;
    pages.trimFitPages = (wanted) => this.purgeFree(wanted);
    pages.takeKeptFitPage = () => this.takeEmptyPage();
  }

  /** Usable bytes of the live block at arena offset `offset`. */
  usable(offset: number): number {
    return (this.u32[(offset - CHUNK_HEADER) >>> 2] & ~FREE) - CHUNK_HEADER;
  }

  /**
   * Hands out a block of at least `size` bytes (FIT_MIN_REQUEST < size <=
   * 1 MiB - 16); returns its arena offset, or 0 when no memory can be had.
   */
  alloc(size: number): number {
    const u32 = this.u32;
    const need = chunkFor(size);
    let chunk = this.findFree(need, BIN_SCAN);
    let d = chunk === 0 ? this.newPage() : 0;
    if (d !== 0) {
      chunk = u32[d + Desc.PageStart];
    } else {
      // No new page to be had: a chunk that fits further down the bin will do.
      if (chunk === 0) chunk = this.findFree(need, Infinity);
      if (chunk === 0) return 0;
      d = this.pages.descriptorOf(chunk);
      if (u32[d + Desc.State] === PageState.Continuation) {
        d = this.pages.descriptorOf(u32[d + Desc.PageStart]);
      }
    }
    this.unlinkFree(chunk);
    this.busyPage = d;
    if (u32[H_FIT_EMPTY] === d) u32[H_FIT_EMPTY] = 0;
    const have = u32[chunk >>> 2] & ~FREE;
    // Split when the rest makes a free chunk of its own above this one.
    const split = have - need >= MIN_FREE_CHUNK;
    const taken = split ? need : have;
    const end = chunk + taken;
    const touched = split ? end + CHUNK_HEADER : end;
    // Memory above ZERO_FROM has not been written since it came from the OS
    // (read before the split's header, above the block, moves ZERO_FROM past it).
    this.lastWasZero = chunk + CHUNK_HEADER >= u32[d + Desc.ZeroFrom];
    this.pages.commitFitPage(d, touched);
    this.pages.recommitFitRange(d, chunk, touched);
    if (split) {
      this.writeFree(end, have - need, need);
      this.written(d, end + CHUNK_HEADER);
      this.setPrevSize(d, end + have - need, have - need);
      this.linkFree(end);
    }
    u32[chunk >>> 2] = taken;
    this.written(d, end);
    u32[d + Desc.Used]++;
    this.flipLive(chunk + CHUNK_HEADER);
    this.busyPage = 0;
    return chunk + CHUNK_HEADER;
  }

  /** Frees the live block at `offset` of fit page `d` (proven live by the caller); returns its usable size. */
  free(d: number, offset: number): number {
    const u32 = this.u32;
    let chunk = offset - CHUNK_HEADER;
    let size = u32[chunk >>> 2];
    const pageStart = u32[d + Desc.PageStart];
    const pageEnd = pageStart + FIT_PAGE_BYTES;
    this.checkHeader(chunk, size, pageStart, pageEnd);
    const usable = size - CHUNK_HEADER;
    this.flipLive(offset);
    u32[d + Desc.Used]--;
    // Merge with the free neighbours.
    const next = chunk + size;
    if (next < pageEnd && (u32[next >>> 2] & FREE) !== 0) {
      this.unlinkFree(next);
      size += u32[next >>> 2] & ~FREE;
    }
    const prevSize = u32[(chunk >>> 2) + Chunk.PrevSize];
    if (prevSize !== 0 && (u32[(chunk - prevSize) >>> 2] & FREE) !== 0) {
      chunk -= prevSize;
      this.unlinkFree(chunk);
      size += prevSize;
    }
    this.writeFree(chunk, size, u32[(chunk >>> 2) + Chunk.PrevSize]);
    this.setPrevSize(d, chunk + size, size);
    const kept = u32[H_FIT_EMPTY];
    if (size === FIT_PAGE_BYTES && kept !== 0 && kept !== d) {
      this.pages.unlinkAvailable(d, H_FIT_PAGES);
      this.pages.retireFitPage(d);
    } else {
      if (size === FIT_PAGE_BYTES) u32[H_FIT_EMPTY] = d;
      this.linkFree(chunk);
    }
    return usable;
  }

  /**
   * Grows the live block at `offset` of page `d` in place to hold `size`
   * bytes, taking from the free chunk just above it; returns the new usable
   * size, or 0 if that chunk is missing or too small.
   */
  growInPlace(d: number, offset: number, size: number): number {
    const u32 = this.u32;
    const chunk = offset - CHUNK_HEADER;
    const have = u32[chunk >>> 2];
    const need = chunkFor(size);
    const next = chunk + have;
    const pageEnd = u32[d + Desc.PageStart] + FIT_PAGE_BYTES;
    this.checkHeader(chunk, have, u32[d + Desc.PageStart], pageEnd);
    if (next >= pageEnd || (u32[next >>> 2] & FREE) === 0) return 0;
    const total = have + (u32[next >>> 2] & ~FREE);
    if (total < need) return 0;
    this.unlinkFree(next);
    this.busyPage = d;
    const split = total - need >= MIN_FREE_CHUNK;
    const taken = split ? need : total;
    const touched = split ? chunk + taken + CHUNK_HEADER : chunk + taken;
    this.pages.commitFitPage(d, touched);
    this.pages.recommitFitRange(d, next, touched);
    if (split) {
      const rest = chunk + need;
      this.writeFree(rest, total - need, need);
      this.written(d, rest + CHUNK_HEADER);
      this.setPrevSize(d, rest + total - need, total - need);
      this.linkFree(rest);
    } else {
      this.setPrevSize(d, chunk + total, total);
    }
    this.written(d, chunk + taken);
    u32[chunk >>> 2] = taken;
    this.busyPage = 0;
    return taken - CHUNK_HEADER;
  }

  /** Whether `offset` is where the block of a free chunk of fit page `d` would start (for error reports). */
  isFreedBlock(d: number, offset: number): boolean {
    const u32 = this.u32;
    const start = u32[d + Desc.PageStart];
    for (let chunk = start; chunk < start + FIT_PAGE_BYTES;) {
      const size = u32[chunk >>> 2] & ~FREE;
      if (chunk + CHUNK_HEADER === offset) return (u32[chunk >>> 2] & FREE) !== 0;
      if (chunk > offset || size === 0) return false;
      chunk += size;
    }
    return false;
  }

  /**
   * The live block of fit page `d` whose bytes include arena offset
   * `offset` (its offset), or 0: a header, a free chunk, or headers that do
   * not tile the page.
   */
  blockContaining(d: number, offset: number): number {
    const u32 = this.u32;
    const start = u32[d + Desc.PageStart];
    const end = start + FIT_PAGE_BYTES;
    for (let chunk = start; chunk < end && chunk <= offset;) {
      const word = u32[chunk >>> 2];
      const size = word & ~FREE;
      if (!this.tiles(chunk, size, end)) return 0;
      if (offset < chunk + size) {
        return (word & FREE) === 0 && offset >= chunk + CHUNK_HEADER ? chunk + CHUNK_HEADER : 0;
      }
      chunk += size;
    }
    return 0;
  }

  /** trim(), or no page to be had elsewhere: the fit page kept when it emptied, off every list; 0 if none. */
  takeEmptyPage(): number {
    const u32 = this.u32;
    const d = u32[H_FIT_EMPTY];
    if (d === 0) return 0;
    u32[H_FIT_EMPTY] = 0;
    this.unlinkFree(u32[d + Desc.PageStart]);
    this.pages.unlinkAvailable(d, H_FIT_PAGES);
    return d;
  }

  /** Calls `visit(offset, usable)` for every live fit block. */
  forEachLive(visit: (offset: number, usable: number) => void): void {
    const u32 = this.u32;
    for (let d = u32[H_FIT_PAGES]; d !== 0; d = u32[d + Desc.Next]) {
      const start = u32[d + Desc.PageStart];
      for (let chunk = start; chunk < start + FIT_PAGE_BYTES;) {
        const word = u32[chunk >>> 2];
        const size = word & ~FREE;
        if (!this.tiles(chunk, size, start + FIT_PAGE_BYTES)) {
          throw new HeapError(
            "corrupt",
            this.arena.base + chunk + CHUNK_HEADER,
            `the 16-byte header before this block is damaged (size ${size})`,
          );
        }
        if ((word & FREE) === 0) visit(chunk + CHUNK_HEADER, size - CHUNK_HEADER);
        chunk += size;
      }
    }
  }

  /**
   * Gives back, up to about `wanted` bytes, the memory of fit pages that free
   * chunks hold past their headers, in runs of at least MIN_TRIM_PAGES OS
   * pages: a page's free end by lowering its COMMIT_END, a free chunk inside
   * it by purging its whole OS pages (alloc() counts them in again when a
   * chunk cut from it touches them). Returns the bytes.
   */
  purgeFree(wanted: number): number {
    const u32 = this.u32;
    const arena = this.arena;
    const pages = this.pages;
    let released = 0;
    for (let d = u32[H_FIT_PAGES]; d !== 0 && released < wanted; d = u32[d + Desc.Next]) {
      if (d === this.busyPage) continue;
      const start = u32[d + Desc.PageStart];
      const end = start + FIT_PAGE_BYTES;
      for (let chunk = start; chunk < end && released < wanted;) {
        const word = u32[chunk >>> 2];
        const size = word & ~FREE;
        const commitEnd = u32[d + Desc.CommitEnd];
        // A damaged header (check() says where) leaves the rest of the page
        // alone: madvise must not follow sizes that do not tile it.
        if (chunk >= commitEnd || !this.tiles(chunk, size, end)) break;
        const from = roundUpPage(chunk + CHUNK_HEADER);
        if ((word & FREE) !== 0 && chunk + size === end) {
          // The page's free end: no longer committed at all.
          if (commitEnd - from >= MIN_TRIM_PAGES * OS_PAGE_SIZE) {
            const purged = pages.recommitFitRange(d, from, commitEnd, true);
            releasePages(arena.base + from, commitEnd - from);
            arena.f64[S_MADVISE_CALLS]++;
            const bytes = commitEnd - from - purged * OS_PAGE_SIZE;
            arena.addCommitted(-bytes);
            u32[d + Desc.CommitEnd] = from;
            if (u32[d + Desc.ZeroFrom] > from) u32[d + Desc.ZeroFrom] = from;
            released += bytes;
          }
        } else if ((word & FREE) !== 0) {
          const to = Math.min(chunk + size - ((chunk + size) % OS_PAGE_SIZE), commitEnd);
          if (to - from >= MIN_TRIM_PAGES * OS_PAGE_SIZE) {
            released += pages.purgeFitRange(d, from, to);
          }
        }
        chunk += size;
      }
    }
    return released;
  }

  /**
   * Relinks the bins from the fit pages' chunks (check() found them damaged):
   * malloc then follows no damaged link. A page whose chunks do not tile it
   * (a damaged header) has none of its free chunks linked: nothing is cut
   * from it again, its live blocks stay valid. Returns the arena offsets of
   * such pages.
   */
  rebuildBins(): number[] {
    const u32 = this.u32;
    u32.fill(0, H_FIT_BIN_HEADS, H_FIT_BIN_HEADS + FIT_BINS);
    u32.fill(0, H_FIT_BIN_MAP, H_FIT_BIN_MAP + FIT_BINS / 32);
    const damaged: number[] = [];
    for (let unit = 0; unit < u32[H_TOP_UNIT]; unit++) {
      const d = this.pages.descriptorOf(this.arena.dataStart + unit * UNIT_SIZE);
      if (u32[d + Desc.State] !== PageState.Fit) continue;
      const start = u32[d + Desc.PageStart];
      const end = start + FIT_PAGE_BYTES;
      const free: number[] = [];
      let chunk = start;
      while (chunk < end && chunk + CHUNK_HEADER <= u32[d + Desc.CommitEnd]) {
        const size = u32[chunk >>> 2] & ~FREE;
        if (!this.tiles(chunk, size, end)) break;
        if ((u32[chunk >>> 2] & FREE) !== 0) free.push(chunk);
        chunk += size;
      }
      if (chunk !== end) {
        damaged.push(start);
        continue;
      }
      for (const f of free) this.linkFree(f);
    }
    return damaged;
  }

  // ---- internals ------------------------------------------------------------

  /**
   * Whether a chunk of `size` bytes at `chunk` fits the page ending at `end`
   * and the chunk above it (if any) records the same size below it.
   */
  private tiles(chunk: number, size: number, end: number): boolean {
    return (size & 15) === 0 && size >= CHUNK_HEADER + 16 && chunk + size <= end &&
      (chunk + size === end || this.u32[((chunk + size) >>> 2) + Chunk.PrevSize] === size);
  }

  /** A free chunk of at least `need` bytes (looking at `scan` chunks of its bin), still on its bin; 0 if none. */
  private findFree(need: number, scan: number): number {
    const u32 = this.u32;
    const bin = binOf(need);
    let chunk = u32[H_FIT_BIN_HEADS + bin];
    for (let i = 0; chunk !== 0 && i < scan; i++) {
      if ((u32[chunk >>> 2] & ~FREE) >= need) return chunk;
      chunk = u32[(chunk >>> 2) + Chunk.NextFree];
    }
    // Every chunk of a higher bin fits.
    for (let word = (bin + 1) >>> 5; word < FIT_BINS >>> 5; word++) {
      let bits = u32[H_FIT_BIN_MAP + word];
      if (word === (bin + 1) >>> 5) bits &= ~0 << ((bin + 1) & 31);
      if (bits !== 0) return u32[H_FIT_BIN_HEADS + (word << 5) + 31 - Math.clz32(bits & -bits)];
    }
    return 0;
  }

  /** A new fit page whose one chunk, all of it free, is on its bin; 0 if none. */
  private newPage(): number {
    const u32 = this.u32;
    const d = this.pages.acquireFitPage();
    if (d === 0) return 0;
    const start = u32[d + Desc.PageStart];
    this.pages.commitFitPage(d, start + CHUNK_HEADER);
    this.writeFree(start, FIT_PAGE_BYTES, 0);
    this.written(d, start + CHUNK_HEADER);
    this.linkFree(start);
    u32[d + Desc.Next] = u32[H_FIT_PAGES];
    u32[d + Desc.Prev] = 0;
    if (u32[H_FIT_PAGES] !== 0) u32[u32[H_FIT_PAGES] + Desc.Prev] = d;
    u32[H_FIT_PAGES] = d;
    return d;
  }

  /**
   * Memory up to `end` of page `d` has been written (a header or a block):
   * ZERO_FROM moves past it. A new chunk boundary may fall where an old
   * header was, so headers count as well as blocks.
   */
  private written(d: number, end: number): void {
    if (end > this.u32[d + Desc.ZeroFrom]) this.u32[d + Desc.ZeroFrom] = end;
  }

  private writeFree(chunk: number, size: number, prevSize: number): void {
    const i = chunk >>> 2;
    this.u32[i] = size | FREE;
    this.u32[i + Chunk.PrevSize] = prevSize;
  }

  /** Records `size` as the PREV_SIZE of the chunk at `next`, if the page goes on that far. */
  private setPrevSize(d: number, next: number, size: number): void {
    if (next < this.u32[d + Desc.PageStart] + FIT_PAGE_BYTES) {
      this.u32[(next >>> 2) + Chunk.PrevSize] = size;
    }
  }

  private linkFree(chunk: number): void {
    const u32 = this.u32;
    const bin = binOf(u32[chunk >>> 2] & ~FREE);
    const head = u32[H_FIT_BIN_HEADS + bin];
    u32[(chunk >>> 2) + Chunk.NextFree] = head;
    u32[(chunk >>> 2) + Chunk.PrevFree] = 0;
    if (head !== 0) u32[(head >>> 2) + Chunk.PrevFree] = chunk;
    u32[H_FIT_BIN_HEADS + bin] = chunk;
    u32[H_FIT_BIN_MAP + (bin >>> 5)] |= 1 << (bin & 31);
  }

  private unlinkFree(chunk: number): void {
    const u32 = this.u32;
    const bin = binOf(u32[chunk >>> 2] & ~FREE);
    const next = u32[(chunk >>> 2) + Chunk.NextFree];
    const prev = u32[(chunk >>> 2) + Chunk.PrevFree];
    if (prev !== 0) u32[(prev >>> 2) + Chunk.NextFree] = next;
    else u32[H_FIT_BIN_HEADS + bin] = next;
    if (next !== 0) u32[(next >>> 2) + Chunk.PrevFree] = prev;
    if (u32[H_FIT_BIN_HEADS + bin] === 0) u32[H_FIT_BIN_MAP + (bin >>> 5)] &= ~(1 << (bin & 31));
  }

  private flipLive(offset: number): void {
    this.u32[this.u32[H_BITMAP_BIAS] + (offset >>> 9)] ^= 1 << ((offset >>> 4) & 31);
  }

  /** A live chunk's header must be sane before free trusts it: else the heap is corrupt. */
  private checkHeader(
    chunk: number,
    size: number,
    pageStart: number,
    pageEnd: number,
  ): void {
    const u32 = this.u32;
    const prevSize = u32[(chunk >>> 2) + Chunk.PrevSize];
    const next = chunk + size;
    if (
      (size & 15) !== 0 || size < CHUNK_HEADER + 16 || next > pageEnd ||
      (prevSize & 15) !== 0 || chunk - prevSize < pageStart ||
      (prevSize === 0) !== (chunk === pageStart) ||
      // The boundary tags on both sides must agree with this header.
      (next < pageEnd && u32[(next >>> 2) + Chunk.PrevSize] !== size) ||
      (prevSize !== 0 && (u32[(chunk - prevSize) >>> 2] & ~FREE) !== prevSize)
    ) {
      throw new HeapError(
        "corrupt",
        this.arena.base + chunk + CHUNK_HEADER,
        `the 16-byte header before this block, or a neighbour's, is damaged (size ${size}, ` +
          `previous ${prevSize}; fit page at 0x${(this.arena.base + pageStart).toString(16)})`,
      );
    }
  }
}
