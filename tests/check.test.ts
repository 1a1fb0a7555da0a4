import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, HeapError } from "../mod.ts";
import { KiB, MiB } from "./helpers.ts";

/** Overwrites the u32 at `address` (outside any block view, as a stray native write would). */
function pokeU32(address: number, value: number): void {
  const raw = Deno.UnsafePointerView.getArrayBuffer(
    Deno.UnsafePointer.create(BigInt(address))!,
    16,
  );
  new DataView(raw).setUint32(0, value, true);
}

describe("check()", () => {
  it("passes on a fresh heap and on an emptied one", () => {
    using heap = new Heap();
    heap.check();
    const blocks = Array.from({ length: 100 }, (_, i) => heap.malloc(i * 97));
    for (const p of blocks) heap.free(p);
    heap.check();
    heap.trim();
    heap.check();
  });

  it("passes on a healthy heap with several live blocks in every size class", () => {
    using heap = new Heap();
    const live: number[] = [];
    for (let size = 16; size <= 128 * KiB; size = size < 256 ? size + 16 : Math.ceil(size * 1.1)) {
      for (let i = 0; i < 3; i++) live.push(heap.malloc(size));
    }
    heap.check();
    for (const p of live) heap.free(p);
    heap.check();
  });

  it("passes with two live blocks of a class above 8 KiB (a few blocks a page, or one) whose size is not a multiple of 8 KiB", () => {
    for (const size of [9000, 9216, 10_240, 20_000, 40_000, 65_536, 70_000, 100_000]) {
      using heap = new Heap();
      const a = heap.malloc(size);
      const b = heap.malloc(size);
      assert.doesNotThrow(() => heap.check(), `check() with two live blocks of ${size} B`);
      heap.free(a);
      heap.free(b);
      heap.check();
    }
  });

  // Blocks above 1 KiB of a private heap live in fit pages (see the next test);
  // a secure heap keeps them in class pages, with links it encodes and checks itself.
  for (const [kind, size] of [["small", 64], ["small (64 a page)", 1000]] as const) {
    it(`detects a corrupted free-list link in a ${kind} page and throws HeapError corrupt`, () => {
      const heap = new Heap();
      try {
        const a = heap.malloc(size);
        const b = heap.malloc(size);
        heap.bytes(a).fill(1);
        heap.free(b);
        heap.check();
        // The freed block's first 4 bytes hold the next-free link (a u32 arena offset).
        pokeU32(b, 0xfffffff0);
        assert.throws(
          () => heap.check(),
          (e: unknown) => e instanceof HeapError && e.code === "corrupt",
          "check() after corrupting a free-list link",
        );
      } finally {
        // Nothing more is asked of the corrupted heap but to go away.
        heap.close();
      }
      // A fresh heap is unaffected.
      using fresh = new Heap();
      fresh.free(fresh.malloc(size));
      fresh.check();
    });
  }

  for (const [what, word, value] of [["size", 0, 0x30], ["previous size", 1, 0x10]] as const) {
    it(`detects a damaged fit-chunk ${what} (the 16 bytes before a block above 1 KiB): check() and free() throw HeapError corrupt`, () => {
      const heap = new Heap();
      try {
        const a = heap.malloc(5000);
        const b = heap.malloc(5000);
        heap.check();
        pokeU32(b - 16 + word * 4, value);
        for (const op of [() => heap.check(), () => heap.free(b)]) {
          assert.throws(op, (e: unknown) => e instanceof HeapError && e.code === "corrupt");
        }
        assert.ok(a !== 0);
      } finally {
        heap.close();
      }
    });
  }

  it("does not change the heap or its statistics", () => {
    using heap = new Heap();
    const blocks = [heap.malloc(10), heap.malloc(5000), heap.malloc(MiB)];
    heap.free(heap.malloc(100));
    const before = heap.stats();
    heap.check();
    heap.check();
    assert.deepEqual(heap.stats(), before);
    for (const p of blocks) heap.free(p);
  });
});

/** Reads the u32 at `address` (outside any block view). */
function peekU32(address: number): number {
  return new Deno.UnsafePointerView(Deno.UnsafePointer.create(BigInt(address))!).getUint32();
}

function assertCorrupt(fn: () => unknown, what: string): void {
  assert.throws(fn, (e: unknown) => e instanceof HeapError && e.code === "corrupt", what);
}

describe("check(): damage it finds is reported without a fault, and malloc no longer follows it", () => {
  it("a free fit chunk's bin link overwritten to name unmapped memory: check() throws corrupt instead of faulting, then mallocs hand out distinct free blocks and check() passes", () => {
    using heap = new Heap();
    const a = heap.malloc(2000);
    const b = heap.malloc(2000);
    const c = heap.malloc(2000);
    heap.free(b);
    // Word 2 of the chunk header (16 bytes before the block) links the free
    // chunks of a bin: an arena offset 2 GiB up, reserved and never mapped in.
    pokeU32(b - 16 + 8, 0x8000_0000);
    assertCorrupt(() => heap.check(), "check() on the damaged link");
    const taken = Array.from({ length: 20 }, () => heap.malloc(2000));
    assert.equal(new Set([a, c, ...taken]).size, 22, "no block handed out twice");
    for (const p of taken) heap.bytes(p).fill(0x5a);
    heap.check();
    for (const p of [a, c, ...taken]) heap.free(p);
    heap.check();
  });

  for (const [kind, size] of [["16-byte", 16], ["1000-byte", 1000]] as const) {
    it(`a freed ${kind} block whose free-list link was made to point at itself: check() throws corrupt, then malloc hands out no block twice`, () => {
      using heap = new Heap();
      const [p0, p1, p2, p3] = Array.from({ length: 4 }, () => heap.malloc(size));
      heap.free(p1);
      heap.free(p2); // the list: p2, then p1
      // p2's first 4 bytes hold p1's arena offset: p2's own is that plus (p2 - p1).
      pokeU32(p2, peekU32(p2) + (p2 - p1));
      assertCorrupt(() => heap.check(), "check() on the cycle");
      const taken = Array.from({ length: 6 }, () => heap.malloc(size));
      assert.equal(new Set([p0, p3, ...taken]).size, 8, "no block handed out twice");
      heap.check();
      for (const p of [p0, p3, ...taken]) heap.free(p);
      heap.check();
    });
  }

  it("a block written after free while it waits on its class's allocation list: check() throws corrupt, then malloc hands out no block twice", () => {
    using heap = new Heap();
    // The first malloc links a batch of fresh 64-byte blocks; take all of it,
    // free it all, and the next malloc takes the freed blocks as the class's
    // allocation list.
    const first = heap.malloc(64);
    const batch = [first];
    while (batch[batch.length - 1] - first < 16 * KiB) batch.push(heap.malloc(64));
    for (const p of batch) heap.free(p);
    const kept = heap.malloc(64);
    const victim = batch.find((p) => p !== kept)!;
    pokeU32(victim, peekU32(victim) + 64 * 3); // a link to a block that is not next
    assertCorrupt(() => heap.check(), "check() on the damaged allocation list");
    const taken = Array.from({ length: batch.length + 10 }, () => heap.malloc(64));
    assert.equal(new Set([kept, ...taken]).size, taken.length + 1, "no block handed out twice");
    heap.check();
    for (const p of [kept, ...taken]) heap.free(p);
    heap.check();
    assert.equal(heap.stats().liveBlocks, 0);
  });
});
