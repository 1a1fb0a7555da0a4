/**
 * Heap snapshots: a plain, JSON-serialisable description of a heap at one
 * moment, read from the arena's own structures without writing to them.
 *
 * The walk goes over page descriptors in address order (one step per page,
 * never per block: a class page's live count is its USED word, not a walk of
 * its free list), so it costs time in proportion to the pages. Only three
 * things look further, each bounded per page: a shared heap's class pages
 * count the live bits of their bitmap (USED there also counts blocks other
 * Workers freed that the owner has not taken back), a fit page walks its
 * chunk headers (at most 1024: its blocks are above 1 KiB), and
 * `{ blocks: true }` reads every block's live bit.
 *
 * Each structure is read by one function below (readClassPage,
 * readFitPage, readEmptyPage, readLargeBlocks, readDebugSites), so a change
 * of a page's internals touches one place here.
 *
 * The arena's pages tile its reservation: `metadata` (header, descriptors,
 * bitmaps), then every carved page (in secure mode each followed by its
 * guard page), then one `unused` entry for the address space not carved yet
 * (reserved, inaccessible until carved).
 */

import { type Arena, HeaderU32, StatF64, UNIT_SIZE } from "./arena/arena.ts";
import { BitmapWords, Desc, PageState, Tables } from "./alloc/page_layout.ts";
import type { LargeBlocks } from "./alloc/large.ts";
import { CHUNK_HEADER, FIT_PAGE_BYTES } from "./alloc/fit_chunks.ts";
import { CLASS_COUNT, classBlockSize } from "./alloc/size_classes.ts";
import { OS_PAGE_SIZE } from "./os/libc.ts";
import type { HeapStats } from "./stats.ts";
import type { DebugLayer } from "./modes/debug.ts";

/** Options of `heap.snapshot()`. */
export interface SnapshotOptions {
  /**
   * Include each page's per-block state (and, in debug mode, every live
   * block's allocation site). Costs time in proportion to the blocks.
   */
  blocks?: boolean;
  /** A name for this moment (a replay step, a phase of the program); shown by the heap map. */
  label?: string;
}

/**
 * What a stretch of the arena is:
 * - `metadata`: the allocator's own header, page descriptors and bitmaps;
 * - `class`: a page of one size class's blocks (64 KiB, or 1 MiB for the largest classes);
 * - `fit`: a 1 MiB page of blocks above 1 KiB cut to 16 bytes (private heaps);
 * - `retained`: an empty page kept committed for reuse (given back by `trim()`);
 * - `released`: an empty page given back to the OS, still reserved;
 * - `guard`: secure mode: the last OS page of every page, inaccessible, so a
 *   run past a page's end faults;
 * - `unused`: address space reserved and not carved into pages yet.
 */
export type PageKind =
  | "metadata"
  | "class"
  | "fit"
  | "retained"
  | "released"
  | "guard"
  | "unused";

/** One page (or stretch) of the arena. Addresses are real virtual addresses. */
export interface PageSnapshot {
  /** Address of its first byte. */
  address: number;
  /** Its length in bytes. */
  bytes: number;
  /** What it is (see PageKind). */
  kind: PageKind;
  /** Size class (`class` pages), else -1. */
  class: number;
  /** Bytes per block (`class` pages), else 0. */
  blockSize: number;
  /** Blocks the page holds (`class` pages); live plus free chunks (`fit` pages); else 0. */
  capacity: number;
  /** Live blocks. */
  live: number;
  /** Usable bytes of the live blocks. */
  liveBytes: number;
  /** Bytes of the page counted in committedBytes (may be resident). */
  committed: number;
  /** OS pages of an in-use page given back to the OS (purgedBytes / 4096). */
  purgedPages: number;
  /** Shared heaps: owner slot of the Worker that allocates from the page (0 = none / not shared). */
  owner: number;
  /**
   * `{ blocks: true }` only. `class` pages: one hex digit per four blocks,
   * block i live when bit (i % 4) of digit floor(i / 4) is set. `fit`
   * pages: the chunks in address order, each its bytes (header included),
   * positive for a live block and negative for a free chunk.
   */
  blocks?: string | number[];
  /** `class` pages: blocks handed out at least once since the page was formatted (below its bump pointer). */
  touched?: number;
}

/** A block above 128 KiB, in a mapping of its own. */
export interface LargeSnapshot {
  /** Address of the block (its mapping's start). */
  address: number;
  /** Usable (mapped) bytes, guard pages excluded. */
  bytes: number;
  /** Bytes asked for. */
  requested: number;
  /** Inaccessible bytes around it (secure mode: a page each side). */
  guardBytes: number;
}

/** The figures of one size class over all its pages. */
export interface ClassSnapshot {
  /** The size class. */
  class: number;
  /** Bytes per block. */
  blockSize: number;
  /** Pages of the class. */
  pages: number;
  /** Live blocks. */
  live: number;
  /** Blocks of its pages that are not live (freed or never handed out). */
  free: number;
  /** Committed bytes of its pages. */
  committed: number;
  /** Bytes at the ends of its pages that no whole block fits in. */
  tailBytes: number;
  /**
   * The most that rounding requests up to the block size can lose in its
   * live blocks: live x (blockSize - smallest request of the class). The
   * allocator keeps no requested size per block, so this is a bound.
   */
  maxRoundingBytes: number;
}

/**
 * Fragmentation figures. Each is read from the pages of this snapshot.
 */
export interface FragmentationSnapshot {
  /** allocatedBytes / committedBytes, the share of committed memory that holds live blocks (0 when nothing is committed). */
  utilization: number;
  /**
   * Bytes of free blocks (freed or never handed out) and free fit chunks in
   * pages that hold at least one live block: space only the page's own
   * class (or fit blocks) can use until the page empties.
   */
  strandedBytes: number;
  /**
   * Committed bytes of pages that hold live blocks, less their live
   * blocks' bytes: memory paid for and holding nothing.
   */
  idleCommittedBytes: number;
  /**
   * The longest run of consecutive pages holding no live block (retained,
   * released, empty) below the carved top, in bytes: the biggest stretch
   * of address space the arena can reuse whole.
   */
  largestFreeRunBytes: number;
  /** All the address space below the carved top in pages holding no live block. */
  freePageBytes: number;
  /** 1 - largestFreeRunBytes / freePageBytes: how broken up the free pages are (0 when none). */
  freeSpaceFragmentation: number;
  /** The largest free chunk of the fit pages: the biggest fit block servable without a new page. */
  largestFreeChunkBytes: number;
  /** Address space not carved into pages yet. */
  uncarvedBytes: number;
  /** Pages with live blocks and room for more. */
  partlyUsedPages: number;
  /** Pages whose every block is live. */
  fullPages: number;
  /** Class and fit pages in use with no live block (a class's kept head page, the fit page kept). */
  emptyPages: number;
}

/** Debug mode with `{ blocks: true }`: live blocks and the stacks that allocated them. */
export interface SitesSnapshot {
  /** Distinct allocation stacks ("" when stacks are off or recorded by another Worker). */
  stacks: string[];
  /** Per live block, four numbers: user address, user size, index into `stacks`, allocation number. */
  blocks: number[];
}

/** A heap at one moment (see `Heap.snapshot`). */
export interface HeapSnapshot {
  /** Format version of this object. */
  version: 1;
  /** Milliseconds since the epoch when it was taken. */
  time: number;
  /** What `options.label` said, if anything. */
  label?: string;
  /** The modes the heap runs in. */
  mode: { secure: boolean; debug: boolean; shared: boolean };
  /**
   * The heap's counters at the same moment, as the pages below add them up:
   * in debug mode the core's blocks (each user block with its red zones and
   * header, and the quarantine of freed blocks), where stats() counts the
   * user's blocks alone.
   */
  stats: HeapStats;
  /** Where the arena lies and how much of it is carved into pages. */
  arena: {
    base: number;
    bytes: number;
    /** Address of the first page. */
    dataStart: number;
    /** 64 KiB: the granule of pages. */
    unitBytes: number;
    /** Units carved into pages so far. */
    carvedUnits: number;
  };
  /** The arena in address order; the entries tile [arena.base, arena.base + arena.bytes). */
  pages: PageSnapshot[];
  /** Live large blocks in address order. */
  large: LargeSnapshot[];
  /** Bytes of the large-block table mapping (counted as metadata). */
  largeTableBytes: number;
  /** Size classes that have at least one page, by class. */
  classes: ClassSnapshot[];
  /** The fragmentation figures (see FragmentationSnapshot). */
  fragmentation: FragmentationSnapshot;
  /** Debug mode with `{ blocks: true }`: every live block's allocation site. */
  sites?: SitesSnapshot;
}

/** What the snapshot reads; the Heap hands it over under the locks check() takes. */
export interface SnapshotSources {
  arena: Arena;
  large: LargeBlocks;
  stats: HeapStats;
  debug: DebugLayer | null;
  secure: boolean;
  /** Blocks waiting on allocation lists (counted in USED, free), by page descriptor. */
  waiting: ReadonlyMap<number, number>;
}

const EMPTY_CLASS = (c: number): ClassSnapshot => ({
  class: c,
  blockSize: classBlockSize(c),
  pages: 0,
  live: 0,
  free: 0,
  committed: 0,
  tailBytes: 0,
  maxRoundingBytes: 0,
});

/** Reads the heap described by `src` into a HeapSnapshot. */
export function takeSnapshot(src: SnapshotSources, options: SnapshotOptions = {}): HeapSnapshot {
  const { arena, stats } = src;
  const u32 = arena.u32;
  const withBlocks = options.blocks === true;
  const top = u32[HeaderU32.TopUnit];
  const pages: PageSnapshot[] = [{
    ...blankPage(arena.base, arena.dataStart, "metadata"),
    committed: arena.f64[StatF64.MetaCommitted],
  }];
  const classes: (ClassSnapshot | undefined)[] = new Array(CLASS_COUNT);
  const frag: FragmentationSnapshot = {
    utilization: stats.utilization,
    strandedBytes: 0,
    idleCommittedBytes: 0,
    largestFreeRunBytes: 0,
    freePageBytes: 0,
    freeSpaceFragmentation: 0,
    largestFreeChunkBytes: 0,
    uncarvedBytes: 0,
    partlyUsedPages: 0,
    fullPages: 0,
    emptyPages: 0,
  };
  let freeRun = 0;
  // Secure mode: every carved page's last OS page is a guard (see PageSource.setGuard).
  const guard = src.secure ? OS_PAGE_SIZE : 0;
  for (let unit = 0; unit < top;) {
    const d = Tables.DescriptorsU32 + unit * Desc.Words;
    const start = arena.dataStart + unit * UNIT_SIZE;
    const state = u32[d + Desc.State];
    const page = state === PageState.Small || state === PageState.Medium
      ? readClassPage(arena, d, start, withBlocks, src.waiting)
      : state === PageState.Fit
      ? readFitPage(arena, d, start, withBlocks, frag)
      : readEmptyPage(arena, d, start);
    pages.push(page);
    if (guard !== 0) {
      page.bytes -= guard;
      pages.push(blankPage(page.address + page.bytes, guard, "guard"));
    }
    unit += Math.max(1, u32[d + Desc.Units]);

    if (page.kind === "class") {
      const c = classes[page.class] ??= EMPTY_CLASS(page.class);
      c.pages++;
      c.live += page.live;
      c.free += page.capacity - page.live;
      c.committed += page.committed;
      c.tailBytes += page.bytes - page.capacity * page.blockSize;
      c.maxRoundingBytes += page.live *
        (page.blockSize - (page.class === 0 ? 1 : classBlockSize(page.class - 1) + 1));
    }
    if (page.live > 0) {
      const freeBytes = page.kind === "class"
        ? (page.capacity - page.live) * page.blockSize
        : page.bytes - page.liveBytes - page.live * CHUNK_HEADER;
      frag.strandedBytes += freeBytes;
      frag.idleCommittedBytes += Math.max(0, page.committed - page.liveBytes);
      if (page.live < page.capacity) frag.partlyUsedPages++;
      else frag.fullPages++;
      freeRun = 0;
    } else {
      if (page.kind === "class" || page.kind === "fit") {
        frag.emptyPages++;
        frag.idleCommittedBytes += page.committed;
      }
      frag.freePageBytes += page.bytes + guard;
      freeRun += page.bytes + guard;
      frag.largestFreeRunBytes = Math.max(frag.largestFreeRunBytes, freeRun);
    }
  }
  const carvedEnd = arena.dataStart + top * UNIT_SIZE;
  pages.push(blankPage(arena.base + carvedEnd, arena.size - carvedEnd, "unused"));
  frag.uncarvedBytes = arena.size - carvedEnd;
  frag.freeSpaceFragmentation = frag.freePageBytes > 0
    ? 1 - frag.largestFreeRunBytes / frag.freePageBytes
    : 0;

  const snapshot: HeapSnapshot = {
    version: 1,
    time: Date.now(),
    ...(options.label !== undefined ? { label: String(options.label) } : {}),
    mode: { secure: src.secure, debug: src.debug !== null, shared: u32[HeaderU32.Shared] === 1 },
    stats,
    arena: {
      base: arena.base,
      bytes: arena.size,
      dataStart: arena.base + arena.dataStart,
      unitBytes: UNIT_SIZE,
      carvedUnits: top,
    },
    pages,
    large: readLargeBlocks(src.large, src.secure),
    largeTableBytes: src.large.tableBytes,
    classes: classes.filter((c): c is ClassSnapshot => c !== undefined),
    fragmentation: frag,
  };
  if (withBlocks && src.debug !== null) snapshot.sites = readDebugSites(src.debug);
  return snapshot;
}

function blankPage(address: number, bytes: number, kind: PageKind): PageSnapshot {
  return {
    address,
    bytes,
    kind,
    class: -1,
    blockSize: 0,
    capacity: 0,
    live: 0,
    liveBytes: 0,
    committed: 0,
    purgedPages: 0,
    owner: 0,
  };
}

/** Committed bytes of page `d` (see COMMIT_END and PURGED_PAGES in page_layout.ts). */
function committedOf(u32: Uint32Array, d: number, start: number): number {
  return u32[d + Desc.CommitEnd] - start - u32[d + Desc.PurgedPages] * OS_PAGE_SIZE;
}

/**
 * Live blocks of class page `d`: USED less the blocks waiting on its
 * class's allocation list, except in a shared heap, where USED also counts
 * blocks other Workers freed (live bit cleared, not yet taken back by the
 * owner), so the live bits are counted instead.
 */
function classPageLive(arena: Arena, d: number, waiting: ReadonlyMap<number, number>): number {
  const u32 = arena.u32;
  if (u32[HeaderU32.Shared] !== 1) return u32[d + Desc.Used] - (waiting.get(d) ?? 0);
  const bitmap = u32[d + Desc.Bitmap];
  const words = u32[d + Desc.State] === PageState.Medium ? BitmapWords.Medium : BitmapWords.Small;
  let live = 0;
  for (let w = bitmap; w < bitmap + words; w++) {
    let v = u32[w];
    v = v - ((v >>> 1) & 0x55555555);
    v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
    live += Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
  }
  return live;
}

/** A size-class page (STATE SMALL or MEDIUM). */
function readClassPage(
  arena: Arena,
  d: number,
  start: number,
  withBlocks: boolean,
  waiting: ReadonlyMap<number, number>,
): PageSnapshot {
  const u32 = arena.u32;
  const blockSize = u32[d + Desc.BlockSize];
  const capacity = u32[d + Desc.Capacity];
  const live = classPageLive(arena, d, waiting);
  const page: PageSnapshot = {
    address: arena.base + start,
    bytes: u32[d + Desc.Units] * UNIT_SIZE,
    kind: "class",
    class: u32[d + Desc.Class],
    blockSize,
    capacity,
    live,
    liveBytes: live * blockSize,
    committed: committedOf(u32, d, start),
    purgedPages: u32[d + Desc.PurgedPages],
    owner: u32[d + Desc.Owner],
  };
  if (withBlocks) {
    page.touched = (u32[d + Desc.Bump] - start) / blockSize;
    page.blocks = classPageBlocks(u32, d, blockSize, capacity);
  }
  return page;
}

/** The live bit of every block of class page `d`, four to a hex digit. */
function classPageBlocks(
  u32: Uint32Array,
  d: number,
  blockSize: number,
  capacity: number,
): string {
  const bitmap = u32[d + Desc.Bitmap];
  const shift = u32[d + Desc.Shift];
  const digits: string[] = [];
  for (let i = 0; i < capacity; i += 4) {
    let digit = 0;
    for (let j = 0; j < 4 && i + j < capacity; j++) {
      const granule = ((i + j) * blockSize) >>> shift;
      if ((u32[bitmap + (granule >>> 5)] & (1 << (granule & 31))) !== 0) digit |= 1 << j;
    }
    digits.push(digit.toString(16));
  }
  return digits.join("");
}

/**
 * A fit page (see fit.ts): its chunk headers tile it; a live chunk is a
 * block. Also raises `frag.largestFreeChunkBytes`. A header that does not
 * tile the page ends the walk (check() reports it).
 */
function readFitPage(
  arena: Arena,
  d: number,
  start: number,
  withBlocks: boolean,
  frag: FragmentationSnapshot,
): PageSnapshot {
  const u32 = arena.u32;
  const end = start + FIT_PAGE_BYTES;
  const commitEnd = u32[d + Desc.CommitEnd];
  const chunks: number[] = [];
  let live = 0;
  let liveBytes = 0;
  let count = 0;
  for (let chunk = start; chunk + CHUNK_HEADER <= commitEnd && chunk < end;) {
    const word = u32[chunk >>> 2];
    const size = word & ~1;
    if (size < 32 || (size & 15) !== 0 || chunk + size > end) break;
    count++;
    if ((word & 1) === 0) {
      live++;
      liveBytes += size - CHUNK_HEADER;
      if (withBlocks) chunks.push(size);
    } else {
      frag.largestFreeChunkBytes = Math.max(frag.largestFreeChunkBytes, size - CHUNK_HEADER);
      if (withBlocks) chunks.push(-size);
    }
    chunk += size;
  }
  const page: PageSnapshot = {
    address: arena.base + start,
    bytes: FIT_PAGE_BYTES,
    kind: "fit",
    class: -1,
    blockSize: 0,
    capacity: count,
    live,
    liveBytes,
    committed: committedOf(u32, d, start),
    purgedPages: u32[d + Desc.PurgedPages],
    owner: 0,
  };
  if (withBlocks) page.blocks = chunks;
  return page;
}

/** A retained or released page (or a carved unit in another state, shown as released). */
function readEmptyPage(arena: Arena, d: number, start: number): PageSnapshot {
  const u32 = arena.u32;
  const retained = u32[d + Desc.State] === PageState.Retained;
  return {
    ...blankPage(arena.base + start, Math.max(1, u32[d + Desc.Units]) * UNIT_SIZE, "released"),
    kind: retained ? "retained" : "released",
    committed: retained ? u32[d + Desc.CommitEnd] - start : 0,
  };
}

/** The large-block table, in address order. */
function readLargeBlocks(large: LargeBlocks, secure: boolean): LargeSnapshot[] {
  const blocks: LargeSnapshot[] = [];
  large.forEach((address, bytes, requested) =>
    blocks.push({ address, bytes, requested, guardBytes: secure ? 2 * OS_PAGE_SIZE : 0 })
  );
  return blocks.sort((a, b) => a.address - b.address);
}

/** Debug mode: every live block's allocation number and stack, stacks deduplicated. */
function readDebugSites(debug: DebugLayer): SitesSnapshot {
  const stacks: string[] = [];
  const index = new Map<string, number>();
  const blocks: number[] = [];
  for (const b of debug.liveSites()) {
    let i = index.get(b.stack);
    if (i === undefined) index.set(b.stack, i = stacks.push(b.stack) - 1);
    blocks.push(b.address, b.size, i, b.site);
  }
  return { stacks, blocks };
}
