/**
 * Secure mode, tested like hardened_malloc's and Scudo's death tests: the
 * attacks are carried out for real (a freed block's free-list link and a
 * page descriptor are overwritten from native code) and must be reported
 * with exactly HeapError code "corrupt", after which the heap keeps working.
 * Randomized page order and guard pages are checked through their effects:
 * allocation order, and whether the kernel can read the bytes around blocks.
 *
 * Nothing here depends on timing. The random orders come from per-heap
 * random keys, so the tests only assert what holds for every key (or fails
 * with a probability far below 1e-30).
 */

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, HeapError } from "../mod.ts";
import { DESCRIPTORS_BYTE, HeaderU32, MAGIC } from "../src/arena/arena.ts";
import { Desc } from "../src/alloc/page_layout.ts";
import { KiB, MiB, Rng } from "./helpers.ts";
import { mapped, poke, readable } from "./native_memory.ts";

// ---- native access ----------------------------------------------------------

/** A u32 view of raw native memory. */
function rawU32(address: number, words: number): Uint32Array {
  const p = Deno.UnsafePointer.create(BigInt(address))!;
  return new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(p, words * 4));
}

/** The byte at `address` is mapped but inaccessible: a guard page. */
function assertGuard(address: number, what: string): void {
  assert.ok(mapped(address), `${what}: the guard page is mapped`);
  assert.ok(!readable(address), `${what}: the guard page is inaccessible`);
}

// ---- helpers ----------------------------------------------------------------

/** Runs `fn`, which must throw HeapError "corrupt" (at `address`, when given). */
function expectCorrupt(fn: () => unknown, address?: number): HeapError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, "expected HeapError corrupt, nothing was thrown");
  assert.ok(caught instanceof HeapError, `expected HeapError corrupt, got ${String(caught)}`);
  assert.equal(caught.code, "corrupt", caught.message);
  if (address !== undefined) {
    assert.equal(caught.address, address, `error address (${caught.message})`);
  }
  return caught;
}

/** Runs `fn`, which must throw HeapError `code` at `address`. */
function expectCode(fn: () => unknown, code: string, address: number): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof HeapError, String(e));
    assert.equal(e.code, code, e.message);
    assert.equal(e.address, address);
    return true;
  });
}

const UNIT = 64 * KiB;
const SMALL_CAPACITY_64 = (UNIT - 4096) / 64; // 960 blocks of 64 B before the guard page

/** Start of the 64 KiB unit that holds `address`. */
function unitStart(address: number): number {
  return address - (address % UNIT);
}

/**
 * The base of the arena whose first page starts at `firstPage`: the header
 * (magic, data start) sits in the read-write metadata below the data, so
 * scanning down page by page from the data reaches it before leaving the arena.
 */
function arenaBaseOf(firstPage: number): number {
  for (let a = firstPage - 4096; a > firstPage - 64 * MiB; a -= 4096) {
    const header = rawU32(a, 8);
    if (header[HeaderU32.Magic] === MAGIC && a + header[HeaderU32.DataStart] === firstPage) {
      return a;
    }
  }
  throw new Error("arena header not found");
}

/** The descriptor words of the page that starts at `page`, in the arena at `base`. */
function descriptorOf(base: number, page: number): Uint32Array {
  const dataStart = rawU32(base, 8)[HeaderU32.DataStart];
  const unit = (page - base - dataStart) / UNIT;
  return rawU32(base + DESCRIPTORS_BYTE + unit * Desc.Words * 4, Desc.Words);
}

/**
 * After a report: check() passes, and `count` new blocks of `size` are all
 * distinct, none is a live block, and writing them leaves every live block
 * (filled by `fillOf`) intact.
 */
function assertHandsOutOnlyFreeBlocks(
  heap: Heap,
  size: number,
  live: Map<number, number>,
  count: number,
): void {
  heap.check();
  const fresh: number[] = [];
  for (let i = 0; i < count; i++) {
    const p = heap.malloc(size);
    assert.notEqual(p, 0);
    assert.ok(!live.has(p), `malloc handed out the live block 0x${p.toString(16)}`);
    assert.ok(!fresh.includes(p), `malloc handed out 0x${p.toString(16)} twice`);
    heap.bytes(p, size).fill(0xee);
    fresh.push(p);
  }
  for (const [p, fill] of live) {
    assert.ok(heap.bytes(p, size).every((b) => b === fill), "a live block was overwritten");
  }
  for (const p of fresh) heap.free(p);
  heap.check();
}

/** `count` blocks of `size`, block i filled with i + 1; returns address -> fill. */
function liveBlocks(heap: Heap, size: number, count: number): Map<number, number> {
  const live = new Map<number, number>();
  for (let i = 0; i < count; i++) {
    const p = heap.malloc(size);
    heap.bytes(p, size).fill(i + 1);
    live.set(p, i + 1);
  }
  return live;
}

const KINDS = [
  { kind: "small", size: 64 },
  { kind: "medium", size: 20 * KiB },
] as const;

// ---- free-list links ------------------------------------------------------------

describe("secure: a corrupted free-list link is reported as corrupt before it is followed, and the list is rebuilt", () => {
  for (const { kind, size } of KINDS) {
    it(`overwriting the link of a freed ${kind} block (${size} B) makes the next malloc of its class throw corrupt`, () => {
      using heap = new Heap({ secure: true });
      const live = liveBlocks(heap, size, 20);
      const victim = [...live.keys()][5];
      live.delete(victim);
      heap.free(victim);
      poke(victim, 4); // the encoded link is the block's first 4 bytes
      expectCorrupt(() => heap.malloc(size), victim);
      assertHandsOutOnlyFreeBlocks(heap, size, live, 40);
      for (const p of live.keys()) heap.free(p);
      heap.check();
    });
  }

  it("a link zeroed by a stray memset is corrupt too (0 does not decode to the end of the list)", () => {
    using heap = new Heap({ secure: true });
    const live = liveBlocks(heap, 48, 10);
    const victim = [...live.keys()][3];
    live.delete(victim);
    heap.free(victim);
    poke(victim, 4, 0);
    expectCorrupt(() => heap.malloc(48), victim);
    assertHandsOutOnlyFreeBlocks(heap, 48, live, 30);
  });

  it("a link overwritten with the raw offset of a live block is rejected instead of handing that block out", () => {
    using heap = new Heap({ secure: true, arenaBytes: 16 * MiB });
    const live = liveBlocks(heap, 64, 10);
    const [target, victim] = [...live.keys()].slice(2, 4);
    live.delete(victim);
    heap.free(victim);
    const base = arenaBaseOf(unitStart(target));
    rawU32(victim, 1)[0] = target - base; // what an unencoded free list would follow
    expectCorrupt(() => heap.malloc(64), victim);
    assertHandsOutOnlyFreeBlocks(heap, 64, live, 30);
  });

  it("a corrupted link deeper in the free list is reported when the allocator reaches that block", () => {
    using heap = new Heap({ secure: true });
    const live = liveBlocks(heap, 64, 10);
    const [a, b] = [...live.keys()].slice(4, 6);
    live.delete(a);
    live.delete(b);
    heap.free(a);
    heap.free(b); // the list is b -> a -> ...
    poke(a, 4);
    const first = heap.malloc(64);
    assert.equal(first, b, "the intact link at the head is followed");
    live.set(b, 0);
    heap.bytes(b, 64).fill(0);
    expectCorrupt(() => heap.malloc(64), a);
    assertHandsOutOnlyFreeBlocks(heap, 64, live, 30);
  });

  it("check() reports a corrupted link as corrupt and rebuilds the list: malloc then hands out only free blocks and check() passes", () => {
    using heap = new Heap({ secure: true });
    const live = liveBlocks(heap, 64, 10);
    const victim = [...live.keys()][7];
    live.delete(victim);
    heap.free(victim);
    poke(victim, 4);
    expectCorrupt(() => heap.check());
    heap.check();
    assertHandsOutOnlyFreeBlocks(heap, 64, live, 30);
  });

  it("after a repair the whole page is still handed out exactly once", () => {
    using heap = new Heap({ secure: true });
    const first = heap.malloc(64);
    heap.free(first);
    poke(first, 4);
    expectCorrupt(() => heap.malloc(64), first);
    const page = new Set<number>();
    for (let i = 0; i < SMALL_CAPACITY_64; i++) page.add(heap.malloc(64));
    assert.equal(page.size, SMALL_CAPACITY_64, "no block was handed out twice");
    for (const p of page) {
      assert.equal(unitStart(p), unitStart(first), "all from the repaired page");
    }
    heap.check();
    for (const p of page) heap.free(p);
    heap.check();
  });
});

// ---- page metadata -------------------------------------------------------------------

describe("secure: page metadata is checksummed; a changed descriptor is reported as corrupt", () => {
  /** A secure heap with two live 64 B blocks on its first page, and that page's descriptor. */
  function fixture() {
    const heap = new Heap({ secure: true, arenaBytes: 16 * MiB });
    const p = heap.malloc(64);
    const q = heap.malloc(64);
    const page = unitStart(p);
    const desc = descriptorOf(arenaBaseOf(page), page);
    assert.equal(desc[Desc.BlockSize], 64, "found the page's descriptor");
    return { heap, p, q, page, desc };
  }

  it("malloc from a page whose capacity word was changed throws corrupt at the page", () => {
    const { heap, p, q, page, desc } = fixture();
    using _heap = heap;
    const saved = desc[Desc.Capacity];
    desc[Desc.Capacity] = saved + 100;
    expectCorrupt(() => heap.malloc(64), page);
    desc[Desc.Capacity] = saved;
    const r = heap.malloc(64);
    for (const x of [p, q, r]) heap.free(x);
    heap.check();
  });

  it("free of a block on a page whose size-class word was changed throws corrupt and frees nothing", () => {
    const { heap, p, q, page, desc } = fixture();
    using _heap = heap;
    const saved = desc[Desc.Class];
    desc[Desc.Class] = saved + 1;
    expectCorrupt(() => heap.free(q), page);
    desc[Desc.Class] = saved;
    // Once the descriptor is restored the heap must be exactly as before the failed free.
    assert.deepEqual(heap.leaks().map((b) => b.address).sort(), [p, q].sort());
    assert.equal(heap.stats().freeCount, 0, "the failed free was not counted");
    assert.equal(heap.stats().liveBlocks, 2, "the failed free changed nothing");
    heap.check();
    heap.free(q);
    heap.free(p);
    heap.check();
  });

  it("check() reports a page whose metadata fails its checksum", () => {
    const { heap, page, desc } = fixture();
    using _heap = heap;
    const saved = desc[Desc.Capacity];
    desc[Desc.Capacity] = saved - 1;
    expectCorrupt(() => heap.check(), page);
    desc[Desc.Capacity] = saved;
    heap.check();
  });
});

// ---- randomized fresh pages ----------------------------------------------------------

describe("secure: fresh pages hand out their blocks in a random order, different for every heap", () => {
  /** Offsets within their 64 KiB unit of the first `n` blocks of `size` from a fresh heap. */
  function firstOffsets(heap: Heap, size: number, n: number): number[] {
    return Array.from({ length: n }, () => heap.malloc(size) % UNIT);
  }

  const increasing = (xs: number[]) => xs.every((x, i) => i === 0 || x > xs[i - 1]);
  const decreasing = (xs: number[]) => xs.every((x, i) => i === 0 || x < xs[i - 1]);

  it("50 blocks of 64 B from a fresh secure heap are not in address order", () => {
    using heap = new Heap({ secure: true });
    const offsets = firstOffsets(heap, 64, 50);
    assert.ok(!increasing(offsets), `increasing: ${offsets}`);
    assert.ok(!decreasing(offsets), `decreasing: ${offsets}`);
    assert.equal(new Set(offsets).size, 50, "all distinct");
    for (const o of offsets) assert.equal(o % 64, 0, "on block boundaries");
  });

  it("two secure heaps hand out the blocks of their first page in different orders", () => {
    using a = new Heap({ secure: true });
    using b = new Heap({ secure: true });
    assert.notDeepEqual(firstOffsets(a, 64, 50), firstOffsets(b, 64, 50));
  });

  it("medium pages are shuffled too: 14 blocks of 72 KiB are not in address order", () => {
    using heap = new Heap({ secure: true });
    const addresses = Array.from({ length: 14 }, () => heap.malloc(72 * KiB));
    assert.ok(!increasing(addresses) && !decreasing(addresses), `${addresses}`);
  });

  it("every block of a fresh small page is handed out exactly once, none in the guard page", () => {
    using heap = new Heap({ secure: true });
    const blocks = Array.from({ length: SMALL_CAPACITY_64 }, () => heap.malloc(64));
    const page = unitStart(blocks[0]);
    const offsets = new Set(blocks.map((p) => p - page));
    assert.equal(offsets.size, SMALL_CAPACITY_64);
    for (const o of offsets) assert.ok(o >= 0 && o < UNIT - 4096 && o % 64 === 0, `offset ${o}`);
    const next = heap.malloc(64);
    assert.notEqual(unitStart(next), page, "the page was full");
    heap.check();
  });
});

// ---- guard pages ------------------------------------------------------------------------

describe("secure: guard pages follow every page and surround every large block", () => {
  it("the last OS page of a small page is inaccessible and the block before it is usable", () => {
    using heap = new Heap({ secure: true });
    const blocks = Array.from({ length: SMALL_CAPACITY_64 }, () => heap.malloc(64));
    const page = unitStart(blocks[0]);
    const last = page + UNIT - 4096 - 64;
    assert.ok(blocks.includes(last), "the last block ends where the guard page starts");
    poke(last, 64, 0x11);
    assert.ok(readable(last + 63));
    assertGuard(page + UNIT - 4096, "small page");
    heap.check();
  });

  it("the last OS page of a medium page is inaccessible", () => {
    using heap = new Heap({ secure: true });
    const size = 72 * KiB; // blocks above 64 KiB live in medium pages
    const capacity = Math.floor((MiB - 4096) / size);
    const blocks = Array.from({ length: capacity }, () => heap.malloc(size));
    const start = Math.min(...blocks);
    assert.equal(start % UNIT, 0, "the page's first block is at its start");
    for (const p of blocks) assert.ok(p + size <= start + MiB - 4096, "no block in the guard page");
    assert.ok(readable(start + capacity * size - 1));
    assertGuard(start + MiB - 4096, "medium page");
    heap.check();
  });

  it("guard pages stay at the end of every page when released pages change kind", () => {
    // A 16 MiB arena holds 15 medium pages and 12 spare units: once it is
    // carved to the top, small pages can only come from splitting released
    // medium pages, and medium pages from merging released small ones.
    using heap = new Heap({ secure: true, arenaBytes: 16 * MiB, retainBytes: 0 });
    const medium: number[] = [];
    for (let p = heap.malloc(72 * KiB); p !== 0; p = heap.malloc(72 * KiB)) medium.push(p);
    assert.ok(medium.length >= 15 * 14, `${medium.length} medium blocks`);
    for (const p of medium) heap.free(p);
    heap.trim();
    heap.check();

    const small: number[] = [];
    for (let i = 0; i < 40 * SMALL_CAPACITY_64; i++) {
      const p = heap.malloc(64);
      assert.notEqual(p, 0);
      small.push(p);
    }
    const pages = new Set(small.map(unitStart));
    assert.equal(pages.size, 40);
    for (const page of pages) {
      assert.ok(readable(page) && readable(page + UNIT - 4097), "the page is accessible");
      assertGuard(page + UNIT - 4096, `small page at 0x${page.toString(16)}`);
    }
    heap.check();
    for (const p of small) heap.free(p);
    heap.trim();

    const again: number[] = [];
    for (let p = heap.malloc(20 * KiB); p !== 0; p = heap.malloc(20 * KiB)) again.push(p);
    assert.ok(again.length > 0);
    for (const p of again) {
      for (let a = p; a < p + 20 * KiB; a += 4096) {
        assert.ok(readable(a), `a stale guard page inside the medium block at 0x${p.toString(16)}`);
      }
      assert.ok(readable(p + 20 * KiB - 1));
      poke(p, 20 * KiB, 0x33);
    }
    heap.check();
    for (const p of again) heap.free(p);
    heap.check();
  });

  it("every large block costs two mprotect calls, one guard page on each side", () => {
    using heap = new Heap({ secure: true });
    const before = heap.stats().mprotectCalls;
    const sizes = [128 * KiB + 1, 300 * KiB, MiB, 3 * MiB + 5];
    const blocks = sizes.map((size) => heap.malloc(size));
    assert.equal(heap.stats().mprotectCalls, before + 2 * sizes.length);
    blocks.forEach((p, i) => {
      const end = p + Math.ceil(sizes[i] / 4096) * 4096;
      assert.ok(readable(p) && readable(end - 1), "the block itself is accessible");
      assertGuard(p - 4096, `before the ${sizes[i]} B block`);
      assertGuard(end, `after the ${sizes[i]} B block`);
    });
    const munmaps = heap.stats().munmapCalls;
    for (const p of blocks) heap.free(p);
    assert.equal(
      heap.stats().munmapCalls,
      munmaps + sizes.length,
      "one munmap takes the guards too",
    );
    heap.check();
  });

  it("realloc of a secure large block keeps its contents and its guard pages, growing and shrinking", () => {
    using heap = new Heap({ secure: true });
    const rng = new Rng(0x5ec0_0001);
    const size = 300 * KiB;
    let p = heap.malloc(size);
    const pattern = Uint8Array.from({ length: size }, () => rng.int(0, 255));
    heap.bytes(p, size).set(pattern);
    const old = p;
    p = heap.realloc(p, 2 * MiB); // grows: guard pages forbid growing in place
    assert.notEqual(p, 0);
    assert.deepEqual(heap.bytes(p, size), pattern, "contents kept when growing");
    assertGuard(p - 4096, "before the grown block");
    assertGuard(p + 2 * MiB, "after the grown block");
    if (p !== old) expectCode(() => heap.free(old), "double-free", old);
    p = heap.realloc(p, 200 * KiB);
    assert.deepEqual(
      heap.bytes(p, 200 * KiB),
      pattern.subarray(0, 200 * KiB),
      "kept when shrinking",
    );
    assertGuard(p + 200 * KiB, "the guard moved down with the shrunk end");
    p = heap.realloc(p, 1000); // still a mapping of its own
    assert.deepEqual(heap.bytes(p, 1000), pattern.subarray(0, 1000));
    heap.check();
    heap.free(p);
    heap.check();
  });
});

// ---- misuse --------------------------------------------------------------------------

describe("secure: double and invalid frees are still reported, and leave the free lists sound", () => {
  for (const { kind, size } of [...KINDS, { kind: "large", size: 300 * KiB }]) {
    it(`freeing a ${kind} block twice is a double free`, () => {
      using heap = new Heap({ secure: true });
      const keep = heap.malloc(size);
      const p = heap.malloc(size);
      heap.free(p);
      expectCode(() => heap.free(p), "double-free", p);
      heap.check();
      const a = heap.malloc(size);
      const b = heap.malloc(size);
      assert.notEqual(a, b, "the block is on the free list once");
      for (const x of [a, b, keep]) heap.free(x);
      heap.check();
    });
  }

  it("an interior pointer, a misaligned pointer and a made-up address are invalid frees", () => {
    using heap = new Heap({ secure: true });
    const p = heap.malloc(64);
    for (const bad of [p + 16, p + 1, p + 7, 123456]) {
      expectCode(() => heap.free(bad), "invalid-free", bad);
    }
    heap.check();
    heap.free(p);
    heap.check();
  });
});

// ---- soak ------------------------------------------------------------------------------

/**
 * A seeded workload checked against a shadow model; in debug mode it also
 * checks junk fill, exact usable sizes and leaks().
 */
function soak(heap: Heap, ops: number, seed: number, debug: boolean): void {
  const SLOTS = 800;
  const rng = new Rng(seed);
  const model = new Map<number, { size: number; fill: number }>();
  const slots = new Array<number>(SLOTS).fill(0);
  const drawSize = () => {
    const r = rng.next();
    if (r < 0.9) return rng.int(1, 512);
    if (r < 0.995) return rng.int(513, 64 * KiB);
    return rng.int(128 * KiB + 1, 640 * KiB);
  };
  const verify = (p: number, what: string) => {
    const { size, fill } = model.get(p)!;
    const bytes = heap.bytes(p, size);
    for (let i = 0; i < size; i++) {
      if (bytes[i] !== fill) {
        assert.fail(`${what}: byte ${i} of ${size} is ${bytes[i]}, not ${fill}`);
      }
    }
  };
  const adopt = (p: number, size: number, zero: boolean, keep: number, keptFill: number) => {
    assert.notEqual(p, 0);
    assert.ok(!model.has(p), `0x${p.toString(16)} handed out while live`);
    const usable = heap.usableSize(p);
    if (debug) assert.equal(usable, size);
    else assert.ok(usable >= size);
    const bytes = heap.bytes(p, size);
    for (let i = 0; i < size; i++) {
      const want = i < keep ? keptFill : zero ? 0 : debug ? 0xaa : bytes[i];
      if (bytes[i] !== want) assert.fail(`byte ${i} of a new ${size} B block is ${bytes[i]}`);
    }
    const fill = rng.int(1, 255);
    bytes.fill(fill);
    model.set(p, { size, fill });
    return p;
  };
  for (let op = 1; op <= ops; op++) {
    const s = rng.int(0, SLOTS - 1);
    const p = slots[s];
    if (p === 0) {
      const size = drawSize();
      slots[s] = rng.chance(0.2)
        ? adopt(heap.calloc(1, size), size, true, 0, 0)
        : adopt(heap.malloc(size), size, false, 0, 0);
    } else {
      verify(p, `op ${op}`);
      const old = model.get(p)!;
      model.delete(p);
      if (rng.chance(0.7)) {
        heap.free(p);
        slots[s] = 0;
      } else {
        const size = drawSize();
        const keep = Math.min(size, old.size);
        slots[s] = adopt(heap.realloc(p, size), size, false, keep, old.fill);
      }
    }
    if (op % 5000 === 0) heap.check();
  }
  if (debug) {
    const byAddress = (a: { address: number }, b: { address: number }) => a.address - b.address;
    assert.deepEqual(
      heap.leaks().map(({ address, size }) => ({ address, size })).sort(byAddress),
      [...model].map(([address, { size }]) => ({ address, size })).sort(byAddress),
    );
  } else {
    assert.deepEqual(
      heap.leaks().map((b) => b.address).sort((a, b) => a - b),
      [...model.keys()].sort((a, b) => a - b),
    );
  }
  for (const p of model.keys()) {
    verify(p, "final");
    heap.free(p);
  }
  heap.check();
  assert.deepEqual(heap.leaks(), []);
}

describe("secure: a seeded soak keeps every block intact, alone and together with debug mode", () => {
  it("20k seeded operations on a secure heap", () => {
    using heap = new Heap({ secure: true });
    soak(heap, 20_000, 0x5ec0_0002, false);
  });

  it("5k seeded operations on a secure debug heap", () => {
    using heap = new Heap({ secure: true, debug: true });
    soak(heap, 5_000, 0x5ec0_0003, true);
  });

  it("a secure debug heap still reports overflows and keeps working", () => {
    using heap = new Heap({ secure: true, debug: true });
    for (const size of [24, 20 * KiB, 300 * KiB]) {
      const p = heap.malloc(size);
      poke(p + size, 1);
      expectCode(() => heap.free(p), "overflow", p);
      const q = heap.malloc(size);
      assert.notEqual(q, p);
      heap.free(q);
    }
    heap.check();
  });

  it("a large block of a secure debug heap has a guard page on each side of its mapping", () => {
    using heap = new Heap({ secure: true, debug: true });
    const before = heap.stats().mprotectCalls;
    const size = 300 * KiB;
    const p = heap.malloc(size);
    assert.equal(heap.stats().mprotectCalls, before + 3, "two secure guards and debug's own");
    const core = p - 32;
    assertGuard(core - 4096, "before the mapping");
    assertGuard(Math.ceil((p + size + 16) / 4096) * 4096, "after the trailing canary");
    heap.free(p);
    heap.check();
  });
});
