/**
 * The shadow-model stress driver: seeded malloc/calloc/realloc/alignedAlloc/
 * free/trim against a model of what every live block must hold, in any mode.
 *
 * Every block carries a pattern at both ends of the bytes asked for; the
 * model knows each live block's size, pattern and usable size. Each
 * operation checks what it touches (a freed or moved block's pattern, a
 * calloc block's zeroes, an aligned block's alignment); at intervals the
 * driver compares stats() with the model and runs check() and a sweep of
 * every block (pattern, usable size, no overlap). Hostile but legal
 * patterns: realloc chains (one block grown and shrunk several times in a
 * row), trim() in the middle of work, and, with Workers on a shared heap,
 * blocks handed to another Worker that frees them (runSharedShadow).
 *
 * Used by tests/shadow_stress.test.ts (sized for CI) and tools/soak.ts
 * (`deno task soak`: 10M operations per mode).
 */

import assert from "node:assert/strict";
import type { Heap } from "../mod.ts";
import { assertZero, endsMismatch, KiB, MiB, Rng, writeEnds } from "./helpers.ts";

/** What the model knows about one live block. */
export interface ShadowBlock {
  /** Bytes asked for (the pattern lives at both ends of these). */
  size: number;
  /** Pattern seed. */
  seed: number;
  /** usableSize when it was handed out. */
  usable: number;
}

/** A block as it travels to another Worker: address, size, seed, usable. */
export type HandedBlock = [number, number, number, number];

/** How a run compares stats() with its model. */
export type StatsCheck =
  /** liveBlocks and allocatedBytes equal the model's (default and secure modes). */
  | "exact"
  /** leaks() lists exactly the model's blocks (debug mode: quarantined blocks are live to stats). */
  | "leaks"
  /** Nothing per Worker (a shared heap's stats add up every Worker's blocks). */
  | "none";

export interface ShadowConfig {
  seed: number;
  /** Live blocks the run hovers around. */
  targetLive: number;
  stats: StatsCheck;
  /** Compare stats() with the model every this many operations. */
  compareEvery: number;
  /** check() and a sweep of every block every this many operations. */
  checkEvery: number;
  /** trim() every this many operations (0: never). */
  trimEvery: number;
  /** Whether realloc within the usable size must keep the block where it is (not debug mode). */
  reallocInPlace: boolean;
  /** Largest block asked for (large blocks are rare). */
  maxSize?: number;
}

/** Operation counts of a run. */
export interface ShadowCounts {
  malloc: number;
  calloc: number;
  alignedAlloc: number;
  realloc: number;
  chains: number;
  free: number;
  trim: number;
  checks: number;
}

/** A seeded run of operations on one heap (one Worker's share of a shared heap). */
export class ShadowRun {
  readonly heap: Heap;
  readonly config: ShadowConfig;
  readonly rng: Rng;
  readonly blocks = new Map<number, ShadowBlock>();
  readonly counts: ShadowCounts = {
    malloc: 0,
    calloc: 0,
    alignedAlloc: 0,
    realloc: 0,
    chains: 0,
    free: 0,
    trim: 0,
    checks: 0,
  };
  /** Operations done so far. */
  done = 0;
  #order: number[] = [];
  #index = new Map<number, number>();
  #allocated = 0;
  #nextSeed = 1;

  constructor(heap: Heap, config: ShadowConfig) {
    this.heap = heap;
    this.config = config;
    this.rng = new Rng(config.seed);
  }

  /** Live blocks in the model. */
  get live(): number {
    return this.#order.length;
  }

  /** Runs `n` more operations. */
  step(n: number): void {
    const { config, rng } = this;
    for (let i = 0; i < n; i++) {
      const op = ++this.done;
      const r = rng.next();
      const mustFree = this.live > config.targetLive * 1.2;
      if (this.live > 0 && (mustFree || r >= 0.6)) this.#free(op);
      else if (r < 0.28) this.#malloc(op);
      else if (r < 0.36) this.#calloc(op);
      else if (r < 0.41) this.#alignedAlloc(op);
      else if (r < 0.585) this.#realloc(op);
      else this.#chain(op);
      if (config.trimEvery > 0 && op % config.trimEvery === 0) {
        this.counts.trim++;
        this.heap.trim();
      }
      if (op % config.compareEvery === 0 && config.stats === "exact") this.compareStats(op);
      if (op % config.checkEvery === 0) this.checkAll(op);
    }
  }

  /** stats() against the model: live blocks and allocated bytes. */
  compareStats(op: number): void {
    const s = this.heap.stats();
    assert.equal(s.liveBlocks, this.live, `op ${op}: liveBlocks`);
    assert.equal(s.allocatedBytes, this.#allocated, `op ${op}: allocatedBytes`);
  }

  /** check(), then every block: pattern, usable size, no overlap; and leaks() in debug mode. */
  checkAll(op: number): void {
    this.counts.checks++;
    this.heap.check();
    const sorted = [...this.#order].sort((a, b) => a - b);
    for (let i = 0; i < sorted.length; i++) {
      const p = sorted[i];
      const block = this.blocks.get(p)!;
      assert.equal(this.heap.usableSize(p), block.usable, `op ${op}: usableSize of 0x${hex(p)}`);
      this.#verify(p, `op ${op} sweep`);
      if (i + 1 < sorted.length) {
        assert.ok(p + block.usable <= sorted[i + 1], `op ${op}: 0x${hex(p)} overlaps the next`);
      }
    }
    if (this.config.stats === "leaks") {
      const leaks = this.heap.leaks().map((b) => b.address).sort((a, b) => a - b);
      assert.deepEqual(leaks, sorted, `op ${op}: leaks() against the model`);
    }
  }

  /** Takes `count` random blocks out of the model (patterns verified) for another Worker to free. */
  handOff(count: number): HandedBlock[] {
    const out: HandedBlock[] = [];
    while (out.length < count && this.live > 0) {
      const p = this.#pick();
      this.#verify(p, "hand-off");
      const block = this.#remove(p);
      out.push([p, block.size, block.seed, block.usable]);
    }
    return out;
  }

  /** Takes blocks another Worker handed over into the model (patterns verified). */
  receive(blocks: readonly HandedBlock[]): void {
    for (const [p, size, seed, usable] of blocks) {
      this.#add(p, { size, seed, usable });
      this.#verify(p, "received");
    }
  }

  /** Frees every block of the model, verifying each. */
  freeAll(): void {
    for (const p of [...this.#order]) {
      this.#verify(p, "final free");
      this.#remove(p);
      this.heap.free(p);
    }
  }

  // ---- operations ---------------------------------------------------------------

  #malloc(op: number): void {
    this.counts.malloc++;
    const size = this.#drawSize();
    this.#adopt(this.heap.malloc(size), size, `op ${op} malloc(${size})`);
  }

  #calloc(op: number): void {
    this.counts.calloc++;
    const count = this.rng.int(1, 4);
    const size = Math.ceil(this.#drawSize() / count);
    const p = this.heap.calloc(count, size);
    assert.notEqual(p, 0, `op ${op} calloc(${count}, ${size})`);
    assertZero(this.heap, p, count * size, `op ${op} calloc(${count}, ${size})`);
    this.#adopt(p, count * size, `op ${op} calloc`);
  }

  #alignedAlloc(op: number): void {
    this.counts.alignedAlloc++;
    const alignment = 2 ** (this.rng.chance(0.97) ? this.rng.int(0, 13) : this.rng.int(14, 20));
    const size = this.#drawSize();
    const p = this.heap.alignedAlloc(alignment, size);
    this.#adopt(p, size, `op ${op} alignedAlloc(${alignment}, ${size})`);
    assert.equal(p % alignment, 0, `op ${op} alignedAlloc(${alignment}, ${size})`);
  }

  #free(op: number): void {
    this.counts.free++;
    const p = this.#pick();
    this.#verify(p, `op ${op} free`);
    this.#remove(p);
    this.heap.free(p);
  }

  #realloc(op: number): void {
    this.counts.realloc++;
    if (this.live === 0 || this.rng.chance(0.05)) {
      const size = this.#drawSize() || 1;
      this.#adopt(this.heap.realloc(0, size), size, `op ${op} realloc(0, ${size})`);
      return;
    }
    this.#reallocBlock(this.#pick(), this.rng.chance(0.03) ? 0 : this.#drawSize(), op);
  }

  /** One block grown and shrunk 2 to 8 times in a row, by up to 2x each way. */
  #chain(op: number): void {
    if (this.live === 0) return this.#malloc(op);
    this.counts.chains++;
    let p = this.#pick();
    for (let k = this.rng.int(2, 8); k > 0 && p !== 0; k--) {
      const size = this.blocks.get(p)!.size;
      const next = Math.max(1, Math.round(size * (0.5 + 1.5 * this.rng.next())) + 1);
      p = this.#reallocBlock(p, Math.min(next, this.config.maxSize ?? 2 * MiB), op);
    }
  }

  /** realloc(p, size) with every check; returns the block's new address (0 if freed). */
  #reallocBlock(p: number, size: number, op: number): number {
    this.#verify(p, `op ${op} realloc`);
    const old = this.#remove(p);
    const q = this.heap.realloc(p, size);
    if (size === 0) {
      assert.equal(q, 0, `op ${op} realloc(p, 0)`);
      return 0;
    }
    assert.notEqual(q, 0, `op ${op} realloc(p, ${size})`);
    if (this.config.reallocInPlace && size <= old.usable) {
      assert.equal(q, p, `op ${op}: realloc within usableSize moved the block`);
    }
    const bad = endsMismatch(this.heap, q, old.size, old.seed, Math.min(old.size, size));
    if (bad !== null) assert.fail(`op ${op} realloc(${old.size} -> ${size}): ${bad}`);
    this.#adopt(q, size, `op ${op} realloc`);
    return q;
  }

  // ---- model ----------------------------------------------------------------------

  /** Mostly small, some medium (up to 128 KiB), rarely large. */
  #drawSize(): number {
    const rng = this.rng;
    const r = rng.next();
    if (r < 0.9) return rng.int(0, 1024);
    if (r < 0.995) return rng.int(1025, 128 * KiB);
    return rng.int(128 * KiB + 1, this.config.maxSize ?? 2 * MiB);
  }

  #adopt(p: number, size: number, what: string): void {
    assert.notEqual(p, 0, `${what} returned 0`);
    assert.equal(p % 16, 0, `${what} = 0x${hex(p)} is not 16-byte aligned`);
    const usable = this.heap.usableSize(p);
    assert.ok(usable >= size, `${what}: usableSize ${usable}`);
    const block = { size, seed: this.#nextSeed++ & 0xff, usable };
    this.#add(p, block);
    writeEnds(this.heap, p, size, block.seed);
  }

  #verify(p: number, what: string): void {
    const block = this.blocks.get(p)!;
    const bad = endsMismatch(this.heap, p, block.size, block.seed);
    if (bad !== null) assert.fail(`${what}: block 0x${hex(p)} (${block.size} B) corrupted: ${bad}`);
  }

  #add(p: number, block: ShadowBlock): void {
    assert.ok(!this.blocks.has(p), `0x${hex(p)} handed out while still live`);
    this.blocks.set(p, block);
    this.#index.set(p, this.#order.length);
    this.#order.push(p);
    this.#allocated += block.usable;
  }

  #remove(p: number): ShadowBlock {
    const block = this.blocks.get(p)!;
    this.blocks.delete(p);
    const i = this.#index.get(p)!;
    const last = this.#order.pop()!;
    if (last !== p) {
      this.#order[i] = last;
      this.#index.set(last, i);
    }
    this.#index.delete(p);
    this.#allocated -= block.usable;
    return block;
  }

  #pick(): number {
    return this.#order[this.rng.int(0, this.#order.length - 1)];
  }
}

function hex(n: number): string {
  return n.toString(16);
}

/** Runs `ops` operations of a private heap's run, then frees everything and checks the heap is empty. */
export function runShadow(heap: Heap, config: ShadowConfig, ops: number): ShadowCounts {
  const run = new ShadowRun(heap, config);
  run.step(ops);
  run.checkAll(ops);
  for (const [name, n] of Object.entries(run.counts)) {
    if (name === "trim" && (config.trimEvery === 0 || ops < config.trimEvery)) continue;
    assert.ok(n > 0, `no ${name} operation ran`);
  }
  run.freeAll();
  heap.trim(); // debug mode: the quarantine goes back
  heap.check();
  const s = heap.stats();
  assert.equal(s.liveBlocks, 0, "every block freed");
  assert.equal(s.allocatedBytes, 0);
  return run.counts;
}

// ---- Workers on a shared heap ------------------------------------------------------

/** What the main thread tells a shadow Worker (tests/workers/shadow.ts). */
export type ShadowWorkerMessage =
  | {
    type: "start";
    handle: unknown;
    id: number;
    workers: number;
    ops: number;
    batch: number;
    handOff: number;
    debug: boolean;
    config: ShadowConfig;
  }
  | { type: "blocks"; blocks: HandedBlock[] }
  | { type: "finish" };

/** What a shadow Worker tells the main thread. */
export type ShadowWorkerReport =
  | { type: "blocks"; to: number; blocks: HandedBlock[] }
  | { type: "done"; id: number }
  | { type: "finished"; id: number; counts: ShadowCounts; received: number }
  | { type: "error"; message: string };

/**
 * `workers` Workers, each with its own seeded run on `heap` (shared), hand
 * `handOff` blocks to the next Worker after every batch of operations; the
 * receiver frees them in its own run. Once all have run `ops` operations,
 * each frees what it holds and detaches. Resolves with the Workers' counts
 * after checking that the heap is consistent and empty.
 */
export async function runSharedShadow(
  heap: Heap,
  workers: number,
  ops: number,
  config: ShadowConfig,
  options: { debug?: boolean; batch?: number; handOff?: number; waitMs?: number } = {},
): Promise<ShadowCounts[]> {
  const url = new URL("./workers/shadow.ts", import.meta.url).href;
  const fleet = Array.from({ length: workers }, () => new Worker(url, { type: "module" }));
  const counts: ShadowCounts[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      let done = 0;
      let finished = 0;
      timer = setTimeout(
        () => reject(new Error(`shared shadow run: no end within ${options.waitMs ?? 600_000} ms`)),
        options.waitMs ?? 600_000,
      );
      fleet.forEach((worker, id) => {
        worker.onerror = (e) => {
          e.preventDefault();
          reject(new Error(`Worker ${id}: ${e.message}`));
        };
        worker.onmessage = (e: MessageEvent<ShadowWorkerReport>) => {
          const m = e.data;
          if (m.type === "error") reject(new Error(`Worker ${id}: ${m.message}`));
          else if (m.type === "blocks") {
            fleet[m.to].postMessage({ type: "blocks", blocks: m.blocks } as ShadowWorkerMessage);
          } else if (m.type === "done" && ++done === workers) {
            // Every hand-off was forwarded before this: each Worker gets its blocks first.
            for (const w of fleet) w.postMessage({ type: "finish" } as ShadowWorkerMessage);
          } else if (m.type === "finished") {
            counts[m.id] = m.counts;
            if (++finished === workers) resolve();
          }
        };
        worker.postMessage(
          {
            type: "start",
            handle: heap.share(),
            id,
            workers,
            ops,
            batch: options.batch ?? 500,
            handOff: options.handOff ?? 8,
            debug: options.debug ?? false,
            config: { ...config, seed: config.seed + id },
          } as ShadowWorkerMessage,
        );
      });
    });
  } finally {
    clearTimeout(timer);
    for (const w of fleet) w.terminate();
  }
  heap.trim();
  heap.check();
  const s = heap.stats();
  assert.equal(s.liveBlocks, 0, "every block freed, by its Worker or another");
  assert.equal(s.allocatedBytes, 0);
  return counts;
}
