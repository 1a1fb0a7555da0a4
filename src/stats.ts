/**
 * Heap statistics: counters kept in the arena header (f64 slots, see
 * arena.ts), read into a plain object on demand. Nothing here is on the
 * allocation fast path except the few counter updates in heap.ts.
 */

import { Counter, type HotCounters, Slot, slotOf } from "./arena/owners.ts";
import { type Arena, HeaderU32, MAX_OWNERS, StatF64 } from "./arena/arena.ts";

/**
 * A snapshot of a heap's counters. All sizes are in bytes. In debug mode the
 * block counts and sizes (allocatedBytes, peakAllocatedBytes, liveBlocks, allocCount,
 * freeCount, utilization) are the user's blocks, the
 * sizes asked for, as in the other modes; the red zones, headers and the
 * quarantine of freed blocks show in committedBytes.
 */
export interface HeapStats {
  /** Sum of the usable sizes of live blocks. */
  allocatedBytes: number;
  /** Bytes that may be resident: pages handed to blocks or metadata and not yet given back. */
  committedBytes: number;
  /**
   * Highest allocatedBytes seen, or a little above it: a private heap in no
   * special mode notes its peak when a class's allocation list is refilled,
   * counting the blocks just put on the list as allocated (at most one
   * page's worth per size class up to 1 KiB; see docs/performance.md).
   */
  peakAllocatedBytes: number;
  /** Highest committedBytes seen. */
  peakCommittedBytes: number;
  /** Address space held: the arena reservation, large mappings and the large-block table. */
  reservedBytes: number;
  /** Blocks allocated and not yet freed. */
  liveBlocks: number;
  /** Successful allocations (malloc, calloc, alignedAlloc, and realloc that moved). */
  allocCount: number;
  /** Frees (free, realloc to 0, and the old block of a realloc that moved). */
  freeCount: number;
  /** Calls to mmap (the arena reservation, large blocks, the large-block table). */
  mmapCalls: number;
  /** Calls to munmap (large blocks freed or trimmed, alignment slack). */
  munmapCalls: number;
  /**
   * Calls to madvise: MADV_DONTNEED giving memory back to the OS (empty
   * pages, and free OS pages inside pages in use, by the idle budget or
   * trim()), and MADV_POPULATE_WRITE faulting fresh pages in at once (Linux
   * 5.14 and later) as blocks are carved from them.
   */
  madviseCalls: number;
  /** Calls to mprotect (arena growth, guard pages of secure and debug modes). */
  mprotectCalls: number;
  /** Live blocks above 128 KiB, each in a mapping of its own. */
  largeBlocks: number;
  /** Mapped bytes of those blocks. */
  largeBytes: number;
  /** Committed bytes of empty pages kept for reuse (given back by trim()). */
  retainedBytes: number;
  /** Committed bytes of the allocator's own metadata. */
  metadataBytes: number;
  /**
   * Bytes of pages still in use whose free OS pages were given back to the
   * OS (by the idle budget or trim()) and not used since; not in committedBytes.
   */
  purgedBytes: number;
  /** allocatedBytes / committedBytes (0 when nothing is committed). */
  utilization: number;
}

/** Copies the hot counters into the arena header. */
export function publishCounters(arena: Arena, c: HotCounters): void {
  const f64 = arena.f64;
  f64[StatF64.Allocated] = c.allocated;
  f64[StatF64.PeakAllocated] = c.peakAllocated;
  f64[StatF64.AllocCount] = c.allocs;
  f64[StatF64.FreeCount] = c.frees;
}

/**
 * Shared heaps: adds up every owner slot's counters into the header. A
 * block freed by another Worker counts against the freeing Worker, so only
 * the sums are meaningful. peakAllocatedBytes is the sum of each Worker's
 * peak: an upper bound of the heap's true peak.
 */
export function sumOwnerCounters(arena: Arena): void {
  const totals = { allocated: 0, peakAllocated: 0, allocs: 0, frees: 0 };
  for (let owner = 1; owner < MAX_OWNERS; owner++) {
    const slot = slotOf(arena, owner);
    if (Atomics.load(arena.u32, slot + Slot.State) === 0) continue;
    const f = (slot + Slot.Counters) / 2;
    totals.allocated += arena.f64[f + Counter.Allocated];
    totals.peakAllocated += arena.f64[f + Counter.PeakAllocated];
    totals.allocs += arena.f64[f + Counter.Allocs];
    totals.frees += arena.f64[f + Counter.Frees];
  }
  publishCounters(arena, totals);
}

/** Reads the counters of `arena` (published first) into a HeapStats snapshot. */
export function readStats(arena: Arena, largeTableBytes: number): HeapStats {
  const f64 = arena.f64;
  const allocated = f64[StatF64.Allocated];
  const committed = f64[StatF64.Committed];
  const allocs = f64[StatF64.AllocCount];
  const frees = f64[StatF64.FreeCount];
  return {
    allocatedBytes: allocated,
    committedBytes: committed,
    peakAllocatedBytes: f64[StatF64.PeakAllocated],
    peakCommittedBytes: f64[StatF64.PeakCommitted],
    reservedBytes: f64[StatF64.Reserved],
    liveBlocks: allocs - frees,
    allocCount: allocs,
    freeCount: frees,
    mmapCalls: f64[StatF64.MmapCalls],
    munmapCalls: f64[StatF64.MunmapCalls],
    madviseCalls: f64[StatF64.MadviseCalls],
    mprotectCalls: f64[StatF64.MprotectCalls],
    largeBlocks: arena.u32[HeaderU32.LargeCount],
    largeBytes: f64[StatF64.LargeBytes],
    retainedBytes: f64[StatF64.RetainedBytes],
    metadataBytes: f64[StatF64.MetaCommitted] + largeTableBytes,
    purgedBytes: f64[StatF64.PurgedBytes],
    utilization: committed > 0 ? allocated / committed : 0,
  };
}
