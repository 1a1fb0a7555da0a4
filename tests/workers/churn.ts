/**
 * Churn Worker for tests/shared.test.ts: a seeded run of malloc, calloc,
 * realloc and free on a shared heap, every block carrying a pattern of its
 * own that is checked before it is freed. One free in 8 is handed to another
 * Worker instead (through the main thread, in batches), which checks the
 * pattern and frees the block.
 *
 * Messages in:  start (ChurnStart), foreign (blocks to check and free: another
 *               Worker's, or its own when every other Worker has left), close
 * Messages out: handoff (blocks for another Worker), ack (a foreign batch was
 *               freed), bounce (foreign blocks that arrived after leaving),
 *               finished / left / closed (with counters), error
 */

import { type DebugOptions, Heap } from "../../mod.ts";
import { Rng } from "../helpers.ts";
import {
  drawSize,
  firstNot,
  type Handle,
  patternMismatch,
  report,
  scope,
  tagOf,
  writePattern,
  yieldToEventLoop,
} from "./common.ts";

export interface ChurnStart {
  type: "start";
  handle: Handle;
  /** This Worker's id (1..255), also the high byte of its blocks' tags. */
  id: number;
  /** Ids of the Workers that may receive this one's blocks. */
  peers: number[];
  ops: number;
  seed: number;
  /** Attach in debug mode with these options. */
  debug?: DebugOptions;
  /**
   * When the operations are done, hand every live block to the peers and
   * detach at once (instead of freeing them and waiting for "close").
   */
  leaveEarly?: boolean;
  /** Leave out the large blocks (each one a mapping of its own). */
  noLarge?: boolean;
}

export interface ChurnCounters {
  id: number;
  ops: number;
  /** Allocations as stats() counts them: malloc, calloc, and realloc that moved. */
  allocs: number;
  /** Frees as stats() counts them: free (own and foreign) and the old block of a moving realloc. */
  frees: number;
  handedOff: number;
  foreignFreed: number;
  callocs: number;
  reallocs: number;
  large: number;
  peakLive: number;
}

/** Live blocks around this mean: allocation is likelier below it, freeing above. */
const TARGET_LIVE = 2000;
/** Operations between two turns of the event loop (where foreign blocks come in). */
const CHUNK = 1000;
/** Blocks per handoff message. */
const BATCH = 128;
const HANDOFF_ONE_IN = 8;

let heap: Heap | null = null;
let state: "idle" | "running" | "finished" | "left" | "closed" | "failed" = "idle";
const counters: ChurnCounters = {
  id: 0,
  ops: 0,
  allocs: 0,
  frees: 0,
  handedOff: 0,
  foreignFreed: 0,
  callocs: 0,
  reallocs: 0,
  large: 0,
  peakLive: 0,
};

/** Whether an error stopped this Worker (a function: `state` changes across awaits). */
function hasFailed(): boolean {
  return state === "failed";
}

function fail(e: unknown): void {
  if (state === "failed") return;
  state = "failed";
  scope.postMessage({ type: "error", id: counters.id, error: report(e) });
}

function check(what: string | null): void {
  if (what !== null) throw new Error(`worker ${counters.id}: pattern damaged: ${what}`);
}

/** Checks and frees blocks another Worker allocated (triples address, size, tag). */
function freeForeign(blocks: number[]): void {
  const h = heap!;
  for (let i = 0; i < blocks.length; i += 3) {
    const [p, size, tag] = [blocks[i], blocks[i + 1], blocks[i + 2]];
    check(patternMismatch(h, p, size, tag));
    h.free(p);
    counters.frees++;
    counters.foreignFreed++;
  }
}

scope.onmessage = (event: MessageEvent) => {
  const msg = event.data;
  try {
    if (msg.type === "start") {
      run(msg as ChurnStart).catch(fail);
    } else if (msg.type === "foreign") {
      if (state === "left" || state === "closed") {
        scope.postMessage({ type: "bounce", id: counters.id, blocks: msg.blocks });
      } else if (state !== "failed") {
        freeForeign(msg.blocks);
        scope.postMessage({ type: "ack", id: counters.id, count: msg.blocks.length / 3 });
      }
    } else if (msg.type === "close") {
      if (state === "failed") return;
      heap!.close();
      state = "closed";
      scope.postMessage({ type: "closed", counters });
    }
  } catch (e) {
    fail(e);
  }
};

async function run(start: ChurnStart): Promise<void> {
  counters.id = start.id;
  heap = Heap.attach(start.handle, start.debug ? { debug: start.debug } : {});
  const h = heap;
  state = "running";
  const rng = new Rng(start.seed);
  const addr: number[] = [];
  const sizes: number[] = [];
  const tags: number[] = [];
  let seq = 0;
  const outbox = new Map<number, number[]>(start.peers.map((peer) => [peer, []]));
  const flush = (to: number, force: boolean) => {
    const blocks = outbox.get(to)!;
    if (blocks.length === 0 || (!force && blocks.length < BATCH * 3)) return;
    scope.postMessage({ type: "handoff", from: start.id, to, blocks });
    outbox.set(to, []);
  };
  const add = (p: number, size: number, tag: number) => {
    addr.push(p), sizes.push(size), tags.push(tag);
    if (addr.length > counters.peakLive) counters.peakLive = addr.length;
  };
  const removeAt = (j: number) => {
    const last = addr.length - 1;
    addr[j] = addr[last], sizes[j] = sizes[last], tags[j] = tags[last];
    addr.pop(), sizes.pop(), tags.pop();
  };

  for (let op = 0; op < start.ops; op++) {
    if (op > 0 && op % CHUNK === 0) {
      await yieldToEventLoop();
      if (hasFailed()) return;
    }
    counters.ops++;
    const live = addr.length;
    if (live === 0 || rng.next() < (live < TARGET_LIVE ? 0.6 : 0.4)) {
      const r = rng.next();
      let size = drawSize(rng);
      if (start.noLarge) { while (size > 128 * 1024) size = drawSize(rng); }
      const tag = tagOf(start.id, ++seq);
      if (size > 128 * 1024) counters.large++;
      if (r < 0.12 && live > 0) {
        // realloc: contents kept up to the smaller size, then a new pattern.
        const j = rng.int(0, live - 1);
        const p = addr[j];
        check(patternMismatch(h, p, sizes[j], tags[j]));
        const q = h.realloc(p, size);
        if (q === 0) throw new Error(`realloc(${p}, ${size}) returned 0`);
        check(patternMismatch(h, q, sizes[j], tags[j], Math.min(size, sizes[j])));
        counters.reallocs++;
        if (q !== p) counters.allocs++, counters.frees++;
        writePattern(h, q, size, tag);
        addr[j] = q, sizes[j] = size, tags[j] = tag;
      } else {
        const calloc = r < 0.25;
        const p = calloc ? h.calloc(1, size) : h.malloc(size);
        if (p === 0) throw new Error(`${calloc ? "calloc" : "malloc"}(${size}) returned 0`);
        if (calloc) {
          counters.callocs++;
          const at = firstNot(h.bytes(p, size), 0, 0);
          if (at >= 0) throw new Error(`calloc(1, ${size}) = 0x${p.toString(16)}: byte ${at} != 0`);
        }
        counters.allocs++;
        writePattern(h, p, size, tag);
        add(p, size, tag);
      }
    } else {
      const j = rng.int(0, live - 1);
      const [p, size, tag] = [addr[j], sizes[j], tags[j]];
      check(patternMismatch(h, p, size, tag));
      removeAt(j);
      if (rng.int(1, HANDOFF_ONE_IN) === 1) {
        const to = start.peers[rng.int(0, start.peers.length - 1)];
        outbox.get(to)!.push(p, size, tag);
        counters.handedOff++;
        flush(to, false);
      } else {
        h.free(p);
        counters.frees++;
      }
    }
  }

  if (start.leaveEarly) {
    // Every live block goes to the others, and this Worker detaches at once.
    for (let j = 0; j < addr.length; j++) {
      check(patternMismatch(h, addr[j], sizes[j], tags[j]));
      outbox.get(start.peers[j % start.peers.length])!.push(addr[j], sizes[j], tags[j]);
      counters.handedOff++;
    }
    for (const to of start.peers) flush(to, true);
    h.close();
    state = "left";
    scope.postMessage({ type: "left", counters });
    return;
  }
  for (const to of start.peers) flush(to, true);
  for (let j = 0; j < addr.length; j++) {
    check(patternMismatch(h, addr[j], sizes[j], tags[j]));
    h.free(addr[j]);
    counters.frees++;
  }
  state = "finished";
  scope.postMessage({ type: "finished", counters });
}
