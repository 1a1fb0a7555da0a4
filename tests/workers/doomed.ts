/**
 * A Worker that the test terminates while it works (tests/shared.test.ts):
 * it allocates `initial` blocks and reports, then keeps allocating in a loop
 * (blocks it keeps, plus malloc/free pairs) until it is terminated. Every
 * block it keeps is recorded, with its size and pattern tag, in a
 * SharedArrayBuffer the main thread reads after the Worker is gone:
 *
 *   Int32 [0]      blocks recorded (stored after their triples)
 *   Float64 [1 + 3i ..]  address, size, tag of block i
 *
 * Deno runs a terminate() at the Worker's next turn of the event loop, so
 * the loop yields after every round.
 */

import { Heap } from "../../mod.ts";
import { KiB, Rng } from "../helpers.ts";
import {
  drawSize,
  type Handle,
  report,
  scope,
  tagOf,
  threadId,
  writePattern,
  yieldToEventLoop,
} from "./common.ts";

export interface DoomedStart {
  type: "start";
  handle: Handle;
  record: SharedArrayBuffer;
  /** Blocks allocated before the "ready" report. */
  initial: number;
  seed: number;
}

/** Id in the tags of this Worker's blocks. */
export const DOOMED_ID = 9;
/** Size of the blocks of which every third is freed again: their pages keep room. */
export const HOLED_SIZE = 48;

scope.onmessage = (event: MessageEvent) => {
  run(event.data as DoomedStart).catch((e) =>
    scope.postMessage({ type: "error", error: report(e) })
  );
};

async function run(start: DoomedStart): Promise<void> {
  const heap = Heap.attach(start.handle);
  const rng = new Rng(start.seed);
  const count = new Int32Array(start.record, 0, 1);
  const triples = new Float64Array(start.record, 8);
  const capacity = Math.floor(triples.length / 3);
  let n = 0;
  let seq = 0;
  const keep = (size: number): void => {
    const tag = tagOf(DOOMED_ID, ++seq);
    const p = heap.malloc(size);
    if (p === 0) throw new Error(`malloc(${size}) returned 0`);
    writePattern(heap, p, size, tag);
    triples[3 * n] = p, triples[3 * n + 1] = size, triples[3 * n + 2] = tag;
    Atomics.store(count, 0, ++n);
  };

  for (let i = 0; i < start.initial - 4 - 300; i++) keep(drawSize(rng));
  for (let i = 0; i < 4; i++) keep(rng.int(280 * KiB, 320 * KiB));
  // 450 blocks of HOLED_SIZE of which every third is freed: pages with room and live blocks.
  const holes: number[] = [];
  for (let i = 0; i < 450; i++) {
    if (i % 3 === 0) holes.push(heap.malloc(HOLED_SIZE));
    else keep(HOLED_SIZE);
  }
  for (const p of holes) heap.free(p);
  scope.postMessage({ type: "ready", tid: threadId(), count: n, stats: heap.stats() });

  for (let round = 1;; round++) {
    for (let i = 0; i < 32 && n < capacity; i++) keep(drawSize(rng));
    for (let i = 0; i < 64; i++) {
      const size = drawSize(rng);
      const p = heap.malloc(size);
      writePattern(heap, p, size, 0);
      heap.free(p);
    }
    if (round === 4) scope.postMessage({ type: "looping", count: n });
    await yieldToEventLoop();
  }
}
