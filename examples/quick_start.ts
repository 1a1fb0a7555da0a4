/**
 * The README's first example: a C function fills native memory, JS reads it.
 *
 *   deno run --allow-ffi examples/quick_start.ts
 */

import { cString, getCString, Heap, typedArray } from "../mod.ts";

const libc = Deno.dlopen("libc.so.6", {
  qsort: { parameters: ["pointer", "usize", "usize", "function"], result: "void" },
  strlen: { parameters: ["pointer"], result: "usize" },
});

using heap = new Heap(); // unmapped when the scope ends

// Hand C a string it can keep: a NUL-terminated UTF-8 copy at a real address.
const greeting = cString(heap, "héllo, native world");
console.log("strlen:", libc.symbols.strlen(heap.pointer(greeting))); // 20n (bytes, not chars)
console.log("read back:", getCString(heap, greeting));

// An array of doubles that C sorts in place.
const count = 5;
const p = heap.malloc(count * 8);
const xs = typedArray(heap, Float64Array, p, count);
xs.set([3.5, -1, 2, 10, 0]);
const compare = new Deno.UnsafeCallback(
  { parameters: ["pointer", "pointer"], result: "i32" } as const,
  (a, b) => {
    const x = new Deno.UnsafePointerView(a!).getFloat64();
    const y = new Deno.UnsafePointerView(b!).getFloat64();
    return x < y ? -1 : x > y ? 1 : 0;
  },
);
libc.symbols.qsort(heap.pointer(p), BigInt(count), 8n, compare.pointer);
console.log("sorted by qsort:", [...xs]); // [-1, 0, 2, 3.5, 10]

heap.free(p);
heap.free(greeting);
console.log("live blocks:", heap.stats().liveBlocks); // 0
compare.close();
libc.close();
