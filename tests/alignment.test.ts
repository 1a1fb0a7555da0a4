import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap } from "../mod.ts";
import { KiB, MiB } from "./helpers.ts";

describe("alignment and size classes", () => {
  it("every size from 0 to 4096 gets a 16-byte-aligned address that native code sees unchanged", () => {
    using heap = new Heap();
    const blocks: number[] = [];
    for (let size = 0; size <= 4096; size++) {
      const p = heap.malloc(size);
      assert.notEqual(p, 0, `malloc(${size})`);
      assert.ok(Number.isSafeInteger(p), `malloc(${size}) returned ${p}`);
      assert.equal(p % 16, 0, `malloc(${size}) = 0x${p.toString(16)} is not 16-byte aligned`);
      assert.equal(Deno.UnsafePointer.value(heap.pointer(p)), BigInt(p), `pointer of size ${size}`);
      assert.ok(heap.usableSize(p) >= size, `usableSize of malloc(${size})`);
      blocks.push(p);
    }
    assert.equal(new Set(blocks).size, blocks.length, "every live block has its own address");
    heap.check();
    for (const p of blocks) heap.free(p);
    heap.check();
  });

  it("usableSize is at least the size asked for and wastes under 16 B up to 256 B, under 12.5% above, up to 128 KiB", () => {
    using heap = new Heap();
    for (let size = 1; size <= 128 * KiB; size++) {
      const p = heap.malloc(size);
      assert.notEqual(p, 0, `malloc(${size})`);
      const usable = heap.usableSize(p);
      assert.ok(usable >= size, `usableSize(malloc(${size})) = ${usable}`);
      assert.ok(
        usable - size <= Math.max(15, size / 8),
        `malloc(${size}) wastes ${usable - size} bytes (usableSize ${usable})`,
      );
      assert.equal(usable % 16, 0, `usableSize ${usable} keeps 16-byte steps`);
      heap.free(p);
    }
    heap.check();
  });

  it("malloc(0) returns a distinct, freeable minimum block of 16 bytes", () => {
    using heap = new Heap();
    const a = heap.malloc(0);
    const b = heap.malloc(0);
    assert.notEqual(a, 0);
    assert.notEqual(b, 0);
    assert.notEqual(a, b);
    assert.equal(heap.usableSize(a), 16);
    assert.equal(heap.bytes(a).length, 16);
    heap.free(a);
    heap.free(b);
    heap.check();
  });

  it("blocks above 128 KiB are whole OS pages, page-aligned, wasting less than a page", () => {
    using heap = new Heap();
    for (const size of [128 * KiB + 1, 200_000, 300 * KiB, MiB, MiB + 1, 5 * MiB + 123]) {
      const p = heap.malloc(size);
      assert.notEqual(p, 0, `malloc(${size})`);
      const usable = heap.usableSize(p);
      assert.equal(p % 4096, 0, `malloc(${size}) is page-aligned`);
      assert.equal(usable % 4096, 0, `usableSize ${usable} is whole pages`);
      assert.ok(usable >= size && usable - size < 4096, `malloc(${size}) usableSize ${usable}`);
      assert.equal(Deno.UnsafePointer.value(heap.pointer(p)), BigInt(p));
      heap.free(p);
    }
    heap.check();
  });
});

describe("alignedAlloc", () => {
  const sizes = [0, 1, 100, 5000, 200_000];
  const alignments: number[] = [];
  for (let a = 16; a <= 2 * MiB; a *= 2) alignments.push(a);

  it("returns an address that is a multiple of every power-of-two alignment from 16 B to 2 MiB", () => {
    using heap = new Heap();
    const live: { p: number; size: number; alignment: number }[] = [];
    for (const alignment of alignments) {
      for (const size of sizes) {
        const p = heap.alignedAlloc(alignment, size);
        assert.notEqual(p, 0, `alignedAlloc(${alignment}, ${size})`);
        assert.equal(p % alignment, 0, `alignedAlloc(${alignment}, ${size}) = 0x${p.toString(16)}`);
        assert.equal(Deno.UnsafePointer.value(heap.pointer(p)), BigInt(p));
        live.push({ p, size, alignment });
      }
    }
    assert.equal(new Set(live.map((b) => b.p)).size, live.length, "addresses are distinct");
    heap.check();
    // Every block is usable over its whole size: fill, then verify none was overwritten.
    for (const [i, { p, size }] of live.entries()) {
      assert.ok(heap.usableSize(p) >= size);
      heap.bytes(p, size).fill(i & 0xff);
    }
    for (const [i, { p, size, alignment }] of live.entries()) {
      const b = heap.bytes(p, size);
      for (let j = 0; j < size; j += 97) {
        assert.equal(b[j], i & 0xff, `block ${alignment}/${size} byte ${j}`);
      }
      if (size > 0) assert.equal(b[size - 1], i & 0xff);
    }
    for (const { p } of live) heap.free(p);
    heap.check();
    assert.equal(heap.stats().liveBlocks, 0);
  });

  it("accepts the alignments 1, 2, 4 and 8 (the 16-byte minimum is kept)", () => {
    using heap = new Heap();
    for (const alignment of [1, 2, 4, 8]) {
      for (const size of sizes) {
        const p = heap.alignedAlloc(alignment, size);
        assert.notEqual(p, 0);
        assert.equal(p % 16, 0);
        assert.ok(heap.usableSize(p) >= size);
        heap.free(p);
      }
    }
    heap.check();
  });

  it("rejects an alignment that is not a power of two with RangeError", () => {
    using heap = new Heap();
    for (const alignment of [3, 24, 0, -8, 1.5, -16, NaN, Infinity, 2 ** 53 + 2, 4097]) {
      assert.throws(
        () => heap.alignedAlloc(alignment, 64),
        RangeError,
        `alignedAlloc(${alignment}, 64)`,
      );
    }
    assert.equal(heap.stats().liveBlocks, 0);
    heap.check();
  });

  it("rejects a non-number alignment with TypeError, like every other non-number argument", () => {
    using heap = new Heap();
    for (const alignment of ["16", undefined, null, 16n, {}]) {
      assert.throws(
        () => heap.alignedAlloc(alignment as unknown as number, 64),
        TypeError,
        `alignedAlloc(${String(alignment)}, 64)`,
      );
    }
    heap.check();
  });
});
