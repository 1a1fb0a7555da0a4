import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, HeapError, type HeapErrorCode } from "../mod.ts";
import { assertHeapError, assertStillWorks, KiB, MiB } from "./helpers.ts";

/** Every method that takes the address of a live block. */
const ADDRESS_OPS: [string, (heap: Heap, address: number) => unknown][] = [
  ["free", (h, a) => h.free(a)],
  ["realloc", (h, a) => h.realloc(a, 32)],
  ["realloc to 0", (h, a) => h.realloc(a, 0)],
  ["usableSize", (h, a) => h.usableSize(a)],
  ["bytes", (h, a) => h.bytes(a)],
  ["pointer", (h, a) => h.pointer(a)],
];

/**
 * Asserts that every address method rejects `address` with exactly `code`
 * and `.address === address`, and that each rejection leaves the heap
 * consistent and its statistics unchanged.
 */
function assertRejected(heap: Heap, address: number, code: "invalid-free" | "double-free") {
  for (const [name, op] of ADDRESS_OPS) {
    const before = heap.stats();
    assertHeapError(
      () => op(heap, address),
      codeFor(name, code),
      address,
      `${name}(0x${address.toString(16)})`,
    );
    heap.check();
    assert.deepEqual(heap.stats(), before, `${name}(0x${address.toString(16)}) changed the stats`);
  }
}

/**
 * What a method that only looks at a block (usableSize, bytes, pointer)
 * says where free says `code`: nothing is freed, so no "double-free".
 */
function codeFor(name: string, code: "invalid-free" | "double-free"): HeapErrorCode {
  if (name === "free" || name.startsWith("realloc")) return code;
  return code === "double-free" ? "freed-block" : "invalid-address";
}

/** Any of the codes of an address that is no live block. */
const NOT_LIVE = new Set(["double-free", "invalid-free", "freed-block", "invalid-address"]);

/** A block of a size-class page, of a fit page (above 1 KiB), and a large block. */
const KINDS = [["small", 64], ["fit", 100 * KiB], ["large", MiB]] as const;

/** A heap holding a small anchor block (at the bottom of the arena) and one block of `size`. */
function fixture(size: number) {
  const heap = new Heap();
  const anchor = heap.malloc(64);
  const p = heap.malloc(size);
  heap.bytes(p).fill(0x42);
  return { heap, anchor, p };
}

/** The fixture's block is still live, intact, and freeable; the heap still works. */
function assertFixtureIntact(heap: Heap, p: number, size: number) {
  assert.ok(heap.usableSize(p) >= size);
  assert.ok(heap.bytes(p).every((b) => b === 0x42), "the live block was not touched");
  assertStillWorks(heap);
  heap.free(p);
  heap.check();
}

describe("size and count validation", () => {
  const notNumbers = ["10", undefined, null, 10n, {}, [8]];

  it("malloc of a BigInt or Symbol says the size must be a number (not V8's own TypeError)", () => {
    using heap = new Heap();
    for (const x of [10n, Symbol("size")]) {
      assert.throws(
        () => heap.malloc(x as unknown as number),
        (e) => e instanceof TypeError && /size must be a number/.test(e.message),
      );
    }
    heap.check();
  });
  const badNumbers = [-1, NaN, 1.5, Infinity, -Infinity, 2 ** 53, -0.5, 2 ** 64];
  const calls: [string, (heap: Heap, p: number, x: number) => unknown][] = [
    ["malloc(x)", (h, _p, x) => h.malloc(x)],
    ["calloc(x, 1)", (h, _p, x) => h.calloc(x, 1)],
    ["calloc(1, x)", (h, _p, x) => h.calloc(1, x)],
    ["realloc(0, x)", (h, _p, x) => h.realloc(0, x)],
    ["realloc(p, x)", (h, p, x) => h.realloc(p, x)],
    ["alignedAlloc(16, x)", (h, _p, x) => h.alignedAlloc(16, x)],
    ["alignedAlloc(4096, x)", (h, _p, x) => h.alignedAlloc(4096, x)],
  ];

  for (
    const [kind, values, error] of [
      ["not a number", notNumbers, TypeError],
      ["a number but not a non-negative safe integer", badNumbers, RangeError],
    ] as const
  ) {
    it(`a size or count that is ${kind} throws ${error.name} and changes nothing`, () => {
      using heap = new Heap();
      const p = heap.malloc(100);
      heap.bytes(p).fill(0x42);
      const before = heap.stats();
      for (const [name, call] of calls) {
        for (const x of values) {
          assert.throws(
            () => call(heap, p, x as number),
            (e: unknown) => e instanceof error && !(e instanceof HeapError),
            `${name} with x = ${String(x)} should throw ${error.name}`,
          );
        }
      }
      assert.deepEqual(heap.stats(), before);
      heap.check();
      assertFixtureIntact(heap, p, 100);
    });
  }

  it("an address that is not a number throws TypeError", () => {
    using heap = new Heap();
    const p = heap.malloc(100);
    heap.bytes(p).fill(0x42);
    const before = heap.stats();
    for (const [name, op] of ADDRESS_OPS) {
      for (const x of [String(p), undefined, null, BigInt(p), { valueOf: () => p }]) {
        assert.throws(() => op(heap, x as unknown as number), TypeError, `${name}(${String(x)})`);
      }
    }
    assert.deepEqual(heap.stats(), before);
    heap.check();
    assertFixtureIntact(heap, p, 100);
  });

  it("bytes() rejects a length that is negative, fractional or beyond the block with RangeError", () => {
    using heap = new Heap();
    for (const size of [100, 20 * KiB, MiB]) {
      const p = heap.malloc(size);
      const usable = heap.usableSize(p);
      assert.equal(heap.bytes(p, 0).length, 0);
      assert.equal(heap.bytes(p, usable).length, usable);
      for (const length of [-1, 1.5, usable + 1, NaN, Infinity]) {
        assert.throws(() => heap.bytes(p, length), RangeError, `bytes(p, ${length})`);
      }
      heap.free(p);
    }
    heap.check();
  });

  it("Heap options outside their range throw RangeError", () => {
    for (
      const options of [
        { arenaBytes: MiB },
        { arenaBytes: 16 * MiB + 1 },
        { arenaBytes: 16 * MiB + 4096 },
        { arenaBytes: 8 * 1024 * MiB },
        { arenaBytes: NaN },
        { retainBytes: -1 },
        { retainBytes: 1.5 },
        { retainBytes: Infinity },
        { idleRatio: -0.5 },
        { idleRatio: NaN },
        { idleFloorBytes: -1 },
        { idleFloorBytes: 0.5 },
      ]
    ) {
      assert.throws(() => new Heap(options), RangeError, JSON.stringify(options));
    }
    using heap = new Heap({ arenaBytes: 16 * MiB + 64 * KiB, retainBytes: 0 });
    assert.notEqual(heap.malloc(10), 0);
    heap.check();
  });
});

describe("addresses that are not live blocks", () => {
  it("free(0) does nothing", () => {
    using heap = new Heap();
    const p = heap.malloc(10);
    const before = heap.stats();
    for (let i = 0; i < 3; i++) heap.free(0);
    assert.deepEqual(heap.stats(), before);
    heap.free(p);
    heap.free(0);
    heap.check();
  });

  it("usableSize, bytes and pointer of address 0 are invalid addresses (no free), before and after large blocks", () => {
    using heap = new Heap();
    const lookups: [string, (h: Heap) => unknown][] = [
      ["usableSize", (h) => h.usableSize(0)],
      ["bytes", (h) => h.bytes(0)],
      ["pointer", (h) => h.pointer(0)],
    ];
    const expectInvalid = () => {
      for (const [name, call] of lookups) {
        assert.throws(() => call(heap), (e: unknown) => {
          assert.ok(e instanceof HeapError, `${name}(0) throws a HeapError`);
          assert.equal(e.code, "invalid-address", `${name}(0)`);
          assert.equal(e.address, 0);
          assert.doesNotMatch(e.message, /0x0|invalid-free/);
          return true;
        });
      }
    };
    expectInvalid();
    const big = heap.malloc(200 * KiB); // the large-block table now exists, with empty slots
    expectInvalid();
    heap.free(big);
    expectInvalid();
    heap.check();
  });

  it("addresses inside the arena that were never handed out are invalid frees", () => {
    const { heap, anchor, p } = fixture(100 * KiB);
    using _ = heap;
    for (
      const address of [
        anchor + 64 * 100, // same small page, past the blocks handed out so far
        p + 100 * KiB + 64, // same fit page, inside the free space past the block
        anchor + 64 * KiB * 300, // a unit that was never carved
        anchor + 1000 * MiB, // far into the reservation
        anchor - 4096, // the arena's own metadata
        anchor - 64,
      ]
    ) {
      assertRejected(heap, address, "invalid-free");
    }
    assertFixtureIntact(heap, p, 100 * KiB);
  });

  it("addresses far outside any heap are invalid frees", () => {
    const { heap, p } = fixture(100);
    using _ = heap;
    for (const address of [12345678, 4096, 16, 2 ** 47 + 4096, 2 ** 52, -4096, -16, NaN]) {
      assertRejected(heap, address, "invalid-free");
    }
    assertFixtureIntact(heap, p, 100);
  });

  for (const [kind, size] of KINDS) {
    it(`an interior pointer of a ${kind} block is an invalid free`, () => {
      const { heap, p } = fixture(size);
      using _ = heap;
      assertRejected(heap, p + 16, "invalid-free");
      assertRejected(heap, p + 32, "invalid-free");
      if (size >= 8 * KiB) assertRejected(heap, p + 4096, "invalid-free");
      assertRejected(heap, p + size - 16, "invalid-free");
      assertFixtureIntact(heap, p, size);
    });

    it(`a misaligned address into a ${kind} block is an invalid free`, () => {
      const { heap, p } = fixture(size);
      using _ = heap;
      for (const delta of [1, 8, 15, -1, 0.5]) assertRejected(heap, p + delta, "invalid-free");
      assertFixtureIntact(heap, p, size);
    });

    it(`the address of another heap's ${kind} block is an invalid free`, () => {
      const { heap, p } = fixture(size);
      using _ = heap;
      using other = new Heap();
      const q = other.malloc(size);
      other.bytes(q).fill(0x77);
      assertRejected(heap, q, "invalid-free");
      assert.ok(other.bytes(q).every((b) => b === 0x77), "the other heap's block is untouched");
      other.free(q);
      other.check();
      assertFixtureIntact(heap, p, size);
    });

    if (kind === "large") {
      it("the page just past a large block is an invalid free", () => {
        const { heap, p } = fixture(size);
        using _ = heap;
        assertRejected(heap, p + heap.usableSize(p), "invalid-free");
        assertRejected(heap, p - 4096, "invalid-free");
        assertFixtureIntact(heap, p, size);
      });
    }

    it(`freeing a ${kind} block twice in a row is a double free`, () => {
      const { heap, p } = fixture(size);
      using _ = heap;
      heap.free(p);
      assertRejected(heap, p, "double-free");
      assertStillWorks(heap);
    });

    // A fit block freed between free neighbours merges with them: its address
    // is then inside a larger free chunk, no block's start, and is reported so.
    const again = kind === "fit" ? "a double or invalid free" : "a double free";
    it(`freeing a ${kind} block again after other blocks were freed is ${again}`, () => {
      using heap = new Heap();
      const blocks = Array.from({ length: 6 }, () => heap.malloc(size));
      const keep = heap.malloc(size);
      for (const p of blocks) heap.free(p);
      for (const p of [blocks[0], blocks[3], blocks[5]]) {
        if (kind !== "fit") {
          assertRejected(heap, p, "double-free");
          continue;
        }
        const before = heap.stats();
        for (const [name, op] of ADDRESS_OPS) {
          assert.throws(
            () => op(heap, p),
            (e: unknown) =>
              e instanceof HeapError && e.address === p &&
              NOT_LIVE.has(e.code),
            name,
          );
        }
        heap.check();
        assert.deepEqual(heap.stats(), before);
      }
      assert.equal(heap.stats().liveBlocks, 1);
      heap.free(keep);
      assertStillWorks(heap);
    });
  }

  it("a stale address is still rejected after its page emptied and was given back", () => {
    using heap = new Heap({ retainBytes: 0 });
    const keepers = Array.from({ length: 2000 }, () => heap.malloc(1000)); // several pages
    const p = keepers[10];
    for (const q of keepers) heap.free(q);
    heap.trim();
    for (const q of [p, keepers[0], keepers[1999]]) {
      for (const [name, op] of ADDRESS_OPS) {
        assert.throws(
          () => op(heap, q),
          (e: unknown) =>
            e instanceof HeapError && NOT_LIVE.has(e.code) &&
            e.address === q,
          `${name} of a block on a released page`,
        );
      }
    }
    heap.check();
    assertStillWorks(heap);
  });

  it("a large block freed long ago is still rejected with a HeapError", () => {
    using heap = new Heap();
    const p = heap.malloc(MiB);
    heap.free(p);
    for (let i = 0; i < 100; i++) heap.free(heap.malloc(200 * KiB + i * 4096));
    assert.throws(
      () => heap.free(p),
      (e: unknown) =>
        e instanceof HeapError && NOT_LIVE.has(e.code) &&
        e.address === p,
    );
    heap.check();
  });
});

describe("a closed heap", () => {
  it("throws HeapError code closed from every method", () => {
    const heap = new Heap();
    const p = heap.malloc(64);
    const big = heap.malloc(MiB);
    heap.close();
    const calls: [string, () => unknown][] = [
      ["malloc", () => heap.malloc(16)],
      ["calloc", () => heap.calloc(1, 16)],
      ["realloc", () => heap.realloc(p, 128)],
      ["realloc(0, n)", () => heap.realloc(0, 16)],
      ["free", () => heap.free(p)],
      ["free(large)", () => heap.free(big)],
      ["free(0)", () => heap.free(0)],
      ["alignedAlloc", () => heap.alignedAlloc(64, 16)],
      ["usableSize", () => heap.usableSize(p)],
      ["bytes", () => heap.bytes(p)],
      ["pointer", () => heap.pointer(p)],
      ["stats", () => heap.stats()],
      ["check", () => heap.check()],
      ["trim", () => heap.trim()],
    ];
    for (const [name, call] of calls) {
      assert.throws(
        call,
        (e: unknown) => e instanceof HeapError && e.code === "closed",
        `${name} after close()`,
      );
    }
  });

  it("malloc and free throw HeapError code closed whatever the argument, BigInt and Symbol too", () => {
    for (const options of [{}, { debug: true }, { secure: true }]) {
      const heap = new Heap(options);
      heap.close();
      for (const x of [16, 0, 10n, Symbol("size"), "16", {}, NaN]) {
        for (
          const [name, call] of [["malloc", () => heap.malloc(x as number)], [
            "free",
            () => heap.free(x as number),
          ]] as const
        ) {
          assert.throws(
            call,
            (e: unknown) => e instanceof HeapError && e.code === "closed",
            `${name}(${String(x)}) after close() (${JSON.stringify(options)})`,
          );
        }
      }
    }
  });

  it("close() and [Symbol.dispose] after close() do nothing, and `using` closes the heap", () => {
    const heap = new Heap();
    heap.close();
    assert.doesNotThrow(() => heap.close());
    assert.doesNotThrow(() => heap[Symbol.dispose]());
    assert.doesNotThrow(() => heap[Symbol.dispose]());

    let escaped: Heap;
    {
      using scoped = new Heap();
      escaped = scoped;
      scoped.malloc(100);
      scoped.malloc(MiB);
    }
    assert.throws(
      () => escaped.malloc(1),
      (e: unknown) => e instanceof HeapError && e.code === "closed",
    );
    {
      using scoped = new Heap();
      scoped.close(); // closing early is fine: dispose then does nothing
    }
  });

  it("HeapError is an Error with a stable name, code, address and message", () => {
    using heap = new Heap();
    const p = heap.malloc(64);
    heap.free(p);
    const e = assertHeapError(() => heap.free(p), "double-free", p);
    assert.ok(e instanceof Error);
    assert.equal(e.name, "HeapError");
    assert.match(e.message, /double-free/);
    assert.match(e.message, new RegExp(p.toString(16)));
    heap.check();
  });
});
