/**
 * zlib on a heap: zalloc/zfree in a z_stream, a capped stream, and a C
 * allocator for any library that takes malloc/free function pointers.
 *
 *   deno run --allow-ffi examples/native_zlib.ts
 *
 * Needs zlib's shared library (Debian/Ubuntu: zlib1g, installed almost everywhere).
 */

import { Heap } from "../mod.ts";
import { CAllocator, openZlib, Z_STREAM_SIZE, ZlibAllocator } from "../native/mod.ts";

const zlib = openZlib().symbols;
const Z_FINISH = 4;

/** Compresses `input` with a z_stream whose memory comes from `alloc`; returns its size or the error. */
function deflate(alloc: ZlibAllocator, input: Uint8Array<ArrayBuffer>, level: number): string {
  const heap = alloc.heap;
  const stream = heap.calloc(1, Z_STREAM_SIZE); // the z_stream itself lives on the heap too
  const s = heap.pointer(stream);
  alloc.setStreamFields(s);
  const rc = zlib.deflateInit_(s, level, zlib.zlibVersion(), Z_STREAM_SIZE);
  if (rc !== 0) {
    heap.free(stream);
    return `deflateInit_ failed: ${rc} (-4 is Z_MEM_ERROR)`;
  }
  const output = new Uint8Array(Number(zlib.deflateBound(s, BigInt(input.length))));
  const fields = new BigUint64Array(heap.bytes(stream).buffer, heap.bytes(stream).byteOffset, 6);
  const words = new Uint32Array(fields.buffer, fields.byteOffset, 12);
  fields[0] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(input))); // next_in
  words[2] = input.length; // avail_in
  fields[3] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(output))); // next_out
  words[8] = output.length; // avail_out
  zlib.deflate(s, Z_FINISH);
  const size = fields[5]; // total_out
  console.log(`  zlib holds ${alloc.liveBlocks} blocks, ${heap.stats().allocatedBytes} bytes`);
  zlib.deflateEnd(s);
  heap.free(stream);
  return `${input.length} bytes -> ${size} bytes`;
}

const input = new TextEncoder().encode("tsmalloc puts C libraries on a heap. ".repeat(100_000));

{
  using heap = new Heap();
  using alloc = new ZlibAllocator(heap);
  console.log(deflate(alloc, input, 9));
  console.log(`after deflateEnd: ${alloc.liveBlocks} blocks`);
}
{
  using heap = new Heap({ limitBytes: 256 * 1024 });
  using alloc = new ZlibAllocator(heap);
  console.log(`under a 256 KiB cap: ${deflate(alloc, input, 9)}`);
  heap.check();
  console.log(`the heap carries on: zlib holds ${alloc.liveBlocks} blocks, malloc(1000) works`);
  heap.free(heap.malloc(1000));
}

// Any library that takes malloc/realloc/free function pointers can use a CAllocator;
// here they are called as C would call them.
{
  using heap = new Heap();
  using c = new CAllocator(heap, { label: "mylib" });
  const malloc = new Deno.UnsafeFnPointer(
    c.malloc as Deno.PointerObject<{ parameters: ["usize"]; result: "usize" }>,
    { parameters: ["usize"], result: "usize" },
  );
  const free = new Deno.UnsafeFnPointer(
    c.free as Deno.PointerObject<{ parameters: ["usize"]; result: "void" }>,
    { parameters: ["usize"], result: "void" },
  );
  const p = malloc.call(100n);
  console.log(`C malloc(100) -> 0x${p.toString(16)}, usable ${heap.usableSize(Number(p))}`);
  free.call(p + 8n); // a bad free in C: no exception crosses into C
  console.log(`the bad free was kept for the caller: ${(c.lastError as Error).message}`);
  free.call(p);
}
