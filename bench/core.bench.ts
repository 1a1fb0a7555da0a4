/**
 * Core comparison: tsmalloc's Heap against glibc malloc through FFI (the
 * baseline of every group), with mimalloc, jemalloc, @thi.ng/malloc,
 * `new Uint8Array(n)`, a bump allocator and a bare free list (the floors of
 * any allocator, and of one that reuses memory) where they fit.
 *
 *   deno task bench            (jemalloc is skipped with a note)
 *   deno task bench:all        (GLIBC_TUNABLES set, so jemalloc runs too)
 *
 * Groups:
 *  (a) 1000 malloc+free pairs of 16, 64 and 256 bytes, and cycling 16..256
 *  (b) mixed: 1M ops over a window of 1024 live slots; each op frees the
 *      slot's block and allocates a new one (sizes 8..1024, seeded)
 *  (c) batch: allocate 100k blocks (sizes cycling 16..256), then free all
 *
 * @thi.ng/malloc is far slower on (b) and (c), so it runs them at 1/10
 * scale in groups of their own (with glibc and heap to compare).
 *
 * Trust: each allocator runs its own copy of every loop (specialize), so
 * glibc is called through FFI's fast call: its pairs take 10 to 18 ns here
 * (the time per iteration in µs of a group of 1000 pairs is ns per pair);
 * about 140 ns would mean the harness fell off the fast call, and then no
 * ratio means anything. Every group runs a few million operations before it
 * is timed, and the heap first hands out more than 2^31 blocks, so that a
 * long-running heap is measured (its counters are Float64Array elements:
 * passing 2^31 changes nothing in the generated code, and this shows it).
 *
 * No memory is written here. bump never frees (it restarts each iteration);
 * uint8array "frees" by dropping the reference for the garbage collector.
 * Random inputs are precomputed at load time, outside every timed body.
 */

import { type Allocator, loadAllocators } from "./comparators.ts";
import {
  batchTemplate,
  benchGroup,
  cyclePairsTemplate,
  type GroupOptions,
  pairsTemplate,
  pastTwoToThe31,
  randomSlots,
  reportFailuresAtExit,
  specialize,
  uniformSizes,
  windowTemplate,
} from "./harness.ts";

const allocators = loadAllocators([
  "glibc",
  "heap",
  "mimalloc",
  "jemalloc",
  "thing",
  "uint8array",
  "bump",
  "freelist",
]);
reportFailuresAtExit(allocators, "core.bench.ts");
pastTwoToThe31(allocators.find((a) => a.name === "heap"));

const CYCLE = new Uint32Array(16).map((_, i) => 16 * (i + 1)); // 16, 32, ..., 256
const PAIRS = 1000;
const MIXED_OPS = 1_000_000;
const WINDOW = 1024;
const mixedSizes = uniformSizes(MIXED_OPS, 8, 1024, 0x5eed);
const mixedSlots = randomSlots(MIXED_OPS, WINDOW, 0xc0ffee);
const BATCH = 100_000;

function group(name: string, make: (a: Allocator) => () => void, options?: GroupOptions) {
  benchGroup(allocators, name, make, options);
}

// @thi.ng/malloc walks one address-ordered free list: on this VM it took 13 s
// per 1M mixed ops and 25-35 s per 100k batch, so it runs those workloads at
// 1/10 scale, in groups of their own with glibc and heap.
const FAST = ["glibc", "heap", "mimalloc", "jemalloc", "uint8array", "bump", "freelist"];
const SCALED = ["glibc", "heap", "thing"];

for (const size of [16, 64, 256]) {
  group(
    `pairs ${size} B (x${PAIRS})`,
    (a) => specialize(pairsTemplate, `${a.name} ${size}`)(a, size, PAIRS),
    { prewarm: 3000 },
  );
}
group(
  `pairs 16..256 B cycling (x${PAIRS})`,
  (a) => specialize(cyclePairsTemplate, `${a.name} cycle`)(a, CYCLE, PAIRS),
  { prewarm: 3000 },
);
group(
  "mixed 1M ops, 1024 live, 8..1024 B",
  (a) => specialize(windowTemplate, `${a.name} mixed`)(a, mixedSizes, mixedSlots, WINDOW),
  { n: 10, warmup: 2, only: FAST, slow: { uint8array: { n: 3, warmup: 1 } }, prewarm: 3 },
);
group(
  "mixed 100k ops (1/10 scale), 1024 live, 8..1024 B",
  (a) =>
    specialize(windowTemplate, `${a.name} mixed/10`)(
      a,
      mixedSizes.subarray(0, MIXED_OPS / 10),
      mixedSlots.subarray(0, MIXED_OPS / 10),
      WINDOW,
    ),
  { n: 20, warmup: 2, only: SCALED, slow: { thing: { n: 3, warmup: 1 } } },
);
group(
  "batch 100k alloc then free, 16..256 B",
  (a) => specialize(batchTemplate, `${a.name} batch`)(a, CYCLE, BATCH),
  { n: 20, warmup: 3, only: FAST, slow: { uint8array: { n: 5, warmup: 1 } }, prewarm: 30 },
);
group(
  "batch 10k (1/10 scale) alloc then free, 16..256 B",
  (a) => specialize(batchTemplate, `${a.name} batch/10`)(a, CYCLE, BATCH / 10),
  { n: 50, warmup: 3, only: SCALED, slow: { thing: { n: 3, warmup: 1 } } },
);
