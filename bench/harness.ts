/**
 * Shared bench machinery: a seeded PRNG, precomputed workloads, and
 * `specialize`, which gives every (workload, allocator) pair its own copy
 * of the workload's code.
 *
 * Why specialize: V8 keeps type feedback per function literal, and the
 * compilation cache hands back the same function for the same source text.
 * Run one workload function over several allocators and its call sites turn
 * polymorphic: Deno's FFI fast calls (about 10 ns for glibc malloc+free)
 * then fall back to the slow path (about 120 ns), and Heap's malloc is no
 * longer inlined, so its addresses get boxed. Measured on this VM: the
 * second allocator run through a shared body was 2x to 12x slower than the
 * first. A copy compiled from unique source text (the tag comment) has
 * feedback of its own, the returned closure is the only closure of its
 * literal, so V8 specializes it to its context and `a.malloc` becomes a
 * constant call target. Templates must therefore be self-contained: they
 * may use only their parameters and globals, never module-level names.
 */

import type { Allocator, Handle } from "./comparators.ts";

let serial = 0;

/** A fresh copy of `template` with feedback of its own (see the module comment). */
export function specialize<F extends (...args: never[]) => unknown>(template: F, tag: string): F {
  const source =
    `"use strict";\nreturn (${template.toString()});\n// specialized ${tag} #${serial++}`;
  return new Function(source)() as F;
}

/** mulberry32: a small, fast, seeded PRNG returning floats in [0, 1). */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform integers in [lo, hi]. */
export function uniformSizes(count: number, lo: number, hi: number, seed: number): Uint32Array {
  const r = prng(seed);
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = lo + Math.floor(r() * (hi - lo + 1));
  return out;
}

/** Pareto(xm, alpha) sizes, capped at `max` (alloc-test style: many small, a long tail). */
export function paretoSizes(
  count: number,
  xm: number,
  alpha: number,
  max: number,
  seed: number,
): Uint32Array {
  const r = prng(seed);
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    const x = xm / Math.pow(1 - r(), 1 / alpha);
    out[i] = Math.min(max, Math.floor(x));
  }
  return out;
}

/** Random slot indices in [0, window). */
export function randomSlots(count: number, window: number, seed: number): Uint32Array {
  const r = prng(seed);
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.floor(r() * window);
  return out;
}

/**
 * A schedule of `allocs` allocations with random sizes and lifetimes, as a
 * stream of ops: op[i] >= 0 allocates into slot op[i] (size[i] bytes),
 * op[i] < 0 frees slot ~op[i]. Every block is freed by the end, so the
 * stream has 2 * allocs ops. Slots are dense and reused (like trace IDs).
 *
 * Sizes: 90% uniform 8..256, 9% 257..4096, 1% 4097..65536.
 * Lifetimes (counted in allocations): 50% ~U(1,20), 40% ~U(1,2000),
 * 10% ~U(1,200000); blocks still live at the end are freed in slot order.
 */
export function lifetimeSchedule(allocs: number, seed: number) {
  const r = prng(seed);
  const total = allocs * 2;
  const op = new Int32Array(total);
  const size = new Uint32Array(total);
  // Expiry buckets: head[t] = first slot expiring at allocation step t; next[] chains.
  const head = new Int32Array(allocs + 1).fill(-1);
  let next = new Int32Array(1 << 16);
  let expiry = new Int32Array(1 << 16);
  const freeSlots: number[] = [];
  let slotCount = 0;
  let k = 0;
  let maxLive = 0;
  let live = 0;
  for (let t = 0; t < allocs; t++) {
    for (let s = head[t]; s !== -1;) {
      const n = next[s];
      op[k++] = ~s;
      freeSlots.push(s);
      live--;
      s = n;
    }
    const u = r();
    const sz = u < 0.9
      ? 8 + Math.floor(r() * 249)
      : u < 0.99
      ? 257 + Math.floor(r() * 3840)
      : 4097 + Math.floor(r() * 61440);
    const v = r();
    const span = v < 0.5 ? 20 : v < 0.9 ? 2000 : 200000;
    const when = t + 1 + Math.floor(r() * span);
    let s: number;
    if (freeSlots.length > 0) s = freeSlots.pop()!;
    else {
      s = slotCount++;
      if (s >= next.length) {
        const grownNext = new Int32Array(next.length * 2);
        grownNext.set(next);
        next = grownNext;
        const grownExpiry = new Int32Array(expiry.length * 2);
        grownExpiry.set(expiry);
        expiry = grownExpiry;
      }
    }
    op[k] = s;
    size[k++] = sz;
    if (++live > maxLive) maxLive = live;
    if (when < allocs) {
      next[s] = head[when];
      head[when] = s;
      expiry[s] = when;
    } else {
      expiry[s] = -1; // freed after the last allocation
    }
  }
  for (let s = 0; s < slotCount; s++) {
    if (expiry[s] === -1) op[k++] = ~s; // never freed, so never reused: live at the end
  }
  return { op: op.subarray(0, k), size: size.subarray(0, k), slots: slotCount, maxLive };
}

/** Which allocators a bench group runs, and how often. */
export interface GroupOptions {
  n?: number;
  warmup?: number;
  /** Leave these allocators out. */
  without?: readonly string[];
  /** Only these allocators (default: all loaded). */
  only?: readonly string[];
  /** Iteration counts for allocators far slower than the rest. */
  slow?: Record<string, { n: number; warmup: number }>;
  /**
   * Iterations run once, before the group is timed, by every allocator not
   * in `slow`: a few million operations, so that what is measured is a
   * process that has run a while (code optimised once and for all, pages
   * in use), not V8's first tiers.
   */
  prewarm?: number;
}

/** Registers one `deno bench` group: one bench per allocator, glibc the baseline. */
export function benchGroup(
  allocators: readonly Allocator[],
  name: string,
  make: (a: Allocator) => () => void,
  options: GroupOptions = {},
): void {
  for (const a of allocators) {
    if (options.without?.includes(a.name)) continue;
    if (options.only && !options.only.includes(a.name)) continue;
    const iterations = options.slow?.[a.name] ?? options;
    const fn = make(a);
    if (!options.slow?.[a.name]) { for (let i = 0; i < (options.prewarm ?? 0); i++) fn(); }
    Deno.bench({
      name: a.name,
      group: name,
      baseline: a.name === "glibc",
      n: iterations.n,
      warmup: iterations.warmup,
      fn,
    });
  }
}

/**
 * Makes `heap` (the heap comparator, when loaded) a long-running heap: 16-byte
 * malloc+free pairs until it has handed out more than 2^31 blocks (about ten
 * seconds), then says how many.
 */
export function pastTwoToThe31(heap: Allocator | undefined): void {
  if (heap === undefined) return;
  const loop = specialize(pairsTemplate, "heap past 2^31")(heap, 16, 1_000_000);
  const start = performance.now();
  for (let i = 0; i < 2 ** 31 / 1_000_000 + 1; i++) loop();
  console.error(
    `note: the heap made ${heap.allocCount?.()} allocations before the groups ` +
      `(${((performance.now() - start) / 1000).toFixed(1)} s)`,
  );
}

/** Registers an "unload" hook that prints, per allocator, requests it could not serve. */
export function reportFailuresAtExit(allocators: readonly Allocator[], file: string): void {
  globalThis.addEventListener("unload", () => {
    for (const a of allocators) {
      const f = a.failures();
      if (f > 0) {
        console.error(`note (${file}): ${a.name} could not serve ${f} requests (returned nil)`);
      }
    }
  });
}

// ---- templates (self-contained: see specialize) -------------------------------------

/** `count` malloc+free pairs of one size. */
export function pairsTemplate(a: Allocator, size: number, count: number) {
  return () => {
    if (a.reset) a.reset();
    for (let i = 0; i < count; i++) a.free(a.malloc(size));
  };
}

/** `count` malloc+free pairs, sizes cycling through `sizes` (length a power of two). */
export function cyclePairsTemplate(a: Allocator, sizes: Uint32Array, count: number) {
  const mask = sizes.length - 1;
  return () => {
    if (a.reset) a.reset();
    for (let i = 0; i < count; i++) a.free(a.malloc(sizes[i & mask]));
  };
}

/**
 * The window workload: op i frees the block in slot slots[i] and allocates
 * sizes[i] bytes into it; whatever is live at the end is freed.
 */
export function windowTemplate(
  a: Allocator,
  sizes: Uint32Array,
  slots: Uint32Array,
  window: number,
) {
  const live: Handle[] = new Array(window).fill(a.nil);
  const nil = a.nil;
  const n = sizes.length;
  return () => {
    if (a.reset) a.reset();
    for (let i = 0; i < n; i++) {
      const s = slots[i];
      a.free(live[s]);
      live[s] = a.malloc(sizes[i]);
    }
    for (let s = 0; s < window; s++) {
      a.free(live[s]);
      live[s] = nil;
    }
  };
}

/** Allocates `count` blocks (sizes cycling through `sizes`), then frees them in order. */
export function batchTemplate(a: Allocator, sizes: Uint32Array, count: number) {
  const blocks: Handle[] = new Array(count).fill(a.nil);
  const mask = sizes.length - 1;
  return () => {
    if (a.reset) a.reset();
    for (let i = 0; i < count; i++) blocks[i] = a.malloc(sizes[i & mask]);
    for (let i = 0; i < count; i++) a.free(blocks[i]);
  };
}

/** Replays a lifetimeSchedule stream of ops (no memory writes). */
export function scheduleTemplate(
  a: Allocator,
  op: Int32Array,
  size: Uint32Array,
  slotCount: number,
  limit: number,
) {
  const live: Handle[] = new Array(slotCount).fill(a.nil);
  const nil = a.nil;
  const n = Math.min(limit, op.length);
  return () => {
    if (a.reset) a.reset();
    for (let i = 0; i < n; i++) {
      const o = op[i];
      if (o >= 0) live[o] = a.malloc(size[i]);
      else {
        a.free(live[~o]);
        live[~o] = nil;
      }
    }
    // A truncated run leaves blocks live: free them too.
    for (let s = 0; s < slotCount; s++) {
      if (live[s] !== nil) {
        a.free(live[s]);
        live[s] = nil;
      }
    }
  };
}

/**
 * glibc's bench-malloc-simple pattern: allocate n blocks of `size` bytes
 * writing every byte, free the first half in allocation order (FIFO) and
 * the rest in reverse (LIFO).
 */
export function simpleTemplate(a: Allocator, size: number, n: number) {
  const blocks: Handle[] = new Array(n).fill(a.nil);
  const half = n >>> 1;
  return () => {
    if (a.reset) a.reset();
    for (let i = 0; i < n; i++) {
      const h = a.malloc(size);
      a.fill(h, size, i & 255);
      blocks[i] = h;
    }
    for (let i = 0; i < half; i++) a.free(blocks[i]);
    for (let i = n - 1; i >= half; i--) a.free(blocks[i]);
  };
}

/**
 * cache-scratch, single-threaded: `iterations` times allocate a `size`-byte
 * object, write it and read it back `reps` times, free it.
 */
export function scratchTemplate(a: Allocator, size: number, iterations: number, reps: number) {
  let bad = 0;
  return () => {
    if (a.reset) a.reset();
    for (let i = 0; i < iterations; i++) {
      const h = a.malloc(size);
      for (let j = 0; j < reps; j++) {
        a.mark(h, size, j & 255);
        if (!a.verify(h, size, j & 255)) bad++;
      }
      a.free(h);
    }
    if (bad !== 0) throw new Error(`${a.name}: ${bad} read-backs differed`);
  };
}

/** A buffer that starts at `start` bytes and doubles up to `max`, touched after each growth. */
export function doublingTemplate(a: Allocator, start: number, max: number) {
  return () => {
    if (a.reset) a.reset();
    let size = start;
    let h = a.malloc(size);
    a.mark(h, size, 1);
    while (size < max) {
      size *= 2;
      h = a.realloc!(h, size);
      a.mark(h, size, 1);
    }
    a.free(h);
  };
}

/** A string built by `increments.length` appends: realloc growing by a few bytes each time. */
export function appendTemplate(a: Allocator, increments: Uint8Array) {
  const n = increments.length;
  return () => {
    if (a.reset) a.reset();
    let size = 16;
    let h = a.malloc(size);
    for (let i = 0; i < n; i++) {
      size += increments[i];
      h = a.realloc!(h, size);
    }
    a.free(h);
  };
}
