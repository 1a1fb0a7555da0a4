import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap } from "../mod.ts";
import { KiB, MiB, Rng } from "./helpers.ts";

describe("fragmentation and page reuse", () => {
  it("holes left by freeing every other block are refilled by blocks of the same size class without committing more", () => {
    using heap = new Heap();
    for (const size of [32, 200, 3000, 20_000]) {
      const n = Math.ceil((8 * MiB) / size);
      const blocks: number[] = [];
      for (let i = 0; i < n; i++) blocks.push(heap.malloc(size));
      const holes = new Set<number>();
      for (let i = 0; i < n; i += 2) {
        heap.free(blocks[i]);
        holes.add(blocks[i]);
      }
      const committed = heap.stats().committedBytes;
      const refill: number[] = [];
      let elsewhere = 0;
      for (let i = 0; i < holes.size; i++) {
        // A different request size of the same class lands in the same holes,
        // after the never-used blocks of the class's current page, if any.
        const p = heap.malloc(size - 7);
        if (!holes.has(p)) elsewhere++;
        refill.push(p);
      }
      assert.ok(
        elsewhere <= Math.ceil(64 * KiB / size),
        `size ${size}: ${elsewhere} of ${holes.size} blocks not in the holes`,
      );
      assert.equal(heap.stats().committedBytes, committed, `size ${size}: no new memory`);
      heap.check();
      for (let i = 1; i < n; i += 2) heap.free(blocks[i]);
      for (const p of refill) heap.free(p);
      heap.check();
    }
  });

  it("rounds of allocate / free every other / allocate other sizes into the holes / free all end, after trim(), at the metadata floor", () => {
    using heap = new Heap();
    const start = heap.stats();
    let metadataAfterFirstRound = 0;
    for (let round = 0; round < 5; round++) {
      const rng = new Rng(1234); // the same workload every round
      const live: number[] = [];
      for (let i = 0; i < 30_000; i++) {
        const size = rng.chance(0.98) ? rng.int(1, 1024) : rng.int(8 * KiB + 1, 64 * KiB);
        const p = heap.malloc(size);
        assert.notEqual(p, 0);
        heap.bytes(p, Math.min(size, 16)).fill(round + 1);
        live.push(p);
      }
      for (let i = 0; i < live.length; i += 2) heap.free(live[i]);
      const survivors = live.filter((_, i) => i % 2 === 1);
      // Different sizes from the first wave, into whatever holes their classes have.
      for (let i = 0; i < 10_000; i++) {
        const size = rng.chance(0.99) ? rng.int(1025, 4 * KiB) : rng.int(64 * KiB + 1, 128 * KiB);
        survivors.push(heap.malloc(size));
      }
      heap.check();
      rng.shuffle(survivors);
      for (const p of survivors) heap.free(p);
      const afterFree = heap.stats();
      assert.equal(afterFree.liveBlocks, 0);
      assert.equal(afterFree.allocatedBytes, 0);
      const released = heap.trim();
      assert.ok(released > 0, "trim() released the emptied pages");
      const after = heap.stats();
      heap.check();
      // Only metadata is left committed: the page descriptors of the carved units.
      assert.equal(after.committedBytes, after.metadataBytes, `round ${round}`);
      assert.equal(after.retainedBytes, 0);
      assert.ok(
        after.committedBytes - start.committedBytes <= 4 * MiB,
        `round ${round}: ${after.committedBytes - start.committedBytes} bytes of metadata overhead`,
      );
      assert.equal(afterFree.committedBytes - released, after.committedBytes);
      // Later rounds reuse the pages of the first instead of carving new ones.
      if (round === 0) metadataAfterFirstRound = after.metadataBytes;
      else assert.equal(after.metadataBytes, metadataAfterFirstRound, `round ${round}`);
    }
  });

  it("pages emptied by one size class are reused by another class of the same page kind", () => {
    using heap = new Heap();
    const fill = (size: number, bytes: number) => {
      const blocks: number[] = [];
      for (let i = 0; i < Math.ceil(bytes / size); i++) blocks.push(heap.malloc(size));
      return blocks;
    };
    // Small pages (64 KiB) and medium pages (1 MiB); each second class needs fewer pages.
    for (const [a, b] of [[48, 512], [20_480, 65_536], [72 * KiB, 128 * KiB]]) {
      const first = fill(a, 16 * MiB);
      for (const p of first) heap.free(p);
      const metadata = heap.stats().metadataBytes;
      const second = fill(b, 14 * MiB);
      assert.equal(heap.stats().metadataBytes, metadata, `${b} B blocks reuse the pages of ${a}`);
      for (const p of second) heap.free(p);
      heap.check();
    }
  });

  it("a class block of 9 to 64 KiB (alignment above 16 bytes) has a small page, which commits only the OS pages it hands out", () => {
    using heap = new Heap();
    for (const [size, perPage] of [[36 * KiB, 1], [64 * KiB, 1], [20 * KiB, 3], [9 * KiB, 7]]) {
      const before = heap.stats();
      const p = heap.alignedAlloc(64, size);
      const after = heap.stats();
      const grown = after.committedBytes - before.committedBytes -
        (after.metadataBytes - before.metadataBytes);
      assert.equal(p % (64 * KiB), 0, `${size} B: the first block starts its page`);
      assert.equal(grown, Math.ceil(size / 4096) * 4096, `${size} B: committed grew by ${grown}`);
      // The page holds perPage blocks: the next one after them starts another page.
      const more = Array.from({ length: perPage }, () => heap.alignedAlloc(64, size));
      assert.equal(Math.floor(more[perPage - 1] / (64 * KiB)) - Math.floor(p / (64 * KiB)), 1);
      heap.check();
    }
  });

  it("the page a freed 64 KiB class block leaves is what the next page of any class is made of", () => {
    using heap = new Heap();
    const big = heap.alignedAlloc(64 * KiB, 64 * KiB);
    heap.bytes(big).fill(7);
    heap.free(big);
    const emptied = heap.stats();
    assert.equal(emptied.retainedBytes, 64 * KiB);
    const small = heap.malloc(100); // a class with no page yet
    assert.equal(Math.floor(small / (64 * KiB)), Math.floor(big / (64 * KiB)), "same page");
    const after = heap.stats();
    assert.equal(after.retainedBytes, 0);
    assert.equal(after.committedBytes, emptied.committedBytes, "nothing new committed");
    heap.check();
  });
});
