/**
 * Producer/consumer Worker for tests/shared.test.ts (the xmalloc-test
 * pattern): the producer only allocates and writes, the consumer only
 * checks and frees what it receives. The main thread carries batches from
 * one to the other and credits back to the producer, which keeps at most
 * `window` batches in flight.
 *
 * Producer: in start, credit, close; out batch, produced, closed, error.
 * Consumer: in start, batch, close; out consumed, closed, error.
 */

import { Heap } from "../../mod.ts";
import { KiB, Rng } from "../helpers.ts";
import { type Handle, patternMismatch, report, scope, tagOf, writePattern } from "./common.ts";

export interface XmallocStart {
  type: "start";
  role: "producer" | "consumer";
  handle: Handle;
  /** Producer: blocks to allocate, per batch, batches in flight at most. */
  total?: number;
  batch?: number;
  window?: number;
  seed?: number;
}

let heap: Heap | null = null;
let failed = false;
let credits = 0;
let wake: (() => void) | null = null;

function fail(e: unknown): void {
  if (failed) return;
  failed = true;
  scope.postMessage({ type: "error", error: report(e) });
}

/** Mostly small, some up to 32 KiB. */
function drawSize(rng: Rng): number {
  return rng.chance(0.9) ? rng.int(1, 1024) : rng.int(1025, 32 * KiB);
}

async function produce(start: XmallocStart): Promise<void> {
  const h = heap!;
  const rng = new Rng(start.seed!);
  credits = start.window!;
  let seq = 0;
  while (seq < start.total!) {
    while (credits === 0) {
      await new Promise<void>((resolve) => wake = resolve);
      if (failed) return;
    }
    credits--;
    const blocks: number[] = [];
    for (let i = 0; i < start.batch! && seq < start.total!; i++) {
      const size = drawSize(rng);
      const tag = tagOf(1, ++seq);
      const p = h.malloc(size);
      if (p === 0) throw new Error(`malloc(${size}) returned 0`);
      writePattern(h, p, size, tag);
      blocks.push(p, size, tag);
    }
    scope.postMessage({ type: "batch", blocks });
  }
  scope.postMessage({ type: "produced", allocs: seq });
}

function consume(blocks: number[]): void {
  const h = heap!;
  for (let i = 0; i < blocks.length; i += 3) {
    const damage = patternMismatch(h, blocks[i], blocks[i + 1], blocks[i + 2]);
    if (damage !== null) throw new Error(`consumer: pattern damaged: ${damage}`);
    h.free(blocks[i]);
  }
  scope.postMessage({ type: "consumed", count: blocks.length / 3 });
}

scope.onmessage = (event: MessageEvent) => {
  const msg = event.data;
  if (failed) return;
  try {
    if (msg.type === "start") {
      const start = msg as XmallocStart;
      heap = Heap.attach(start.handle);
      if (start.role === "producer") produce(start).catch(fail);
    } else if (msg.type === "credit") {
      credits++;
      wake?.();
      wake = null;
    } else if (msg.type === "batch") {
      consume(msg.blocks);
    } else if (msg.type === "close") {
      heap!.close();
      scope.postMessage({ type: "closed" });
    }
  } catch (e) {
    fail(e);
  }
};
