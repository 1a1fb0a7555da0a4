/**
 * What each part of a malloc+free pair costs: a ladder of models, each the
 * one before plus one part of the heap's fast paths (see "block fast paths"
 * in src/alloc/page_layout.ts), timed side by side with glibc and the heap itself.
 *
 *   deno bench --lock=tools/deno.lock --allow-ffi --allow-env --allow-read bench/fast_path.bench.ts
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
 *  4. + the heap's memory: rung 3 in one Uint32Array over memory mapped from
 *     the OS (an external buffer), with the heap's layout: 32-word
 *     descriptors and the live bitmap in the same view as the blocks, the
 *     list heads in an array of their own;
 *  5. + argument checks: malloc tests that the size is a number, a uint32
 *     and at most 1 KiB; free that the address is a number;
 *  6. + class lookup: the list head is chosen by a size-to-class table (u8)
 *     instead of being the 64-byte class's;
 *  7. + addresses: malloc returns base + offset; free subtracts the base and
 *     the data start and checks that the result is in the fast-free range
 *     (64 KiB units, an Int32Array word) and a multiple of 16;
 *  8. + fields: the same code reading its arrays and numbers from an object
 *     held in a variable (V8 then loads them), not from closure constants;
 *  9. heap: Heap.malloc/free, the heap held in a constant, as a program would;
 * 10. heap through a variable: the heap held in a `let`, so that V8 cannot
 *     fold its fields into the code;
 * 11. heap as core.bench.ts calls it (the comparator: a constant heap behind
 *     the Allocator interface).
 * The models of rungs 1 to 8 refill their list once per 64 KiB page (every
 * 1024 pairs here); the heap's allocation list, in a pair loop, holds the
 * blocks of one 4 KiB OS page (64 here), so the heap leaves its fast paths
 * twice every 64 pairs: once in malloc (refill) and once in free (the page
 * empties).
 *
 * A second group times what the fast paths do not do: counters updated on
 * every free (rung 3 + counters), and a live byte per 16-byte granule instead
 * of a bit (malloc then writes it without reading it first).
 */

import { Heap } from "../mod.ts";
import { MAP_NORESERVE, mapMemory, PROT_READ, PROT_WRITE, viewMemory } from "../src/os/libc.ts";
import { createHeap, type Handle, loadAllocators } from "./comparators.ts";
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

/** Rung 3 with a live byte per 16-byte granule (1 = live) instead of a bit. */
function liveByteModel(): PairAllocator {
  const u32 = new Uint32Array(BYTES / 4);
  const live = new Uint8Array(BYTES / 16);
  const pages = new Uint32Array(PAGES * Page.Words);
  const capacity = PAGE / BLOCK - 1;
  let list = 0;
  for (let b = PAGE - BLOCK; b >= BLOCK; b -= BLOCK) {
    u32[b >>> 2] = pages[Page.Free], pages[Page.Free] = b;
  }
  pages[Page.FastFree] = 1;
  const refill = (): number => {
    const block = pages[Page.Free];
    pages[Page.Free] = 0;
    pages[Page.Used] = capacity;
    return block;
  };
  const slowFree = (block: number, d: number): void => {
    u32[block >>> 2] = pages[d + Page.Free];
    pages[d + Page.Free] = block;
    pages[d + Page.Used] = 0;
  };
  return {
    malloc: (_size) => {
      let block = list;
      if (block === 0) block = refill();
      list = u32[block >>> 2];
      live[block >>> 4] = 1;
      return block;
    },
    free: (block) => {
      const d = (block >>> 16) * Page.Words;
      const used = pages[d + Page.Used] - 1;
      if (live[block >>> 4] !== 1) throw new Error("double free");
      live[block >>> 4] = 0;
      if (pages[d + Page.FastFree] !== 1 || used === 0) return slowFree(block, d);
      u32[block >>> 2] = pages[d + Page.Free];
      pages[d + Page.Free] = block;
      pages[d + Page.Used] = used;
    },
  };
}

/** The layout of the arena models (rungs 4 to 8): the heap's, in one view of mapped memory. */
const enum Arena {
  /** Bytes of metadata before the data (the heap's header, tables and bitmaps). */
  DataStart = 0x10000,
  /** u32 index of the first unit's descriptor, 32 words each, as in page_layout.ts. */
  Descriptors = 1024,
  DescWords = 32,
  Free = 0,
  Used = 2,
  FastFree = 11,
  /** u32 index of the live bitmap, and (plus an arena offset >>> 9) the word of its bit. */
  Bitmap = 0x2000,
  BitmapBias = 0x2000 - (0x10000 >>> 9),
  /** The heap's base, below 2^31: rungs 7 and 8 hand out offsets plus this. */
  Base = 0x1000_0000,
  Bytes = 0x10000 + PAGE * PAGES,
  /** The 64-byte class, and the classes the size lookup covers (up to 1 KiB). */
  Class = 4,
  Classes = 88,
  /** Blocks of the first data page (unit 0), all on its free list at the start. */
  Capacity = PAGE / BLOCK,
}

/** Mapped memory laid out like the heap's arena, the first page's blocks on its free list. */
function arenaMemory(): Uint32Array {
  const address = mapMemory(Arena.Bytes, PROT_READ | PROT_WRITE, MAP_NORESERVE);
  if (address === 0) throw new Error("mmap failed");
  const u32 = new Uint32Array(viewMemory(address, Arena.Bytes));
  const d = Arena.Descriptors;
  for (let b = Arena.DataStart + PAGE - BLOCK; b >= Arena.DataStart; b -= BLOCK) {
    u32[b >>> 2] = u32[d + Arena.Free], u32[d + Arena.Free] = b;
  }
  u32[d + Arena.FastFree] = 1;
  return u32;
}

/** The arena models' slow paths: refill from the page's list, and free to an emptied page. */
function arenaSlowPaths(u32: Uint32Array, lists: Uint32Array) {
  const d = Arena.Descriptors;
  return {
    mallocSlow(cls: number): number {
      const block = u32[d + Arena.Free];
      u32[d + Arena.Free] = 0;
      u32[d + Arena.Used] = Arena.Capacity;
      lists[cls] = u32[block >>> 2];
      u32[Arena.BitmapBias + (block >>> 9)] |= 1 << ((block >>> 4) & 31);
      return block;
    },
    freeSlow(offset: number): void {
      const word = Arena.BitmapBias + (offset >>> 9);
      const bit = 1 << ((offset >>> 4) & 31);
      if ((u32[word] & bit) === 0) throw new Error("double free");
      u32[word] ^= bit;
      u32[offset >>> 2] = u32[d + Arena.Free];
      u32[d + Arena.Free] = offset;
      u32[d + Arena.Used] = 0; // the one page of the model empties and stays
    },
  };
}

/** Rung 4: rung 3 over mapped memory in the heap's layout (handles are arena offsets). */
function arenaModel(): PairAllocator {
  const u32 = arenaMemory();
  const lists = new Uint32Array(Arena.Classes);
  const { mallocSlow, freeSlow } = arenaSlowPaths(u32, lists);
  return {
    malloc: (_size) => {
      const block = lists[Arena.Class];
      if (block === 0) return mallocSlow(Arena.Class);
      lists[Arena.Class] = u32[block >>> 2];
      u32[Arena.BitmapBias + (block >>> 9)] |= 1 << ((block >>> 4) & 31);
      return block;
    },
    free: (offset) => {
      const d = Arena.Descriptors + ((offset - Arena.DataStart) >>> 16) * Arena.DescWords;
      const word = Arena.BitmapBias + (offset >>> 9);
      const bit = 1 << ((offset >>> 4) & 31);
      const bits = u32[word];
      const used = u32[d + Arena.Used] - 1;
      if ((bits & bit) === 0 || u32[d + Arena.FastFree] !== 1 || used === 0) {
        return freeSlow(offset);
      }
      u32[word] = bits ^ bit;
      u32[offset >>> 2] = u32[d + Arena.Free];
      u32[d + Arena.Free] = offset;
      u32[d + Arena.Used] = used;
    },
  };
}

/** Rung 5: rung 4 with the heap's argument checks. */
function checkedModel(): PairAllocator {
  const u32 = arenaMemory();
  const lists = new Uint32Array(Arena.Classes);
  const { mallocSlow, freeSlow } = arenaSlowPaths(u32, lists);
  return {
    malloc: (size) => {
      if (typeof size === "number" && (size >>> 0) === size && size <= 1024) {
        const block = lists[Arena.Class];
        if (block !== 0) {
          lists[Arena.Class] = u32[block >>> 2];
          u32[Arena.BitmapBias + (block >>> 9)] |= 1 << ((block >>> 4) & 31);
          return block;
        }
      }
      return mallocSlow(Arena.Class);
    },
    free: (offset) => {
      if (typeof offset === "number") {
        const d = Arena.Descriptors + ((offset - Arena.DataStart) >>> 16) * Arena.DescWords;
        const word = Arena.BitmapBias + (offset >>> 9);
        const bit = 1 << ((offset >>> 4) & 31);
        const bits = u32[word];
        const used = u32[d + Arena.Used] - 1;
        if ((bits & bit) !== 0 && u32[d + Arena.FastFree] === 1 && used !== 0) {
          u32[word] = bits ^ bit;
          u32[offset >>> 2] = u32[d + Arena.Free];
          u32[d + Arena.Free] = offset;
          u32[d + Arena.Used] = used;
          return;
        }
      }
      freeSlow(offset);
    },
  };
}

/** A size-to-class table like the heap's (one entry per 16 bytes up to 1 KiB). */
function sizeClasses(): Uint8Array {
  return new Uint8Array(1024 / 16 + 1).map((_, i) => i);
}

/** Rung 6: rung 5 with the list head chosen by the size-to-class table. */
function lookupModel(): PairAllocator {
  const u32 = arenaMemory();
  const lists = new Uint32Array(Arena.Classes);
  const sizeToClass = sizeClasses();
  const { mallocSlow, freeSlow } = arenaSlowPaths(u32, lists);
  return {
    malloc: (size) => {
      if (typeof size === "number" && (size >>> 0) === size && size <= 1024) {
        const cls = sizeToClass[(size + 15) >>> 4];
        const block = lists[cls];
        if (block !== 0) {
          lists[cls] = u32[block >>> 2];
          u32[Arena.BitmapBias + (block >>> 9)] |= 1 << ((block >>> 4) & 31);
          return block;
        }
      }
      return mallocSlow(Arena.Class);
    },
    free: (offset) => {
      if (typeof offset === "number") {
        const d = Arena.Descriptors + ((offset - Arena.DataStart) >>> 16) * Arena.DescWords;
        const word = Arena.BitmapBias + (offset >>> 9);
        const bit = 1 << ((offset >>> 4) & 31);
        const bits = u32[word];
        const used = u32[d + Arena.Used] - 1;
        if ((bits & bit) !== 0 && u32[d + Arena.FastFree] === 1 && used !== 0) {
          u32[word] = bits ^ bit;
          u32[offset >>> 2] = u32[d + Arena.Free];
          u32[d + Arena.Free] = offset;
          u32[d + Arena.Used] = used;
          return;
        }
      }
      freeSlow(offset);
    },
  };
}

/** Rung 7: rung 6 handing out addresses (base + offset), range-checked on free. */
function addressModel(): PairAllocator {
  const u32 = arenaMemory();
  const lists = new Uint32Array(Arena.Classes);
  const sizeToClass = sizeClasses();
  const fastFreeUnits = new Int32Array([PAGES]);
  const { mallocSlow, freeSlow } = arenaSlowPaths(u32, lists);
  return {
    malloc: (size) => {
      if (typeof size === "number" && (size >>> 0) === size && size <= 1024) {
        const cls = sizeToClass[(size + 15) >>> 4];
        const block = lists[cls];
        if (block !== 0) {
          lists[cls] = u32[block >>> 2];
          u32[Arena.BitmapBias + (block >>> 9)] |= 1 << ((block >>> 4) & 31);
          return Arena.Base + block;
        }
      }
      return Arena.Base + mallocSlow(Arena.Class);
    },
    free: (address) => {
      if (typeof address === "number") {
        const offset = address - Arena.Base;
        const unitOffset = offset - Arena.DataStart;
        if (
          (unitOffset >>> 0) === unitOffset && (unitOffset >>> 16) < fastFreeUnits[0] &&
          (unitOffset & 15) === 0
        ) {
          const d = Arena.Descriptors + (unitOffset >>> 16) * Arena.DescWords;
          const word = Arena.BitmapBias + (offset >>> 9);
          const bit = 1 << ((offset >>> 4) & 31);
          const bits = u32[word];
          const used = u32[d + Arena.Used] - 1;
          if ((bits & bit) !== 0 && u32[d + Arena.FastFree] === 1 && used !== 0) {
            u32[word] = bits ^ bit;
            u32[offset >>> 2] = u32[d + Arena.Free];
            u32[d + Arena.Free] = offset;
            u32[d + Arena.Used] = used;
            return;
          }
        }
      }
      freeSlow(address - Arena.Base);
    },
  };
}

/** What rung 8 reads from an object: the Heap's hot fields. */
interface HotFields {
  u32: Uint32Array;
  lists: Uint32Array;
  sizeToClass: Uint8Array;
  fastFreeUnits: Int32Array;
  bitmapBias: number;
  base: number;
  dataStart: number;
}

/** Rung 8: rung 7 reading its arrays and numbers from an object V8 cannot treat as a constant. */
function fieldsModel(): PairAllocator {
  const u32 = arenaMemory();
  const lists = new Uint32Array(Arena.Classes);
  // A `let`: V8 folds the fields of a constant object into the code, not of this one.
  let h: HotFields = {
    u32,
    lists,
    sizeToClass: sizeClasses(),
    fastFreeUnits: new Int32Array([PAGES]),
    bitmapBias: Arena.BitmapBias,
    base: Arena.Base,
    dataStart: Arena.DataStart,
  };
  const { mallocSlow, freeSlow } = arenaSlowPaths(u32, lists);
  return {
    malloc: (size) => {
      if (typeof size === "number" && (size >>> 0) === size && size <= 1024) {
        const lists = h.lists, cls = h.sizeToClass[(size + 15) >>> 4];
        const block = lists[cls];
        if (block !== 0) {
          const u32 = h.u32;
          lists[cls] = u32[block >>> 2];
          u32[h.bitmapBias + (block >>> 9)] |= 1 << ((block >>> 4) & 31);
          return h.base + block;
        }
      }
      return h.base + mallocSlow(Arena.Class);
    },
    free: (address) => {
      if (typeof address === "number") {
        const offset = address - h.base;
        const unitOffset = offset - h.dataStart;
        if (
          (unitOffset >>> 0) === unitOffset && (unitOffset >>> 16) < h.fastFreeUnits[0] &&
          (unitOffset & 15) === 0
        ) {
          const u32 = h.u32;
          const d = Arena.Descriptors + (unitOffset >>> 16) * Arena.DescWords;
          const word = h.bitmapBias + (offset >>> 9);
          const bit = 1 << ((offset >>> 4) & 31);
          const bits = u32[word];
          const used = u32[d + Arena.Used] - 1;
          if ((bits & bit) !== 0 && u32[d + Arena.FastFree] === 1 && used !== 0) {
            u32[word] = bits ^ bit;
            u32[offset >>> 2] = u32[d + Arena.Free];
            u32[d + Arena.Free] = offset;
            u32[d + Arena.Used] = used;
            return;
          }
        }
      }
      freeSlow(address - h.base);
    },
    // Never called: makes `h` assignable, so that V8 cannot assume it constant.
    close() {
      h = { ...h };
    },
  } as PairAllocator;
}

/** `count` malloc+free pairs of `size` bytes (a template: see specialize). */
function pairsTemplate<H>(a: PairAllocator<H>, size: number, count: number) {
  return () => {
    for (let i = 0; i < count; i++) a.free(a.malloc(size));
  };
}

const LADDER = `malloc+free pair of ${BLOCK} B, part by part (x${PAIRS})`;
const ASIDE = `malloc+free pair of ${BLOCK} B, what the fast paths leave out (x${PAIRS})`;

/** Registers a rung: its own copy of the loop (a monomorphic call site, see harness.ts), warmed up. */
function rung<H>(group: string, name: string, allocator: PairAllocator<H>): void {
  const fn = specialize(pairsTemplate<H>, `${group} ${name}`)(allocator, BLOCK, PAIRS);
  for (let i = 0; i < WARMUP_PAIRS / PAIRS; i++) fn();
  Deno.bench({ name, group, baseline: name === "glibc", fn });
}

// One heap for rungs 9 to 11, made first so that it gets the arena below 2^31.
const heap = new Heap();
const [glibc] = loadAllocators(["glibc"]);
let heapVariable = heap;
rung<Handle>(LADDER, "glibc", glibc);
rung(LADDER, "1 free list", freeListModel());
rung(LADDER, "2 + live bits", liveBitsModel());
rung(LADDER, "3 + page (split lists)", pageModel(false));
rung(LADDER, "4 + the heap's memory", arenaModel());
rung(LADDER, "5 + argument checks", checkedModel());
rung(LADDER, "6 + class lookup", lookupModel());
rung(LADDER, "7 + addresses", addressModel());
rung(LADDER, "8 + fields", fieldsModel());
rung(LADDER, "9 heap", {
  malloc: (size: number) => heap.malloc(size),
  free: (address: number) => heap.free(address),
});
rung(LADDER, "10 heap in a variable", {
  malloc: (size: number) => heapVariable.malloc(size),
  free: (address: number) => heapVariable.free(address),
  close: () => heapVariable = new Heap(), // never called: makes the variable assignable
} as PairAllocator);
rung<Handle>(LADDER, "11 heap comparator", createHeap(undefined, heap));

rung<Handle>(ASIDE, "glibc", glibc);
rung(ASIDE, "3 page", pageModel(false));
rung(ASIDE, "3 + counters", pageModel(true));
rung(ASIDE, "3 with a live byte per granule", liveByteModel());
