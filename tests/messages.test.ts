/**
 * Same answers in every mode, and messages that say what happened: error
 * codes of lookups, messages without made-up addresses, options checked by
 * name, statistics of the user's blocks in debug mode.
 */

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, HeapError } from "../mod.ts";
import { assertHeapError, KiB, MiB } from "./helpers.ts";

const MODES = [{}, { debug: true }, { secure: true }] as const;

function caught(fn: () => unknown): HeapError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof HeapError, String(error));
    return error;
  }
  assert.fail("nothing was thrown");
}

describe("stats() counts the user's blocks in every mode", () => {
  for (const options of MODES) {
    const mode = JSON.stringify(options);
    it(`malloc, realloc, free: liveBlocks, allocatedBytes and the call counts agree ${mode}`, () => {
      using heap = new Heap(options);
      const p = heap.malloc(64);
      let s = heap.stats();
      assert.equal(s.liveBlocks, 1);
      assert.equal(s.allocatedBytes, heap.usableSize(p));
      assert.equal(s.allocCount, 1);
      const q = heap.realloc(heap.malloc(100), 300 * KiB);
      const r = heap.calloc(10, 10);
      s = heap.stats();
      assert.equal(s.liveBlocks, 3);
      assert.equal(
        s.allocatedBytes,
        heap.usableSize(p) + heap.usableSize(q) + heap.usableSize(r),
      );
      heap.free(p);
      heap.free(q);
      heap.free(r);
      s = heap.stats();
      assert.equal(s.liveBlocks, 0, "assert(stats().liveBlocks === 0) holds after freeing all");
      assert.equal(s.allocatedBytes, 0);
      assert.equal(s.allocCount, s.freeCount);
      assert.ok(s.peakAllocatedBytes >= 300 * KiB);
    });
  }

  it("debug mode counts the size asked for, as its usableSize says", () => {
    using heap = new Heap({ debug: true });
    heap.malloc(64);
    const s = heap.stats();
    assert.equal(s.liveBlocks, 1);
    assert.equal(s.allocatedBytes, 64);
  });

  it("a block retired for damage in debug mode is no longer live", () => {
    using heap = new Heap({ debug: true });
    const p = heap.malloc(16);
    new Uint8Array(heap.bytes(p).buffer, heap.bytes(p).byteOffset, 17)[16] = 1; // one past
    assert.throws(() => heap.free(p), (e: HeapError) => e.code === "overflow");
    assert.equal(heap.stats().liveBlocks, 0);
  });
});

describe("error codes and messages", () => {
  for (const options of MODES) {
    const mode = JSON.stringify(options);
    it(`bytes, usableSize and pointer of a freed block say freed-block, not double-free ${mode}`, () => {
      using heap = new Heap(options);
      for (const size of [64, 5000, MiB]) {
        const p = heap.malloc(size);
        heap.free(p);
        for (const op of [() => heap.bytes(p), () => heap.usableSize(p), () => heap.pointer(p)]) {
          const e = assertHeapError(op, "freed-block", p);
          assert.match(e.message, /the block was freed/);
          assert.doesNotMatch(e.message, /double|already/);
        }
        assertHeapError(() => heap.free(p), "double-free", p);
      }
    });

    it(`pointer(0), bytes(0), usableSize(0) are invalid-address without "at 0x0" ${mode}`, () => {
      using heap = new Heap(options);
      for (const op of [() => heap.pointer(0), () => heap.bytes(0), () => heap.usableSize(0)]) {
        const e = assertHeapError(op, "invalid-address", 0);
        assert.doesNotMatch(e.message, /0x0|invalid-free/);
      }
    });

    it(`a negative or fractional address is shown as it is, never 0x-1 ${mode}`, () => {
      using heap = new Heap(options);
      for (const address of [-1, -4096, 0.5]) {
        const e = caught(() => heap.free(address));
        assert.equal(e.code, "invalid-free");
        assert.doesNotMatch(e.message, /0x-|0x0\./);
        assert.match(
          e.message,
          new RegExp(`${String(address).replace(".", "\\.")} \\(not an address\\)`),
        );
      }
    });
  }

  it("errors without an address (a closed heap) say no 'at 0x0'", () => {
    const heap = new Heap();
    heap.close();
    const e = caught(() => heap.malloc(1));
    assert.equal(e.code, "closed");
    assert.equal(e.message, "closed: malloc: the heap is closed");
  });

  it("one block is '1 block', one byte '1 byte'", () => {
    using plain = new Heap();
    plain.malloc(1);
    assert.match(plain.leakReport(), /^1 live block, 16 bytes /);
    using debug = new Heap({ debug: true });
    debug.malloc(1);
    const report = debug.leakReport();
    assert.match(report, /^1 live block, 1 byte, from 1 site:/);
    assert.match(report, /\n1 byte in 1 block allocated at:/);
  });

  it("an overflow by one byte says 1 byte past its end; by 5 bytes, 5 bytes", () => {
    using heap = new Heap({ debug: true });
    for (const past of [1, 5]) {
      const p = heap.malloc(24);
      const view = heap.bytes(p);
      new Uint8Array(view.buffer, view.byteOffset, 24 + past).fill(0, 24);
      const e = caught(() => heap.free(p));
      assert.equal(e.code, "overflow");
      assert.match(
        e.message,
        new RegExp(`up to ${past} byte${past === 1 ? "" : "s"} past its end`),
      );
    }
  });

  it("usableSize of a fit block whose header was overwritten throws corrupt, never a negative size", () => {
    using heap = new Heap();
    const p = heap.malloc(5000);
    const q = heap.malloc(5000);
    const view = heap.bytes(p);
    // An underflow of q: the 16 bytes before q are its chunk header.
    new Uint8Array(view.buffer, view.byteOffset + (q - p) - 16, 16).fill(0);
    const e = assertHeapError(() => heap.usableSize(q), "corrupt", q);
    assert.match(e.message, /header/);
    assertHeapError(() => heap.bytes(q), "corrupt", q);
    new Uint8Array(view.buffer, view.byteOffset + (q - p) - 16, 4).fill(0xff);
    assertHeapError(() => heap.usableSize(q), "corrupt", q);
  });
});

describe("options are checked by name", () => {
  it("an unknown option is a TypeError naming it", () => {
    for (const typo of ["idleratio", "Debug", "retain", "limit"]) {
      assert.throws(
        () => new Heap({ [typo]: 1 } as never),
        (e: Error) => e instanceof TypeError && e.message.includes(`unknown option ${typo}`),
        typo,
      );
    }
    assert.throws(
      () => new Heap({ debug: { stack: false } } as never),
      (e: Error) => e instanceof TypeError && e.message.includes("unknown option debug.stack"),
    );
  });

  const wrong: [string, unknown][] = [
    ["debug", "yes"],
    ["debug", 1],
    ["secure", "x"],
    ["shared", 1],
    ["lowAddresses", "no"],
    ["retainBytes", "x"],
    ["arenaBytes", "16777216"],
    ["idleRatio", "0.5"],
    ["idleFloorBytes", null],
    ["limitBytes", "1"],
  ];
  for (const [name, value] of wrong) {
    it(`${name}: ${JSON.stringify(value)} is a TypeError naming ${name}`, () => {
      assert.throws(
        () => new Heap({ [name]: value } as never),
        (e: Error) => e instanceof TypeError && e.message.includes(`option ${name} must be`),
      );
    });
  }

  it("numbers out of range are RangeErrors; limitBytes takes a non-negative integer or Infinity", () => {
    assert.throws(() => new Heap({ retainBytes: -1 }), RangeError);
    assert.throws(() => new Heap({ idleRatio: NaN }), RangeError);
    for (const limitBytes of [-1, 1.5, NaN]) {
      assert.throws(() => new Heap({ limitBytes } as never), RangeError, String(limitBytes));
    }
    for (const limitBytes of [0, 64 * MiB, Infinity]) {
      new Heap({ limitBytes } as never).close();
    }
  });

  it("options must be an object; undefined values take the defaults", () => {
    assert.throws(() => new Heap(5 as never), TypeError);
    assert.throws(() => new Heap(null as never), TypeError);
    new Heap({ debug: undefined, retainBytes: undefined }).close();
  });

  it("Heap.attach checks its options too", () => {
    using heap = new Heap({ shared: true });
    assert.throws(() => Heap.attach(heap.share(), { debugg: true } as never), TypeError);
  });
});
