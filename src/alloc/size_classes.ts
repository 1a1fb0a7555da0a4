/**
 * Size classes.
 *
 * Every small request is rounded up to one of 88 block sizes:
 *
 *   classes  0..15   16, 32, 48, ... 256          exact 16-byte steps
 *   classes 16..87   8 sizes per doubling          288, 320, ... 512, 576, ... 128 KiB
 *
 * Above 256 bytes the step is 1/8 of the doubling's base, so a request never
 * wastes 12.5% or more of its size. At or below 256 bytes the waste is under
 * 16 bytes: the 16-byte alignment every block keeps makes finer steps useless.
 * Every power of two from 16 to 128 KiB is a class, which is what lets
 * `alignedAlloc` serve alignments up to a page from the same pages.
 *
 * Blocks up to 64 KiB live in 64 KiB small pages (4096 blocks a page down to
 * one); the eight classes above live in 1 MiB medium pages (8 to 14 blocks).
 * Requests above 128 KiB get a mapping of their own (see large.ts). A page
 * commits memory only as far as it has handed out blocks, so a small page of
 * one 36 KiB block costs 36 KiB, not 64; and an emptied small page, whatever
 * its class, is what any class takes next (see class_pages.ts), so blocks of 9 to
 * 64 KiB that come and go trade whole pages with the rest of the heap.
 * (In secure mode a small page gives up its last OS page as a guard, so the
 * 64 KiB class lives in medium pages there.)
 */

export const CLASS_COUNT = 88;
/** Largest request served from a size class; anything bigger is a large block. */
export const MAX_CLASS_SIZE = 128 * 1024;
/** Largest alignment served from size-class pages (pages start 64 KiB-aligned). */
export const MAX_CLASS_ALIGNMENT = 64 * 1024;
/** Largest block that lives in a small (64 KiB) page. */
export const MAX_SMALL_PAGE_BLOCK = 64 * 1024;
/** Requests up to this size find their class with one table lookup. */
export const LOOKUP_MAX_SIZE = 1024;
export const LOOKUP_ENTRIES = (LOOKUP_MAX_SIZE >>> 4) + 1;

/** Block size of class `c`. */
export function classBlockSize(c: number): number {
  if (c < 16) return (c + 1) << 4;
  const doubling = (c - 16) >>> 3; // 0 for 257..512
  const step = (c - 16) & 7; // 0..7
  const base = 256 << doubling;
  return base + (step + 1) * (base >>> 3);
}

/** The smallest class whose block holds `size` bytes (0 <= size <= MAX_CLASS_SIZE). */
export function classOfSize(size: number): number {
  if (size <= 256) return size === 0 ? 0 : (size - 1) >>> 4;
  const k = 31 - Math.clz32(size - 1); // 2^k < size <= 2^(k+1), k >= 8
  const step = 1 << (k - 3);
  const within = Math.ceil((size - (1 << k)) / step); // 1..8
  return 16 + (k - 8) * 8 + within - 1;
}

/**
 * The smallest class that holds `size` bytes and whose block addresses are all
 * multiples of `alignment` (a power of two up to 64 KiB): its block size must
 * be a multiple of the alignment, since pages start 64 KiB-aligned.
 * Returns -1 when no class qualifies.
 */
export function classForAlignment(size: number, alignment: number): number {
  for (let c = classOfSize(Math.max(size, alignment)); c < CLASS_COUNT; c++) {
    if (classBlockSize(c) % alignment === 0) return c;
  }
  return -1;
}
