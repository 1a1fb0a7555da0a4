import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap } from "../mod.ts";
import { assertZero, checked, endsMismatch, KiB, MiB, writeEnds } from "./helpers.ts";
import { residentBytes } from "./native_memory.ts";
import { canPopulate } from "../src/os.ts";

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
