/**
 * The layout of fit pages (fit.ts): 1 MiB pages tiled by chunks, each a
 * 16-byte header and the block (or free space) after it.
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
 * Also here, as it reads nothing but this layout: giving back the memory
 * that free chunks hold (idle.ts calls it when idle memory is over budget).
 */

import { type Arena, HeaderU32, MEDIUM_UNITS, StatF64, UNIT_SIZE } from "../arena/arena.ts";
import { OS_PAGE_SIZE, releasePages } from "../os/libc.ts";
import { BitmapWords, Desc, Granule, isDescriptor, isLive, PageState } from "./page_layout.ts";
import { isPurged, purgeRange, unpurgeRange } from "./page_memory.ts";
import type { Fail } from "../errors.ts";

/** Requests above this many bytes (and up to MAX_CLASS_SIZE) go to fit pages. */
export const FIT_MIN_REQUEST = 1024;
export const FIT_PAGE_BYTES = MEDIUM_UNITS * UNIT_SIZE;
export const CHUNK_HEADER = 16;
/** SIZE's bit 0: the chunk is free. */
export const CHUNK_FREE = 1;
export const FIT_BINS = 64;
/** Free memory of a fit page is given back in runs of at least this many OS pages. */
const MIN_TRIM_PAGES = 4;

/** Words of a chunk header (16 bytes before a block); NEXT_FREE and PREV_FREE link free chunks. */
export const enum Chunk {
  Size = 0,
  PrevSize = 1,
  NextFree = 2,
  PrevFree = 3,
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

/**
 * Whether a chunk of `size` bytes at `chunk` fits the page ending at `end`
 * and the chunk above it (if any) records the same size below it.
 */
export function tiles(u32: Uint32Array, chunk: number, size: number, end: number): boolean {
  return (size & 15) === 0 && size >= CHUNK_HEADER + 16 && chunk + size <= end &&
    (chunk + size === end || u32[((chunk + size) >>> 2) + Chunk.PrevSize] === size);
}

function roundUpPage(offset: number): number {
  return Math.ceil(offset / OS_PAGE_SIZE) * OS_PAGE_SIZE;
}

/**
 * Gives back, up to about `wanted` bytes, the memory of fit pages (listed,
 * and the empty one fit.ts keeps) that free chunks hold past their headers,
 * in runs of at least MIN_TRIM_PAGES OS pages: a page's free end by
 * lowering its COMMIT_END, a free chunk inside it by purging its whole OS
 * pages (fit.ts counts them in again when a chunk cut from it touches
 * them). Leaves page `busy` (the one fit.ts is cutting a chunk from) alone.
 * Returns the bytes.
 */
export function purgeFreeChunks(arena: Arena, wanted: number, busy: number): number {
  const u32 = arena.u32;
  let released = 0;
  for (let d = u32[HeaderU32.FitPages]; d !== 0 && released < wanted; d = u32[d + Desc.Next]) {
    if (d !== busy) released += purgePage(arena, d, wanted - released);
  }
  const kept = u32[HeaderU32.FitEmpty];
  if (kept !== 0 && kept !== busy && released < wanted) {
    released += purgePage(arena, kept, wanted - released);
  }
  return released;
}

function purgePage(arena: Arena, d: number, wanted: number): number {
  const u32 = arena.u32;
  const start = u32[d + Desc.PageStart];
  const end = start + FIT_PAGE_BYTES;
  let released = 0;
  for (let chunk = start; chunk < end && released < wanted;) {
    const word = u32[chunk >>> 2];
    const size = word & ~CHUNK_FREE;
    const commitEnd = u32[d + Desc.CommitEnd];
    // A damaged header (check() says where) leaves the rest of the page
    // alone: madvise must not follow sizes that do not tile it.
    if (chunk >= commitEnd || !tiles(u32, chunk, size, end)) break;
    const from = roundUpPage(chunk + CHUNK_HEADER);
    if ((word & CHUNK_FREE) !== 0 && chunk + size === end) {
      // The page's free end: no longer committed at all.
      if (commitEnd - from >= MIN_TRIM_PAGES * OS_PAGE_SIZE) {
        const purged = unpurgeRange(arena, d, from, commitEnd);
        releasePages(arena.base + from, commitEnd - from);
        arena.f64[StatF64.MadviseCalls]++;
        const bytes = commitEnd - from - purged * OS_PAGE_SIZE;
        arena.addCommitted(-bytes);
        u32[d + Desc.CommitEnd] = from;
        if (u32[d + Desc.ZeroFrom] > from) u32[d + Desc.ZeroFrom] = from;
        released += bytes;
      }
    } else if ((word & CHUNK_FREE) !== 0) {
      const to = Math.min(chunk + size - ((chunk + size) % OS_PAGE_SIZE), commitEnd);
      if (to - from >= MIN_TRIM_PAGES * OS_PAGE_SIZE) released += purgeRange(arena, d, from, to);
    }
    chunk += size;
  }
  return released;
}

// ---- validation (check()) -------------------------------------------------

/**
 * check(): validates fit page `d`: its chunks tile it, each header agrees
 * with its neighbours, no two free chunks touch, live bits are set exactly
 * at live blocks, and USED and COMMIT_END cover them. Returns its counts.
 */
export function validateFitPage(
  arena: Arena,
  d: number,
  start: number,
  freeChunks: Set<number>,
  fail: Fail,
): { allocated: number; live: number } {
  const u32 = arena.u32;
  const where = arena.base + start;
  if (u32[d + Desc.Units] !== MEDIUM_UNITS || u32[d + Desc.Shift] !== Granule.SmallShift) {
    fail(where, "fit page: bad unit count or bitmap granule");
  }
  const end = start + FIT_PAGE_BYTES;
  const commitEnd = u32[d + Desc.CommitEnd];
  let allocated = 0;
  let live = 0;
  let prevSize = 0;
  let prevFree = false;
  // OS pages that may be purged: whole pages of free chunks past their headers.
  const purgeable = new Uint8Array(FIT_PAGE_BYTES / OS_PAGE_SIZE);
  for (let chunk = start; chunk < end;) {
    const at = arena.base + chunk;
    if (chunk + CHUNK_HEADER > commitEnd) fail(at, "fit page: a chunk header is not committed");
    const word = u32[chunk >>> 2];
    const size = word & ~CHUNK_FREE;
    const isFree = (word & CHUNK_FREE) !== 0;
    if (size < 32 || size % 16 !== 0 || chunk + size > end) {
      fail(at, `fit page: chunk of ${size} bytes does not fit the page`);
    }
    if (u32[(chunk >>> 2) + Chunk.PrevSize] !== prevSize) {
      fail(at, "fit page: PREV_SIZE disagrees");
    }
    if (isFree && prevFree) fail(at, "fit page: two free chunks side by side");
    if (isFree === isLive(u32, d, chunk + CHUNK_HEADER)) {
      fail(at + CHUNK_HEADER, `fit page: a ${isFree ? "free" : "live"} chunk's live bit is wrong`);
    }
    if (isFree) {
      freeChunks.add(chunk);
      const first = Math.ceil((chunk + CHUNK_HEADER - start) / OS_PAGE_SIZE);
      for (let p = first; (p + 1) * OS_PAGE_SIZE <= chunk + size - start; p++) purgeable[p] = 1;
    } else {
      if (chunk + size > commitEnd) fail(at, "fit page: a live block is not committed");
      allocated += size - CHUNK_HEADER;
      live++;
    }
    prevSize = size;
    prevFree = isFree;
    chunk += size;
  }
  // No live bit anywhere else: as many set bits as live blocks.
  let bits = 0;
  // (The 16 units' bitmaps are consecutive: one run of words covers the page.)
  const first = u32[d + Desc.Bitmap];
  for (let w = first; w < first + MEDIUM_UNITS * BitmapWords.Small; w++) {
    for (let b = u32[w]; b !== 0; b &= b - 1) bits++;
  }
  if (bits !== live) fail(where, `fit page: ${bits} live bits for ${live} live blocks`);
  let purged = 0;
  for (let p = 0; p < purgeable.length; p++) {
    if (!isPurged(u32, d, p)) continue;
    purged++;
    if (!purgeable[p] || start + (p + 1) * OS_PAGE_SIZE > commitEnd) {
      fail(where + p * OS_PAGE_SIZE, "fit page: a purged OS page holds a header or a live block");
    }
  }
  if (purged !== u32[d + Desc.PurgedPages]) {
    fail(where, `fit page counts ${u32[d + Desc.PurgedPages]} purged OS pages but marks ${purged}`);
  }
  if (u32[d + Desc.Used] !== live) {
    fail(where, `fit page: USED ${u32[d + Desc.Used]}, ${live} live`);
  }
  return { allocated, live };
}

/** check(): validates the fit bins (every free chunk on the bin of its size, once) and the fit page list. */
export function validateFitLists(
  arena: Arena,
  fitPages: Set<number>,
  freeChunks: Set<number>,
  fail: Fail,
): void {
  const u32 = arena.u32;
  let listed = 0;
  for (let bin = 0; bin < FIT_BINS; bin++) {
    const head = u32[HeaderU32.FitBinHeads + bin];
    if ((head !== 0) !== ((u32[HeaderU32.FitBinMap + (bin >>> 5)] & (1 << (bin & 31))) !== 0)) {
      fail(arena.base, `fit bin ${bin}: its bit in the bin map is wrong`);
    }
    let prev = 0;
    for (let chunk = head; chunk !== 0; prev = chunk, chunk = u32[(chunk >>> 2) + Chunk.NextFree]) {
      const at = arena.base + chunk;
      // A link is followed only to a free chunk the page walk found (a damaged
      // link may name memory that is not even mapped).
      if (!freeChunks.has(chunk)) fail(at, `fit bin ${bin}: links to what is not a free chunk`);
      if (++listed > freeChunks.size) {
        fail(at, "fit bins hold more chunks than the pages (or a cycle)");
      }
      const word = u32[chunk >>> 2];
      if ((word & CHUNK_FREE) === 0) fail(at, `fit bin ${bin}: holds a live chunk`);
      const size = word & ~CHUNK_FREE;
      if (binOf(size) !== bin) fail(at, `fit bin ${bin}: chunk of ${size} bytes`);
      if (u32[(chunk >>> 2) + Chunk.PrevFree] !== prev) {
        fail(at, `fit bin ${bin}: broken back link`);
      }
    }
  }
  if (listed !== freeChunks.size) {
    fail(arena.base, `fit pages have ${freeChunks.size} free chunks, the bins ${listed}`);
  }
  let count = 0;
  let prev = 0;
  for (let d = u32[HeaderU32.FitPages]; d !== 0; prev = d, d = u32[d + Desc.Next]) {
    if (!fitPages.has(d)) fail(arena.base, `fit page list: link ${d} is not a fit page`);
    const at = arena.base + u32[d + Desc.PageStart];
    if (++count > fitPages.size) fail(at, "fit page list: a cycle");
    if (u32[d + Desc.Prev] !== prev) fail(at, "fit page list: broken back link");
  }
  // A fit page that empties is kept (on no list) or retired: every listed one is in use.
  for (const d of fitPages) {
    if (u32[d + Desc.Used] === 0) {
      fail(arena.base + u32[d + Desc.PageStart], "fit page: empty but listed");
    }
  }
  const kept = u32[HeaderU32.FitEmpty];
  if (
    kept !== 0 &&
    (!isDescriptor(kept, u32[HeaderU32.TopUnit]) || u32[kept + Desc.State] !== PageState.Fit)
  ) {
    fail(arena.base, "the kept empty fit page is not a fit page");
  }
  if (count !== fitPages.size) fail(arena.base, `${fitPages.size} fit pages, ${count} listed`);
}
