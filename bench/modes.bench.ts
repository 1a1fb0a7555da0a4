/**
 * What secure and debug mode cost: the same workloads on a default heap (the
 * baseline of every group), a secure heap, a debug heap without allocation
 * stacks and a full debug heap.
 *
 *   deno bench --allow-ffi --allow-env --allow-read bench/modes.bench.ts
 *
 * Groups:
 *  - pairs: 1000 malloc(64)+free pairs per iteration
 *  - mixed: 100k ops per iteration over a window of 1024 live slots; each op
 *    frees the slot's block (if any) and allocates a new one, sizes 8..1024
 *    (seeded); the iteration ends by freeing every slot, so every iteration
 *    starts from the same heap state.
 *
 * Each (workload, mode) pair runs its own copy of the workload's code, made
 * from unique source text, so V8's type feedback for one mode (say, the debug
 * layer's slow path) cannot deoptimize another mode's loop. Inputs are
 * precomputed at load time; no memory is written in the timed bodies.
 * Full debug mode records a JS stack per malloc and free, which costs far
 * more than the rest, so it runs fewer iterations.
 */

import { Heap, type HeapOptions } from "../mod.ts";
import { prng } from "./harness.ts";

interface Mode {
  name: string;
  options: HeapOptions;
  baseline?: boolean;
  /** Iterations (and warmups) per group, for modes too slow for Deno's default calibration. */
  pairs?: { n: number; warmup: number };
  mixed?: { n: number; warmup: number };
}

const MODES: Mode[] = [
  { name: "default", options: {}, baseline: true },
  { name: "secure", options: { secure: true } },
  { name: "debug, stacks off", options: { debug: { stacks: false } } },
  // About 0.1 to 0.3 ms per malloc or free for the JS stack: 20 to 40 s per mixed iteration.
  {
    name: "debug",
    options: { debug: true },
    pairs: { n: 5, warmup: 1 },
    mixed: { n: 2, warmup: 0 },
  },
];

const PAIRS = 1000;
const MIXED_OPS = 100_000;
const WINDOW = 1024;

const random = prng(0x6d0de5);
const mixedSizes = Uint32Array.from({ length: MIXED_OPS }, () => 8 + Math.floor(random() * 1017));
const mixedSlots = Uint32Array.from({ length: MIXED_OPS }, () => Math.floor(random() * WINDOW));

let serial = 0;

/**
 * A fresh copy of `template`, compiled from unique source text so that it
 * has type feedback of its own. Templates may use only their parameters.
 */
function specialize<F extends (...args: never[]) => unknown>(template: F, tag: string): F {
  const source = `"use strict";\nreturn (${template.toString()});\n// ${tag} #${serial++}`;
  return new Function(source)() as F;
}

const pairsTemplate = (heap: Heap, pairs: number) => () => {
  for (let i = 0; i < pairs; i++) heap.free(heap.malloc(64));
};

const mixedTemplate = (
  heap: Heap,
  sizes: Uint32Array,
  slots: Uint32Array,
  live: Float64Array,
) =>
() => {
  for (let i = 0; i < sizes.length; i++) {
    const s = slots[i];
    const p = live[s];
    if (p !== 0) heap.free(p);
    live[s] = heap.malloc(sizes[i]);
  }
  for (let s = 0; s < live.length; s++) {
    if (live[s] !== 0) heap.free(live[s]);
    live[s] = 0;
  }
};

for (const mode of MODES) {
  const heap = new Heap(mode.options);
  Deno.bench({
    name: mode.name,
    group: `${PAIRS} malloc(64)+free pairs`,
    baseline: mode.baseline,
    ...mode.pairs,
    fn: specialize(pairsTemplate, `pairs ${mode.name}`)(heap, PAIRS),
  });
}

for (const mode of MODES) {
  const heap = new Heap(mode.options);
  const live = new Float64Array(WINDOW);
  Deno.bench({
    name: mode.name,
    group: `mixed: ${MIXED_OPS / 1000}k ops, sizes 8..1024, ${WINDOW} slots`,
    baseline: mode.baseline,
    ...mode.mixed,
    fn: specialize(mixedTemplate, `mixed ${mode.name}`)(heap, mixedSizes, mixedSlots, live),
  });
}
