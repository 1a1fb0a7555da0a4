import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap } from "../mod.ts";
import { assertStillWorks, assertZero, KiB, MiB } from "./helpers.ts";

/** Sizes spanning small pages, medium pages and large mappings. */
const SMALL = [1, 16, 24, 48, 100, 256, 1000, 4096, 8000];
const MEDIUM = [8193, 20_000, 65_536, 128 * KiB];
const LARGE = [128 * KiB + 1, 300 * KiB, 2 * MiB];

describe("calloc", () => {
  for (
    const [kind, sizes, count] of [
      ["small", SMALL, 200],
      ["medium", MEDIUM, 20],
      ["large", LARGE, 3],
    ] as const
  ) {
    it(`zeroes recycled ${kind} blocks that were filled with 0xAB and freed`, () => {
      using heap = new Heap();
      for (let round = 0; round < 3; round++) {
        const blocks: number[] = [];
        for (const size of sizes) {
          for (let i = 0; i < count; i++) {
            const p = heap.malloc(size);
            assert.notEqual(p, 0);
            heap.bytes(p).fill(0xab); // the whole usable size, not just `size`
            blocks.push(p);
          }
        }
        for (const p of blocks) heap.free(p);
        const zeroed: number[] = [];
        for (const size of sizes) {
          for (let i = 0; i < count; i++) {
            const p = heap.calloc(1, size);
            assert.notEqual(p, 0, `calloc(1, ${size})`);
            assertZero(heap, p, size, `round ${round} calloc(1, ${size})`);
            zeroed.push(p);
          }
        }
        // The same block sizes again, counted the other way round.
        for (const p of zeroed) heap.free(p);
        for (const size of sizes) {
          const p = heap.calloc(size, 1);
          assertZero(heap, p, size, `round ${round} calloc(${size}, 1)`);
          heap.bytes(p).fill(0xab);
          heap.free(p);
        }
        heap.check();
      }
    });
  }

  it("zeroes the whole requested size when count and size are both above 1", () => {
    using heap = new Heap();
    const junk: number[] = [];
    for (let i = 0; i < 100; i++) {
      const p = heap.malloc(800);
      heap.bytes(p).fill(0xab);
      junk.push(p);
    }
    for (const p of junk) heap.free(p);
    for (const [count, size] of [[100, 8], [25, 32], [7, 111], [3, 256]]) {
      const p = heap.calloc(count, size);
      assert.ok(heap.usableSize(p) >= count * size);
      assertZero(heap, p, count * size, `calloc(${count}, ${size})`);
      heap.free(p);
    }
    heap.check();
  });

  it("returns zeroed memory on fresh pages of every size class", () => {
    using heap = new Heap();
    const blocks: number[] = [];
    for (let size = 0; size <= 128 * KiB; size = size < 512 ? size + 16 : Math.ceil(size * 1.07)) {
      for (let i = 0; i < 3; i++) {
        const p = heap.calloc(1, size);
        assert.notEqual(p, 0);
        assertZero(heap, p, size, `fresh calloc(1, ${size})`);
        blocks.push(p);
      }
    }
    for (const p of blocks) heap.free(p);
    heap.check();
  });

  it("returns zeroed memory on pages reused after they emptied (retained) and after trim (released)", () => {
    for (const retainBytes of [16 * MiB, 0]) {
      using heap = new Heap({ retainBytes });
      for (let round = 0; round < 4; round++) {
        // Fill several whole pages of one class with junk, free them all...
        const size = [48, 1024, 20_000, 4096][round];
        const other = [64, 2048, 40_000, 112][round];
        const n = Math.ceil((4 * MiB) / size);
        const blocks: number[] = [];
        for (let i = 0; i < n; i++) {
          const p = heap.malloc(size);
          heap.bytes(p).fill(0xab);
          blocks.push(p);
        }
        for (const p of blocks) heap.free(p);
        if (round % 2 === 1) heap.trim();
        // ...then calloc a different class that lands on those pages.
        const zeroed: number[] = [];
        for (let i = 0; i < Math.ceil((4 * MiB) / other); i++) {
          const p = heap.calloc(1, other);
          assert.notEqual(p, 0);
          assertZero(heap, p, other, `retain ${retainBytes} round ${round} calloc(1, ${other})`);
          zeroed.push(p);
        }
        for (const p of zeroed) heap.free(p);
        heap.check();
      }
    }
  });

  it("refuses a count * size that overflows by returning 0, and the heap keeps working", () => {
    using heap = new Heap();
    const before = heap.stats();
    assert.equal(heap.calloc(2 ** 40, 2 ** 40), 0);
    assert.equal(heap.calloc(Number.MAX_SAFE_INTEGER, 2), 0);
    assert.equal(heap.calloc(2, Number.MAX_SAFE_INTEGER), 0);
    assert.equal(heap.calloc(2 ** 27, 2 ** 27), 0); // 2^54: past the safe integers
    assert.equal(heap.calloc(2 ** 26, 2 ** 26), 0); // 2^52: representable, but no memory
    const after = heap.stats();
    assert.equal(after.liveBlocks, before.liveBlocks);
    assert.equal(after.allocatedBytes, before.allocatedBytes);
    heap.check();
    assertStillWorks(heap);
  });

  it("returns a distinct minimum block for a zero count or size", () => {
    using heap = new Heap();
    const a = heap.calloc(0, 100);
    const b = heap.calloc(100, 0);
    const c = heap.calloc(0, 0);
    assert.ok(a !== 0 && b !== 0 && c !== 0);
    assert.equal(new Set([a, b, c]).size, 3);
    for (const p of [a, b, c]) heap.free(p);
    heap.check();
  });
});
