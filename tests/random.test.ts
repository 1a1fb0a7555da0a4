import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, type HeapOptions } from "../mod.ts";
import { assertZero, endsMismatch, KiB, MiB, Rng, writeEnds } from "./helpers.ts";

/** What the model knows about one live block. */
interface Block {
  size: number; // bytes asked for (the pattern lives at both ends of these)
  seed: number; // pattern seed
  usable: number; // usableSize when it was handed out
}

/** A shadow model of the heap: address -> block, with O(1) random picks. */
class Model {
  readonly blocks = new Map<number, Block>();
  readonly order: number[] = [];
  readonly index = new Map<number, number>();
  allocated = 0;

  add(p: number, block: Block): void {
    assert.ok(!this.blocks.has(p), `0x${p.toString(16)} handed out while still live`);
    this.blocks.set(p, block);
    this.index.set(p, this.order.length);
    this.order.push(p);
    this.allocated += block.usable;
  }

  remove(p: number): Block {
    const block = this.blocks.get(p)!;
    this.blocks.delete(p);
    const i = this.index.get(p)!;
    const last = this.order.pop()!;
    if (last !== p) {
      this.order[i] = last;
      this.index.set(last, i);
    }
    this.index.delete(p);
    this.allocated -= block.usable;
    return block;
  }

  pick(rng: Rng): number {
    return this.order[rng.int(0, this.order.length - 1)];
  }
}

/** Mostly small, some medium (up to 128 KiB), rarely large (up to 2 MiB). */
function drawSize(rng: Rng): number {
  const r = rng.next();
  if (r < 0.9) return rng.int(0, 1024);
  if (r < 0.995) return rng.int(1025, 128 * KiB);
  return rng.int(128 * KiB + 1, 2 * MiB);
}

function drawAlignment(rng: Rng): number {
  return 2 ** (rng.chance(0.95) ? rng.int(0, 16) : rng.int(17, 21));
}

const OPERATIONS = 200_000;
const CHECK_EVERY = 20_000;
const COMPARE_EVERY = 1_000;
const TARGET_LIVE = 5_000;

describe("randomized operations against a shadow model", () => {
  const runs: { seed: number; options: HeapOptions; trimEvery: number; label: string }[] = [
    { seed: 0x7e57_0001, options: {}, trimEvery: 0, label: "default heap" },
    { seed: 0x7e57_0002, options: { retainBytes: 0 }, trimEvery: 0, label: "retainBytes 0" },
    {
      seed: 0x7e57_0003,
      options: { retainBytes: MiB, arenaBytes: 512 * MiB },
      trimEvery: 7_000,
      label: "512 MiB arena, retainBytes 1 MiB, trim() every 7000 operations",
    },
    {
      seed: 0x7e57_0004,
      options: { idleRatio: 0, idleFloorBytes: 0 },
      trimEvery: 0,
      label: "idle budget 0: free OS pages purged whenever the heap grows",
    },
    {
      seed: 0x7e57_0005,
      options: { lowAddresses: false },
      trimEvery: 0,
      label: "arena where the OS puts it: addresses above 2^32",
    },
  ];
  for (const { seed, options, trimEvery, label } of runs) {
    it(`${OPERATIONS} seeded malloc/calloc/realloc/free/alignedAlloc operations keep every block intact and every counter exact (${label}, seed ${seed})`, () => {
      using heap = new Heap(options);
      const rng = new Rng(seed);
      const model = new Model();
      let nextSeed = 1;
      const counts = { malloc: 0, calloc: 0, alignedAlloc: 0, realloc: 0, free: 0 };

      const verify = (p: number, what: string, limit?: number) => {
        const block = model.blocks.get(p)!;
        const bad = endsMismatch(heap, p, block.size, block.seed, limit);
        if (bad !== null) {
          assert.fail(`${what}: block 0x${p.toString(16)} (${block.size} B) corrupted: ${bad}`);
        }
      };
      const adopt = (p: number, size: number, what: string) => {
        assert.notEqual(p, 0, `${what} returned 0`);
        assert.equal(p % 16, 0, `${what} = 0x${p.toString(16)} is not 16-byte aligned`);
        const usable = heap.usableSize(p);
        assert.ok(usable >= size, `${what}: usableSize ${usable}`);
        const block = { size, seed: nextSeed++ & 0xff, usable };
        model.add(p, block);
        writeEnds(heap, p, size, block.seed);
      };

      for (let op = 1; op <= OPERATIONS; op++) {
        const r = rng.next();
        const mustFree = model.order.length > TARGET_LIVE * 1.2;
        const mayFree = model.order.length > 0;
        if (mayFree && (mustFree || r >= 0.62)) {
          // free
          counts.free++;
          const p = model.pick(rng);
          verify(p, `op ${op} free`);
          model.remove(p);
          heap.free(p);
          if (rng.chance(0.01)) heap.free(0);
        } else if (r < 0.3) {
          counts.malloc++;
          const size = drawSize(rng);
          adopt(heap.malloc(size), size, `op ${op} malloc(${size})`);
        } else if (r < 0.38) {
          counts.calloc++;
          const total = drawSize(rng);
          const count = rng.int(1, 4);
          const size = Math.ceil(total / count);
          const p = heap.calloc(count, size);
          assert.notEqual(p, 0, `op ${op} calloc(${count}, ${size})`);
          assertZero(heap, p, count * size, `op ${op} calloc(${count}, ${size})`);
          adopt(p, count * size, `op ${op} calloc`);
        } else if (r < 0.42) {
          counts.alignedAlloc++;
          const alignment = drawAlignment(rng);
          const size = drawSize(rng);
          const p = heap.alignedAlloc(alignment, size);
          adopt(p, size, `op ${op} alignedAlloc(${alignment}, ${size})`);
          assert.equal(p % alignment, 0, `op ${op} alignedAlloc(${alignment}, ${size})`);
        } else {
          counts.realloc++;
          const size = rng.chance(0.03) ? 0 : drawSize(rng);
          if (!mayFree || rng.chance(0.05)) {
            if (size === 0) continue;
            adopt(heap.realloc(0, size), size, `op ${op} realloc(0, ${size})`);
            continue;
          }
          const p = model.pick(rng);
          verify(p, `op ${op} realloc`);
          const old = model.remove(p);
          const q = heap.realloc(p, size);
          if (size === 0) {
            assert.equal(q, 0, `op ${op} realloc(p, 0)`);
            continue;
          }
          assert.notEqual(q, 0, `op ${op} realloc(p, ${size})`);
          if (size <= old.usable) {
            assert.equal(q, p, `op ${op}: realloc within usableSize moved the block`);
          }
          // The kept prefix still carries the old pattern.
          const kept = Math.min(old.size, size);
          const bad = endsMismatch(heap, q, old.size, old.seed, kept);
          if (bad !== null) assert.fail(`op ${op} realloc(${old.size} -> ${size}): ${bad}`);
          adopt(q, size, `op ${op} realloc`);
        }

        if (trimEvery > 0 && op % trimEvery === 0) heap.trim();
        if (op % COMPARE_EVERY === 0) {
          const s = heap.stats();
          assert.equal(s.liveBlocks, model.blocks.size, `op ${op}: liveBlocks`);
          assert.equal(s.allocatedBytes, model.allocated, `op ${op}: allocatedBytes`);
        }
        if (op % CHECK_EVERY === 0) {
          heap.check();
          // Every block: same usable size as when handed out, pattern intact, no overlap.
          const sorted = [...model.order].sort((a, b) => a - b);
          for (let i = 0; i < sorted.length; i++) {
            const p = sorted[i];
            const block = model.blocks.get(p)!;
            assert.equal(heap.usableSize(p), block.usable, `op ${op}: usableSize changed`);
            verify(p, `op ${op} sweep`);
            if (i + 1 < sorted.length) {
              assert.ok(
                p + block.usable <= sorted[i + 1],
                `op ${op}: 0x${p.toString(16)} overlaps`,
              );
            }
          }
        }
      }

      for (const [name, n] of Object.entries(counts)) {
        assert.ok(n > OPERATIONS / 50, `only ${n} ${name} operations ran`);
      }
      for (const p of [...model.order]) {
        verify(p, "final free");
        model.remove(p);
        heap.free(p);
      }
      const s = heap.stats();
      assert.equal(s.liveBlocks, 0);
      assert.equal(s.allocatedBytes, 0);
      heap.check();
    });
  }
});
