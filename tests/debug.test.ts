/**
 * Debug mode, tested the way hardened_malloc's and Scudo's death tests test
 * their checks: each kind of misuse is done for real (native writes through
 * libc `memset`, frees of bad addresses) and must be reported with exactly
 * its code, the block's address and size, and the JS stacks debug mode
 * recorded. Unlike those allocators, tsmalloc does not abort: after every
 * report the heap must keep working and the damaged block must stay retired.
 *
 * Nothing here depends on timing; the soak test is seeded.
 */

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, HeapError, type HeapErrorCode } from "../mod.ts";
import { assertHeapError, KiB, MiB, Rng, rss } from "./helpers.ts";
import { mapped, poke, readable } from "./native_memory.ts";

// ---- native access ----------------------------------------------------------

/** A view of raw native memory, outside what heap.bytes() lets a caller see. */
function raw(address: number, length: number): Uint8Array {
  const p = Deno.UnsafePointer.create(BigInt(address))!;
  return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, length));
}

// ---- fixtures ---------------------------------------------------------------

const JUNK = 0xaa;
const POISON = 0xdd;
const CANARY = 0xfe;

/** Allocates the block a test damages; its name must show up in allocation stacks. */
function allocateVictim(heap: Heap, size: number): number {
  const p = heap.malloc(size);
  assert.notEqual(p, 0);
  return p;
}

/** Frees the block a test damages; its name must show up in free stacks. */
function freeVictim(heap: Heap, p: number): void {
  heap.free(p);
}

/**
 * Runs `fn`, which must throw a HeapError with exactly `code`, `address` and
 * (when given) `size`; when the block is known, its allocation stack must be
 * in the error and in the message.
 */
function expectReport(
  fn: () => unknown,
  code: HeapErrorCode,
  address: number,
  size?: number,
): HeapError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, `expected HeapError ${code}, nothing was thrown`);
  assert.ok(caught instanceof HeapError, `expected HeapError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.equal(caught.address, address, `error address (${caught.message})`);
  if (size !== undefined) {
    assert.equal(caught.size, size, `error size (${caught.message})`);
    assert.ok(
      caught.allocationStack?.includes("allocateVictim"),
      `allocationStack names the allocating function: ${caught.allocationStack}`,
    );
    assert.ok(caught.message.includes("allocateVictim"), `the message holds the stack`);
  }
  return caught;
}

/** The error's free stack names the function that freed the block. */
function assertFreeStack(error: HeapError): void {
  assert.ok(
    error.freeStack?.includes("freeVictim"),
    `freeStack names the freeing function: ${error.freeStack}`,
  );
  assert.ok(error.message.includes("freeVictim"), "the message holds the free stack");
}

/**
 * After a report about `victim`: check() passes, the block is neither live
 * nor handed out again, and blocks of every kind still allocate, hold their
 * contents and free.
 */
function assertRecovered(heap: Heap, victim: number, size: number): void {
  heap.check();
  assert.ok(!heap.leaks().some((b) => b.address === victim), "the damaged block is not live");
  const again: number[] = [];
  for (let i = 0; i < 64; i++) {
    const p = heap.malloc(size);
    assert.notEqual(p, 0);
    assert.notEqual(p, victim, "the damaged block was handed out again");
    again.push(p);
  }
  for (const p of again) heap.free(p);
  for (const n of [1, 24, 100, 20 * KiB, 300 * KiB]) {
    const p = heap.malloc(n);
    assert.notEqual(p, 0, `malloc(${n}) after the report`);
    heap.bytes(p).fill(0x5a);
    assert.ok(heap.bytes(p).every((b) => b === 0x5a));
    heap.free(p);
  }
  heap.check();
}

const KINDS = [
  { kind: "small", size: 24 },
  { kind: "medium", size: 100 * KiB },
  { kind: "large", size: 300 * KiB },
] as const;

/** The three places a damaged red zone is found. */
const DETECTORS = [
  { at: "free", run: (heap: Heap, p: number) => heap.free(p) },
  { at: "realloc", run: (heap: Heap, p: number, size: number) => heap.realloc(p, size * 2) },
  { at: "check()", run: (heap: Heap) => heap.check() },
] as const;

/**
 * Allocates a victim between two neighbours, damages it with `damage`,
 * expects `code` from `detector`, then checks that the heap recovered and the
 * neighbours were not disturbed.
 */
function redZoneCase(
  size: number,
  damage: (p: number) => void,
  code: "overflow" | "underflow",
  detector: (typeof DETECTORS)[number],
): void {
  using heap = new Heap({ debug: true });
  const before = heap.malloc(size);
  const victim = allocateVictim(heap, size);
  const after = heap.malloc(size);
  heap.bytes(before).fill(1);
  heap.bytes(victim).fill(2);
  heap.bytes(after).fill(3);
  damage(victim);
  expectReport(() => detector.run(heap, victim, size), code, victim, size);
  assert.deepEqual(
    heap.leaks().map((b) => b.address),
    [before, after],
    "the report retired the victim and created no block",
  );
  assertRecovered(heap, victim, size);
  assert.ok(heap.bytes(before).every((b) => b === 1), "the block before is intact");
  assert.ok(heap.bytes(after).every((b) => b === 3), "the block after is intact");
  heap.free(before);
  heap.free(after);
  heap.check();
  assert.deepEqual(heap.leaks(), []);
}

// ---- red zones ----------------------------------------------------------------

describe("debug: a write past the end of a block is reported as overflow at free, realloc and check()", () => {
  for (const { kind, size } of KINDS) {
    for (const n of [1, 8]) {
      for (const detector of DETECTORS) {
        it(`a ${n}-byte overflow of a ${kind} block (${size} B) is reported by ${detector.at}`, () => {
          redZoneCase(size, (p) => poke(p + size, n), "overflow", detector);
        });
      }
    }
  }

  it("a write at the last byte of the trailing red zone of a small block is an overflow", () => {
    using heap = new Heap({ debug: true });
    const victim = allocateVictim(heap, 24);
    // The trailing canary is at least 16 bytes; its 16th byte is the last one guaranteed.
    poke(victim + 24 + 15, 1);
    expectReport(() => heap.free(victim), "overflow", victim, 24);
    assertRecovered(heap, victim, 24);
  });

  it("an overflow of a large block is caught in the canary that runs to the end of its last page", () => {
    using heap = new Heap({ debug: true });
    const size = 300 * KiB + 5;
    const victim = allocateVictim(heap, size);
    const guard = Math.ceil((victim + size + 16) / 4096) * 4096;
    poke(guard - 1, 1); // the last byte before the guard page
    expectReport(() => heap.check(), "overflow", victim, size);
    assertRecovered(heap, victim, size);
  });
});

describe("debug: a write before the start of a block is reported as underflow at free, realloc and check()", () => {
  for (const { kind, size } of KINDS) {
    for (const n of [1, 8]) {
      for (const detector of DETECTORS) {
        it(`a ${n}-byte underflow of a ${kind} block (${size} B) is reported by ${detector.at}`, () => {
          redZoneCase(size, (p) => poke(p - n, n), "underflow", detector);
        });
      }
    }
  }

  it("a write at the first byte of the 32-byte leading red zone is an underflow", () => {
    using heap = new Heap({ debug: true });
    const victim = allocateVictim(heap, 100);
    poke(victim - 32, 1);
    expectReport(() => heap.free(victim), "underflow", victim, 100);
    assertRecovered(heap, victim, 100);
  });

  it("check() reports each damaged block once, then passes", () => {
    using heap = new Heap({ debug: true });
    const a = allocateVictim(heap, 24);
    const b = allocateVictim(heap, 48);
    poke(a + 24, 1);
    poke(b - 1, 1);
    expectReport(() => heap.check(), "overflow", a, 24);
    expectReport(() => heap.check(), "underflow", b, 48);
    heap.check();
    assert.deepEqual(heap.leaks(), []);
  });
});

describe("debug: red zones are 0xFE canaries around exactly the requested bytes", () => {
  it("32 bytes before and at least 16 bytes after every small and medium block are 0xFE", () => {
    using heap = new Heap({ debug: true });
    for (const size of [0, 1, 15, 16, 24, 100, 1000, 20 * KiB, 100 * KiB]) {
      const p = heap.malloc(size);
      assert.ok(raw(p - 32, 32).every((b) => b === CANARY), `leading red zone of ${size} B`);
      assert.ok(raw(p + size, 16).every((b) => b === CANARY), `trailing red zone of ${size} B`);
      heap.free(p);
    }
    heap.check();
  });

  it("a large block's trailing canary runs to the end of its last page, then an inaccessible guard page", () => {
    using heap = new Heap({ debug: true });
    for (const size of [128 * KiB, 300 * KiB, 300 * KiB + 5, MiB - 16]) {
      const p = heap.malloc(size);
      const guard = Math.ceil((p + size + 16) / 4096) * 4096;
      assert.ok(raw(p + size, guard - p - size).every((b) => b === CANARY), `canary of ${size} B`);
      assert.ok(readable(guard - 1), "the canary's last byte is readable");
      assert.ok(mapped(guard), "the guard page is mapped");
      assert.ok(!readable(guard), `the page after a ${size} B block is inaccessible`);
      heap.free(p);
    }
    heap.check();
  });

  it("writing every requested byte is never reported (no false positives)", () => {
    using heap = new Heap({ debug: true });
    const blocks: [number, number][] = [];
    for (let size = 0; size <= 300; size++) blocks.push([heap.malloc(size), size]);
    for (const size of [4095, 4096, 20 * KiB, 128 * KiB, 300 * KiB]) {
      blocks.push([heap.malloc(size), size]);
    }
    for (const [p, size] of blocks) poke(p, size, 0x77);
    heap.check();
    for (const [p] of blocks) heap.free(p);
    heap.check();
  });

  it("alignedAlloc blocks get red zones too and keep their alignment", () => {
    using heap = new Heap({ debug: true });
    for (const alignment of [64, 4096, 64 * KiB]) {
      const p = heap.alignedAlloc(alignment, 100);
      assert.equal(p % alignment, 0);
      assert.equal(heap.usableSize(p), 100);
      assert.ok(raw(p - 32, 32).every((b) => b === CANARY));
      poke(p + 100, 1);
      expectReport(() => heap.free(p), "overflow", p);
    }
    heap.check();
  });
});

// ---- use after free -----------------------------------------------------------

describe("debug: writing to a freed block while it is quarantined is reported as use-after-free", () => {
  for (const { kind, size } of KINDS) {
    it(`a write into a quarantined ${kind} block (${size} B) is reported by check() with both stacks`, () => {
      using heap = new Heap({ debug: true });
      const keep = heap.malloc(size);
      const victim = allocateVictim(heap, size);
      freeVictim(heap, victim);
      poke(victim + size - 1, 1); // a single byte, at the end
      const error = expectReport(() => heap.check(), "use-after-free", victim, size);
      assertFreeStack(error);
      assertRecovered(heap, victim, size);
      heap.free(keep);
      heap.check();
    });
  }

  it("with quarantineBlocks: 1 the write is reported when the block leaves quarantine, on a later free", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 1 } });
    const victim = allocateVictim(heap, 24);
    freeVictim(heap, victim);
    poke(victim, 8);
    const later = heap.malloc(24); // allocation does not look at the quarantine
    assert.notEqual(later, 0);
    const error = expectReport(() => heap.free(later), "use-after-free", victim, 24);
    assertFreeStack(error);
    // The later free itself took effect.
    assert.deepEqual(heap.leaks(), []);
    expectReport(() => heap.free(later), "double-free", later);
    assertRecovered(heap, victim, 24);
  });

  it("a report raised when a block leaves quarantine states its code, size and stacks once", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 1 } });
    const victim = allocateVictim(heap, 24);
    freeVictim(heap, victim);
    poke(victim, 1);
    const error = expectReport(() => heap.free(heap.malloc(24)), "use-after-free", victim, 24);
    const count = (text: string) => error.message.split(text).length - 1;
    assert.equal(count("use-after-free at"), 1, error.message);
    assert.equal(count("(block of 24 bytes)"), 1, error.message);
    assert.equal(count("allocated at:"), 1, error.message);
    assert.equal(count("first freed at:"), 1, error.message);
  });

  it("with quarantineBytes just above one block the write is reported on the next free", () => {
    // A 100-byte block holds 192 bytes: its header and red zones count too.
    using heap = new Heap({ debug: { quarantineBytes: 250 } });
    const victim = allocateVictim(heap, 100);
    freeVictim(heap, victim);
    poke(victim + 50, 1);
    const later = heap.malloc(100);
    expectReport(() => heap.free(later), "use-after-free", victim, 100);
    assertRecovered(heap, victim, 100);
  });

  it("a use-after-free reported by check() is not reported again when the block would leave quarantine", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 2 } });
    const victim = allocateVictim(heap, 64);
    freeVictim(heap, victim);
    poke(victim, 1);
    expectReport(() => heap.check(), "use-after-free", victim, 64);
    for (let i = 0; i < 10; i++) heap.free(heap.malloc(64));
    heap.check();
  });

  it("a write through a stale pointer after realloc moved the block is reported as use-after-free", () => {
    using heap = new Heap({ debug: true });
    const victim = allocateVictim(heap, 48);
    const moved = heap.realloc(victim, 4000);
    assert.notEqual(moved, victim, "debug realloc always moves");
    poke(victim + 10, 1);
    expectReport(() => heap.check(), "use-after-free", victim, 48);
    heap.free(moved);
    assertRecovered(heap, victim, 48);
  });

  it("a block whose poison is intact leaves quarantine without a report", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 1 } });
    for (let i = 0; i < 100; i++) heap.free(heap.malloc(24 + (i % 5) * 100));
    heap.check();
    assert.deepEqual(heap.leaks(), []);
  });

  it("a use-after-free reported while realloc frees the old block does not lose the caller's block", () => {
    // The report concerns another block; a realloc that throws must leave the
    // caller's block as it was (live, contents intact) and leak nothing.
    using heap = new Heap({ debug: { quarantineBlocks: 1 } });
    const victim = allocateVictim(heap, 24);
    freeVictim(heap, victim);
    poke(victim, 1);
    const mine = heap.malloc(24);
    heap.bytes(mine).fill(7);
    expectReport(() => heap.realloc(mine, 48), "use-after-free", victim, 24);
    assert.deepEqual(
      heap.leaks().map((b) => [b.address, b.size]),
      [[mine, 24]],
      "after a throwing realloc the caller's block is the only live block",
    );
    assert.ok(heap.bytes(mine).every((b) => b === 7));
    heap.free(mine);
    heap.check();
  });
});

// ---- double and invalid frees -------------------------------------------------------

describe("debug: freeing a block twice is reported as double-free with the allocation and free stacks", () => {
  for (const { kind, size } of KINDS) {
    it(`freeing a ${kind} block twice in a row is a double free`, () => {
      using heap = new Heap({ debug: true });
      const victim = allocateVictim(heap, size);
      freeVictim(heap, victim);
      assertFreeStack(expectReport(() => heap.free(victim), "double-free", victim, size));
      heap.check();
      assert.deepEqual(heap.leaks(), []);
    });

    it(`freeing a ${kind} block again after other frees is a double free`, () => {
      using heap = new Heap({ debug: true });
      const victim = allocateVictim(heap, size);
      const others = Array.from({ length: 10 }, () => heap.malloc(size));
      freeVictim(heap, victim);
      for (const p of others) heap.free(p);
      assertFreeStack(expectReport(() => heap.free(victim), "double-free", victim, size));
      heap.check();
    });
  }

  it("a double free is still reported after the block left quarantine (until it is reused)", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 1 } });
    const victim = allocateVictim(heap, 40);
    freeVictim(heap, victim);
    heap.free(heap.malloc(4000)); // pushes the victim out of quarantine
    heap.free(heap.malloc(4000));
    assertFreeStack(expectReport(() => heap.free(victim), "double-free", victim, 40));
    heap.check();
  });

  it("realloc of freed memory is a double free", () => {
    using heap = new Heap({ debug: true });
    const victim = allocateVictim(heap, 64);
    freeVictim(heap, victim);
    assertFreeStack(expectReport(() => heap.realloc(victim, 128), "double-free", victim, 64));
    assertFreeStack(expectReport(() => heap.realloc(victim, 0), "double-free", victim, 64));
    assert.deepEqual(heap.leaks(), [], "the failed realloc allocated nothing");
    heap.check();
  });

  it("a block that realloc moved away from is freed memory: freeing it is a double free", () => {
    using heap = new Heap({ debug: true });
    const old = allocateVictim(heap, 64);
    const moved = heap.realloc(old, 100);
    assert.notEqual(moved, old, "debug realloc always moves");
    expectReport(() => heap.free(old), "double-free", old, 64);
    heap.free(moved);
    heap.check();
  });

  it("a reported double free does not put the block into circulation twice", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 0, quarantineBytes: 0 } });
    const victim = allocateVictim(heap, 32);
    freeVictim(heap, victim);
    expectReport(() => heap.free(victim), "double-free", victim, 32);
    const a = heap.malloc(32);
    const b = heap.malloc(32);
    assert.notEqual(a, b);
    heap.free(a);
    heap.free(b);
    heap.check();
  });
});

describe("debug: freeing an address that is not a live block is reported as invalid-free", () => {
  /** One live 64-byte block filled with 0x42. */
  function liveBlock(heap: Heap): number {
    const p = heap.malloc(64);
    heap.bytes(p).fill(0x42);
    return p;
  }

  /** The block survived the bad free untouched and still frees. */
  function assertIntact(heap: Heap, p: number) {
    heap.check();
    assert.deepEqual(heap.leaks().map((b) => b.address), [p]);
    assert.ok(heap.bytes(p).every((b) => b === 0x42));
    heap.free(p);
    heap.check();
  }

  it("an interior pointer (block + 16) is an invalid free", () => {
    using heap = new Heap({ debug: true });
    const p = liveBlock(heap);
    expectReport(() => heap.free(p + 16), "invalid-free", p + 16);
    assertIntact(heap, p);
  });

  it("a misaligned pointer (block + 1) is an invalid free", () => {
    using heap = new Heap({ debug: true });
    const p = liveBlock(heap);
    expectReport(() => heap.free(p + 1), "invalid-free", p + 1);
    assertIntact(heap, p);
  });

  it("a never-allocated address inside another live block (+ 7) is an invalid free", () => {
    using heap = new Heap({ debug: true });
    const p = liveBlock(heap);
    expectReport(() => heap.free(p + 7), "invalid-free", p + 7);
    assertIntact(heap, p);
  });

  it("a made-up address (123456) is an invalid free", () => {
    using heap = new Heap({ debug: true });
    const p = liveBlock(heap);
    expectReport(() => heap.free(123456), "invalid-free", 123456);
    assertIntact(heap, p);
  });

  it("a block of another debug heap is an invalid free, and it stays live in its own heap", () => {
    using heap = new Heap({ debug: true });
    using other = new Heap({ debug: true });
    const p = liveBlock(heap);
    const q = other.malloc(64);
    expectReport(() => heap.free(q), "invalid-free", q);
    assertIntact(heap, p);
    assert.deepEqual(other.leaks().map((b) => b.address), [q]);
    other.free(q);
    other.check();
  });

  it("a block of a default-mode heap is an invalid free", () => {
    using heap = new Heap({ debug: true });
    using other = new Heap();
    const p = liveBlock(heap);
    const q = other.malloc(64);
    expectReport(() => heap.free(q), "invalid-free", q);
    assertIntact(heap, p);
    other.free(q);
  });

  it("realloc of an interior pointer is an invalid free and allocates nothing", () => {
    using heap = new Heap({ debug: true });
    const p = liveBlock(heap);
    expectReport(() => heap.realloc(p + 16, 200), "invalid-free", p + 16);
    assertIntact(heap, p);
  });
});

// ---- leaks ----------------------------------------------------------------------

function allocateForLeakTest(heap: Heap, size: number): number {
  return heap.malloc(size);
}

function allocateBigForLeakTest(heap: Heap): number {
  return heap.calloc(10, 100);
}

describe("debug: leaks() lists live blocks with their allocation stacks; leakReport() groups them by site", () => {
  it("leaks() lists every live block, in allocation order, with the allocating function in its stack", () => {
    using heap = new Heap({ debug: true });
    const a = allocateForLeakTest(heap, 100);
    const freed = allocateForLeakTest(heap, 7);
    const b = allocateForLeakTest(heap, 100);
    const c = allocateBigForLeakTest(heap);
    heap.free(freed);
    const leaks = heap.leaks();
    assert.deepEqual(leaks.map((l) => [l.address, l.size]), [[a, 100], [b, 100], [c, 1000]]);
    assert.ok(leaks[0].stack.includes("allocateForLeakTest"), leaks[0].stack);
    assert.ok(leaks[1].stack.includes("allocateForLeakTest"), leaks[1].stack);
    assert.ok(leaks[2].stack.includes("allocateBigForLeakTest"), leaks[2].stack);
    assert.ok(!leaks[0].stack.includes("/src/"), "the allocator's own frames are left out");
  });

  it("leakReport() groups blocks by site with counts and bytes, largest total first", () => {
    using heap = new Heap({ debug: true });
    for (let i = 0; i < 3; i++) allocateForLeakTest(heap, 100);
    allocateBigForLeakTest(heap);
    const report = heap.leakReport();
    assert.ok(report.includes("4 live blocks, 1300 bytes, from 2 sites"), report);
    assert.ok(report.includes("300 bytes in 3 blocks"), report);
    assert.ok(report.includes("1000 bytes in 1 block allocated"), report);
    assert.ok(report.includes("allocateForLeakTest"), report);
    assert.ok(
      report.indexOf("allocateBigForLeakTest") < report.indexOf("allocateForLeakTest"),
      "the largest site comes first",
    );
    assert.ok(report.indexOf("1000 bytes in") < report.indexOf("300 bytes in"));
  });

  it("realloc keeps a block in leaks() with its new size; freed blocks leave it", () => {
    using heap = new Heap({ debug: true });
    let p = allocateForLeakTest(heap, 10);
    p = heap.realloc(p, 5000);
    assert.deepEqual(heap.leaks().map((l) => [l.address, l.size]), [[p, 5000]]);
    const q = heap.alignedAlloc(256, 300);
    assert.deepEqual(heap.leaks().map((l) => [l.address, l.size]), [[p, 5000], [q, 300]]);
    heap.free(p);
    heap.free(q);
    assert.deepEqual(heap.leaks(), []);
    assert.equal(heap.leakReport(), "no leaks: every block was freed");
  });

  it("with stacks: false, blocks are still listed, with empty stacks", () => {
    using heap = new Heap({ debug: { stacks: false } });
    const p = allocateForLeakTest(heap, 100);
    assert.deepEqual(heap.leaks(), [{ address: p, size: 100, stack: "" }]);
    assert.ok(heap.leakReport().includes("100 bytes in 1 block allocated"));
    poke(p + 100, 1);
    const error = expectReport(() => heap.free(p), "overflow", p);
    assert.equal(error.size, 100);
  });
});

// ---- quarantine -------------------------------------------------------------------

describe("debug: the quarantine delays reuse of freed blocks, bounded by bytes and by count", () => {
  it("with the default quarantine a freed address is not handed out by the next 100 mallocs of its size", () => {
    using heap = new Heap({ debug: true });
    const first = heap.malloc(64);
    heap.free(first);
    const seen = new Set<number>([first]);
    for (let i = 0; i < 100; i++) {
      const p = heap.malloc(64);
      assert.ok(!seen.has(p), `malloc #${i} returned a quarantined address`);
      seen.add(p);
      heap.free(p);
    }
    heap.check();
  });

  it("with quarantineBlocks: 0 and quarantineBytes: 0 a freed block can be reused at once", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 0, quarantineBytes: 0 } });
    const first = heap.malloc(64);
    heap.free(first);
    const next: number[] = [];
    for (let i = 0; i < 10; i++) next.push(heap.malloc(64));
    assert.ok(next.includes(first), "the freed address came back");
    for (const p of next) heap.free(p);
    heap.check();
  });

  it("with quarantineBlocks: 0 and quarantineBytes: 0 the block a realloc moved away from can be reused at once", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 0, quarantineBytes: 0 } });
    const old = heap.malloc(64);
    const moved = heap.realloc(old, 200);
    assert.notEqual(moved, old);
    const next: number[] = [];
    for (let i = 0; i < 10; i++) next.push(heap.malloc(64));
    assert.ok(next.includes(old), "the old block is not held in a quarantine of size 0");
    for (const p of [...next, moved]) heap.free(p);
    heap.check();
  });

  it("quarantineBytes bounds the bytes held after a realloc too: a large old block is unmapped", () => {
    using heap = new Heap({ debug: { quarantineBytes: 1000 } });
    const old = heap.malloc(300 * KiB);
    const moved = heap.realloc(old, 400 * KiB);
    assert.notEqual(moved, old);
    assert.equal(heap.stats().largeBlocks, 1, "300 KiB do not fit in a 1000-byte quarantine");
    heap.free(moved);
    heap.check();
  });

  it("quarantineBlocks bounds the count: after that many newer frees the block is reusable", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 4 } });
    const blocks = Array.from({ length: 5 }, () => heap.malloc(64));
    for (const p of blocks.slice(0, 4)) heap.free(p);
    const held: number[] = [];
    for (let i = 0; i < 20; i++) held.push(heap.malloc(64));
    assert.ok(!held.includes(blocks[0]), "4 blocks fit in the quarantine");
    heap.free(blocks[4]); // the fifth pushes the oldest out
    const next = Array.from({ length: 10 }, () => heap.malloc(64));
    assert.ok(next.includes(blocks[0]), "the oldest quarantined block is reusable");
    assert.ok(!next.includes(blocks[1]), "the next oldest is still held");
    for (const q of [...held, ...next]) heap.free(q);
    heap.check();
  });

  it("quarantineBytes bounds the bytes: freeing past the limit releases the oldest blocks", () => {
    // A 100-byte block holds 192 bytes: its header and red zones count too.
    using heap = new Heap({ debug: { quarantineBytes: 1920 } });
    const blocks = Array.from({ length: 11 }, () => heap.malloc(100));
    for (const p of blocks.slice(0, 10)) heap.free(p); // exactly 1920 bytes: all held
    const probe = heap.malloc(100);
    assert.ok(!blocks.includes(probe));
    heap.free(blocks[10]); // 2112 bytes: the oldest leaves
    const next = Array.from({ length: 10 }, () => heap.malloc(100));
    assert.ok(next.includes(blocks[0]), "the oldest quarantined block is reusable");
    assert.ok(!next.includes(blocks[1]), "the next oldest is still held");
    for (const q of [...next, probe]) heap.free(q);
    heap.check();
  });

  it("a large block is released (unmapped) when it leaves quarantine", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 1 } });
    const p = heap.malloc(300 * KiB);
    heap.free(p);
    assert.ok(mapped(p), "a quarantined large block stays mapped");
    assert.equal(heap.stats().largeBlocks, 1);
    const munmaps = heap.stats().munmapCalls;
    heap.free(heap.malloc(64));
    assert.equal(heap.stats().largeBlocks, 0, "the block left quarantine");
    assert.equal(heap.stats().munmapCalls, munmaps + 1, "and was unmapped");
    heap.check();
  });

  it("quarantineBytes counts what a quarantined block holds: 400 blocks aligned to 1 MiB, freed, keep committed memory within a few MiB", () => {
    using heap = new Heap({ debug: { quarantineBytes: MiB, stacks: false } });
    const before = heap.stats().committedBytes;
    for (let i = 0; i < 400; i++) {
      const p = heap.alignedAlloc(MiB, 16);
      assert.equal(p % MiB, 0);
      heap.free(p);
    }
    const grown = heap.stats().committedBytes - before;
    assert.ok(grown <= 8 * MiB, `committed memory grew by ${grown / MiB} MiB`);
    heap.check();
  });

  it("a block aligned to 1 GiB costs address space but no memory for its lead: resident memory grows by less than 64 MiB", () => {
    using heap = new Heap({ debug: { stacks: false } });
    const before = rss();
    const p = heap.alignedAlloc(2 ** 30, 1);
    assert.notEqual(p, 0);
    assert.equal(p % 2 ** 30, 0);
    const grown = rss() - before;
    assert.ok(grown < 64 * MiB, `resident memory grew by ${grown / MiB} MiB`);
    poke(p - 1, 1); // the red zone right before the block is still checked
    assertHeapError(() => heap.free(p), "underflow", p);
    heap.check();
  });

  it("quarantine limits must be non-negative integers", () => {
    assert.throws(() => new Heap({ debug: { quarantineBlocks: -1 } }), RangeError);
    assert.throws(() => new Heap({ debug: { quarantineBytes: 1.5 } }), RangeError);
  });
});

// ---- junk and poison -------------------------------------------------------------

describe("debug: fresh memory is junk (0xAA), calloc memory is zero, freed memory is poison (0xDD)", () => {
  it("usableSize is exactly the requested size for sizes 0..300 and malloc bytes are 0xAA", () => {
    using heap = new Heap({ debug: true });
    for (let size = 0; size <= 300; size++) {
      const p = heap.malloc(size);
      assert.equal(heap.usableSize(p), size);
      assert.equal(heap.bytes(p).length, size);
      assert.ok(heap.bytes(p).every((b) => b === JUNK), `malloc(${size}) is junk-filled`);
      heap.bytes(p).fill(0x33); // dirty it, so the next round sees recycled memory
      heap.free(p);
    }
    heap.check();
  });

  it("usableSize is exactly the requested size for medium and large sizes, and malloc bytes are 0xAA", () => {
    using heap = new Heap({ debug: true });
    for (
      const size of [
        1000,
        8 * KiB + 1,
        20 * KiB,
        128 * KiB - 48,
        128 * KiB,
        128 * KiB + 1,
        300 * KiB,
        MiB + 1,
        4 * MiB,
      ]
    ) {
      const p = heap.malloc(size);
      assert.equal(heap.usableSize(p), size);
      assert.ok(heap.bytes(p).every((b) => b === JUNK), `malloc(${size}) is junk-filled`);
      heap.free(p);
    }
    heap.check();
  });

  it("calloc memory is zero, also when it reuses a dirtied block", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 0, quarantineBytes: 0 } });
    for (const size of [1, 24, 100, 20 * KiB, 300 * KiB]) {
      const dirty = heap.malloc(size);
      heap.bytes(dirty).fill(0x99);
      heap.free(dirty);
      const p = heap.calloc(1, size);
      assert.equal(heap.usableSize(p), size);
      assert.ok(heap.bytes(p).every((b) => b === 0), `calloc(1, ${size}) is zero`);
      assert.ok(raw(p + size, 16).every((b) => b === CANARY), "calloc blocks have red zones");
      heap.free(p);
    }
    const q = heap.calloc(7, 13);
    assert.equal(heap.usableSize(q), 91);
    heap.free(q);
    heap.check();
  });

  it("a freed block is poisoned with 0xDD while it sits in quarantine", () => {
    using heap = new Heap({ debug: true });
    for (const size of [24, 20 * KiB, 300 * KiB]) {
      const p = heap.malloc(size);
      heap.bytes(p).fill(0x11);
      heap.free(p);
      assert.ok(raw(p, size).every((b) => b === POISON), `freed ${size} B block is poisoned`);
    }
    heap.check();
  });

  it("realloc always moves, keeps the contents up to the smaller size and junk-fills the rest", () => {
    using heap = new Heap({ debug: true });
    let p = heap.malloc(40);
    heap.bytes(p).fill(0x21);
    const grown = heap.realloc(p, 5000);
    assert.notEqual(grown, p);
    assert.equal(heap.usableSize(grown), 5000);
    const bytes = heap.bytes(grown);
    assert.ok(bytes.subarray(0, 40).every((b) => b === 0x21));
    assert.ok(bytes.subarray(40).every((b) => b === JUNK));
    assert.ok(raw(p, 40).every((b) => b === POISON), "the old block is poisoned");
    p = heap.realloc(grown, 10);
    assert.equal(heap.usableSize(p), 10);
    assert.ok(heap.bytes(p).every((b) => b === 0x21));
    assert.equal(heap.realloc(p, 0), 0);
    const fresh = heap.realloc(0, 33);
    assert.equal(heap.usableSize(fresh), 33);
    heap.free(fresh);
    assert.deepEqual(heap.leaks(), []);
    heap.check();
  });
});

// ---- soak ------------------------------------------------------------------------

/**
 * A seeded random workload checked against a shadow model (address -> size
 * and fill byte): contents verified at every free and realloc, check() every
 * 5k operations, and at the end leaks() must list exactly the model's blocks.
 */
function soak(heap: Heap, ops: number, seed: number): void {
  const SLOTS = 1500;
  const rng = new Rng(seed);
  const model = new Map<number, { size: number; fill: number }>();
  const slots = new Array<number>(SLOTS).fill(0);

  const drawSize = () => {
    const r = rng.next();
    if (r < 0.9) return rng.int(0, 512);
    if (r < 0.995) return rng.int(513, 64 * KiB);
    return rng.int(128 * KiB + 1, 640 * KiB);
  };
  const verify = (p: number, what: string) => {
    const { size, fill } = model.get(p)!;
    assert.equal(heap.usableSize(p), size, `${what}: usableSize`);
    const bytes = heap.bytes(p);
    for (let i = 0; i < size; i++) {
      if (bytes[i] !== fill) {
        assert.fail(`${what}: byte ${i} of ${size} is ${bytes[i]}, not ${fill}`);
      }
    }
  };
  const adopt = (p: number, size: number, expect: (i: number) => number, what: string) => {
    assert.notEqual(p, 0, `${what} returned 0`);
    assert.ok(!model.has(p), `${what} returned the live block 0x${p.toString(16)}`);
    assert.equal(heap.usableSize(p), size);
    const bytes = heap.bytes(p);
    for (let i = 0; i < size; i++) {
      if (bytes[i] !== expect(i)) {
        assert.fail(`${what}(${size}): byte ${i} is ${bytes[i]}, not ${expect(i)}`);
      }
    }
    const fill = rng.int(1, 255);
    bytes.fill(fill);
    model.set(p, { size, fill });
    return p;
  };

  for (let op = 1; op <= ops; op++) {
    const s = rng.int(0, SLOTS - 1);
    const p = slots[s];
    if (p === 0) {
      const size = drawSize();
      if (rng.chance(0.2)) {
        const unit = rng.pick([1, 2, 4, 8, 16]);
        const count = Math.ceil(size / unit);
        slots[s] = adopt(heap.calloc(count, unit), count * unit, () => 0, "calloc");
      } else if (rng.chance(0.05)) {
        slots[s] = adopt(heap.realloc(0, size), size, () => JUNK, "realloc(0, n)");
      } else {
        slots[s] = adopt(heap.malloc(size), size, () => JUNK, "malloc");
      }
    } else {
      verify(p, `op ${op}`);
      const old = model.get(p)!;
      model.delete(p);
      if (rng.chance(0.7)) {
        heap.free(p);
        slots[s] = 0;
      } else if (rng.chance(0.05)) {
        assert.equal(heap.realloc(p, 0), 0);
        slots[s] = 0;
      } else {
        const size = Math.max(1, drawSize()); // realloc(p, 0) frees
        const q = heap.realloc(p, size);
        assert.notEqual(q, p, "debug realloc always moves");
        slots[s] = adopt(q, size, (i) => (i < old.size ? old.fill : JUNK), "realloc");
      }
    }
    if (op % 5000 === 0) {
      heap.check();
      assert.equal(heap.leaks().length, model.size, `op ${op}: live block count`);
    }
  }

  const byAddress = (a: { address: number }, b: { address: number }) => a.address - b.address;
  assert.deepEqual(
    heap.leaks().map(({ address, size }) => ({ address, size })).sort(byAddress),
    [...model].map(([address, { size }]) => ({ address, size })).sort(byAddress),
    "leaks() lists exactly the model's live blocks",
  );
  for (const p of model.keys()) {
    verify(p, "final");
    heap.free(p);
  }
  heap.check();
  assert.deepEqual(heap.leaks(), []);
}

describe("debug: a seeded soak against a shadow model keeps every block intact and leaks() exact", () => {
  // Stacks off: capturing a JS stack costs 0.1 to 1 ms per allocation under
  // the test runner, which would make 50k operations take tens of seconds.
  // Everything else of debug mode (red zones, junk, poison, quarantine) is on.
  it("50k seeded malloc/calloc/realloc/free operations (debug, stacks off)", () => {
    using heap = new Heap({ debug: { stacks: false } });
    soak(heap, 50_000, 0xdeb0_6001);
  });

  it("5k seeded operations with stacks on and a small quarantine", () => {
    using heap = new Heap({ debug: { quarantineBlocks: 16, quarantineBytes: 64 * KiB } });
    soak(heap, 5_000, 0xdeb0_6002);
  });
});
