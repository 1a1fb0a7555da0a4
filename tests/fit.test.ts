import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, HeapError } from "../mod.ts";
import { assertZero, checked, endsMismatch, KiB, MiB, writeEnds } from "./helpers.ts";
import { residentBytes } from "./native_memory.ts";

/** Overwrites the u32 at `address` (outside any block view, as a stray native write would). */
function pokeU32(address: number, value: number): void {
  const raw = Deno.UnsafePointerView.getArrayBuffer(
    Deno.UnsafePointer.create(BigInt(address))!,
    16,
  );
  new DataView(raw).setUint32(0, value, true);
}

/** Committed bytes less metadata: what the blocks' pages hold. */
function dataCommitted(heap: Heap): number {
  const s = heap.stats();
  return s.committedBytes - s.metadataBytes;
}

describe("fit pages: blocks above 1 KiB of a private heap", () => {
  it("are cut to 16 bytes: usableSize is the size rounded up to a multiple of 16", () => {
    using heap = new Heap();
    for (
      const [size, usable] of [[1025, 1040], [5000, 5008], [20_000, 20_000], [100_001, 100_016]]
    ) {
      const p = heap.malloc(size);
      assert.equal(heap.usableSize(p), usable, `malloc(${size})`);
      assert.equal(p % 16, 0);
    }
    assert.equal(heap.usableSize(heap.malloc(1024)), 1024, "1 KiB and below: size classes");
    checked(heap);
  });

  it("neighbours freed one by one merge: the space of three serves one block of their total size, in place", () => {
    using heap = new Heap();
    const [a, b, c, guard] = [
      heap.malloc(3000),
      heap.malloc(5000),
      heap.malloc(7000),
      heap.malloc(2000),
    ];
    writeEnds(heap, guard, 2000, 9);
    heap.free(b);
    heap.free(a);
    heap.free(c);
    const before = dataCommitted(heap);
    // 3008 + 5008 + 7008 usable and two headers of 16 bytes in between.
    const merged = heap.malloc(3008 + 5008 + 7008 + 32);
    assert.equal(merged, a, "the merged chunk starts where the first block did");
    assert.equal(dataCommitted(heap), before, "nothing new committed");
    assert.equal(endsMismatch(heap, guard, 2000, 9), null);
    checked(heap);
  });

  it("a free chunk serves any size: a freed 40 KiB block holds two of 19 KiB without new memory", () => {
    using heap = new Heap();
    const big = heap.malloc(40 * KiB);
    const guard = heap.malloc(2000);
    heap.free(big);
    const before = dataCommitted(heap);
    const x = heap.malloc(19 * KiB);
    const y = heap.malloc(19 * KiB);
    for (const p of [x, y]) {
      assert.ok(p >= big && p + 19 * KiB <= big + 40 * KiB, "inside the hole");
    }
    assert.equal(dataCommitted(heap), before);
    heap.free(guard);
    checked(heap);
  });

  it("realloc grows a block in place into the free space above it, keeping its bytes", () => {
    using heap = new Heap();
    const p = heap.malloc(2000);
    const q = heap.malloc(10_000);
    writeEnds(heap, p, 2000, 3);
    heap.free(q);
    const grown = heap.realloc(p, 11_000);
    assert.equal(grown, p, "in place");
    assert.ok(heap.usableSize(p) >= 11_000);
    assert.equal(heap.bytes(p, 1)[0], 3);
    const stats = checked(heap);
    assert.equal(stats.allocatedBytes, heap.usableSize(p) + 0);
  });

  it("a page whose blocks are all freed retires, except the last fit page, which trim() gives back", () => {
    using heap = new Heap({ retainBytes: 0 });
    const blocks = Array.from({ length: 60 }, () => heap.malloc(60 * KiB)); // four 1 MiB pages
    for (const p of blocks) heap.free(p);
    const emptied = checked(heap);
    assert.ok(dataCommitted(heap) <= MiB + 64 * KiB, `${emptied.committedBytes} still committed`);
    const released = heap.trim();
    assert.ok(released > 0);
    assert.equal(checked(heap).committedBytes, checked(heap).metadataBytes);
    // And the heap carries on.
    const again = heap.calloc(1, 60 * KiB);
    assert.ok(heap.bytes(again).every((b) => b === 0));
  });

  it("a block that comes and goes on a page of its own keeps that page: no page taken and retired per pair", () => {
    using heap = new Heap({ retainBytes: 0 });
    const full = Array.from({ length: 20 }, () => heap.malloc(50 * KiB)); // the first page, nearly full
    const first = heap.malloc(100 * KiB); // no room left there: a second page
    heap.free(first);
    const before = checked(heap);
    for (let i = 0; i < 100; i++) {
      const p = heap.malloc(100 * KiB);
      assert.equal(p, first, `pair ${i}`);
      heap.free(p);
    }
    const after = checked(heap);
    assert.equal(after.madviseCalls, before.madviseCalls, "no page released or faulted in again");
    assert.equal(after.committedBytes, before.committedBytes);
    for (const p of full) heap.free(p);
    heap.trim();
    assert.equal(checked(heap).committedBytes, checked(heap).metadataBytes);
  });

  it("the free end of a fit page is given back before the heap grows past its peak", () => {
    using heap = new Heap({ idleRatio: 0, idleFloorBytes: 0 });
    const keep = heap.malloc(2000);
    const blocks = Array.from({ length: 15 }, () => heap.malloc(60 * KiB)); // nearly a page
    for (const p of blocks) heap.free(p); // a 900 KiB free end above `keep`
    const before = checked(heap);
    // New growth elsewhere (small blocks need new pages): the free end goes first.
    const small = Array.from({ length: 4096 }, () => heap.malloc(64));
    const after = checked(heap);
    assert.ok(
      after.peakCommittedBytes <= before.peakCommittedBytes + 64 * KiB,
      `peak ${before.peakCommittedBytes} -> ${after.peakCommittedBytes}`,
    );
    assert.equal(heap.usableSize(keep), 2000);
    for (const p of small) heap.free(p);
    checked(heap);
  });

  it("the empty fit page kept for the next fit block gives its memory back too before the heap grows past its peak", () => {
    using heap = new Heap({ idleRatio: 0, idleFloorBytes: 0 });
    const blocks = Array.from({ length: 15 }, () => heap.malloc(60 * KiB)); // nearly a page
    for (const p of blocks) heap.free(p); // the page empties and is kept, 900 KiB committed
    const before = checked(heap);
    assert.ok(dataCommitted(heap) >= 900 * KiB, `${dataCommitted(heap)} committed`);
    const small = Array.from({ length: 4096 }, () => heap.malloc(64));
    const after = checked(heap);
    assert.ok(
      after.peakCommittedBytes <= before.peakCommittedBytes + 64 * KiB,
      `peak ${before.peakCommittedBytes} -> ${after.peakCommittedBytes}`,
    );
    // And the kept page still serves the next fit block.
    assert.equal(heap.malloc(60 * KiB), blocks[0]);
    for (const p of small) heap.free(p);
    checked(heap);
  });

  it("trim() purges the whole OS pages of a free chunk inside a page; a block cut from it later counts them again", () => {
    using heap = new Heap();
    const low = heap.malloc(2000);
    const middle = Array.from({ length: 10 }, () => heap.malloc(50 * KiB));
    const high = heap.malloc(2000);
    for (const p of middle) heap.bytes(p).fill(0xee);
    writeEnds(heap, low, 2000, 1);
    writeEnds(heap, high, 2000, 2);
    for (const p of middle) heap.free(p); // one free chunk of about 500 KiB between low and high
    const hole = middle[0];
    assert.ok(residentBytes(hole, 400 * KiB) >= 400 * KiB, "the hole is resident before trim()");
    const before = checked(heap);
    heap.trim();
    const after = checked(heap);
    assert.ok(after.purgedBytes >= 480 * KiB, `${after.purgedBytes} bytes purged`);
    assert.equal(after.committedBytes, before.committedBytes - after.purgedBytes);
    assert.ok(residentBytes(hole + 8 * KiB, 400 * KiB) === 0, "the hole left RAM");
    assert.equal(endsMismatch(heap, low, 2000, 1), null);
    assert.equal(endsMismatch(heap, high, 2000, 2), null);
    // Cutting blocks from the hole brings its pages back, zeroed where calloc asks.
    const again = heap.calloc(1, 100 * KiB);
    assert.ok(again >= hole && again < high, "from the hole");
    assertZero(heap, again, 100 * KiB, "calloc over purged pages");
    const refilled = checked(heap);
    assert.ok(refilled.purgedBytes <= after.purgedBytes - 90 * KiB, "its pages count again");
    assert.ok(residentBytes(again, 100 * KiB) >= 100 * KiB, "and are resident");
    heap.free(again);
    heap.free(low);
    heap.free(high);
    checked(heap);
  });

  it("calloc does not zero a block cut from memory no one has written since the OS gave it (a fresh page's free end), and does zero reused memory", () => {
    using heap = new Heap();
    const fill = Uint8Array.prototype.fill;
    let zeroed = 0;
    Uint8Array.prototype.fill = function (this: Uint8Array, ...args: Parameters<typeof fill>) {
      if (args[0] === 0 && (args[2] ?? this.length) - (args[1] ?? 0) >= 4000) zeroed++;
      return fill.apply(this, args);
    };
    try {
      const fresh = Array.from({ length: 20 }, (_, i) => heap.calloc(1, 4000 + 160 * i));
      assert.equal(zeroed, 0, "fresh memory is zero already");
      fresh.forEach((p, i) => assertZero(heap, p, 4000 + 160 * i, `fresh calloc ${i}`));
      for (const p of fresh) heap.bytes(p).fill(0xab);
      heap.free(fresh[3]);
      const again = heap.calloc(1, 4000);
      assert.equal(again, fresh[3], "from the freed chunk");
      assert.equal(zeroed, 1, "reused memory is zeroed");
      assertZero(heap, again, 4000, "calloc over a freed block");
    } finally {
      Uint8Array.prototype.fill = fill;
    }
    checked(heap);
  });

  it("with no 16 free units in a row for a fit page, blocks above 1 KiB come from class pages instead of 0", () => {
    using heap = new Heap({ arenaBytes: 16 * MiB, retainBytes: 0 });
    const small: number[] = [];
    for (let p = heap.malloc(1000); p !== 0; p = heap.malloc(1000)) small.push(p);
    // Empty every other 64 KiB unit: half the arena is free, no 1 MiB of it in one piece.
    const kept = small.filter((p) => {
      const even = Math.floor(p / (64 * KiB)) % 2 === 0;
      if (even) heap.free(p);
      return !even;
    });
    checked(heap);
    const p = heap.malloc(2000);
    assert.notEqual(p, 0, "malloc(2000) with half the arena free");
    writeEnds(heap, p, 2000, 5);
    const q = heap.calloc(1, 3000);
    assert.notEqual(q, 0, "calloc(1, 3000) with half the arena free");
    assert.ok(heap.bytes(q).every((b) => b === 0));
    assert.equal(endsMismatch(heap, p, 2000, 5), null);
    checked(heap);
    for (const b of [p, q, ...kept]) heap.free(b);
    checked(heap);
  });

  it("with the arena full, a free chunk that fits is found however far down its bin it is", () => {
    using heap = new Heap({ arenaBytes: 16 * MiB });
    // Chunks of 6000 (y) and 5200 (x) bytes share a bin; 1100-byte blocks keep them apart.
    const ys: number[] = [];
    const xs: number[] = [];
    for (;;) {
      const [y, g1, x, g2] = [5984, 1100, 5184, 1100].map((size) => heap.malloc(size));
      if (y === 0 || g1 === 0 || x === 0 || g2 === 0) break;
      ys.push(y), xs.push(x);
    }
    while (heap.malloc(1025) !== 0);
    // The fitting chunk first, so that nine that do not fit come before it in the bin.
    heap.free(ys[0]);
    for (let i = 0; i < 9; i++) heap.free(xs[i]);
    checked(heap);
    assert.equal(heap.malloc(5984), ys[0]);
    checked(heap);
  });

  it("with the arena full, the empty fit page kept for the next fit block serves class blocks instead of malloc returning 0", () => {
    for (const retainBytes of [16 * MiB, 0]) {
      using heap = new Heap({ arenaBytes: 16 * MiB, retainBytes });
      const f = heap.malloc(5000);
      heap.free(f); // the only fit page empties and is kept
      const page = f - 16; // its first chunk's header starts it
      const small: number[] = [];
      for (let p = heap.malloc(1000); p !== 0; p = heap.malloc(1000)) small.push(p);
      const inPage = small.filter((p) => p >= page && p < page + MiB).length;
      assert.ok(
        inPage >= 1000,
        `retainBytes ${retainBytes}: ${inPage} blocks of 1000 in the kept page`,
      );
      checked(heap);
      for (const p of small) heap.free(p);
      checked(heap);
    }
  });

  it("a block overrun by 16 zero bytes (the next chunk's header) does not hang the heap: it grows on, and check() and leaks() throw HeapError corrupt", () => {
    using heap = new Heap({ idleRatio: 0, idleFloorBytes: 0 });
    const a = heap.malloc(5000);
    heap.free(heap.malloc(100 * KiB)); // a committed free end above `a`
    for (let i = 0; i < 4; i++) pokeU32(a + 5008 + 4 * i, 0);
    // Growth past the peak: the idle budget walks the fit pages' free chunks.
    for (let i = 0; i < 20_000; i++) assert.notEqual(heap.malloc(512), 0);
    for (const op of [() => heap.check(), () => heap.leaks()]) {
      assert.throws(op, (e: unknown) => e instanceof HeapError && e.code === "corrupt");
    }
  });

  it("realloc of a block whose header says it is larger than it is throws HeapError corrupt", () => {
    using heap = new Heap();
    const a = heap.malloc(5000);
    const b = heap.malloc(5000);
    heap.free(heap.malloc(50 * KiB));
    pokeU32(a - 16, 5024 + 5024); // a's size now claims b as well
    assert.throws(
      () => heap.realloc(a, 20_000),
      (e: unknown) => e instanceof HeapError && e.code === "corrupt",
    );
    assert.ok(b !== 0);
  });

  it("secure and shared heaps keep blocks above 1 KiB in size-class pages", () => {
    using secure = new Heap({ secure: true });
    assert.equal(secure.usableSize(secure.malloc(5000)), 5120);
    using shared = new Heap({ shared: true });
    assert.equal(shared.usableSize(shared.malloc(5000)), 5120);
  });
});
