import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap } from "../mod.ts";
import { KiB, Rng } from "./helpers.ts";

/** Writes tag `i` as 4 bytes at the start and its complement as the last 4 bytes of `size`. */
function tag(b: Uint8Array, size: number, i: number): void {
  const t = ~i;
  b[0] = i & 0xff;
  b[1] = (i >>> 8) & 0xff;
  b[2] = (i >>> 16) & 0xff;
  b[3] = (i >>> 24) & 0xff;
  b[size - 4] = t & 0xff;
  b[size - 3] = (t >>> 8) & 0xff;
  b[size - 2] = (t >>> 16) & 0xff;
  b[size - 1] = (t >>> 24) & 0xff;
}

function readTag(b: Uint8Array, size: number): [number, number] {
  const head = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  const tail = ~(b[size - 4] | (b[size - 3] << 8) | (b[size - 2] << 16) | (b[size - 1] << 24)) >>>
    0;
  return [head, tail];
}

/** Asserts that sorted live blocks do not overlap: a[i] + usableSize(a[i]) <= a[i + 1]. */
function assertDisjoint(heap: Heap, addresses: Float64Array): void {
  const sorted = addresses.slice().sort();
  for (let i = 0; i + 1 < sorted.length; i++) {
    const end = sorted[i] + heap.usableSize(sorted[i]);
    if (end > sorted[i + 1]) {
      assert.fail(
        `block 0x${sorted[i].toString(16)} (+${heap.usableSize(sorted[i])}) overlaps 0x${
          sorted[i + 1].toString(16)
        }`,
      );
    }
  }
}

describe("many live blocks", () => {
  it("300,000 small blocks of mixed sizes never overlap and each keeps its own tag", () => {
    using heap = new Heap();
    const rng = new Rng(0x5eed_0001);
    const n = 300_000;
    const addresses = new Float64Array(n);
    const sizes = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      // Mostly tiny, some up to 1 KiB, a few up to 8 KiB: dozens of classes, thousands of pages.
      const r = rng.next();
      const size = r < 0.6 ? rng.int(8, 64) : r < 0.95 ? rng.int(65, 1024) : rng.int(1025, 8 * KiB);
      const p = heap.malloc(size);
      assert.notEqual(p, 0, `malloc #${i} (${size} B)`);
      addresses[i] = p;
      sizes[i] = size;
      tag(heap.bytes(p, size), size, i);
    }
    const stats = heap.stats();
    assert.equal(stats.liveBlocks, n);
    assert.ok(stats.committedBytes > 64 * 1024 * 1024, "the blocks span many pages");
    assertDisjoint(heap, addresses);
    heap.check();

    // Every tag is intact, checked just before its block is freed; free in a shuffled order.
    const order = new Rng(7).shuffle(Array.from({ length: n }, (_, i) => i));
    for (const i of order) {
      const [head, tail] = readTag(heap.bytes(addresses[i], sizes[i]), sizes[i]);
      if (head !== i || tail !== i) {
        assert.fail(`block #${i} at 0x${addresses[i].toString(16)} has tags ${head}/${tail}`);
      }
      heap.free(addresses[i]);
    }
    const end = heap.stats();
    assert.equal(end.liveBlocks, 0);
    assert.equal(end.allocatedBytes, 0);
    heap.check();
  });

  it("blocks of all three kinds (small, medium, large) live side by side without overlap", () => {
    using heap = new Heap();
    const rng = new Rng(42);
    const n = 3000;
    const addresses = new Float64Array(n);
    const sizes = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const r = rng.next();
      const size = r < 0.7 ? rng.int(8, 8 * KiB) : r < 0.97 ? rng.int(8 * KiB, 128 * KiB) : rng.int(
        128 * KiB,
        1024 * KiB,
      );
      addresses[i] = heap.malloc(size);
      sizes[i] = size;
      tag(heap.bytes(addresses[i], size), size, i);
    }
    assertDisjoint(heap, addresses);
    for (let i = 0; i < n; i++) {
      const [head, tail] = readTag(heap.bytes(addresses[i], sizes[i]), sizes[i]);
      assert.equal(head, i);
      assert.equal(tail, i);
    }
    heap.check();
    for (let i = 0; i < n; i++) heap.free(addresses[i]);
    heap.check();
    assert.equal(heap.stats().liveBlocks, 0);
  });

  it("thousands of live large blocks stay findable while they are freed in random order", () => {
    using heap = new Heap();
    const rng = new Rng(99);
    const live: number[] = [];
    for (let i = 0; i < 1500; i++) {
      const p = heap.malloc(rng.int(128 * KiB + 1, 512 * KiB));
      assert.notEqual(p, 0);
      heap.bytes(p, 8).fill(i & 0xff);
      live.push(p);
    }
    assert.equal(heap.stats().largeBlocks, 1500);
    heap.check();
    rng.shuffle(live);
    while (live.length > 0) {
      const p = live.pop()!;
      heap.free(p);
      // Every survivor is still known to the heap.
      if (live.length % 100 === 0) {
        for (const q of live) assert.ok(heap.usableSize(q) > 128 * KiB);
        heap.check();
      }
    }
    assert.equal(heap.stats().largeBlocks, 0);
    heap.check();
  });
});

describe("full pages", () => {
  const PAGE = 64 * KiB;
  const SIZE = 64; // 1024 blocks fill one 64 KiB page exactly

  it("a full page at the head of its list serves free/malloc in turn from its own blocks", () => {
    using heap = new Heap();
    const blocks = Array.from({ length: PAGE / SIZE }, () => heap.malloc(SIZE));
    const page = Math.floor(blocks[0] / PAGE);
    assert.ok(blocks.every((p) => Math.floor(p / PAGE) === page), "one page holds all 1024");
    heap.check(); // a full head is a valid state
    for (let i = 0; i < 100; i++) {
      const k = (i * 389) % blocks.length;
      heap.free(blocks[k]);
      heap.check();
      blocks[k] = heap.malloc(SIZE);
      assert.equal(Math.floor(blocks[k] / PAGE), page, "the freed block was reused");
    }
    const next = heap.malloc(SIZE);
    assert.notEqual(Math.floor(next / PAGE), page, "a full page hands out nothing more");
    heap.check();
    heap.free(blocks[5]); // the full page, no longer the head, goes back on the list
    heap.check();
    for (const p of [...blocks.filter((_, i) => i !== 5), next]) heap.free(p);
    assert.equal(heap.stats().liveBlocks, 0);
    heap.check();
  });
});
