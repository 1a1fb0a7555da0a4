/**
 * A tour of tsmalloc: allocate native memory, let C write into it, watch the
 * heap's statistics, and see memory go back to the OS.
 *
 *   deno task demo
 */

import { getCString, Heap } from "../mod.ts";

const libc = Deno.dlopen("libc.so.6", {
  getcwd: { parameters: ["pointer", "usize"], result: "pointer" },
  memset: { parameters: ["pointer", "i32", "usize"], result: "pointer" },
});

const mib = (n: number) =>
  n < 2 ** 20 ? `${(n / 1024).toFixed(0)} KiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
const rss = () => Deno.memoryUsage().rss;

using heap = new Heap();

// 1. A block is a real address that C can use.
const path = heap.malloc(4096);
libc.symbols.getcwd(heap.pointer(path), 4096n);
const cwd = getCString(heap, path);
console.log(`getcwd() wrote into 0x${path.toString(16)}: ${JSON.stringify(cwd)}`);
heap.free(path);

// 2. Many small blocks: size classes, pages, statistics.
const before = heap.stats();
const blocks: number[] = [];
for (let i = 0; i < 200_000; i++) blocks.push(heap.malloc(16 + (i % 32) * 8));
const busy = heap.stats();
console.log(
  `200k small blocks: allocated ${mib(busy.allocatedBytes)}, committed ${
    mib(busy.committedBytes)
  }, utilization ${(busy.utilization * 100).toFixed(1)}%`,
);
for (const b of blocks) heap.free(b);
const released = heap.trim();
const after = heap.stats();
console.log(
  `freed them all; trim() gave back ${mib(released)}; committed ${mib(before.committedBytes)} -> ${
    mib(busy.committedBytes)
  } -> ${mib(after.committedBytes)}`,
);

// 3. Fragmentation: one live block in every 64 KiB page pins the pages, yet
// trim() (and growth past the peak, see idleRatio) gives back their free OS pages.
const pinned: number[] = [];
const scratch: number[] = [];
for (let i = 0; i < 64 * 512; i++) (i % 512 === 0 ? pinned : scratch).push(heap.malloc(128));
for (const b of scratch) heap.free(b);
const rssFragmented = rss();
const fragmented = heap.stats();
const purged = heap.trim();
console.log(
  `64 pages of 128 B blocks, one kept per page: committed ${mib(fragmented.committedBytes)} -> ${
    mib(heap.stats().committedBytes)
  } (trim() gave back ${mib(purged)}); RSS ${mib(rssFragmented)} -> ${mib(rss())}`,
);
for (const b of pinned) heap.free(b);

// 4. A large block has its own mapping: freeing it lowers RSS at once.
const rssStart = rss();
const big = heap.malloc(256 * 2 ** 20);
libc.symbols.memset(heap.pointer(big), 1, BigInt(256 * 2 ** 20));
const rssTouched = rss();
heap.free(big);
const rssFreed = rss();
console.log(
  `256 MiB block: RSS ${mib(rssStart)} -> ${mib(rssTouched)} after memset -> ${
    mib(rssFreed)
  } after free`,
);

heap.check();
const s = heap.stats();
console.log(
  `calls to the OS: mmap ${s.mmapCalls}, munmap ${s.munmapCalls}, madvise ${s.madviseCalls}; ` +
    `live blocks ${s.liveBlocks}; heap checked`,
);
