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
import { Desc } from "./page_layout.ts";
import { purgeRange, unpurgeRange } from "./page_memory.ts";

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
