/**
 * The helpers of src/views.ts: typed views with bounds and alignment
 * checked, C strings, copies, addresses from pointers, interior addresses,
 * and blocks freed by `using`.
 */

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  addressOf,
  copy,
  copyIn,
  copyInto,
  cString,
  dataView,
  getArrayBuffer,
  getCString,
  Heap,
  ScopedBlock,
  setCString,
  typedArray,
  zero,
} from "../mod.ts";
import { assertHeapError, KiB, MiB } from "./helpers.ts";

const MODES = [{}, { debug: true }, { secure: true }] as const;
/** A small, a fit and a large block. */
const SIZES = [100, 5000, 300 * KiB];

describe("typedArray and dataView", () => {
  for (const options of MODES) {
    for (const size of SIZES) {
      it(`cover the block and no more (${size} bytes, ${JSON.stringify(options)})`, () => {
        using heap = new Heap(options);
        const p = heap.malloc(size);
        const usable = heap.usableSize(p);
        const doubles = typedArray(heap, Float64Array, p);
        assert.equal(doubles.length, Math.floor(usable / 8));
        doubles[doubles.length - 1] = 2.5;
        const view = dataView(heap, p);
        assert.equal(view.byteLength, usable);
        assert.equal(view.getFloat64((doubles.length - 1) * 8, true), 2.5);
        view.setInt32(4, -7, true);
        assert.equal(typedArray(heap, Int32Array, p, 2)[1], -7);
        assert.throws(() => typedArray(heap, Float64Array, p, doubles.length + 1), RangeError);
        assert.throws(() => dataView(heap, p, usable + 1), RangeError);
        heap.free(p);
      });
    }
  }

  it("a typed array at an interior address starts there and ends at the block's end", () => {
    using heap = new Heap();
    const p = heap.malloc(64);
    const ints = typedArray(heap, Int32Array, p + 16);
    assert.equal(ints.length, (heap.usableSize(p) - 16) / 4);
    ints[0] = 5;
    assert.equal(typedArray(heap, Int32Array, p)[4], 5);
  });

  it("a misaligned address is a RangeError naming the element size", () => {
    using heap = new Heap();
    const p = heap.malloc(64);
    assert.throws(() => typedArray(heap, Float64Array, p + 4), /multiple of 8/);
    assert.throws(() => typedArray(heap, BigInt64Array, p + 2), RangeError);
    assert.equal(typedArray(heap, Int16Array, p + 2, 3).length, 3);
  });

  it("views of a freed block or of no block throw HeapError", () => {
    using heap = new Heap();
    const p = heap.malloc(64);
    heap.free(p);
    assertHeapError(() => typedArray(heap, Uint8Array, p), "freed-block", p);
    assertHeapError(() => dataView(heap, 0), "invalid-address", 0);
    assertHeapError(() => getArrayBuffer(heap, 12345), "invalid-address", 12345);
  });
});

describe("C strings", () => {
  for (const options of MODES) {
    it(`cString copies in NUL-terminated UTF-8 that getCString reads back ${JSON.stringify(options)}`, () => {
      using heap = new Heap(options);
      for (const text of ["", "hello", "héllo wörld ✓", "x".repeat(3000)]) {
        const p = cString(heap, text);
        const bytes = new TextEncoder().encode(text);
        assert.equal(heap.bytes(p)[bytes.length], 0);
        assert.equal(getCString(heap, p), text);
        heap.free(p);
      }
    });
  }

  it("getCString reads from an interior address and an offset", () => {
    using heap = new Heap();
    const p = cString(heap, "key=value");
    assert.equal(getCString(heap, p + 4), "value");
    assert.equal(getCString(heap, p, 4), "value");
    heap.free(p);
  });

  it("getCString never reads past the block: no NUL is a RangeError", () => {
    using heap = new Heap({ debug: true });
    const p = heap.malloc(8);
    heap.bytes(p).fill(0x41);
    assert.throws(() => getCString(heap, p), /no NUL/);
    heap.free(p);
  });

  it("setCString writes in place, or throws and writes nothing when it does not fit", () => {
    using heap = new Heap({ debug: true });
    const p = heap.malloc(6);
    assert.equal(setCString(heap, p, "hello"), 6);
    assert.equal(getCString(heap, p), "hello");
    assert.throws(() => setCString(heap, p, "hello!"), RangeError);
    assert.equal(getCString(heap, p), "hello");
    assert.equal(setCString(heap, p, "ab", 2), 3);
    assert.equal(getCString(heap, p), "heab");
    heap.free(p);
    heap.check();
  });
});

describe("copies", () => {
  it("copyIn copies JS bytes into a new block; copyInto copies a block out", () => {
    using heap = new Heap();
    const source = new Uint8Array([1, 2, 3, 4, 5]);
    const p = copyIn(heap, source.subarray(1));
    assert.deepEqual([...heap.bytes(p, 4)], [2, 3, 4, 5]);
    const out = copyInto(heap, p, new Uint8Array(3));
    assert.deepEqual([...out], [2, 3, 4]);
    assert.throws(() => copyInto(heap, p, new Uint8Array(heap.usableSize(p) + 1)), RangeError);
    const q = copyIn(heap, new Float64Array([1.5]).buffer);
    assert.equal(typedArray(heap, Float64Array, q, 1)[0], 1.5);
    heap.free(p);
    heap.free(q);
  });

  it("zero clears a block or part of it, inside its bounds", () => {
    using heap = new Heap({ debug: true });
    const p = heap.malloc(32);
    heap.bytes(p).fill(9);
    zero(heap, p + 8, 8);
    assert.deepEqual([...heap.bytes(p, 17)], [9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    zero(heap, p);
    assert.ok(heap.bytes(p).every((b) => b === 0));
    assert.throws(() => zero(heap, p, 33), RangeError);
    heap.free(p);
    heap.check(); // no red zone touched
  });

  for (const size of SIZES) {
    it(`copy moves bytes between blocks and within one, overlapping (${size} bytes)`, () => {
      using heap = new Heap();
      const a = heap.malloc(size);
      const b = heap.malloc(size);
      const bytes = heap.bytes(a, size);
      for (let i = 0; i < size; i++) bytes[i] = i & 0xff;
      copy(heap, b, a, size);
      assert.deepEqual(heap.bytes(b, size), heap.bytes(a, size));
      copy(heap, a + 1, a, 10); // overlapping, forwards: memmove
      assert.deepEqual([...heap.bytes(a, 11)], [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      assert.throws(() => copy(heap, b, a, heap.usableSize(a) + 1), RangeError);
      heap.free(a);
      heap.free(b);
    });
  }
});

describe("addresses from C", () => {
  it("addressOf turns a pointer object, a bigint or null into the address", () => {
    using heap = new Heap();
    const p = heap.malloc(16);
    assert.equal(addressOf(heap.pointer(p)), p);
    assert.equal(addressOf(BigInt(p)), p);
    assert.equal(addressOf(null), 0);
    assert.equal(addressOf(p), p);
    assert.throws(() => addressOf(2n ** 60n), RangeError);
    heap.free(p);
  });

  for (const options of MODES) {
    for (const size of [...SIZES, 16]) {
      it(`blockOf finds the block holding any of its bytes (${size} bytes, ${JSON.stringify(options)})`, () => {
        using heap = new Heap(options);
        const before = heap.malloc(size);
        const p = heap.malloc(size);
        const after = heap.malloc(size);
        const usable = heap.usableSize(p);
        for (const at of [0, 1, Math.floor(usable / 2), usable - 1]) {
          assert.equal(heap.blockOf(p + at), p, `byte ${at}`);
        }
        assert.equal(heap.blockOf(before), before);
        assert.equal(heap.blockOf(after + 1), after);
        heap.free(p);
        assert.equal(heap.blockOf(p + 1), 0, "a freed block holds nothing");
        assert.equal(heap.blockOf(0), 0);
        assert.equal(heap.blockOf(-5), 0);
        assert.equal(heap.blockOf(12345), 0);
        heap.free(before);
        heap.free(after);
      });
    }
  }

  it("an address C found inside a string (strchr) leads back to the string's block", () => {
    using heap = new Heap();
    const s = cString(heap, "name=tsmalloc");
    const libc = Deno.dlopen("libc.so.6", {
      strchr: { parameters: ["pointer", "i32"], result: "pointer" },
    });
    try {
      const found = addressOf(libc.symbols.strchr(heap.pointer(s), "=".charCodeAt(0)));
      assert.equal(found, s + 4);
      assert.equal(heap.blockOf(found), s);
      assert.equal(getCString(heap, found + 1), "tsmalloc");
    } finally {
      libc.close();
    }
    heap.free(s);
  });
});

describe("ScopedBlock", () => {
  it("a block declared with `using` is freed when its scope ends, even by an exception", () => {
    using heap = new Heap();
    let address = 0;
    {
      using block = new ScopedBlock(heap, 64, { zero: true });
      address = block.address;
      assert.ok(block.bytes().every((b) => b === 0));
      assert.equal(addressOf(block.pointer), address);
      assert.equal(heap.stats().liveBlocks, 1);
    }
    assert.equal(heap.stats().liveBlocks, 0);
    assert.throws(() => {
      using block = new ScopedBlock(heap, MiB);
      block.bytes()[0] = 1;
      throw new Error("boom");
    }, /boom/);
    assert.equal(heap.stats().liveBlocks, 0);
    assert.equal(heap.blockOf(address), 0);
  });

  it("free() early, then the scope's end, frees once; a closed heap is no error", () => {
    const heap = new Heap();
    {
      using block = new ScopedBlock(heap, 32);
      block.free();
      block.free();
    }
    assert.equal(heap.stats().liveBlocks, 0);
    {
      using _block = new ScopedBlock(heap, 32);
      heap.close();
    }
  });

  it("out of memory is a RangeError", () => {
    using heap = new Heap({ arenaBytes: 16 * MiB });
    assert.throws(() => new ScopedBlock(heap, 2 ** 50), /out of memory/);
  });
});
