/**
 * What a view of a block costs: heap.bytes(p) of small and large blocks,
 * against a view of one buffer made once (the floor: what bytes() cost when
 * it handed out the heap's own buffer) and an external buffer made per call
 * (what a buffer per block would cost without caching).
 *
 *   deno bench --allow-ffi bench/views.bench.ts
 */

import { Heap } from "../mod.ts";
import { cString, dataView, getCString } from "../mod.ts";

const heap = new Heap({ lowAddresses: false });
const SMALL = 64;
const blocks = Array.from({ length: SMALL }, () => heap.malloc(64));
const large = heap.malloc(1 << 20);
const text = cString(heap, "a string of some forty bytes, NUL-terminated");
/** One buffer made once, viewed per call: the floor of any view. */
const floor = new ArrayBuffer(1 << 20);
let sink = 0;

Deno.bench("new Uint8Array(oneBuffer, offset, 64) x64", { group: "small", baseline: true }, () => {
  for (let i = 0; i < SMALL; i++) sink += new Uint8Array(floor, i * 64, 64)[0];
});
Deno.bench("heap.bytes(p) of a 64 B block x64", { group: "small" }, () => {
  for (let i = 0; i < SMALL; i++) sink += heap.bytes(blocks[i])[0];
});
Deno.bench("dataView(heap, p) of a 64 B block x64", { group: "small" }, () => {
  for (let i = 0; i < SMALL; i++) sink += dataView(heap, blocks[i]).getUint8(0);
});
Deno.bench("getArrayBuffer per call (64 B) x64", { group: "small" }, () => {
  for (let i = 0; i < SMALL; i++) {
    const pointer = Deno.UnsafePointer.create(BigInt(blocks[i]))!;
    sink += new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer, 64))[0];
  }
});
Deno.bench("heap.bytes(p) of a 1 MiB block", { group: "large", baseline: true }, () => {
  sink += heap.bytes(large)[0];
});
Deno.bench("getArrayBuffer per call (1 MiB)", { group: "large" }, () => {
  const pointer = Deno.UnsafePointer.create(BigInt(large))!;
  sink += new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer, 1 << 20))[0];
});
Deno.bench("getCString(heap, p), 45 bytes", { group: "string", baseline: true }, () => {
  sink += getCString(heap, text).length;
});
Deno.bench("Deno.UnsafePointerView.getCString, 45 bytes", { group: "string" }, () => {
  sink += Deno.UnsafePointerView.getCString(heap.pointer(text)).length;
});

globalThis.addEventListener("unload", () => {
  if (sink === -1) console.log(sink);
});
