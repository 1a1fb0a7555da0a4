/**
 * What each part of a malloc+free pair costs: a ladder of models, each the
 * one before plus one part of the heap's fast paths (see "block fast paths"
 * in src/alloc/page_layout.ts), timed side by side with glibc and the heap itself.
 *
 *   deno bench --allow-ffi --allow-env --allow-read bench/fast_path.bench.ts
 *
 * Rungs (64-byte blocks, 1000 pairs an iteration, after a warm-up of a
 * million pairs each; ns per pair = the time per iteration in µs):
 *  1. free list: one list head per class, pop and push (no checks at all);
 *  2. + live bits: malloc sets the block's bit, free checks and clears it
 *     (what makes double and interior frees detectable);
 *  3. + page: free pushes onto the block's page's own list and decrements
 *     its used count, and tests the page's fast-free flag and for an
 *     emptied page; malloc refills its list from the page when it runs dry
 *     (mimalloc's split lists);
 *  4. + counters: free adds to the freed-blocks and freed-bytes counters (a
 *     Float64Array) that stats() derives every figure from;
 *  5. heap: Heap.malloc/free: argument checks, the size-class lookup, the
 *     address range checks, and the slow paths a real workload takes.
 * The models share one layout: 64 KiB pages of 64-byte blocks in a plain
 * ArrayBuffer, a descriptor of 4 words per page, offsets as handles.
 */

import { type Handle, loadAllocators } from "./comparators.ts";
import { specialize } from "./harness.ts";

const PAIRS = 1000;
const WARMUP_PAIRS = 1_000_000;
const BLOCK = 64;
const PAGE = 64 * 1024;
const PAGES = 16;
const BYTES = PAGE * PAGES;

interface PairAllocator<H = number> {
  malloc(size: number): H;
  free(block: H): void;
}

/** Rung 1: a bare free list of 64-byte blocks. */
function freeListModel(): PairAllocator {
  const u32 = new Uint32Array(BYTES / 4);
  let head = 0;
  for (let b = BYTES - BLOCK; b >= BLOCK; b -= BLOCK) u32[b >>> 2] = head, head = b;
  return {
    malloc: (_size) => {
      const block = head;
      head = u32[block >>> 2];
      return block;
    },
    free: (block) => {
      u32[block >>> 2] = head;
      head = block;
    },
  };
}

/** Rung 2: rung 1 with a live bit per 16-byte granule, set by malloc, checked and cleared by free. */
function liveBitsModel(): PairAllocator {
  const u32 = new Uint32Array(BYTES / 4);
  const live = new Uint32Array(BYTES / 512);
  let head = 0;
  for (let b = BYTES - BLOCK; b >= BLOCK; b -= BLOCK) u32[b >>> 2] = head, head = b;
  return {
    malloc: (_size) => {
      const block = head;
      head = u32[block >>> 2];
      live[block >>> 9] |= 1 << ((block >>> 4) & 31);
      return block;
    },
    free: (block) => {
      const word = block >>> 9;
      const bit = 1 << ((block >>> 4) & 31);
      const bits = live[word];
      if ((bits & bit) === 0) throw new Error("double free");
      live[word] = bits ^ bit;
      u32[block >>> 2] = head;
      head = block;
    },
  };
}

/** Descriptor words of the page models. */
const enum Page {
  Free = 0,
  Used = 1,
  FastFree = 2,
  Words = 4,
}

/** Rungs 3 and 4: split lists (a class list refilled from page lists), optionally counted. */
function pageModel(counted: boolean): PairAllocator {
  const u32 = new Uint32Array(BYTES / 4);
  const live = new Uint32Array(BYTES / 512);
  const pages = new Uint32Array(PAGES * Page.Words);
  const tally = new Float64Array(2);
  const capacity = PAGE / BLOCK - 1; // block 0 of page 0 is never handed out
  // Page 0's blocks start on its list; the class list is empty.
  let list = 0;
  for (let b = PAGE - BLOCK; b >= BLOCK; b -= BLOCK) {
    u32[b >>> 2] = pages[Page.Free], pages[Page.Free] = b;
  }
  pages[Page.FastFree] = 1;
  const refill = (): number => {
    const block = pages[Page.Free];
    pages[Page.Free] = 0;
    pages[Page.Used] = capacity; // every block of the page is now live or on the class list
    return block;
  };
  const slowFree = (block: number, d: number): void => {
    // An emptied page stays as it is in this model.
    u32[block >>> 2] = pages[d + Page.Free];
    pages[d + Page.Free] = block;
    pages[d + Page.Used] = 0;
  };
  return {
    malloc: (_size) => {
      let block = list;
      if (block === 0) block = refill();
      list = u32[block >>> 2];
      live[block >>> 9] |= 1 << ((block >>> 4) & 31);
      return block;
    },
    free: (block) => {
      const d = (block >>> 16) * Page.Words;
      const word = block >>> 9;
      const bit = 1 << ((block >>> 4) & 31);
      const bits = live[word];
      const used = pages[d + Page.Used] - 1;
      if ((bits & bit) === 0) throw new Error("double free");
      live[word] = bits ^ bit;
      if (pages[d + Page.FastFree] !== 1 || used === 0) return slowFree(block, d);
      u32[block >>> 2] = pages[d + Page.Free];
      pages[d + Page.Free] = block;
      pages[d + Page.Used] = used;
      if (counted) {
        tally[0]++;
        tally[1] += BLOCK;
      }
    },
  };
}

/** `count` malloc+free pairs of `size` bytes (a template: see specialize). */
function pairsTemplate<H>(a: PairAllocator<H>, size: number, count: number) {
  return () => {
    for (let i = 0; i < count; i++) a.free(a.malloc(size));
  };
}

const GROUP = `malloc+free pair of ${BLOCK} B, part by part (x${PAIRS})`;

/** Registers a rung: its own copy of the loop (a monomorphic call site, see harness.ts), warmed up. */
function rung<H>(name: string, allocator: PairAllocator<H>): void {
  const fn = specialize(pairsTemplate<H>, name)(allocator, BLOCK, PAIRS);
  for (let i = 0; i < WARMUP_PAIRS / PAIRS; i++) fn();
  Deno.bench({ name, group: GROUP, baseline: name === "glibc", fn });
}

const [glibc, heap] = loadAllocators(["glibc", "heap"]);
rung<Handle>("glibc", glibc);
rung("1 free list", freeListModel());
rung("2 + live bits", liveBitsModel());
rung("3 + page (split lists)", pageModel(false));
rung("4 + counters", pageModel(true));
rung<Handle>("5 heap", heap);
