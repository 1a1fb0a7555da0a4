/**
 * Wider workloads, glibc through FFI as the baseline of every group.
 *
 *  - pairs of every size class up to 1 KiB: 16..256 in 16-byte steps, then
 *    the 8-per-doubling classes 288..512 and 576..1024 (1000 pairs/iter)
 *  - mixed 1..8 KiB: 200k ops over a window of 1024 live slots (the sizes of
 *    the heap's fit pages; @thi.ng/malloc is left out, as in core's mixed)
 *  - lifetimes: 10M ops (5M mallocs, 5M frees) with random sizes and random
 *    lifetimes from a seeded schedule (see lifetimeSchedule); @thi.ng/malloc
 *    and Uint8Array would take far over 2 s an iteration, so they run the
 *    first 1/100 of the schedule (100k ops) in a scaled group of their own
 *  - patterns written from mimalloc-bench's descriptions, single-threaded:
 *      glibc-simple   16/32/64 B x n = 25/100/400/1600: allocate n blocks
 *                     writing every byte, free the first half FIFO and the
 *                     rest LIFO
 *      alloc-test1    1M replacements in a window of 4096 slots, Pareto
 *                     sizes (xm 8, alpha 1) capped at 1 KiB
 *      malloc-large   20 slots, 2000 replacements of 5..25 MiB blocks
 *                     (no writes; Uint8Array left out: zero-filling ~30 GB
 *                     per iteration measures memset, not allocation)
 *      cache-scratch  1000 times: malloc(1), write+read it 100 times, free
 *  - realloc growth: a buffer doubling from 16 B to 64 MiB, each size
 *    touched (first, last and one byte per 4 KiB page); a string grown by
 *    1M appends of 1..8 bytes (realloc each time, no writes). Uint8Array
 *    and bump have no in-place growth, so each append would copy the whole
 *    buffer (~2 TB per iteration): they are left out of the append group.
 *
 * Each (workload, allocator) runs its own specialized copy of the workload
 * (see harness.ts). Inputs are precomputed at load time.
 */

import { type Allocator, loadAllocators } from "./comparators.ts";
import {
  appendTemplate,
  benchGroup,
  doublingTemplate,
  type GroupOptions,
  lifetimeSchedule,
  pairsTemplate,
  paretoSizes,
  prng,
  randomSlots,
  reportFailuresAtExit,
  scheduleTemplate,
  scratchTemplate,
  simpleTemplate,
  specialize,
  uniformSizes,
  windowTemplate,
} from "./harness.ts";

const allocators = loadAllocators(
  ["glibc", "heap", "mimalloc", "jemalloc", "thing", "uint8array", "bump"],
  { thingBytes: 1024 * 1024 * 1024 },
);
reportFailuresAtExit(allocators, "workloads.bench.ts");

function group(name: string, make: (a: Allocator) => () => void, options?: GroupOptions) {
  benchGroup(allocators, name, make, options);
}

// ---- pairs per size class --------------------------------------------------------------

const CLASS_SIZES: number[] = [];
for (let s = 16; s <= 256; s += 16) CLASS_SIZES.push(s);
for (let s = 288; s <= 512; s += 32) CLASS_SIZES.push(s);
for (let s = 576; s <= 1024; s += 64) CLASS_SIZES.push(s);

for (const size of CLASS_SIZES) {
  group(
    `class ${size} B: 1000 pairs`,
    (a) => specialize(pairsTemplate, `${a.name} class ${size}`)(a, size, 1000),
    { n: 300, warmup: 30, slow: { uint8array: { n: 30, warmup: 5 } } },
  );
}

// ---- blocks above 1 KiB: fit pages ----------------------------------------------------------

// The heap cuts these from fit pages and merges them when freed (src/alloc/fit.ts):
// what that costs against size classes shows here.
const MID_OPS = 200_000;
const midSizes = uniformSizes(MID_OPS, 1025, 8192, 0x5eed);
const midSlots = randomSlots(MID_OPS, 1024, 0xc0ffee);
group(
  `mixed ${MID_OPS / 1000}k ops, 1024 live, 1..8 KiB`,
  (a) => specialize(windowTemplate, `${a.name} mid`)(a, midSizes, midSlots, 1024),
  { n: 10, warmup: 2, without: ["thing"], slow: { uint8array: { n: 3, warmup: 1 } } },
);

// ---- random sizes and lifetimes ------------------------------------------------------------

const schedule = lifetimeSchedule(5_000_000, 0x11fe);
const SCHEDULE_OPS = schedule.op.length;
group(
  `lifetimes: ${SCHEDULE_OPS / 1e6}M ops, up to ${schedule.maxLive} live`,
  (a) =>
    specialize(scheduleTemplate, `${a.name} schedule`)(
      a,
      schedule.op,
      schedule.size,
      schedule.slots,
      SCHEDULE_OPS,
    ),
  { n: 3, warmup: 1, without: ["thing", "uint8array"] },
);
group(
  `lifetimes, first ${SCHEDULE_OPS / 100 / 1000}k ops (1/100 scale)`,
  (a) =>
    specialize(scheduleTemplate, `${a.name} schedule/100`)(
      a,
      schedule.op,
      schedule.size,
      schedule.slots,
      SCHEDULE_OPS / 100,
    ),
  { n: 10, warmup: 1, only: ["glibc", "heap", "thing", "uint8array"] },
);

// ---- mimalloc-bench patterns -------------------------------------------------------------------

for (const size of [16, 32, 64]) {
  for (const n of [25, 100, 400, 1600]) {
    group(
      `glibc-simple ${size} B x ${n}`,
      (a) => specialize(simpleTemplate, `${a.name} simple ${size} ${n}`)(a, size, n),
      { n: Math.max(50, 50_000 / n), warmup: 10 },
    );
  }
}

const ALLOC_TEST_OPS = 1_000_000;
const allocTestSizes = paretoSizes(ALLOC_TEST_OPS, 8, 1, 1024, 0xa11c);
const allocTestSlots = randomSlots(ALLOC_TEST_OPS, 4096, 0x5107);
group(
  "alloc-test1: 1M ops, 4096 live, Pareto sizes <= 1 KiB",
  (a) =>
    specialize(windowTemplate, `${a.name} alloc-test1`)(a, allocTestSizes, allocTestSlots, 4096),
  { n: 10, warmup: 2, without: ["thing"], slow: { uint8array: { n: 2, warmup: 1 } } },
);
group(
  "alloc-test1, first 100k ops (1/10 scale)",
  (a) =>
    specialize(windowTemplate, `${a.name} alloc-test1/10`)(
      a,
      allocTestSizes.subarray(0, ALLOC_TEST_OPS / 10),
      allocTestSlots.subarray(0, ALLOC_TEST_OPS / 10),
      4096,
    ),
  { n: 5, warmup: 1, only: ["glibc", "heap", "thing"] },
);

const LARGE_OPS = 2000;
const largeSizes = uniformSizes(LARGE_OPS, 5 * 1024 * 1024, 25 * 1024 * 1024, 0x1a26e);
const largeSlots = randomSlots(LARGE_OPS, 20, 0x51075);
group(
  "malloc-large: 20 slots, 2000 x 5..25 MiB",
  (a) => specialize(windowTemplate, `${a.name} malloc-large`)(a, largeSizes, largeSlots, 20),
  { n: 10, warmup: 2, without: ["uint8array"] },
);

group(
  "cache-scratch: 1000 x (malloc(1), 100 x write+read, free)",
  (a) => specialize(scratchTemplate, `${a.name} scratch`)(a, 1, 1000, 100),
  { n: 50, warmup: 5 },
);

// ---- realloc growth -------------------------------------------------------------------------

group(
  "realloc doubling 16 B -> 64 MiB (touched)",
  (a) => specialize(doublingTemplate, `${a.name} doubling`)(a, 16, 64 * 1024 * 1024),
  { n: 10, warmup: 2 },
);

const APPENDS = 1_000_000;
const appendRandom = prng(0xa99e);
const increments = new Uint8Array(APPENDS).map(() => 1 + Math.floor(appendRandom() * 8));
group(
  "realloc append: 1M appends of 1..8 B",
  (a) => specialize(appendTemplate, `${a.name} append`)(a, increments),
  { n: 5, warmup: 1, without: ["uint8array", "bump"] },
);
