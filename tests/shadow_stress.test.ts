/**
 * Seeded stress against a shadow model (tests/shadow_model.ts) in every
 * mode, sized for CI; `deno task soak` runs the same driver for 10M
 * operations per mode.
 */

import { describe, it } from "node:test";
import { Heap } from "../mod.ts";
import { runShadow, runSharedShadow, type ShadowConfig } from "./shadow_model.ts";
import { needs } from "./helpers.ts";

const base: Omit<ShadowConfig, "seed" | "stats" | "reallocInPlace"> = {
  targetLive: 3000,
  compareEvery: 1000,
  checkEvery: 10_000,
  trimEvery: 7_000,
};

describe("shadow-model stress: every block intact, stats() and check() agree with the model", () => {
  it("default mode, tiny idle budget (idleRatio 0, retainBytes 0): 60k operations", () => {
    using heap = new Heap({ idleRatio: 0, idleFloorBytes: 0, retainBytes: 0 });
    runShadow(heap, { ...base, seed: 0x5ad0_0001, stats: "exact", reallocInPlace: true }, 60_000);
  });

  it("SECURE MODE: 40k operations", () => {
    using heap = new Heap({ secure: true });
    runShadow(heap, { ...base, seed: 0x5ad0_0002, stats: "exact", reallocInPlace: true }, 40_000);
  });

  it("DEBUG MODE: 20k operations, leaks() against the model at every check", () => {
    using heap = new Heap({ debug: { stacks: false, quarantineBlocks: 256 } });
    runShadow(heap, {
      ...base,
      seed: 0x5ad0_0003,
      targetLive: 1500,
      checkEvery: 5000,
      stats: "leaks",
      reallocInPlace: false,
    }, 20_000);
  });

  // A Worker's module is read from disk: --allow-read.
  it("shared heap, 4 Workers x 15k operations, each handing blocks to the next to free", {
    skip: needs("read"),
  }, async () => {
    const heap = new Heap({ shared: true });
    await runSharedShadow(heap, 4, 15_000, {
      ...base,
      seed: 0x5ad0_0010,
      targetLive: 1000,
      stats: "none",
      reallocInPlace: true,
    });
    heap.close();
  });
});
