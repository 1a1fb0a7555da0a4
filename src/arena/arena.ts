/**
 * The arena: one reservation of address space that holds every small and
 * medium block together with all of the allocator's own state.
 *
 * It is mapped once with PROT_NONE and MAP_NORESERVE, so it costs address
 * space only. The metadata part is made read-write at creation; the data part
 * is made read-write in 8 MiB steps as pages are carved from it, so a stray
 * access past the carved top faults. Linux backs a read-write page with
 * memory only when it is first touched, and the heap touches a page only
 * after counting it in `committedBytes`, so that figure bounds the resident
 * memory the arena can hold.
 *
 * One ArrayBuffer and one set of typed arrays (u8, u32, f64) cover the whole
 * reservation: every structure is reached by index, never through a view made
 * per operation. Offsets are relative to the arena's base and fit in 32 bits
 * (the arena is at most 4 GiB), so `>>>` is safe on them.
 *
 *   offset 0         +-----------------------------------------------+
 *                    | header: magic, layout, list heads (u32)       |  0..511
 *                    | statistics counters (f64)                     |  512..1023
 *                    | recently freed large blocks (f64 ring)        |  1024..1535
 *                    | fit pages: bins of free chunks, page list     |  1536..1807
 *                    | class table: 88 x 16 B                        |  2048..3455
 *                    | size -> class lookup, 65 x u8                 |  3584..3648
 *   4096             +-----------------------------------------------+
 *                    | page descriptors: 128 B per 64 KiB unit       |
 *                    +-----------------------------------------------+
 *                    | live bitmaps: 512 B per unit (1 bit a granule)|
 *                    +-----------------------------------------------+
 *                    | handed-out bitmaps: 512 B per unit (shared    |
 *                    | heaps: blocks the page's owner handed out and |
 *                    | has not seen freed; see modes/shared.ts)      |
 *                    +-----------------------------------------------+
 *                    | owner slots: 64 x 1 KiB (shared heaps; see    |
 *                    | owners.ts)                                    |
 *   dataStart        +-----------------------------------------------+  64 KiB-aligned address
 *                    | unit 0 | unit 1 | ... 64 KiB each, carved from  |
 *                    | the bottom up as small (1 unit) or medium     |
 *                    | (16 units) pages                              |
 *   dataEnd          +-----------------------------------------------+
 */

import {
  MAP_FIXED_NOREPLACE,
  MAP_NORESERVE,
  mapMemory,
  OS_PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  protectMemory,
  unmapMemory,
  viewMemory,
} from "../os/libc.ts";

export const MAGIC = 0x414d5354; // "TSMA"
export const LAYOUT_VERSION = 4;

export const UNIT_SIZE = 64 * 1024;
export const MEDIUM_UNITS = 16; // a medium page is 1 MiB
const DESC_BYTES = 128;
const BITMAP_BYTES = 512; // 4096 bits: one per 16-byte granule of a 64 KiB unit
/** Owner slots of a shared heap: 64 of 1 KiB (see owners.ts). */
export const MAX_OWNERS = 64;
export const OWNER_WORDS = 256;
const OWNERS_BYTES = MAX_OWNERS * OWNER_WORDS * 4;
const COMMIT_STEP = 8 * 1024 * 1024;
export const MAX_ARENA_BYTES = 2 ** 32;
export const MIN_ARENA_BYTES = 16 * 1024 * 1024;

/** The header's words (u32 indexes into the arena; bytes 0..511, and the fit pages' 1536..1807). */
export const enum HeaderU32 {
  Magic = 0,
  Version = 1,
  UnitCount = 2,
  /** Offset of unit 0. */
  DataStart = 3,
  /** Units below this have been carved. */
  TopUnit = 4,
  /** Data below this offset is read-write. */
  CommitTop = 5,
  /** Retained (empty, still committed) pages, most recent first; doubly linked (page_source.ts). */
  RetainedSmallHead = 6,
  RetainedSmallTail = 7,
  RetainedMediumHead = 8,
  RetainedMediumTail = 9,
  /** Released (returned to the OS) pages; stacks linked through NEXT. */
  ReleasedSmallHead = 10,
  ReleasedMediumHead = 11,
  /** Slots in the large-block table. */
  LargeCapacity = 12,
  /** Live large blocks. */
  LargeCount = 13,
  /** Next slot of the ring of recently freed large blocks. */
  RecentLargeNext = 15,
  /** Secure mode's free-list key (0 = secure mode off). */
  SecureKey = 16,
  /** Shared heaps: the global lock (an i32: 0 free, else the holder's owner id). */
  GlobalLock = 17,
  /** 1 for a heap made with `shared: true`. */
  Shared = 18,
  /**
   * bitmapU32 - dataStart / 512: a small page's live bit for the block at
   * arena offset o is bit (o >>> 4) & 31 of word BitmapBias's value + (o >>> 9).
   * Each 64 KiB unit has 128 bitmap words, in unit order, and dataStart is a
   * multiple of the OS page (so of 512), so one formula covers every small
   * page and the fast paths skip the descriptor's BITMAP.
   */
  BitmapBias = 19,
  /** Shared heaps: taken by check() before it stops the world (one checker at a time). */
  CheckLock = 20,
  /** Fit pages (fit.ts): the heads of the 64 bins of free chunks. */
  FitBinHeads = 384,
  /** A bit per non-empty bin. */
  FitBinMap = 448,
  /** The list of fit pages (linked through their descriptors' NEXT and PREV). */
  FitPages = 450,
  /** The one fit page kept though all its blocks are free, on no list (0 = none). */
  FitEmpty = 451,
}

/** Ring of the last 64 freed large-block addresses (f64, bytes 1024..1535), for double-free reports. */
export const RECENT_LARGE_F64 = 128;
export const RECENT_LARGE_SLOTS = 64;

/**
 * The statistics (f64 indexes into the arena; bytes 512..1023): what
 * stats() reads, kept by the slow paths and published into by the Heap
 * (allocation counters, derived when they are asked for: see "Counting" in
 * alloc/page_layout.ts).
 */
export const enum StatF64 {
  /** Usable bytes of live blocks (published). */
  Allocated = 64,
  /** Bytes that may be resident. */
  Committed = 66,
  /** Published. */
  PeakAllocated = 67,
  PeakCommitted = 68,
  /** Published. */
  AllocCount = 69,
  /** Published. */
  FreeCount = 70,
  MmapCalls = 71,
  MunmapCalls = 72,
  MadviseCalls = 73,
  MprotectCalls = 74,
  /** Mapped bytes of live large blocks. */
  LargeBytes = 75,
  /** Committed bytes of retained empty pages. */
  RetainedBytes = 76,
  /** The part of Committed that is metadata. */
  MetaCommitted = 77,
  /** Address of the large-block table mapping. */
  LargeTable = 78,
  RetainLimit = 79,
  /** The arena, large mappings and the table. */
  Reserved = 80,
  /** OS pages of in-use pages given back (not in Committed). */
  PurgedBytes = 81,
  /** Full size of every page in use (taken from the arena and not retired): see footprint(). */
  InUsePageBytes = 82,
  /** HeapOptions.limitBytes (Infinity: no cap). */
  Limit = 83,
}

// The class table (byte 2048), size lookup (byte 3584) and page descriptors
// (byte 4096) are laid out in page_layout.ts (Tables); class_lists.ts fills
// the first two (formatClassTable), the page source the descriptors.
export const DESCRIPTORS_BYTE = 4096;

/** Options that shape an arena. */
export interface ArenaLayout {
  arenaBytes: number;
  retainBytes: number;
  shared: boolean;
  /** Ask for the reservation at LOW_ARENA_ADDRESS first. */
  lowAddresses: boolean;
  /** HeapOptions.limitBytes (Infinity: no cap). */
  limitBytes: number;
}

/**
 * Where an arena asks to start when HeapOptions.lowAddresses is on (the
 * default). Below 2^31 an address is a small integer (a Smi) to V8: it
 * crosses a call that V8 did not inline without being boxed as a heap
 * number, and the fast paths do integer arithmetic on it (what that saves:
 * docs/performance.md, "Costs behind design choices").
 * Pages are carved from the bottom, so a 4 GiB arena here gives small-integer
 * addresses to its first 1.75 GiB. 256 MiB leaves the lowest addresses to
 * whatever conventionally lives there; one arena at a time gets this place,
 * the others go where the OS puts them.
 */
const LOW_ARENA_ADDRESS = 0x1000_0000;

/** The reservation, its views and the carving of units. */
export class Arena {
  readonly base: number;
  readonly size: number;
  readonly buffer: ArrayBuffer;
  readonly u8: Uint8Array;
  readonly u32: Uint32Array;
  readonly f64: Float64Array;
  readonly dataStart: number;
  readonly dataEnd: number;
  readonly unitCount: number;
  /** u32 index where the live bitmaps start (BITMAP_BYTES per unit). */
  readonly bitmapU32: number;
  /** Shared heaps: u32 index where the handed-out bitmaps start (BITMAP_BYTES per unit). */
  readonly handedOutU32: number;
  /** u32 index of the owner slots (shared heaps). */
  readonly ownersU32: number;
  /** An Int32Array over the arena, for Atomics. */
  readonly i32: Int32Array;
  /** Shared heaps: how deep this Worker is in the (re-entrant) global lock. */
  globalLockDepth = 0;

  private constructor(base: number, size: number) {
    this.base = base;
    this.size = size;
    this.buffer = viewMemory(base, size);
    this.u8 = new Uint8Array(this.buffer);
    this.u32 = new Uint32Array(this.buffer);
    this.f64 = new Float64Array(this.buffer);
    this.i32 = new Int32Array(this.buffer);
    const perUnit = UNIT_SIZE + DESC_BYTES + 2 * BITMAP_BYTES;
    this.unitCount = Math.floor((size - DESCRIPTORS_BYTE - OWNERS_BYTES - UNIT_SIZE) / perUnit);
    const bitmapStart = DESCRIPTORS_BYTE + this.unitCount * DESC_BYTES;
    this.bitmapU32 = bitmapStart >>> 2;
    const handedOutStart = bitmapStart + this.unitCount * BITMAP_BYTES;
    this.handedOutU32 = handedOutStart >>> 2;
    const ownersStart = handedOutStart + this.unitCount * BITMAP_BYTES;
    this.ownersU32 = ownersStart >>> 2;
    this.dataStart = Arena.metadataBytes(base, size);
    this.dataEnd = this.dataStart + this.unitCount * UNIT_SIZE;
  }

  /** Bytes from the base of an arena of `size` bytes at `base` to its first unit: its metadata. */
  static metadataBytes(base: number, size: number): number {
    const perUnit = UNIT_SIZE + DESC_BYTES + 2 * BITMAP_BYTES;
    const unitCount = Math.floor((size - DESCRIPTORS_BYTE - OWNERS_BYTES - UNIT_SIZE) / perUnit);
    const metaEnd = DESCRIPTORS_BYTE + unitCount * (DESC_BYTES + 2 * BITMAP_BYTES) + OWNERS_BYTES;
    return roundUp(base + metaEnd, UNIT_SIZE) - base;
  }

  /** Reserves and formats a new arena, or returns null if the OS refuses. */
  static create(layout: ArenaLayout): Arena | null {
    const size = layout.arenaBytes;
    let base = layout.lowAddresses
      ? mapMemory(size, PROT_NONE, MAP_NORESERVE | MAP_FIXED_NOREPLACE, LOW_ARENA_ADDRESS)
      : 0;
    if (base === 0) base = mapMemory(size, PROT_NONE, MAP_NORESERVE);
    if (base === 0) return null;
    const arena = new Arena(base, size);
    if (!protectMemory(base, arena.dataStart, PROT_READ | PROT_WRITE)) {
      unmapMemory(base, size);
      return null;
    }
    arena.format(layout);
    return arena;
  }

  /**
   * Views an arena that another Worker created and shares (see Heap.attach).
   * Returns null unless the memory holds a shared arena of this layout.
   */
  static attach(base: number, size: number): Arena | null {
    const arena = new Arena(base, size);
    const u32 = arena.u32;
    const ok = u32[HeaderU32.Magic] === MAGIC && u32[HeaderU32.Version] === LAYOUT_VERSION &&
      u32[HeaderU32.UnitCount] === arena.unitCount &&
      u32[HeaderU32.DataStart] === arena.dataStart &&
      u32[HeaderU32.Shared] === 1;
    return ok ? arena : null;
  }

  private format(layout: ArenaLayout): void {
    const { u32, f64 } = this;
    u32[HeaderU32.Shared] = layout.shared ? 1 : 0;
    u32[HeaderU32.Magic] = MAGIC;
    u32[HeaderU32.Version] = LAYOUT_VERSION;
    u32[HeaderU32.UnitCount] = this.unitCount;
    u32[HeaderU32.DataStart] = this.dataStart;
    u32[HeaderU32.BitmapBias] = this.bitmapU32 - this.dataStart / 512;
    u32[HeaderU32.CommitTop] = this.dataStart;
    f64[StatF64.MmapCalls] = 1;
    f64[StatF64.MprotectCalls] = 1;
    f64[StatF64.RetainLimit] = layout.retainBytes;
    f64[StatF64.Reserved] = this.size;
    f64[StatF64.Limit] = layout.limitBytes;
    this.setMetaCommitted(0);
  }

  /**
   * Takes `units` fresh units from the top, making them read-write if needed.
   * Returns the first unit's number, or -1 when the arena is exhausted or the
   * OS refuses.
   */
  carveUnits(units: number): number {
    const u32 = this.u32;
    const first = u32[HeaderU32.TopUnit];
    const top = first + units;
    if (top > this.unitCount) return -1;
    const end = this.dataStart + top * UNIT_SIZE;
    const commitTop = u32[HeaderU32.CommitTop];
    if (end > commitTop) {
      const newTop = Math.min(this.dataEnd, roundUp(end, COMMIT_STEP));
      this.f64[StatF64.MprotectCalls]++;
      if (!protectMemory(this.base + commitTop, newTop - commitTop, PROT_READ | PROT_WRITE)) {
        return -1;
      }
      u32[HeaderU32.CommitTop] = newTop;
    }
    u32[HeaderU32.TopUnit] = top;
    this.setMetaCommitted(top);
    return first;
  }

  /** Metadata pages touched so far: header, and descriptors and bitmaps of carved units. */
  private setMetaCommitted(topUnit: number): void {
    const meta = this.metaBytes(topUnit);
    this.addCommitted(meta - this.f64[StatF64.MetaCommitted]);
    this.f64[StatF64.MetaCommitted] = meta;
  }

  /** Committed metadata with `topUnit` units carved (at 0: what a new heap starts with). */
  metaBytes(topUnit: number): number {
    const bitmaps = this.u32[HeaderU32.Shared] === 1 ? 2 : 1;
    return DESCRIPTORS_BYTE + roundUp(topUnit * DESC_BYTES, OS_PAGE_SIZE) +
      bitmaps * roundUp(topUnit * BITMAP_BYTES, OS_PAGE_SIZE) +
      (this.u32[HeaderU32.Shared] === 1 ? OWNERS_BYTES : 0);
  }

  /**
   * What HeapOptions.limitBytes caps: the full size of every page in use,
   * the committed bytes of retained pages, large mappings, the large-block
   * table and metadata. It is committedBytes plus the part of pages in use
   * not yet touched, so it bounds committedBytes, and it changes only when a
   * page is taken or retired and when a mapping is made, resized or unmapped,
   * never in a malloc or free that stays within its page.
   */
  footprint(): number {
    const f64 = this.f64;
    return f64[StatF64.InUsePageBytes] + f64[StatF64.RetainedBytes] + f64[StatF64.MetaCommitted] +
      f64[StatF64.Reserved] - this.size;
  }

  /**
   * Whether the footprint may grow by `growth` bytes (and by the metadata of
   * `units` more carved units) within limitBytes.
   */
  withinLimit(growth: number, units = 0): boolean {
    const f64 = this.f64;
    if (f64[StatF64.Limit] === Infinity) return true;
    const top = this.u32[HeaderU32.TopUnit];
    const meta = units === 0 ? 0 : this.metaBytes(top + units) - this.metaBytes(top);
    return this.footprint() + growth + meta <= f64[StatF64.Limit];
  }

  /** Adjusts committedBytes (and its peak) by `delta`. */
  addCommitted(delta: number): void {
    const f64 = this.f64;
    const committed = f64[StatF64.Committed] + delta;
    f64[StatF64.Committed] = committed;
    if (committed > f64[StatF64.PeakCommitted]) f64[StatF64.PeakCommitted] = committed;
  }

  /** Unmaps the whole reservation; every view over it is dead afterwards. */
  unmap(): void {
    unmapMemory(this.base, this.size);
  }
}

/** Rounds `n` up to a multiple of the power of two `to` (safe above 2^31). */
export function roundUp(n: number, to: number): number {
  // Integer bit operations below 1 GiB (cheaper than a division), doubles above.
  return n < 0x4000_0000 && to < 0x4000_0000 ? (n + to - 1) & -to : Math.ceil(n / to) * to;
}
