/**
 * The heap checker: walks every page of the arena, then every list and the
 * large-block table, and throws HeapError("corrupt") at the first
 * inconsistency. Each structure's own validator lives beside the structure
 * (ClassPages.validatePage, ClassLists.validateAllocLists,
 * validateClassLists, validateEmptyPage(Lists) in page_source.ts,
 * validateFitPage/Lists in fit_chunks.ts, validateHandedOut in
 * modes/shared.ts, LargeBlocks.validate); this file runs them in order and
 * recomputes every counter it can from what they found. It allocates JS
 * temporaries freely: it is a debugging tool, not a fast path.
 */

import {
  type Arena,
  HeaderU32,
  LAYOUT_VERSION,
  MAGIC,
  MEDIUM_UNITS,
  StatF64,
  UNIT_SIZE,
} from "./arena/arena.ts";
import type { ClassPages } from "./alloc/class_pages.ts";
import { type ClassLists, validateClassLists } from "./alloc/class_lists.ts";
import { BitmapWords, Desc, PageState, Tables } from "./alloc/page_layout.ts";
import type { LargeBlocks } from "./alloc/large.ts";
import type { FitPages } from "./alloc/fit.ts";
import { validateFitLists, validateFitPage } from "./alloc/fit_chunks.ts";
import { HeapError } from "./errors.ts";
import { OS_PAGE_SIZE } from "./os/libc.ts";
import { validateEmptyPage, validateEmptyPageLists } from "./alloc/page_source.ts";
import { validateHandedOut } from "./modes/shared.ts";

/** Throws HeapError("corrupt") describing the first inconsistency found (counters published first). */
export function checkHeap(
  arena: Arena,
  pages: ClassPages,
  lists: ClassLists,
  large: LargeBlocks,
  fit: FitPages | null,
): void {
  const { u32, f64 } = arena;
  const fail = (address: number, what: string): never => {
    throw new HeapError("corrupt", address, what);
  };
  if (u32[HeaderU32.Magic] !== MAGIC || u32[HeaderU32.Version] !== LAYOUT_VERSION) {
    fail(arena.base, "arena header magic or version is wrong");
  }
  if (u32[HeaderU32.BitmapBias] !== arena.bitmapU32 - arena.dataStart / 512) {
    fail(arena.base, "arena header's bitmap bias does not match the layout");
  }
  const top = u32[HeaderU32.TopUnit];
  if (top > arena.unitCount) fail(arena.base, `carved top ${top} beyond ${arena.unitCount} units`);
  const addressOf = (offset: number) => arena.base + offset;

  const waiting = lists.validateAllocLists(fail);

  // Pass 1: every carved unit, page by page.
  let allocated = 0;
  let live = 0;
  let committed = 0;
  let purgedBytes = 0;
  let inUsePageBytes = 0;
  const inUseWithRoom = new Set<number>();
  const retained = new Set<number>();
  const released = new Set<number>();
  const fitPages = new Set<number>();
  /** Arena offsets of the free chunks the fit pages hold: the bins may link these only. */
  const fitFreeChunks = new Set<number>();
  for (let unit = 0; unit < top;) {
    const d = Tables.DescriptorsU32 + unit * Desc.Words;
    const start = arena.dataStart + unit * UNIT_SIZE;
    const state = u32[d + Desc.State];
    const units = u32[d + Desc.Units];
    const where = addressOf(start);
    if (units !== 1 && units !== MEDIUM_UNITS) fail(where, `unit ${unit}: bad unit count ${units}`);
    if (u32[d + Desc.PageStart] !== start) fail(where, `unit ${unit}: page start mismatch`);
    for (let i = 1; i < units; i++) {
      const c = d + i * Desc.Words;
      if (
        u32[c + Desc.State] !== PageState.Continuation || u32[c + Desc.PageStart] !== start ||
        u32[c + Desc.FastFree] !== 0
      ) {
        fail(where, `unit ${unit + i}: medium page continuation is broken`);
      }
    }
    const commitEnd = u32[d + Desc.CommitEnd];
    if (
      commitEnd < start || commitEnd > start + units * UNIT_SIZE || commitEnd % OS_PAGE_SIZE !== 0
    ) {
      fail(where, `page commit end ${commitEnd} out of range`);
    }
    // Read before any bitmap is: a damaged index would send the reads anywhere.
    if (u32[d + Desc.Bitmap] !== arena.bitmapU32 + unit * BitmapWords.Small) {
      fail(where, `unit ${unit}: the descriptor's bitmap index is wrong`);
    }
    // FAST_FREE: 1 on small pages, except a full one off its list (see pass 2).
    const fastFree = u32[d + Desc.FastFree];
    if (
      state === PageState.Small
        ? fastFree !== 1 && (fastFree !== 0 || u32[d + Desc.Used] !== u32[d + Desc.Capacity])
        : fastFree !== 0
    ) {
      fail(where, `unit ${unit}: the fast-free flag ${fastFree} does not match the page`);
    }
    const purgedPages = u32[d + Desc.PurgedPages];
    committed += commitEnd - start - purgedPages * OS_PAGE_SIZE;
    if (state === PageState.Small || state === PageState.Medium || state === PageState.Fit) {
      inUsePageBytes += units * UNIT_SIZE;
    }
    purgedBytes += purgedPages * OS_PAGE_SIZE;
    if (
      state !== PageState.Small && state !== PageState.Medium && state !== PageState.Fit &&
      purgedPages !== 0
    ) {
      fail(where, "an empty page has OS pages counted as purged");
    }
    if (state === PageState.Small || state === PageState.Medium) {
      // Blocks other Workers freed are freed (their live bits are clear), though
      // their owner has not taken them back: USED still counts them.
      const notLive = validateHandedOut(arena, d, fail);
      for (const block of waiting.get(d) ?? []) notLive.add(block);
      const used = pages.validatePage(d, start, notLive, fail);
      allocated += used * u32[d + Desc.BlockSize];
      live += used;
      if (u32[d + Desc.Used] < u32[d + Desc.Capacity]) inUseWithRoom.add(d);
    } else if (state === PageState.Fit) {
      if (fit === null) fail(where, "a fit page in a heap that has none");
      // The empty page fit.ts keeps is on no list, and its one chunk on no bin.
      const kept = d === u32[HeaderU32.FitEmpty];
      const page = validateFitPage(arena, d, start, kept ? new Set() : fitFreeChunks, fail);
      allocated += page.allocated;
      live += page.live;
      if (!kept) fitPages.add(d);
      else if (page.live !== 0) fail(where, "the kept empty fit page holds live blocks");
    } else if (state === PageState.Retained) {
      validateEmptyPage(arena, d, where, fail);
      retained.add(d);
    } else if (state === PageState.Released) {
      if (commitEnd !== start) fail(where, "released page still counts committed memory");
      validateEmptyPage(arena, d, where, fail);
      released.add(d);
    } else {
      fail(where, `unit ${unit}: carved but in state ${state}`);
    }
    unit += units;
  }

  // Pass 2: lists.
  validateClassLists(arena, inUseWithRoom, fail);
  validateEmptyPageLists(arena, retained, released, fail);
  if (inUsePageBytes !== f64[StatF64.InUsePageBytes]) {
    fail(
      arena.base,
      `pages in use hold ${inUsePageBytes} bytes, counted ${f64[StatF64.InUsePageBytes]}`,
    );
  }
  // A heap starts with its first metadata, whatever the cap.
  if (arena.footprint() > Math.max(f64[StatF64.Limit], arena.metaBytes(0))) {
    fail(arena.base, `footprint ${arena.footprint()} is past limitBytes ${f64[StatF64.Limit]}`);
  }
  validateFitLists(arena, fitPages, fitFreeChunks, fail);

  // Pass 3: large blocks.
  const { count: largeCount, bytes: largeBytes } = large.validate(fail);

  // Pass 4: counters.
  allocated += largeBytes;
  live += largeCount;
  if (allocated !== f64[StatF64.Allocated]) {
    fail(
      arena.base,
      `allocatedBytes is ${f64[StatF64.Allocated]} but live blocks hold ${allocated}`,
    );
  }
  const counted = f64[StatF64.AllocCount] - f64[StatF64.FreeCount];
  if (live !== counted) fail(arena.base, `liveBlocks is ${counted} but ${live} blocks are live`);
  if (purgedBytes !== f64[StatF64.PurgedBytes]) {
    fail(
      arena.base,
      `purgedBytes is ${f64[StatF64.PurgedBytes]} but pages hold ${purgedBytes} purged`,
    );
  }
  committed += largeBytes + f64[StatF64.MetaCommitted] + large.tableBytes;
  if (committed !== f64[StatF64.Committed]) {
    fail(
      arena.base,
      `committedBytes is ${f64[StatF64.Committed]} but pages and mappings hold ${committed}`,
    );
  }
}

/**
 * After check() found damage: no structure it found damaged is followed by
 * malloc again. A class page whose free list is damaged (a link out of the
 * page, onto a live block or a cycle: a write into a freed block) gets a new
 * list from its live bitmap; the fit bins are relinked from the fit pages'
 * chunks, leaving out every free chunk of a page whose headers are damaged.
 * Runs with the heap to itself (a shared heap's world stopped).
 */
export function containDamage(pages: ClassPages, fit: FitPages | null): void {
  pages.dropAllocLists();
  pages.repairFreeLists();
  fit?.rebuildBins();
}
