/**
 * A live heap map: a program that keeps allocating and freeing serves its
 * heap's map on http://127.0.0.1:8080/ (open it in a browser; it refreshes
 * every second) and prints heap.summary() every five seconds. Ctrl-C stops it.
 *
 *   deno run --allow-ffi --allow-net=127.0.0.1 examples/heapmap_live.ts [port]
 */

import { Heap } from "../mod.ts";
import { serveHeapMap } from "../heapmap.ts";

using heap = new Heap();
const port = Number(Deno.args[0] ?? 8080);
await using server = serveHeapMap(heap, { port });
console.log(`heap map: ${server.url}`);

// A cache of records of a few sizes that grows, is evicted at random, and grows again.
const cache: number[] = [];
let seed = 1;
const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
const sizes = [40, 96, 200, 1500, 6000];
let ticks = 0;
const timer = setInterval(() => {
  const phase = Math.floor(ticks / 50) % 2; // 5 s growing, 5 s evicting
  for (let i = 0; i < (phase === 0 ? 1000 : 2000); i++) {
    if (phase === 0 || cache.length === 0 || random() < 0.2) {
      cache.push(heap.malloc(sizes[Math.floor(random() * sizes.length)]));
    } else {
      const j = Math.floor(random() * cache.length);
      heap.free(cache[j]);
      cache[j] = cache[cache.length - 1];
      cache.pop();
    }
  }
  if (++ticks % 50 === 0) console.log(heap.summary() + "\n");
}, 100);

await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", () => resolve()));
clearInterval(timer);
for (const p of cache) heap.free(p);
