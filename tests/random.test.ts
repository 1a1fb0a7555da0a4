/**
 * Randomized operations on private heaps of several configurations, through
 * the shadow-model driver (tests/shadow_model.ts).
 */

import { describe, it } from "node:test";
import { Heap, type HeapOptions } from "../mod.ts";
import { MiB } from "./helpers.ts";
import { runShadow } from "./shadow_model.ts";

const OPERATIONS = 200_000;

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
      runShadow(heap, {
        seed,
        targetLive: 5_000,
        stats: "exact",
        compareEvery: 1_000,
        checkEvery: 20_000,
        trimEvery,
        reallocInPlace: true,
      }, OPERATIONS);
    });
  }
});
