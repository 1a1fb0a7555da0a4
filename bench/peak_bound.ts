/**
 * How far above the truth `stats().peakAllocatedBytes` is: replays recorded
 * traces through a Heap, follows the exact allocated bytes (the usable size
 * of every live block, from usableSize), and prints the true peak beside
 * the heap's figure, which is an upper bound (see "Counting" in
 * src/alloc/page_layout.ts).
 *
 *   deno run --allow-ffi --allow-read bench/peak_bound.ts TRACE.gz...
 */

import { Heap } from "../mod.ts";
import {
  OP_CALLOC,
  OP_FREE,
  OP_MALLOC,
  OP_MEMALIGN,
  OP_REALLOC,
  readTraceFile,
  type Trace,
} from "../tools/replay.ts";

/** Replays `trace`; returns the true peak of allocated bytes and the heap's bound. */
function measure(trace: Trace): { truePeak: number; bound: number; end: number } {
  using heap = new Heap();
  const address = new Float64Array(trace.idCount);
  const usable = new Float64Array(trace.idCount);
  let allocated = 0;
  let truePeak = 0;
  const take = (id: number, p: number) => {
    if (p === 0) throw new Error(`out of memory at id ${id}`);
    address[id] = p;
    usable[id] = heap.usableSize(p);
    allocated += usable[id];
    if (allocated > truePeak) truePeak = allocated;
  };
  for (let i = 0; i < trace.events; i++) {
    const id = trace.id[i];
    const size = trace.size[i];
    switch (trace.op[i]) {
      case OP_MALLOC:
        take(id, heap.malloc(size));
        break;
      case OP_CALLOC:
        take(id, heap.calloc(trace.arg[i], size));
        break;
      case OP_MEMALIGN:
        take(id, heap.alignedAlloc(trace.arg[i], size));
        break;
      case OP_REALLOC: {
        const old = trace.arg[i];
        let p = 0;
        if (old !== 0xffff_ffff) {
          p = address[old];
          allocated -= usable[old];
        }
        take(id, heap.realloc(p, size));
        break;
      }
      case OP_FREE:
        heap.free(address[id]);
        allocated -= usable[id];
        break;
    }
  }
  const stats = heap.stats();
  if (stats.allocatedBytes !== allocated) {
    throw new Error(`allocatedBytes ${stats.allocatedBytes}, blocks hold ${allocated}`);
  }
  return { truePeak, bound: stats.peakAllocatedBytes, end: allocated };
}

const paths = Deno.args;
if (paths.length === 0) {
  console.error("usage: deno run --allow-ffi --allow-read bench/peak_bound.ts TRACE.gz...");
  Deno.exit(2);
}
console.log("| trace | true peak of allocatedBytes | peakAllocatedBytes | above the truth |");
console.log("|---|---:|---:|---:|");
for (const path of paths) {
  const trace = await readTraceFile(path);
  const { truePeak, bound } = measure(trace);
  const above = bound - truePeak;
  console.log(
    `| ${trace.name} | ${truePeak} | ${bound} | ${above} B (${
      (100 * above / truePeak).toFixed(2)
    }%) |`,
  );
}
