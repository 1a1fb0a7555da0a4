import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, type HeapOptions } from "../mod.ts";
import {
  assertZero,
  checked,
  endsMismatch,
  KiB,
  MiB,
  patternByte,
  Rng,
  writeEnds,
} from "./helpers.ts";
import { residentBytes } from "./native_memory.ts";
import { canPopulate } from "../src/os/libc.ts";

const PAGE = 64 * KiB;

/**
 * Fills `pages` small pages with `size`-byte blocks, then frees all but the
 * first block of each page: the pages stay in use, almost all of their
 * memory idle. Returns the kept blocks (pattern written with seed = index).
 */
function fragment(heap: Heap, size: number, pages: number): number[] {
  const perPage = Math.floor(PAGE / size);
  const all: number[] = [];
  for (let i = 0; i < pages * perPage; i++) all.push(heap.malloc(size));
  const kept: number[] = [];
  for (const p of all) {
    if (kept.length === 0 || Math.floor(p / PAGE) !== Math.floor(kept[kept.length - 1] / PAGE)) {
      kept.push(p);
    } else {
      heap.free(p);
    }
  }
  kept.forEach((p, i) => writeEnds(heap, p, size, i));
  return kept;
}

function assertKeptIntact(heap: Heap, kept: number[], size: number): void {
  kept.forEach((p, i) => {
    const bad = endsMismatch(heap, p, size, i);
    assert.equal(bad, null, `kept block 0x${p.toString(16)}: ${bad}`);
  });
}

describe("idle memory goes back to the OS before the heap grows", () => {
  it("free OS pages of pages in use are purged rather than the heap growing past its peak", () => {
    using heap = new Heap({ idleRatio: 0.125, idleFloorBytes: 256 * KiB });
    const kept = fragment(heap, 256, 64); // 4 MiB committed, 64 blocks live
    const before = checked(heap);
    assert.ok(before.committedBytes >= 4 * MiB);
    // New growth in another class: the idle 4 MiB must go first.
    const big: number[] = [];
    for (let i = 0; i < 512; i++) big.push(heap.malloc(4000)); // 2 MiB of live blocks
    const after = checked(heap);
    assert.ok(after.madviseCalls > before.madviseCalls, "no madvise call was made");
    // Each kept block pins one OS page of its page; metadata is counted too.
    const pinned = kept.length * 4096;
    // The peak may creep by one step between looks (a quarter of the budget,
    // at least 64 KiB), and new units' descriptors and bitmaps add metadata.
    assert.ok(
      after.peakCommittedBytes <= before.committedBytes + 64 * KiB + 64 * KiB,
      `peak grew from ${before.committedBytes} to ${after.peakCommittedBytes}`,
    );
    assertKeptIntact(heap, kept, 256);
    // What is still idle goes at trim(), down to the pinned OS pages.
    heap.trim();
    const trimmed = checked(heap);
    assert.ok(
      trimmed.committedBytes <= trimmed.allocatedBytes + pinned + 256 * KiB,
      `committed ${trimmed.committedBytes} for ${trimmed.allocatedBytes} allocated`,
    );
    assertKeptIntact(heap, kept, 256);
    for (const p of big) heap.free(p);
    checked(heap);
  });

  it("blocks on purged OS pages are handed out again, without overlap, and calloc zeroes them", () => {
    using heap = new Heap({ idleRatio: 0, idleFloorBytes: 0 });
    const size = 256;
    const kept = fragment(heap, size, 16);
    assert.ok(heap.trim() > 0, "trim() gave nothing back");
    const trimmed = checked(heap);
    // Take every block back: first through calloc (some from purged OS pages), then malloc.
    const taken: number[] = [];
    for (let i = 0; i < 16 * (PAGE / size) - kept.length; i++) {
      const p = i % 2 === 0 ? heap.calloc(1, size) : heap.malloc(size);
      assert.notEqual(p, 0);
      if (i % 2 === 0) assertZero(heap, p, size, `calloc #${i}`);
      writeEnds(heap, p, size, 1000 + i);
      taken.push(p);
    }
    const all = [...kept, ...taken].sort((a, b) => a - b);
    for (let i = 1; i < all.length; i++) assert.ok(all[i - 1] + size <= all[i], "blocks overlap");
    assert.equal(new Set(all).size, all.length);
    const full = checked(heap);
    assert.ok(full.committedBytes > trimmed.committedBytes, "reused OS pages were not recounted");
    assertKeptIntact(heap, kept, size);
    taken.forEach((p, i) => assert.equal(endsMismatch(heap, p, size, 1000 + i), null));
    for (const p of [...kept, ...taken]) heap.free(p);
    assert.equal(checked(heap).allocatedBytes, 0);
  });

  it("trim() purges the free OS pages of pages in use, and those pages leave RAM", () => {
    using heap = new Heap();
    const size = 512;
    const kept = fragment(heap, size, 128); // 8 MiB touched, 128 blocks live
    const before = checked(heap);
    const low = Math.min(...kept);
    const span = Math.max(...kept) + size - low;
    const residentBefore = residentBytes(low, span);
    const released = heap.trim();
    const after = checked(heap);
    const residentAfter = residentBytes(low, span);
    assert.ok(released >= 6 * MiB, `trim() released ${released} bytes`);
    assert.equal(before.committedBytes - after.committedBytes, released);
    assert.equal(before.purgedBytes, 0);
    assert.ok(after.purgedBytes >= 6 * MiB, `purgedBytes ${after.purgedBytes}`);
    assert.ok(
      residentBefore - residentAfter >= 6 * MiB,
      `resident bytes fell by ${residentBefore - residentAfter} only`,
    );
    assertKeptIntact(heap, kept, size);
    // Emptied, the pages are released whole: nothing counts as purged any more.
    for (const p of kept) heap.free(p);
    heap.trim();
    assert.equal(checked(heap).purgedBytes, 0);
  });

  it("free blocks of medium pages are purged too", () => {
    using heap = new Heap({ idleRatio: 0, idleFloorBytes: 0 });
    // 104 KiB class blocks (alignment 64: a private heap's malloc would use
    // fit pages), nine to a 1 MiB page.
    const size = 100 * KiB;
    const blocks: number[] = [];
    for (let i = 0; i < 12; i++) blocks.push(heap.alignedAlloc(64, size));
    writeEnds(heap, blocks[0], size, 1);
    writeEnds(heap, blocks[11], size, 2);
    for (let i = 1; i < 11; i++) heap.free(blocks[i]);
    const before = checked(heap);
    const released = heap.trim();
    assert.ok(released >= 10 * 96 * KiB, `trim() released ${released} bytes`);
    assert.equal(checked(heap).committedBytes, before.committedBytes - released);
    assert.equal(endsMismatch(heap, blocks[0], size, 1), null);
    assert.equal(endsMismatch(heap, blocks[11], size, 2), null);
    const again = heap.calloc(1, size);
    assertZero(heap, again, size, "calloc after purge");
    checked(heap);
  });

  it("a block handed out again over purged OS pages is faulted in, and populating stays on", () => {
    // 9 KiB class blocks start off OS-page boundaries (block 1 at 0x2400) and
    // span three OS pages, so taking one back recommits two purged pages at once.
    using heap = new Heap({ idleRatio: 0, idleFloorBytes: 0 });
    const populating = canPopulate();
    const blocks: number[] = [];
    for (let i = 0; i < 200; i++) blocks.push(heap.alignedAlloc(64, 9 * KiB));
    for (let i = 1; i < 199; i++) heap.free(blocks[i]);
    heap.trim();
    const purged = checked(heap);
    assert.ok(purged.purgedBytes > 0, "nothing was purged");
    // Unlisted blocks come after the page's bump area: allocate until none is left.
    const again: number[] = [];
    while (heap.stats().purgedBytes > 0 && again.length < 400) {
      again.push(heap.alignedAlloc(64, 9 * KiB));
    }
    again.forEach((p, i) => writeEnds(heap, p, 9 * KiB, i));
    assert.equal(checked(heap).purgedBytes, 0, "every purged OS page is in use again");
    // A misaligned madvise(POPULATE_WRITE) fails with EINVAL, which used to
    // read as "the kernel lacks it" and turned populating off for the process.
    assert.equal(canPopulate(), populating);
    again.forEach((p, i) => assert.equal(endsMismatch(heap, p, 9 * KiB, i), null));
  });

  it("retained empty pages beyond the idle floor go back, oldest first, before the heap grows past its peak", () => {
    using heap = new Heap({ idleFloorBytes: 256 * KiB });
    const blocks = Array.from({ length: 64 }, () => heap.alignedAlloc(64 * KiB, 64 * KiB));
    for (const p of blocks) heap.free(p);
    const before = checked(heap);
    assert.equal(before.retainedBytes, 4 * MiB, "64 emptied pages retained");
    // A large block needs new memory: retained pages make room for it instead.
    const large = heap.malloc(MiB);
    const after = checked(heap);
    assert.ok(after.retainedBytes <= before.retainedBytes - MiB, `${after.retainedBytes} retained`);
    assert.ok(after.retainedBytes >= 256 * KiB, "the floor stays");
    assert.ok(
      after.peakCommittedBytes <= before.peakCommittedBytes + 64 * KiB,
      `peak ${before.peakCommittedBytes} -> ${after.peakCommittedBytes}`,
    );
    // Growth below the peak leaves them alone.
    heap.free(large);
    const retained = checked(heap).retainedBytes;
    heap.malloc(512 * KiB);
    assert.equal(checked(heap).retainedBytes, retained);
  });

  it("idleRatio Infinity keeps retained pages when the heap grows past its peak", () => {
    using heap = new Heap({ idleRatio: Infinity });
    const blocks = Array.from({ length: 64 }, () => heap.alignedAlloc(64 * KiB, 64 * KiB));
    for (const p of blocks) heap.free(p);
    const before = checked(heap);
    heap.malloc(MiB);
    const after = checked(heap);
    assert.equal(after.retainedBytes, before.retainedBytes);
    assert.ok(after.peakCommittedBytes >= before.peakCommittedBytes + MiB);
  });

  it("idleRatio Infinity leaves pages in use alone when the heap grows", () => {
    using heap = new Heap({ idleRatio: Infinity });
    fragment(heap, 256, 32);
    const before = checked(heap);
    for (let i = 0; i < 300; i++) heap.malloc(4000);
    const after = checked(heap);
    assert.equal(after.purgedBytes, 0);
    assert.equal(before.purgedBytes, 0);
    assert.ok(after.committedBytes >= before.committedBytes + MiB);
  });
});

/**
 * Idle-memory purging under churn: pages whose free OS pages were purged
 * while in use, refilled from their unlisted blocks, emptied, retained,
 * released, split and merged. Every live block carries a pattern on every
 * 512-byte step (so a purged interior OS page of a medium block shows), and
 * check() runs often.
 */

const STEP = 512;

/** Writes the pattern at the ends of the block's first `size` bytes and at every STEP. */
function fill(heap: Heap, p: number, size: number, seed: number): void {
  if (size === 0) return;
  const b = heap.bytes(p, size);
  for (let i = 0; i < size; i += STEP) b[i] = patternByte(seed, i);
  for (let i = Math.max(0, size - 8); i < size; i++) b[i] = patternByte(seed, i);
}

/** The first offset below `limit` where the pattern written by fill() is broken, or -1. */
function broken(heap: Heap, p: number, size: number, seed: number, limit = size): number {
  const n = Math.min(size, limit);
  if (n === 0) return -1;
  const b = heap.bytes(p, n);
  for (let i = 0; i < n; i += STEP) if (b[i] !== patternByte(seed, i)) return i;
  for (let i = Math.max(0, size - 8); i < n; i++) if (b[i] !== patternByte(seed, i)) return i;
  return -1;
}

interface Live {
  size: number;
  seed: number;
  usable: number;
}

/**
 * Mixed: small sizes mostly, some up to 8 KiB, some medium; never large.
 * Or only small-page sizes, or only medium ones.
 */
type Kind = "mixed" | "small" | "medium";

function drawSize(rng: Rng, kind: Kind): number {
  if (kind === "small") return rng.int(0, 8 * KiB);
  // Few medium classes: each holds a 1 MiB page of its own.
  if (kind === "medium") return rng.pick([9 * KiB, 40 * KiB, 100 * KiB]) - rng.int(0, 512);
  const r = rng.next();
  if (r < 0.55) return rng.int(0, 1024);
  if (r < 0.8) return rng.int(1025, 8 * KiB);
  return rng.int(8 * KiB + 1, 128 * KiB);
}

function churn(
  heap: Heap,
  seed: number,
  operations: number,
  trimEvery: number,
  debug: boolean,
  peaks: { kind: Kind; live: number }[],
  mayRunOut: boolean,
): void {
  const rng = new Rng(seed);
  const live = new Map<number, Live>();
  const order: number[] = [];
  let nextSeed = 1;
  let allocated = 0;
  const hex = (p: number) => `0x${p.toString(16)}`;
  // A small arena may run out: allocations then return 0 and change nothing.
  let outOfMemory = 0;
  const failed = (p: number, what: string): boolean => {
    if (p !== 0) return false;
    assert.ok(mayRunOut, `${what} returned 0`);
    outOfMemory++;
    return true;
  };
  const track = (p: number, block: Live) => {
    live.set(p, block);
    order.push(p);
    allocated += block.usable;
  };
  const adopt = (p: number, size: number, what: string) => {
    if (failed(p, what)) return;
    assert.ok(!live.has(p), `${what}: ${hex(p)} handed out while live`);
    const usable = heap.usableSize(p);
    assert.ok(usable >= size, `${what}: usableSize ${usable} < ${size}`);
    const block = { size, seed: nextSeed++ & 0xff, usable };
    track(p, block);
    fill(heap, p, size, block.seed);
  };
  const take = (i: number): [number, Live] => {
    const p = order[i];
    order[i] = order[order.length - 1];
    order.pop();
    const block = live.get(p)!;
    live.delete(p);
    allocated -= block.usable;
    const at = broken(heap, p, block.size, block.seed);
    assert.equal(at, -1, `${hex(p)} (${block.size} B): byte ${at} changed while live`);
    return [p, block];
  };
  const sweep = (op: number) => {
    heap.check();
    const s = heap.stats();
    if (!debug) {
      assert.equal(s.allocatedBytes, allocated, `op ${op}: allocatedBytes`);
      assert.equal(s.liveBlocks, live.size, `op ${op}: liveBlocks`);
    }
    const sorted = [...order].sort((a, b) => a - b);
    for (let i = 0; i < sorted.length; i++) {
      const p = sorted[i];
      const block = live.get(p)!;
      const at = broken(heap, p, block.size, block.seed);
      assert.equal(at, -1, `op ${op}: ${hex(p)} (${block.size} B) byte ${at} changed`);
      if (i + 1 < sorted.length) {
        assert.ok(p + block.usable <= sorted[i + 1], `op ${op}: ${hex(p)} overlaps the next`);
      }
    }
  };

  // The live count swings between a peak and a few dozen blocks, so that
  // pages fill, are thinned out (and purged), refill and empty again. Each
  // peak in turn; its `kind` of sizes is drawn while the heap climbs to it
  // and empties again.
  let phase = 0;
  let { kind, live: target } = peaks[0];
  for (let op = 1; op <= operations; op++) {
    if (op % 2_000 === 0) {
      phase++;
      target = phase % 2 === 1 ? 40 : peaks[(phase / 2) % peaks.length].live;
      if (phase % 2 === 0) kind = peaks[(phase / 2) % peaks.length].kind;
    }
    const grow = order.length < target ? 0.75 : 0.25;
    const r = rng.next();
    if (order.length > 0 && r >= grow) {
      const [p] = take(rng.int(0, order.length - 1));
      heap.free(p);
    } else if (order.length > 0 && r < 0.12) {
      // realloc: in place within the usable size, or moved.
      const [p, old] = take(rng.int(0, order.length - 1));
      const size = rng.chance(0.5) ? rng.int(1, old.usable) : drawSize(rng, kind) + 1;
      const q = heap.realloc(p, size);
      if (failed(q, `op ${op} realloc(${old.size} -> ${size})`)) {
        const at = broken(heap, p, old.size, old.seed);
        assert.equal(at, -1, `op ${op}: failed realloc changed byte ${at}`);
        track(p, old);
        continue;
      }
      if (size <= old.usable && !debug) {
        assert.equal(q, p, `op ${op}: realloc within usableSize moved`);
      }
      const at = broken(heap, q, old.size, old.seed, size);
      assert.equal(at, -1, `op ${op} realloc(${old.size} -> ${size}): byte ${at} lost`);
      adopt(q, size, `op ${op} realloc`);
    } else if (r < 0.3) {
      const size = drawSize(rng, kind);
      const count = rng.int(1, 3);
      const each = Math.ceil(size / count);
      const p = heap.calloc(count, each);
      if (failed(p, `op ${op} calloc(${count}, ${each})`)) continue;
      assertZero(heap, p, count * each, `op ${op} calloc(${count}, ${each})`);
      adopt(p, count * each, `op ${op} calloc`);
    } else if (r < 0.36) {
      const alignment = 2 ** rng.int(5, 12);
      const size = drawSize(rng, kind);
      const p = heap.alignedAlloc(alignment, size);
      if (failed(p, `op ${op} alignedAlloc(${alignment}, ${size})`)) continue;
      assert.equal(p % alignment, 0, `op ${op} alignedAlloc(${alignment}, ${size})`);
      adopt(p, size, `op ${op} alignedAlloc(${alignment}, ${size})`);
    } else {
      const size = drawSize(rng, kind);
      adopt(heap.malloc(size), size, `op ${op} malloc(${size})`);
    }
    if (trimEvery > 0 && op % trimEvery === 0) heap.trim();
    if (op % 1_000 === 0) sweep(op);
  }
  sweep(operations);
  // A small arena runs out now and then, not all the time.
  assert.ok(outOfMemory < operations / 20, `${outOfMemory} allocations ran out of memory`);
  while (order.length > 0) heap.free(take(order.length - 1)[0]);
  heap.trim();
  assert.equal(heap.stats().allocatedBytes, 0);
  heap.check();
  heap.trim();
  heap.check();
}

describe("idle purging under churn keeps every block intact", () => {
  const runs: {
    seed: number;
    options: HeapOptions;
    trimEvery: number;
    peaks: { kind: Kind; live: number }[];
    label: string;
  }[] = [
    {
      seed: 0x1d1e_0001,
      options: { idleRatio: 0, idleFloorBytes: 0 },
      trimEvery: 300,
      peaks: [{ kind: "mixed", live: 900 }],
      label: "budget 0, trim() every 300 operations",
    },
    {
      seed: 0x1d1e_0002,
      options: { idleRatio: 0, idleFloorBytes: 0, retainBytes: 0, arenaBytes: 24 * MiB },
      trimEvery: 0,
      peaks: [{ kind: "medium", live: 250 }, { kind: "small", live: 3000 }],
      label: "budget 0, 24 MiB arena, retainBytes 0: pages split and merge",
    },
    {
      seed: 0x1d1e_0003,
      options: { idleRatio: 0, idleFloorBytes: 0, retainBytes: 4 * MiB, arenaBytes: 64 * MiB },
      trimEvery: 777,
      peaks: [{ kind: "mixed", live: 900 }],
      label: "budget 0, 64 MiB arena, retainBytes 4 MiB, trim() every 777 operations",
    },
    {
      seed: 0x1d1e_0004,
      options: {
        idleRatio: 0.05,
        idleFloorBytes: 64 * KiB,
        debug: { stacks: false, quarantineBytes: 256 * KiB },
      },
      trimEvery: 500,
      peaks: [{ kind: "mixed", live: 900 }],
      label: "debug mode, small budget, trim() every 500 operations",
    },
  ];
  for (const { seed, options, trimEvery, peaks, label } of runs) {
    it(`keeps contents, zeroing and counters exact (${label}, seed ${seed})`, () => {
      using heap = new Heap(options);
      churn(
        heap,
        seed,
        options.debug ? 6_000 : 20_000,
        trimEvery,
        options.debug !== undefined,
        peaks,
        options.arenaBytes !== undefined,
      );
    });
  }
});

describe("an empty class head with purged OS pages", () => {
  /**
   * 100 blocks of 256 bytes on one page (28 KiB committed); the first 80 are
   * freed and trim() purges their 5 OS pages; then the last 20 are freed, and
   * the page, its class's head with 8 KiB still committed, stays on its list.
   */
  function emptyHeadWithHoles(heap: Heap): { blocks: number[]; committed: number } {
    const blocks: number[] = [];
    for (let i = 0; i < 100; i++) {
      const p = heap.malloc(256);
      heap.bytes(p).fill(0xab);
      blocks.push(p);
    }
    for (let i = 1; i < 100; i++) assert.equal(blocks[i], blocks[0] + 256 * i);
    for (let i = 0; i < 80; i++) heap.free(blocks[i]);
    const before = checked(heap).committedBytes;
    assert.equal(heap.trim(), 5 * 4096, "the 5 free OS pages were not purged");
    assert.equal(checked(heap).committedBytes, before - 5 * 4096);
    for (let i = 80; i < 100; i++) heap.free(blocks[i]);
    const s = checked(heap);
    assert.equal(s.allocatedBytes, 0);
    assert.equal(s.retainedBytes, 0);
    return { blocks, committed: s.committedBytes };
  }

  it("is reused: its listed blocks, then the bump area, then the purged ones, all zeroed by calloc", () => {
    using heap = new Heap({ idleRatio: 0, idleFloorBytes: 0, retainBytes: 0 });
    const { blocks } = emptyHeadWithHoles(heap);
    const page = new Set(blocks);
    const taken: number[] = [];
    for (let i = 0; i < 256; i++) {
      const p = heap.calloc(16, 16);
      assert.notEqual(p, 0);
      assertZero(heap, p, 256, `calloc #${i}`);
      heap.bytes(p).fill(i & 0xff);
      taken.push(p);
    }
    // The first 20 are the page's listed blocks, the purged ones come last.
    for (let i = 0; i < 20; i++) assert.ok(page.has(taken[i]), `calloc #${i} left the page`);
    assert.deepEqual(
      taken.slice(256 - 80).sort((a, b) => a - b),
      blocks.slice(0, 80),
      "the blocks on purged OS pages were not handed out last",
    );
    assert.equal(new Set(taken).size, 256);
    taken.forEach((p, i) => assert.equal(heap.bytes(p, 256).every((b) => b === (i & 0xff)), true));
    const full = checked(heap);
    assert.equal(
      full.committedBytes - full.metadataBytes,
      64 * KiB,
      "the full page is not counted whole",
    );
    for (const p of taken) heap.free(p);
    checked(heap);
  });

  it("trim() releases it, counting only what it still had committed", () => {
    using heap = new Heap({ idleRatio: 0, idleFloorBytes: 0, retainBytes: 0 });
    const { committed } = emptyHeadWithHoles(heap);
    const metadata = heap.stats().metadataBytes;
    assert.equal(heap.trim(), committed - metadata);
    const s = checked(heap);
    assert.equal(s.committedBytes, s.metadataBytes);
    const p = heap.calloc(1, 256);
    assertZero(heap, p, 256, "calloc on the released page");
    heap.free(p);
    checked(heap);
  });
});
