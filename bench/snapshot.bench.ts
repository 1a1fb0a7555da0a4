/**
 * heap.snapshot() on a heap of 1 GiB live in 64-byte blocks (16 Mi blocks in
 * 16 Ki pages): the target is under 50 ms without blocks, its cost following
 * the pages, not the blocks. For scale, the same heap's stats(), and a
 * snapshot with { blocks: true } (every block's live bit), and the same
 * heap made shared.
 *
 *   deno bench --allow-ffi --allow-env --allow-read bench/snapshot.bench.ts
 */

import { Heap, type HeapOptions } from "../mod.ts";

const GiB = 2 ** 30;
const BLOCK = 64;

function build(options: HeapOptions): Heap {
  const heap = new Heap(options);
  for (let i = 0; i < GiB / BLOCK; i++) {
    if (heap.malloc(BLOCK) === 0) throw new Error("out of memory building the heap");
  }
  const pages = heap.snapshot().pages.filter((p) => p.kind === "class").length;
  console.log(
    `${JSON.stringify(options)}: ${heap.stats().allocatedBytes / GiB} GiB live in ` +
      `${heap.stats().liveBlocks} blocks, ${pages} class pages`,
  );
  return heap;
}

const heap = build({});
// A shared heap counts each page's live bits (USED also counts blocks other
// Workers freed that the owner has not taken back): 128 words a page more.
const shared = build({ shared: true });

Deno.bench("stats()", { group: "snapshot-1GiB" }, () => {
  heap.stats();
});

Deno.bench("snapshot()", { group: "snapshot-1GiB", baseline: true }, () => {
  heap.snapshot();
});

Deno.bench("snapshot({ blocks: true })", { group: "snapshot-1GiB", n: 5, warmup: 1 }, () => {
  heap.snapshot({ blocks: true });
});

Deno.bench("snapshot() of a shared heap", { group: "snapshot-1GiB-shared" }, () => {
  shared.snapshot();
});
