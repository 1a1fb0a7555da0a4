import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, type HeapStats } from "../mod.ts";
import { KiB, MiB, Rng } from "./helpers.ts";

const FIELDS = [
  "allocatedBytes",
  "committedBytes",
  "peakAllocatedBytes",
  "peakCommittedBytes",
  "reservedBytes",
  "liveBlocks",
  "allocCount",
  "freeCount",
  "mmapCalls",
  "munmapCalls",
  "madviseCalls",
  "utilization",
] as const;

/** The invariants that hold between the fields of any snapshot. */
function assertCoherent(s: HeapStats, what = ""): void {
  for (const f of FIELDS) {
    assert.equal(typeof s[f], "number", `${what} ${f}`);
    assert.ok(Number.isFinite(s[f]) && s[f] >= 0, `${what} ${f} = ${s[f]}`);
  }
  assert.equal(s.liveBlocks, s.allocCount - s.freeCount, `${what} liveBlocks`);
  assert.ok(s.peakAllocatedBytes >= s.allocatedBytes, `${what} peakAllocatedBytes`);
  assert.ok(s.peakCommittedBytes >= s.committedBytes, `${what} peakCommittedBytes`);
  assert.ok(s.committedBytes >= s.allocatedBytes, `${what} committed >= allocated`);
  assert.ok(s.reservedBytes >= s.committedBytes, `${what} reserved >= committed`);
  assert.ok(s.utilization >= 0 && s.utilization <= 1, `${what} utilization`);
  assert.equal(s.utilization, s.committedBytes > 0 ? s.allocatedBytes / s.committedBytes : 0);
}

describe("stats()", () => {
  it("reports every documented field as a number, coherent on a fresh heap", () => {
    using heap = new Heap();
    const s = heap.stats();
    assertCoherent(s, "fresh");
    assert.equal(s.allocatedBytes, 0);
    assert.equal(s.liveBlocks, 0);
    assert.equal(s.allocCount, 0);
    assert.equal(s.freeCount, 0);
    assert.equal(s.peakAllocatedBytes, 0);
    assert.equal(s.utilization, 0);
    assert.ok(s.mmapCalls >= 1, "the arena reservation is one mmap");
    assert.ok(s.reservedBytes >= 4 * 1024 * MiB - 64 * KiB, "the default arena reserves 4 GiB");
    using small = new Heap({ arenaBytes: 16 * MiB });
    assert.equal(small.stats().reservedBytes, 16 * MiB);
    heap.check();
    small.check();
  });

  it("returns a snapshot: later operations do not change an earlier result", () => {
    using heap = new Heap();
    const s = heap.stats();
    const copy = { ...s };
    heap.free(heap.malloc(100));
    assert.deepEqual(s, copy);
    heap.check();
  });

  it("counts each allocation and free in liveBlocks, allocCount and freeCount", () => {
    using heap = new Heap();
    const a = heap.malloc(100);
    const b = heap.calloc(10, 30);
    const c = heap.alignedAlloc(4096, 5000);
    const d = heap.malloc(300 * KiB);
    let s = heap.stats();
    assert.equal(s.liveBlocks, 4);
    assert.equal(s.allocCount, 4);
    assert.equal(s.freeCount, 0);
    heap.free(b);
    heap.free(d);
    s = heap.stats();
    assert.equal(s.liveBlocks, 2);
    assert.equal(s.allocCount, 4);
    assert.equal(s.freeCount, 2);
    // A realloc that moves is one allocation and one free; realloc(p, 0) is a free.
    const moved = heap.realloc(a, 50_000);
    assert.notEqual(moved, a);
    s = heap.stats();
    assert.equal(s.liveBlocks, 2);
    assert.equal(s.allocCount, 5);
    assert.equal(s.freeCount, 3);
    assert.equal(heap.realloc(c, 0), 0);
    heap.free(moved);
    s = heap.stats();
    assert.equal(s.liveBlocks, 0);
    assert.equal(s.allocCount, 5);
    assert.equal(s.freeCount, 5);
    assertCoherent(s);
    heap.check();
  });

  it("counts a large realloc that moves the block as one allocation and one free, as documented", () => {
    using heap = new Heap();
    let p = heap.malloc(256 * KiB);
    heap.bytes(p, 8).fill(5);
    // Grow (address space only, nothing is touched) until the kernel has to move it.
    for (let size = 512 * KiB; size <= 1024 * MiB; size *= 2) {
      const before = heap.stats();
      const q = heap.realloc(p, size);
      assert.notEqual(q, 0);
      assert.ok(heap.bytes(q, 8).every((b) => b === 5));
      const after = heap.stats();
      assert.equal(after.liveBlocks, before.liveBlocks);
      if (q !== p) {
        assert.equal(after.allocCount, before.allocCount + 1, "allocCount after a moving realloc");
        assert.equal(after.freeCount, before.freeCount + 1, "freeCount after a moving realloc");
        heap.free(q);
        heap.check();
        return;
      }
      p = q;
    }
    assert.fail("the block never moved");
  });

  it("keeps allocatedBytes equal to the sum of usableSize over live blocks, through every kind of operation", () => {
    using heap = new Heap();
    const rng = new Rng(2024);
    const live = new Set<number>();
    const sumUsable = () => [...live].reduce((sum, p) => sum + heap.usableSize(p), 0);
    for (let i = 0; i < 3000; i++) {
      const r = rng.next();
      const size = rng.chance(0.9)
        ? rng.int(0, 4096)
        : rng.chance(0.8)
        ? rng.int(4097, 128 * KiB)
        : rng.int(128 * KiB, 3 * MiB);
      if (r < 0.3 || live.size === 0) live.add(heap.malloc(size));
      else if (r < 0.4) live.add(heap.calloc(1, size));
      else if (r < 0.45) live.add(heap.alignedAlloc(2 ** rng.int(4, 16), size));
      else if (r < 0.7) {
        const p = [...live][rng.int(0, live.size - 1)];
        live.delete(p);
        const q = heap.realloc(p, size);
        assert.notEqual(q, 0);
        live.add(q);
      } else {
        const p = [...live][rng.int(0, live.size - 1)];
        live.delete(p);
        heap.free(p);
      }
      if (i % 100 === 0) {
        const s = heap.stats();
        assertCoherent(s, `op ${i}`);
        assert.equal(s.liveBlocks, live.size, `op ${i} liveBlocks`);
        assert.equal(s.allocatedBytes, sumUsable(), `op ${i} allocatedBytes`);
      }
    }
    const s = heap.stats();
    assert.equal(s.allocatedBytes, sumUsable());
    for (const p of live) heap.free(p);
    assert.equal(heap.stats().allocatedBytes, 0);
    heap.check();
  });

  it("tracks the peaks: they rise with allocation and stay after frees", () => {
    using heap = new Heap();
    const blocks = Array.from({ length: 1000 }, () => heap.malloc(1000));
    const full = heap.stats();
    // An upper bound: blocks put on an allocation list count from then on
    // (at most a page of 1 KiB blocks here).
    assert.ok(full.peakAllocatedBytes >= full.allocatedBytes);
    assert.ok(full.peakAllocatedBytes <= full.allocatedBytes + 64 * KiB);
    assert.ok(full.peakCommittedBytes >= full.committedBytes);
    for (const p of blocks) heap.free(p);
    heap.trim();
    const empty = heap.stats();
    assert.equal(empty.allocatedBytes, 0);
    assert.equal(empty.peakAllocatedBytes, full.peakAllocatedBytes);
    assert.equal(empty.peakCommittedBytes, full.peakCommittedBytes);
    assert.ok(empty.committedBytes < full.committedBytes);
    assertCoherent(empty);
    heap.check();
  });

  it("utilization is allocatedBytes / committedBytes", () => {
    using heap = new Heap();
    const blocks = Array.from({ length: 5000 }, (_, i) => heap.malloc(16 + (i % 200)));
    const s = heap.stats();
    assert.equal(s.utilization, s.allocatedBytes / s.committedBytes);
    assert.ok(s.utilization > 0.5, `utilization ${s.utilization} with 5000 live small blocks`);
    for (const p of blocks) heap.free(p);
    assertCoherent(heap.stats());
    heap.check();
  });

  it("returns reservedBytes and committedBytes to their baseline once every large block is freed, however it was made or resized", () => {
    using heap = new Heap();
    heap.free(heap.malloc(200 * KiB)); // maps the large-block table once
    const s0 = heap.stats();
    let blocks: number[] = [];
    for (let i = 0; i < 20; i++) blocks.push(heap.malloc(200 * KiB + i * 5000));
    blocks = blocks.map((p, i) => heap.realloc(p, i % 2 === 1 ? 50 * MiB : 140 * KiB));
    blocks.push(heap.alignedAlloc(2 * MiB, 300_000));
    blocks.push(heap.alignedAlloc(256 * KiB, 1));
    blocks.push(heap.calloc(3, 100_000));
    const s1 = heap.stats();
    const usable = blocks.reduce((sum, p) => sum + heap.usableSize(p), 0);
    assert.equal(s1.reservedBytes - s0.reservedBytes, usable);
    assert.equal(s1.committedBytes - s0.committedBytes, usable);
    assert.equal(s1.allocatedBytes - s0.allocatedBytes, usable);
    for (const p of blocks) heap.free(p);
    const s2 = heap.stats();
    assert.equal(s2.reservedBytes, s0.reservedBytes);
    assert.equal(s2.committedBytes, s0.committedBytes);
    assert.equal(s2.allocatedBytes, 0);
    assert.equal(s2.largeBlocks, 0);
    assert.ok(s2.munmapCalls - s0.munmapCalls >= blocks.length);
    heap.check();
  });

  it("counts OS calls: a large block is one mmap and one munmap, trim() madvises, reservedBytes follows", () => {
    using heap = new Heap();
    heap.free(heap.malloc(200 * KiB)); // the first large block also maps the block table
    const s0 = heap.stats();
    const p = heap.malloc(5 * MiB);
    const s1 = heap.stats();
    assert.equal(s1.mmapCalls, s0.mmapCalls + 1);
    assert.equal(s1.reservedBytes - s0.reservedBytes, heap.usableSize(p));
    assert.equal(s1.committedBytes - s0.committedBytes, heap.usableSize(p));
    assert.equal(s1.allocatedBytes - s0.allocatedBytes, heap.usableSize(p));
    heap.free(p);
    const s2 = heap.stats();
    assert.equal(s2.munmapCalls, s1.munmapCalls + 1);
    assert.equal(s2.reservedBytes, s0.reservedBytes);
    assert.equal(s2.committedBytes, s0.committedBytes);
    assert.equal(s2.madviseCalls, s1.madviseCalls);

    const small = Array.from({ length: 10_000 }, () => heap.malloc(500));
    for (const q of small) heap.free(q);
    const s3 = heap.stats();
    heap.trim();
    const s4 = heap.stats();
    assert.ok(s4.madviseCalls > s3.madviseCalls);
    assert.equal(s4.mmapCalls, s3.mmapCalls);
    assert.equal(s4.reservedBytes, s3.reservedBytes, "trim keeps the reservation");
    assertCoherent(s4);
    heap.check();
  });
});
