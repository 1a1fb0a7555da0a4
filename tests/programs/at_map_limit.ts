/**
 * Run as a subprocess by tests/out_of_memory.test.ts: uses up the process's
 * memory mappings (vm.max_map_count) with a reservation whose every other
 * page is made readable (each such page is a mapping of its own), leaves a
 * little headroom, then allocates large blocks in the mode given as the
 * first argument until the heap says out of memory. Prints one JSON line:
 * what the heap handed out, and whether every secure block had its guards.
 * The mappings are given back before the heap is checked and emptied.
 */

import { Heap } from "../../mod.ts";
import { readable } from "../native_memory.ts";

const libc = Deno.dlopen("libc.so.6", {
  mmap: { parameters: ["usize", "usize", "i32", "i32", "i32", "i64"], result: "usize" },
  mprotect: { parameters: ["usize", "usize", "i32"], result: "i32" },
  munmap: { parameters: ["usize", "usize"], result: "i32" },
}).symbols;

const PAGE = 4096;
const mode = Deno.args[0];
const heap = new Heap({ secure: mode === "secure", debug: mode === "debug" && { stacks: false } });
// Warm up what the heap maps once (its large-block table).
heap.free(heap.malloc(300 * 1024));

// A PROT_NONE, MAP_NORESERVE reservation of 2^17 pages (PRIVATE|ANONYMOUS|NORESERVE).
const pages = 2 ** 17;
const base = Number(libc.mmap(0n, BigInt(pages * PAGE), 0, 0x22 | 0x4000, -1, 0n));
let split = 0;
while (split < pages / 2 && libc.mprotect(BigInt(base + 2 * split * PAGE), BigInt(PAGE), 1) === 0) {
  split++;
}
// Headroom: a few readable pages go back to PROT_NONE (two mappings each).
const HEADROOM = Number(Deno.args[1] ?? 24);
for (let i = 0; i < HEADROOM; i++) {
  libc.mprotect(BigInt(base + 2 * (split - 1 - i) * PAGE), BigInt(PAGE), 0);
}

const blocks: number[] = [];
let unguarded = 0;
let threw = "";
try {
  for (let i = 0; i < 200; i++) {
    const p = heap.malloc(300 * 1024);
    if (p === 0) break;
    blocks.push(p);
    if (mode === "secure" && (readable(p - 1) || readable(p + heap.usableSize(p)))) unguarded++;
  }
} catch (error) {
  threw = String(error);
}
const outOfMemory = blocks.length < 200;
const afterOom = heap.stats();
libc.munmap(BigInt(base), BigInt(pages * PAGE));
heap.check();
const live = afterOom.liveBlocks;
for (const p of blocks) heap.free(p);
heap.trim();
heap.check();
const end = heap.stats();
console.log(JSON.stringify({
  split,
  handedOut: blocks.length,
  outOfMemory,
  threw,
  unguarded,
  liveAtOom: live,
  liveAtEnd: end.liveBlocks,
  largeAtEnd: end.largeBlocks,
}));
heap.close();
