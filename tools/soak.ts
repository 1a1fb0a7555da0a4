/**
 * `deno task soak`: the shadow-model stress of tests/shadow_stress.test.ts,
 * long: 10M seeded operations per mode (default with a tiny idle budget,
 * secure, debug, and a shared heap whose 4 Workers run 2.5M each, handing
 * blocks to each other to free), check() every 100k operations.
 *
 *   deno task soak [--ops N] [--seed S] [--modes default,secure,debug,shared]
 *
 * Prints one line per mode with its operation counts and time; exits
 * non-zero at the first failure (the driver's assertion says what and where).
 */

import { parseArgs } from "node:util";
import { Heap } from "../mod.ts";
import {
  runShadow,
  runSharedShadow,
  type ShadowConfig,
  type ShadowCounts,
} from "../tests/shadow_model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    ops: { type: "string", default: "10000000" },
    seed: { type: "string", default: "1" },
    modes: { type: "string", default: "default,secure,debug,shared" },
  },
});
const ops = Number(values.ops);
const seed = Number(values.seed);
const base: ShadowConfig = {
  seed,
  targetLive: 5000,
  compareEvery: 10_000,
  checkEvery: 100_000,
  trimEvery: 50_000,
  stats: "exact",
  reallocInPlace: true,
};

const modes: Record<string, () => Promise<ShadowCounts[]>> = {
  default: () => {
    using heap = new Heap({ idleRatio: 0, idleFloorBytes: 0, retainBytes: 0 });
    return Promise.resolve([runShadow(heap, base, ops)]);
  },
  secure: () => {
    using heap = new Heap({ secure: true });
    return Promise.resolve([runShadow(heap, { ...base, seed: seed + 1 }, ops)]);
  },
  debug: () => {
    using heap = new Heap({ debug: { stacks: false } });
    const config: ShadowConfig = {
      ...base,
      seed: seed + 2,
      targetLive: 2000,
      stats: "leaks",
      reallocInPlace: false,
    };
    return Promise.resolve([runShadow(heap, config, ops)]);
  },
  shared: async () => {
    const heap = new Heap({ shared: true });
    const config: ShadowConfig = { ...base, seed: seed + 10, targetLive: 2000, stats: "none" };
    const counts = await runSharedShadow(heap, 4, Math.ceil(ops / 4), config, {
      waitMs: 24 * 3600_000,
    });
    heap.close();
    return counts;
  },
};

for (const mode of values.modes.split(",")) {
  const run = modes[mode];
  if (run === undefined) throw new Error(`unknown mode ${mode}`);
  const start = performance.now();
  const counts = await run();
  const total: Record<string, number> = {};
  for (const c of counts) {
    for (const [k, n] of Object.entries(c)) total[k] = (total[k] ?? 0) + n;
  }
  const seconds = ((performance.now() - start) / 1000).toFixed(1);
  console.log(`${mode}: ${ops} operations in ${seconds} s, ${JSON.stringify(total)}`);
}
