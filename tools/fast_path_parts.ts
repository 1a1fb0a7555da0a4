/**
 * What each part of the malloc/free fast paths costs: copies src/ to a
 * temporary directory once per variant, removes one part from the copy
 * (textually: the counters, the live bitmap, the page-list checks, the Used
 * count), and times a loop of malloc+free pairs of 64 bytes in a fresh Deno
 * process for each. The variants are not correct allocators (a heap without
 * its live bitmap cannot catch a double free); they only show where a
 * pair's nanoseconds go.
 *
 *   deno task bench:parts [--runs 4]
 *
 * Prints, per variant, the best of --runs processes (each the best of six
 * 2M-pair loops) and the difference from the unchanged heap.
 */

import { parseArgs } from "node:util";

interface Variant {
  name: string;
  what: string;
  /** [file under src/, text to find, replacement]; every text must occur exactly once. */
  edits: [string, string, string][];
}

export const VARIANTS: Variant[] = [
  { name: "heap", what: "the heap as it is", edits: [] },
  {
    name: "no counters",
    what: "allocatedBytes, its peak, allocCount, requestedBytes, freeCount",
    edits: [
      [
        "heap.ts",
        `        const allocated = this.#allocated + this.#classes[cls << 2];
        this.#allocated = allocated;
        if (allocated > this.#peakAllocated) this.#peakAllocated = allocated;
        this.#allocs++;
        this.#requested += size;
`,
        "",
      ],
      ["heap.ts", "          this.#allocated -= blockSize;\n          this.#frees++;\n", ""],
    ],
  },
  {
    name: "no live bitmap",
    what: "the bit set in malloc, tested and cleared in free (double-free detection)",
    edits: [
      ["pages.ts", "  u32[u32[H_BITMAP_BIAS] + (block >>> 9)] |= 1 << ((block >>> 4) & 31);\n", ""],
      ["pages.ts", "  if ((bits & bit) === 0) return 0;\n", ""],
      ["pages.ts", "  u32[word] = bits ^ bit;\n", ""],
    ],
  },
  {
    name: "no page-list checks",
    what: "free's test for a page that was full or empties",
    edits: [[
      "pages.ts",
      "(used === 0 || used + 1 === u32[d + Desc.LocalCapacity]) && (",
      "false && (",
    ]],
  },
  {
    name: "no Used count",
    what: "the per-page count of blocks handed out, in malloc and in free",
    edits: [
      ["pages.ts", "  u32[d + Desc.Used]++;\n", ""],
      [
        "pages.ts",
        "  u32[d + Desc.Used] = used;\n  return u32[d + Desc.LocalBlockSize];",
        "  return u32[d + Desc.LocalBlockSize];",
      ],
    ],
  },
];

/** The variants whose text to remove is not in the sources exactly once (empty when all apply). */
export async function missingEdits(root: string): Promise<string[]> {
  const missing: string[] = [];
  for (const v of VARIANTS) {
    for (const [file, find] of v.edits) {
      if ((await Deno.readTextFile(`${root}/src/${file}`)).split(find).length !== 2) {
        missing.push(`${v.name}: the text to remove is not in src/${file} exactly once`);
      }
    }
  }
  return missing;
}

const PAIR_LOOP = `
import { Heap } from "./mod.ts";
const N = 2_000_000;
const heap = new Heap();
function pairs(size: number) { for (let i = 0; i < N; i++) heap.free(heap.malloc(size)); }
let best = Infinity;
for (let r = 0; r < 6; r++) {
  const t = performance.now();
  pairs(64);
  best = Math.min(best, (performance.now() - t) * 1e6 / N);
}
console.log(best);
`;

async function timeVariant(v: Variant, root: string, runs: number): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "tsmalloc-parts-" });
  try {
    await Deno.mkdir(`${dir}/src`);
    for await (const f of Deno.readDir(`${root}/src`)) {
      await Deno.copyFile(`${root}/src/${f.name}`, `${dir}/src/${f.name}`);
    }
    await Deno.copyFile(`${root}/mod.ts`, `${dir}/mod.ts`);
    for (const [file, find, replace] of v.edits) {
      const path = `${dir}/src/${file}`;
      const text = await Deno.readTextFile(path);
      if (text.split(find).length !== 2) {
        throw new Error(`${v.name}: the text to remove is not in src/${file} exactly once`);
      }
      await Deno.writeTextFile(path, text.replace(find, replace));
    }
    await Deno.writeTextFile(`${dir}/pairs.ts`, PAIR_LOOP);
    let best = Infinity;
    for (let r = 0; r < runs; r++) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-ffi", `${dir}/pairs.ts`],
        stdout: "piped",
        stderr: "inherit",
      }).output();
      if (!out.success) throw new Error(`${v.name}: the pair loop failed`);
      best = Math.min(best, Number(new TextDecoder().decode(out.stdout)));
    }
    return best;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { runs: { type: "string" } } });
  const runs = Math.max(1, Number(values.runs ?? 4) | 0);
  const root = new URL("..", import.meta.url).pathname;
  // Every text to remove must be there before anything is timed.
  const missing = await missingEdits(root);
  if (missing.length > 0) throw new Error(missing.join("\n"));
  const results: [Variant, number][] = [];
  for (const v of VARIANTS) results.push([v, await timeVariant(v, root, runs)]);
  const base = results[0][1];
  console.log(`malloc+free pair of 64 B, best of ${runs} processes x 6 loops of 2M pairs\n`);
  for (const [v, ns] of results) {
    const delta = v.edits.length === 0 ? "" : ` (${(ns - base).toFixed(1)} ns)`;
    console.log(
      `${v.name.padEnd(20)} ${ns.toFixed(1).padStart(5)} ns${delta.padEnd(11)} ${v.what}`,
    );
  }
}
