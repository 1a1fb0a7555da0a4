import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap } from "../mod.ts";
import { assertHeapError, assertStillWorks, KiB, MiB } from "./helpers.ts";

/** Fills the first `size` bytes with a position-dependent pattern. */
function fill(heap: Heap, p: number, size: number, seed: number): void {
  const b = heap.bytes(p, size);
  for (let i = 0; i < size; i++) b[i] = (seed + i * 7 + (i >>> 9)) & 0xff;
}

/** Asserts the pattern written by fill() over the first `size` bytes. */
function assertPattern(heap: Heap, p: number, size: number, seed: number, what: string): void {
  const b = heap.bytes(p, size);
  for (let i = 0; i < size; i++) {
    if (b[i] !== ((seed + i * 7 + (i >>> 9)) & 0xff)) {
      assert.fail(`${what}: byte ${i} of ${size} is ${b[i]}`);
    }
  }
}

describe("realloc", () => {
  const growths: [string, number, number][] = [
    ["small to small", 24, 1000],
    ["small to medium", 100, 20_000],
    ["small to large", 1000, 300 * KiB],
    ["medium to medium", 9000, 100 * KiB],
    ["medium to large", 100 * KiB, 2 * MiB],
    ["large to larger", 300 * KiB, 8 * MiB],
    ["large to much larger", 2 * MiB, 64 * MiB],
  ];
  for (const [name, from, to] of growths) {
    it(`growing ${name} (${from} -> ${to} B) keeps the contents`, () => {
      using heap = new Heap();
      // Neighbours on both sides make in-place growth impossible for class blocks.
      const before = heap.malloc(from);
      const p = heap.malloc(from);
      const after = heap.malloc(from);
      fill(heap, before, from, 1);
      fill(heap, p, from, 2);
      fill(heap, after, from, 3);
      const q = heap.realloc(p, to);
      assert.notEqual(q, 0);
      assert.ok(heap.usableSize(q) >= to);
      assertPattern(heap, q, from, 2, "grown block");
      heap.bytes(q, to).fill(0xee, from); // the new tail is writable
      assertPattern(heap, before, from, 1, "neighbour before");
      assertPattern(heap, after, from, 3, "neighbour after");
      if (q !== p) assertHeapError(() => heap.free(p), "double-free", p, "old address");
      heap.check();
      for (const x of [before, q, after]) heap.free(x);
      heap.check();
      assert.equal(heap.stats().liveBlocks, 0);
    });
  }

  for (
    const [name, from, to] of [
      ["small", 1000, 10],
      ["medium", 100 * KiB, 20_000],
      ["large", 8 * MiB, 300 * KiB],
      ["large to a small size", MiB, 100],
    ] as const
  ) {
    it(`shrinking a ${name} block (${from} -> ${to} B) keeps the prefix and the address`, () => {
      using heap = new Heap();
      const p = heap.malloc(from);
      fill(heap, p, from, 9);
      const q = heap.realloc(p, to);
      assert.equal(q, p, "shrink is in place");
      assert.ok(heap.usableSize(q) >= to);
      assertPattern(heap, q, to, 9, "shrunk block");
      heap.check();
      heap.free(q);
      heap.check();
    });
  }

  it("shrinking a large block gives its tail pages back", () => {
    using heap = new Heap();
    const p = heap.malloc(8 * MiB);
    const before = heap.stats();
    assert.equal(heap.realloc(p, MiB), p);
    const after = heap.stats();
    assert.equal(heap.usableSize(p), MiB);
    assert.equal(before.allocatedBytes - after.allocatedBytes, 7 * MiB);
    assert.equal(before.committedBytes - after.committedBytes, 7 * MiB);
    assert.ok(after.munmapCalls > before.munmapCalls);
    heap.free(p);
    heap.check();
  });

  it("a large block grown a little at a time is remapped once per eighth of growth, not per page", () => {
    using heap = new Heap();
    let size = 200 * KiB;
    let p = heap.malloc(size);
    fill(heap, p, 64, 3);
    const before = heap.stats();
    while (size < 8 * MiB) {
      size += 100;
      p = heap.realloc(p, size);
      assert.notEqual(p, 0);
    }
    const after = heap.stats();
    assert.equal(after.liveBlocks, before.liveBlocks);
    // 200 KiB -> 8 MiB is 5.4 doublings: about 43 steps of 1/8, against ~2000 pages.
    const remaps = after.mmapCalls - before.mmapCalls;
    assert.ok(remaps <= 48, `${remaps} mremap calls`);
    assert.equal(after.munmapCalls, before.munmapCalls, "growth shrank the block on the way");
    assert.ok(heap.usableSize(p) >= size && heap.usableSize(p) <= size * 1.125 + 4 * KiB);
    assert.equal(after.allocatedBytes, heap.usableSize(p));
    assertPattern(heap, p, 64, 3, "appended block");
    // Shrinking by less than an eighth keeps the mapping; by more gives the tail back.
    const usable = heap.usableSize(p);
    assert.equal(heap.realloc(p, usable - 64 * KiB), p);
    assert.equal(heap.usableSize(p), usable);
    assert.equal(heap.realloc(p, usable / 2), p);
    assert.ok(heap.usableSize(p) < usable * 0.6);
    heap.free(p);
    assert.equal(heap.check(), undefined);
  });

  it("growing within usableSize is in place", () => {
    using heap = new Heap();
    for (const size of [1, 17, 100, 300, 5000, 20_000, 100_000, 200_000, 3 * MiB + 1]) {
      const p = heap.malloc(size);
      const usable = heap.usableSize(p);
      fill(heap, p, size, size);
      const stats = heap.stats();
      assert.equal(heap.realloc(p, usable), p, `realloc(malloc(${size}), ${usable})`);
      assert.equal(heap.usableSize(p), usable);
      assertPattern(heap, p, size, size, `in-place growth of ${size}`);
      assert.equal(heap.stats().allocatedBytes, stats.allocatedBytes);
      assert.equal(heap.stats().liveBlocks, stats.liveBlocks);
      heap.free(p);
    }
    heap.check();
  });

  it("realloc(0, n) acts as malloc(n)", () => {
    using heap = new Heap();
    for (const size of [0, 1, 100, 20_000, 300 * KiB]) {
      const p = heap.realloc(0, size);
      assert.notEqual(p, 0);
      assert.equal(p % 16, 0);
      assert.ok(heap.usableSize(p) >= size);
      assert.equal(heap.stats().liveBlocks, 1);
      heap.bytes(p, size).fill(1);
      heap.free(p);
    }
    heap.check();
  });

  for (const [name, size] of [["small", 64], ["medium", 20 * KiB], ["large", MiB]] as const) {
    it(`realloc(p, 0) frees a ${name} block and returns 0; freeing p again is a double free`, () => {
      using heap = new Heap();
      const keep = heap.malloc(size); // the page stays in use
      const p = heap.malloc(size);
      assert.equal(heap.realloc(p, 0), 0);
      assert.equal(heap.stats().liveBlocks, 1);
      heap.check();
      assertHeapError(() => heap.free(p), "double-free", p, "free after realloc(p, 0)");
      assertHeapError(() => heap.realloc(p, 10), "double-free", p, "realloc after realloc(p, 0)");
      heap.free(keep);
      heap.check();
    });
  }

  it("a failed realloc returns 0 and leaves the old block intact and freeable", () => {
    using heap = new Heap();
    for (const size of [100, 20_000, 300 * KiB]) {
      const p = heap.malloc(size);
      fill(heap, p, size, 5);
      const usable = heap.usableSize(p);
      const before = heap.stats();
      for (const huge of [2 ** 50, 2 ** 52, Number.MAX_SAFE_INTEGER]) {
        assert.equal(heap.realloc(p, huge), 0, `realloc(malloc(${size}), ${huge})`);
      }
      const after = heap.stats();
      assert.equal(after.liveBlocks, before.liveBlocks);
      assert.equal(after.allocatedBytes, before.allocatedBytes);
      assert.equal(heap.usableSize(p), usable);
      assertPattern(heap, p, size, 5, "block after failed realloc");
      heap.check();
      heap.free(p);
    }
    heap.check();
    assertStillWorks(heap);
  });

  it("a chain of reallocations through every size keeps the growing prefix", () => {
    using heap = new Heap();
    let p = heap.malloc(1);
    let size = 1;
    heap.bytes(p, 1)[0] = 0;
    const sizes: number[] = [];
    for (let s = 2; s <= 4 * MiB; s = Math.ceil(s * 1.5)) sizes.push(s);
    for (const s of [...sizes, ...sizes.slice().reverse()]) {
      const q = heap.realloc(p, s);
      assert.notEqual(q, 0);
      const keep = Math.min(size, s);
      const b = heap.bytes(q, s);
      for (let i = 0; i < keep; i += 61) {
        assert.equal(b[i], i % 251, `size ${size} -> ${s}, byte ${i}`);
      }
      for (let i = 0; i < s; i++) b[i] = i % 251;
      p = q;
      size = s;
    }
    heap.free(p);
    heap.check();
    assert.equal(heap.stats().liveBlocks, 0);
    assert.equal(heap.stats().allocatedBytes, 0);
  });
});
