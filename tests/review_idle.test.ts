import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, type HeapOptions } from "../mod.ts";
import { assertZero, checked, KiB, MiB, patternByte, Rng } from "./helpers.ts";

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

describe("idle purge under churn (review)", () => {
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

describe("an empty class head with purged OS pages (review)", () => {
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
