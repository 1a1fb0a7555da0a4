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
 * The chunk layout is drawn in fit_chunks.ts.
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
 * free again retires like any empty page, except one, kept (HeaderU32.FitEmpty) so
 * that a block that comes and goes does not take and retire a page each time:
 * off every list and bin, taken again when a new page is wanted (or retired
 * by the page source when it has no other page to give).
 * Memory is committed as chunks are handed out. Idle memory here is what
 * free chunks hold past their headers: the idle budget (and trim()) gives
 * it back before that of class pages (fit_chunks.ts), a page's free end
 * by lowering its COMMIT_END, a free chunk inside by purging its whole OS
 * pages, which count as committed again when a chunk cut from it touches
 * them (PURGED_PAGES and the purge masks, as for class pages).
 */

import { type Arena, HeaderU32, UNIT_SIZE } from "../arena/arena.ts";
import { OS_PAGE_SIZE } from "../os/libc.ts";
import { HeapError } from "../errors.ts";
import {
  binOf,
  Chunk,
  CHUNK_FREE as FREE,
  CHUNK_HEADER,
  chunkFor,
  FIT_BINS,
  FIT_PAGE_BYTES,
  tiles,
} from "./fit_chunks.ts";
import type { IdleMemory } from "./idle.ts";
import {
  Desc,
  descriptorOf,
  formatPage,
  Granule,
  pageDescriptorOf,
  PageState,
} from "./page_layout.ts";
import { pushFront, unlink } from "./page_list.ts";
import { recommit, unpurgeRange } from "./page_memory.ts";
import type { PageSource } from "./page_source.ts";
import { CLASS_COUNT } from "./size_classes.ts";

/** A split leaves at least this much as a free chunk; less stays with the block. */
const MIN_FREE_CHUNK = 64;
/** How many chunks of the request's own bin malloc looks at before going up a bin. */
const BIN_SCAN = 8;

export class FitPages {
  private readonly arena: Arena;
  private readonly u32: Uint32Array;
  private readonly source: PageSource;
  private readonly idle: IdleMemory;
  /** Whether the last alloc() handed out memory still zero from the OS (for calloc). */
  lastWasZero = false;

  constructor(arena: Arena, source: PageSource, idle: IdleMemory) {
    this.arena = arena;
    this.u32 = arena.u32;
    this.source = source;
    this.idle = idle;
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
      d = pageDescriptorOf(u32, this.arena.dataStart, chunk);
    }
    this.unlinkFree(chunk);
    const have = u32[chunk >>> 2] & ~FREE;
    // Split when the rest makes a free chunk of its own above this one.
    const split = have - need >= MIN_FREE_CHUNK;
    const taken = split ? need : have;
    const end = chunk + taken;
    const touched = split ? end + CHUNK_HEADER : end;
    // Memory above ZERO_FROM has not been written since it came from the OS
    // (read before the split's header, above the block, moves ZERO_FROM past it).
    this.lastWasZero = chunk + CHUNK_HEADER >= u32[d + Desc.ZeroFrom];
    this.makeWritable(d, chunk, touched);
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
    if (size === FIT_PAGE_BYTES) {
      // Empty: kept, off every list and bin, unless one is kept already.
      unlink(u32, HeaderU32.FitPages, d);
      if (u32[HeaderU32.FitEmpty] === 0) u32[HeaderU32.FitEmpty] = d;
      else this.source.retire(d);
    } else {
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
    const split = total - need >= MIN_FREE_CHUNK;
    const taken = split ? need : total;
    const touched = split ? chunk + taken + CHUNK_HEADER : chunk + taken;
    this.makeWritable(d, next, touched);
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
      if (!tiles(u32, chunk, size, end)) return 0;
      if (offset < chunk + size) {
        return (word & FREE) === 0 && offset >= chunk + CHUNK_HEADER ? chunk + CHUNK_HEADER : 0;
      }
      chunk += size;
    }
    return 0;
  }

  /** Calls `visit(offset, usable)` for every live fit block. */
  forEachLive(visit: (offset: number, usable: number) => void): void {
    const u32 = this.u32;
    for (let d = u32[HeaderU32.FitPages]; d !== 0; d = u32[d + Desc.Next]) {
      const start = u32[d + Desc.PageStart];
      for (let chunk = start; chunk < start + FIT_PAGE_BYTES;) {
        const word = u32[chunk >>> 2];
        const size = word & ~FREE;
        if (!tiles(u32, chunk, size, start + FIT_PAGE_BYTES)) {
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
   * Relinks the bins from the fit pages' chunks (check() found them damaged):
   * malloc then follows no damaged link. A page whose chunks do not tile it
   * (a damaged header) has none of its free chunks linked: nothing is cut
   * from it again, its live blocks stay valid. Returns the arena offsets of
   * such pages.
   */
  rebuildBins(): number[] {
    const u32 = this.u32;
    u32.fill(0, HeaderU32.FitBinHeads, HeaderU32.FitBinHeads + FIT_BINS);
    u32.fill(0, HeaderU32.FitBinMap, HeaderU32.FitBinMap + FIT_BINS / 32);
    const damaged: number[] = [];
    for (let unit = 0; unit < u32[HeaderU32.TopUnit]; unit++) {
      const d = descriptorOf(this.arena.dataStart, this.arena.dataStart + unit * UNIT_SIZE);
      // The kept empty page stays off the bins (see newPage).
      if (u32[d + Desc.State] !== PageState.Fit || d === u32[HeaderU32.FitEmpty]) continue;
      const start = u32[d + Desc.PageStart];
      const end = start + FIT_PAGE_BYTES;
      const free: number[] = [];
      let chunk = start;
      while (chunk < end && chunk + CHUNK_HEADER <= u32[d + Desc.CommitEnd]) {
        const size = u32[chunk >>> 2] & ~FREE;
        if (!tiles(u32, chunk, size, end)) break;
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

  /** A free chunk of at least `need` bytes (looking at `scan` chunks of its bin), still on its bin; 0 if none. */
  private findFree(need: number, scan: number): number {
    const u32 = this.u32;
    const bin = binOf(need);
    let chunk = u32[HeaderU32.FitBinHeads + bin];
    for (let i = 0; chunk !== 0 && i < scan; i++) {
      if ((u32[chunk >>> 2] & ~FREE) >= need) return chunk;
      chunk = u32[(chunk >>> 2) + Chunk.NextFree];
    }
    // Every chunk of a higher bin fits.
    for (let word = (bin + 1) >>> 5; word < FIT_BINS >>> 5; word++) {
      let bits = u32[HeaderU32.FitBinMap + word];
      if (word === (bin + 1) >>> 5) bits &= ~0 << ((bin + 1) & 31);
      if (bits !== 0) {
        return u32[HeaderU32.FitBinHeads + (word << 5) + 31 - Math.clz32(bits & -bits)];
      }
    }
    return 0;
  }

  /**
   * A fit page whose one chunk, all of it free, is on its bin: the empty
   * page kept, else a new one from the page source; 0 if none.
   */
  private newPage(): number {
    const u32 = this.u32;
    let d = u32[HeaderU32.FitEmpty];
    if (d !== 0) {
      u32[HeaderU32.FitEmpty] = 0;
    } else {
      d = this.source.take(true);
      if (d === 0) return 0;
      // No class, no block size; the live bitmap in 16-byte granules, like a small page's.
      formatPage(u32, d, PageState.Fit, CLASS_COUNT, 0, 0, FIT_PAGE_BYTES, Granule.SmallShift);
      const start = u32[d + Desc.PageStart];
      this.commit(d, start + CHUNK_HEADER);
      this.writeFree(start, FIT_PAGE_BYTES, 0);
      this.written(d, start + CHUNK_HEADER);
    }
    this.linkFree(u32[d + Desc.PageStart]);
    pushFront(u32, HeaderU32.FitPages, d);
    return d;
  }

  /**
   * `[from, to)` of page `d` is about to be written: committed that far, its
   * purged OS pages counted in again. Giving idle memory back on the way
   * leaves this page alone (its chunk is off the bins, its headers not yet
   * written).
   */
  private makeWritable(d: number, from: number, to: number): void {
    this.idle.busyFitPage = d;
    try {
      this.commit(d, to);
      this.recommitRange(d, from, to);
    } finally {
      this.idle.busyFitPage = 0;
    }
  }

  /** Page `d` is about to be written up to `end`: counted as committed that far. */
  private commit(d: number, end: number): void {
    if (end > this.u32[d + Desc.CommitEnd]) this.idle.extendCommit(d, end);
  }

  /** The purged OS pages of page `d` that `[from, to)` touches are about to be written. */
  private recommitRange(d: number, from: number, to: number): void {
    const count = unpurgeRange(this.arena, d, from, to);
    if (count === 0) return;
    this.idle.giveBackIdle(count * OS_PAGE_SIZE);
    recommit(this.arena, d, from, to, count);
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
    const head = u32[HeaderU32.FitBinHeads + bin];
    u32[(chunk >>> 2) + Chunk.NextFree] = head;
    u32[(chunk >>> 2) + Chunk.PrevFree] = 0;
    if (head !== 0) u32[(head >>> 2) + Chunk.PrevFree] = chunk;
    u32[HeaderU32.FitBinHeads + bin] = chunk;
    u32[HeaderU32.FitBinMap + (bin >>> 5)] |= 1 << (bin & 31);
  }

  private unlinkFree(chunk: number): void {
    const u32 = this.u32;
    const bin = binOf(u32[chunk >>> 2] & ~FREE);
    const next = u32[(chunk >>> 2) + Chunk.NextFree];
    const prev = u32[(chunk >>> 2) + Chunk.PrevFree];
    if (prev !== 0) u32[(prev >>> 2) + Chunk.NextFree] = next;
    else u32[HeaderU32.FitBinHeads + bin] = next;
    if (next !== 0) u32[(next >>> 2) + Chunk.PrevFree] = prev;
    if (u32[HeaderU32.FitBinHeads + bin] === 0) {
      u32[HeaderU32.FitBinMap + (bin >>> 5)] &= ~(1 << (bin & 31));
    }
  }

  private flipLive(offset: number): void {
    this.u32[this.u32[HeaderU32.BitmapBias] + (offset >>> 9)] ^= 1 << ((offset >>> 4) & 31);
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
