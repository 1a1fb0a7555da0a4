import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap } from "../mod.ts";
import { assertStillWorks, checked, KiB, MiB, Rng } from "./helpers.ts";

/** Allocates `size`-byte blocks until malloc returns 0; returns them. */
function fill(heap: Heap, size: number, max = 4_000_000): number[] {
  const blocks: number[] = [];
  for (let i = 0; i < max; i++) {
    const p = heap.malloc(size);
    if (p === 0) return blocks;
    blocks.push(p);
  }
  throw new Error(`the cap never stopped ${size}-byte blocks`);
}

describe("limitBytes: a cap on the heap's footprint", () => {
  it("rejects a limit that is not a non-negative integer or Infinity, naming the option", () => {
    assert.throws(() => new Heap({ limitBytes: "1" as unknown as number }), {
      name: "TypeError",
      message: /limitBytes/,
    });
    for (const bad of [-1, 1.5, NaN, -Infinity, 2 ** 60]) {
      assert.throws(() => new Heap({ limitBytes: bad }), {
        name: "RangeError",
        message: /limitBytes/,
      });
    }
    new Heap({ limitBytes: Infinity }).close();
  });

  it("a cap below any page refuses every allocation; the heap stays consistent", () => {
    using heap = new Heap({ limitBytes: 0 });
    for (const size of [1, 2000, 100 * KiB, MiB]) assert.equal(heap.malloc(size), 0);
    heap.check();
  });

  for (const size of [16, 200, 1000, 3000, 40 * KiB, 100 * KiB, 300 * KiB, 3 * MiB]) {
    it(`${size}-byte blocks: malloc returns 0 at the cap, committedBytes stays under it, the heap carries on`, () => {
      const limit = 16 * MiB;
      using heap = new Heap({ limitBytes: limit });
      const blocks = fill(heap, size);
      const stats = checked(heap);
      assert.ok(stats.committedBytes <= limit, `committed ${stats.committedBytes}`);
      assert.ok(
        stats.allocatedBytes > limit * 0.7,
        `only ${stats.allocatedBytes} bytes allocated under a ${limit}-byte cap`,
      );
      assert.equal(heap.calloc(1, size), 0, "calloc past the cap");
      assert.equal(heap.alignedAlloc(4096, size), 0, "alignedAlloc past the cap");
      for (const p of blocks.splice(0, Math.ceil(blocks.length / 2))) heap.free(p);
      heap.trim();
      const more = fill(heap, size);
      assert.ok(more.length > 0, "room freed under the cap is used again");
      assert.ok(checked(heap).committedBytes <= limit);
      for (const p of [...blocks, ...more]) heap.free(p);
      assertStillWorks(heap);
    });
  }

  it("realloc that would pass the cap returns 0 and keeps the old block", () => {
    using heap = new Heap({ limitBytes: 8 * MiB });
    let p = heap.malloc(1000);
    heap.bytes(p).fill(7);
    for (let size = 2000;; size *= 2) {
      const q = heap.realloc(p, size);
      if (q === 0) break;
      p = q;
    }
    assert.equal(heap.bytes(p)[999], 7, "the old block is intact");
    assert.ok(checked(heap).committedBytes <= 8 * MiB);
    heap.free(p);
    assertStillWorks(heap);
  });

  it("the empty fit page kept for the next fit block gives way to a large block at the cap", () => {
    for (const retainBytes of [16 * MiB, 0]) {
      using heap = new Heap({ limitBytes: 4 * MiB, retainBytes });
      heap.free(heap.malloc(5000)); // the only fit page empties and is kept: 1 MiB of footprint
      const big = heap.malloc(3 * MiB + 512 * KiB); // fits only without that page
      assert.notEqual(big, 0, `retainBytes ${retainBytes}: a large block the cap allows`);
      assert.ok(checked(heap).committedBytes <= 4 * MiB);
      heap.free(big);
      assertStillWorks(heap);
    }
  });

  it("mixed sizes under a cap: never past it, check() clean throughout", () => {
    const limit = 24 * MiB;
    using heap = new Heap({ limitBytes: limit });
    const rng = new Rng(13);
    const live: number[] = [];
    let refused = 0;
    for (let i = 0; i < 40_000; i++) {
      if (live.length > 0 && rng.chance(0.45)) {
        const j = rng.int(0, live.length - 1);
        heap.free(live[j]);
        live[j] = live[live.length - 1];
        live.pop();
        continue;
      }
      const size = rng.chance(0.01) ? rng.int(128 * KiB, 2 * MiB) : rng.int(1, 8 * KiB);
      const p = heap.malloc(size);
      if (p === 0) refused++;
      else live.push(p);
      if (i % 5000 === 0) assert.ok(checked(heap).committedBytes <= limit);
    }
    assert.ok(refused > 0, "the workload reached the cap");
    assert.ok(checked(heap).committedBytes <= limit);
    for (const p of live) heap.free(p);
    assertStillWorks(heap);
  });

  for (const mode of [{ shared: true }, { secure: true }]) {
    it(`${Object.keys(mode)[0]} heaps keep to the cap too`, () => {
      using heap = new Heap({ limitBytes: 8 * MiB, ...mode });
      const blocks = [...fill(heap, 300), ...fill(heap, 5000), ...fill(heap, 200 * KiB)];
      assert.ok(checked(heap).committedBytes <= 8 * MiB);
      for (const p of blocks) heap.free(p);
      assertStillWorks(heap);
    });
  }

  it("debug mode keeps to the cap too", () => {
    using heap = new Heap({ limitBytes: 8 * MiB, debug: { stacks: false } });
    const blocks = fill(heap, 500);
    assert.ok(checked(heap).committedBytes <= 8 * MiB);
    for (const p of blocks) heap.free(p);
    assertStillWorks(heap);
  });
});
