/**
 * Heap maps: see a tsmalloc heap, and its fragmentation over time, in a
 * browser. A separate entry point, so the core library stays small.
 *
 * ```ts
 * import { Heap } from "@tsmalloc/tsmalloc";
 * import { renderHeapMap } from "@tsmalloc/tsmalloc/heapmap";
 * using heap = new Heap();
 * const snapshots = [heap.snapshot()];
 * // ... work, snapshots.push(heap.snapshot()) ...
 * Deno.writeTextFileSync("map.html", renderHeapMap(snapshots));
 * ```
 *
 * @module
 */

export { type HeapMapOptions, renderHeapMap } from "./src/heapmap/render.ts";
export { type HeapMapServer, serveHeapMap, type ServeHeapMapOptions } from "./src/heapmap/serve.ts";
