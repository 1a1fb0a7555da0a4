import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, HeapError } from "../mod.ts";
import { canPopulate } from "../src/os/libc.ts";
import { checked, KiB, MiB, rss } from "./helpers.ts";
import { mapped, residentBytes } from "./native_memory.ts";

/**
 * Resident memory is noisy (the JS heap, the GC, the kernel), so every RSS
 * rule below uses a margin: 64 MiB of blocks must move RSS by 48 MiB.
 */
const TOUCHED = 64 * MiB;
const MARGIN = 48 * MiB;

describe("memory goes back to the OS", () => {
  it("a 64 MiB block raises RSS when written and lowers it again when freed (munmap)", () => {
    using heap = new Heap();
    const base = rss();
    const s0 = heap.stats();
    const p = heap.malloc(TOUCHED);
    assert.notEqual(p, 0);
    heap.bytes(p).fill(1); // touch every page
    const peak = rss();
    assert.ok(peak - base >= MARGIN, `RSS grew by only ${(peak - base) / MiB} MiB`);
    const s1 = heap.stats();
    assert.ok(s1.mmapCalls > s0.mmapCalls);
    assert.ok(s1.committedBytes - s0.committedBytes >= TOUCHED);

    heap.free(p);
    const after = rss();
    assert.ok(peak - after >= MARGIN, `RSS dropped by only ${(peak - after) / MiB} MiB`);
    const s2 = heap.stats();
    assert.equal(s2.munmapCalls, s1.munmapCalls + 1);
    assert.equal(s2.largeBlocks, 0);
    assert.equal(s2.largeBytes, 0);
    assert.ok(s1.committedBytes - s2.committedBytes >= TOUCHED);
    assert.ok(s1.reservedBytes - s2.reservedBytes >= TOUCHED);
    heap.check();
  });

  it("trim() gives 64 MiB of emptied 1 KiB-block pages back: their pages leave RAM and committedBytes drops (madvise)", () => {
    using heap = new Heap();
    const s0 = heap.stats();
    const blocks = new Float64Array(TOUCHED / KiB);
    for (let i = 0; i < blocks.length; i++) {
      blocks[i] = heap.malloc(KiB);
      heap.bytes(blocks[i]).fill(0x11);
    }
    // The blocks' pages, measured with mincore: the process RSS moves with
    // the JS heap and the kernel by more than the margins would allow.
    const low = blocks.reduce((a, b) => Math.min(a, b));
    const span = blocks.reduce((a, b) => Math.max(a, b)) + KiB - low;
    const peak = residentBytes(low, span);
    assert.ok(peak >= TOUCHED, `only ${peak / MiB} MiB of the blocks' pages are resident`);
    const s1 = heap.stats();
    assert.ok(s1.committedBytes - s0.committedBytes >= TOUCHED);

    for (const p of blocks) heap.free(p);
    const released = heap.trim();
    const after = residentBytes(low, span);
    const s2 = heap.stats();
    assert.equal(after, 0, `${after / KiB} KiB of the blocks' pages are still resident`);
    assert.ok(s1.committedBytes - s2.committedBytes >= TOUCHED, "committedBytes dropped");
    assert.equal(s2.committedBytes, s2.metadataBytes, "only metadata stays committed");
    assert.ok(released > 0 && released <= s1.committedBytes);
    assert.ok(s2.madviseCalls > s1.madviseCalls, "pages were given back with madvise");
    assert.equal(s2.munmapCalls, s1.munmapCalls, "arena pages are not unmapped");
    heap.check();
  });

  it("trim() on a heap with nothing to give back releases 0 bytes and changes nothing", () => {
    using heap = new Heap();
    const p = heap.malloc(100);
    assert.ok(heap.trim() >= 0);
    const before = heap.stats();
    assert.equal(heap.trim(), 0);
    assert.deepEqual(heap.stats(), before);
    heap.free(p);
    heap.check();
  });

  it("pages given back by trim() are reused and hold data again", () => {
    using heap = new Heap();
    for (let round = 0; round < 3; round++) {
      const blocks: number[] = [];
      for (let i = 0; i < 4096; i++) {
        const p = heap.malloc(KiB);
        heap.bytes(p).fill(round + 1);
        blocks.push(p);
      }
      for (const p of blocks) assert.equal(heap.bytes(p)[KiB - 1], round + 1);
      for (const p of blocks) heap.free(p);
      heap.trim();
      heap.check();
    }
  });
});

describe("empty-page policy", () => {
  it("with retainBytes 0 an emptied page is given back at once, without trim()", () => {
    using heap = new Heap({ retainBytes: 0 });
    const start = heap.stats();
    for (const size of [KiB, 20 * KiB]) {
      const blocks: number[] = [];
      for (let i = 0; i < (32 * MiB) / size; i++) {
        const p = heap.malloc(size);
        heap.bytes(p).fill(9);
        blocks.push(p);
      }
      const full = heap.stats();
      for (const p of blocks) heap.free(p);
      const empty = heap.stats();
      assert.equal(empty.retainedBytes, 0);
      assert.ok(empty.madviseCalls > full.madviseCalls);
      // At most one empty page per class (the one a malloc/free pair would reuse) stays.
      assert.ok(
        empty.committedBytes <= empty.metadataBytes + 2 * MiB,
        `size ${size}: ${
          empty.committedBytes - empty.metadataBytes
        } bytes of pages still committed`,
      );
      assert.ok(full.committedBytes - empty.committedBytes >= 30 * MiB);
      heap.check();
    }
    assert.ok(heap.stats().committedBytes - start.committedBytes <= 4 * MiB);
  });

  it("by default at most 16 MiB of emptied pages is kept for reuse", () => {
    using heap = new Heap();
    for (const size of [KiB, 20 * KiB, 48]) {
      const blocks: number[] = [];
      for (let i = 0; i < (48 * MiB) / size; i++) blocks.push(heap.malloc(size));
      const full = heap.stats();
      for (const p of blocks) heap.free(p);
      const empty = heap.stats();
      assert.ok(empty.retainedBytes > 0, "some emptied pages are kept");
      assert.ok(empty.retainedBytes <= 16 * MiB, `retainedBytes ${empty.retainedBytes}`);
      assert.ok(
        empty.committedBytes <= empty.metadataBytes + 16 * MiB + 2 * MiB,
        `committedBytes ${empty.committedBytes}`,
      );
      assert.ok(full.committedBytes - empty.committedBytes >= 30 * MiB);
      heap.check();
    }
    heap.trim();
    assert.equal(heap.stats().retainedBytes, 0);
    heap.check();
  });

  it("retainBytes sets the limit on kept pages", () => {
    using heap = new Heap({ retainBytes: 4 * MiB });
    const blocks: number[] = [];
    for (let i = 0; i < (32 * MiB) / 512; i++) blocks.push(heap.malloc(512));
    for (const p of blocks) heap.free(p);
    const s = heap.stats();
    assert.ok(
      s.retainedBytes > 0 && s.retainedBytes <= 4 * MiB,
      `retainedBytes ${s.retainedBytes}`,
    );
    heap.check();
  });

  it("kept pages are reused before any new page is carved", () => {
    using heap = new Heap();
    const blocks: number[] = [];
    for (let i = 0; i < (8 * MiB) / 256; i++) blocks.push(heap.malloc(256));
    for (const p of blocks) heap.free(p);
    const empty = heap.stats();
    assert.ok(empty.retainedBytes >= 7 * MiB);
    const again: number[] = [];
    for (let i = 0; i < (7 * MiB) / 128; i++) again.push(heap.malloc(128));
    const reused = heap.stats();
    assert.equal(reused.metadataBytes, empty.metadataBytes, "no new unit was carved");
    assert.ok(reused.committedBytes <= empty.committedBytes, "no new memory was committed");
    for (const p of again) heap.free(p);
    heap.check();
  });
});

describe("pages are faulted in ahead of the bump pointer", () => {
  it("commits a page in growing steps with one madvise(POPULATE_WRITE) each, all counted and resident", () => {
    using heap = new Heap({ idleRatio: Infinity });
    const before = checked(heap);
    // 4096 blocks of 1 KiB: 4 MiB in 64 pages, none of it written by this test.
    const blocks: number[] = [];
    for (let i = 0; i < 4096; i++) blocks.push(heap.malloc(1000));
    const after = checked(heap);
    const grown = after.committedBytes - before.committedBytes -
      (after.metadataBytes - before.metadataBytes);
    assert.ok(grown >= 4 * MiB && grown <= 4 * MiB + 64 * KiB, `committed grew by ${grown}`);
    // 4 KiB, 4 KiB, 8 KiB, then 16 KiB steps: 7 calls for a 64 KiB page instead of 16 faults.
    const calls = after.madviseCalls - before.madviseCalls;
    if (canPopulate()) {
      assert.ok(calls <= 64 * 7, `${calls} madvise calls`);
      // Resident although never written: populated, not just counted (asked of
      // the blocks' own pages: the process's RSS moves with the GC meanwhile).
      const low = Math.min(...blocks);
      const span = Math.max(...blocks) + 1000 - low;
      const resident = residentBytes(low, span);
      assert.ok(resident >= 3 * MiB, `${resident} of ${span} bytes resident`);
    }
    for (const p of blocks) heap.free(p);
    checked(heap);
  });
});

describe("where the arena lives", () => {
  const LOW = 0x1000_0000; // 256 MiB, where a heap asks for its arena first

  it("the first heap to ask gets the range at 256 MiB, so its block addresses are below 2^31", () => {
    const rangeWasFree = !mapped(LOW);
    using first = new Heap();
    const p = first.malloc(16);
    assert.equal(p < 2 ** 31, rangeWasFree, `first block at 0x${p.toString(16)}`);
    assert.equal(Deno.UnsafePointer.value(first.pointer(p)), BigInt(p));
    if (!rangeWasFree) return; // something else holds it: the heap went elsewhere, as it should
    // While the first heap holds the range, the next goes where the OS puts it.
    using second = new Heap();
    const q = second.malloc(16);
    assert.ok(q >= 2 ** 32, `second heap's block at 0x${q.toString(16)}`);
    first.bytes(p).fill(1);
    second.bytes(q).fill(2);
    assert.throws(() => second.free(p), (e) => e instanceof HeapError && e.code === "invalid-free");
    first.free(p);
    second.free(q);
    first.close();
    // Given back, the range serves the next heap.
    using third = new Heap();
    const r = third.malloc(16);
    assert.ok(r < 2 ** 31, `third heap's block at 0x${r.toString(16)}`);
    third.free(r);
    second.check();
    third.check();
  });

  it("with lowAddresses: false the arena goes where the OS puts it, and works the same", () => {
    using heap = new Heap({ lowAddresses: false });
    const blocks = Array.from({ length: 1000 }, (_, i) => heap.malloc(i));
    assert.ok(blocks.every((p) => p >= 2 ** 32), "the OS maps from the top down");
    for (const p of blocks) heap.free(p);
    assert.equal(checked(heap).liveBlocks, 0);
  });

  it("rejects a lowAddresses option that is not a boolean with TypeError", () => {
    for (const bad of [1, "true", null]) {
      assert.throws(() => new Heap({ lowAddresses: bad as unknown as boolean }), TypeError);
    }
  });
});
