/**
 * Remote-control Worker for tests/shared.test.ts: runs one heap call per
 * message on its attached heap and answers with the result, or with the
 * error it threw (HeapError code and address kept).
 *
 * Request:  { id, op, ...arguments }
 * Answer:   { id, ok: true, value } or { id, ok: false, error: ErrorReport }
 */

import { type DebugOptions, Heap } from "../../mod.ts";
import { type Handle, patternMismatch, report, scope, threadId, writePattern } from "./common.ts";

export type OpsRequest =
  | { op: "attach"; handle: unknown; debug?: boolean | DebugOptions }
  | { op: "malloc"; size: number; tag: number }
  | { op: "mallocMany"; sizes: number[]; tagBase: number }
  | { op: "realloc"; address: number; size: number; oldSize: number; tag: number; newTag: number }
  | { op: "verify"; address: number; size: number; tag: number }
  | { op: "free"; address: number }
  | { op: "freeAll"; blocks: number[] }
  | { op: "freeRacing"; blocks: number[]; gate: SharedArrayBuffer; racers: number }
  | {
    op: "raceEach";
    action: "free" | "realloc";
    blocks: number[];
    size?: number;
    gate: SharedArrayBuffer;
    racers: number;
  }
  | { op: "stats" }
  | { op: "check" }
  | { op: "trim" }
  | { op: "close" }
  | { op: "exit" };

let heap: Heap | null = null;

function call(req: OpsRequest): unknown {
  switch (req.op) {
    case "attach":
      heap = Heap.attach(
        req.handle as Handle,
        req.debug ? { debug: req.debug === true ? { stacks: false } : req.debug } : {},
      );
      return { tid: threadId() };
    case "malloc": {
      const p = heap!.malloc(req.size);
      if (p !== 0) writePattern(heap!, p, req.size, req.tag);
      return p;
    }
    case "mallocMany": {
      // Triples address, size, tag.
      const blocks: number[] = [];
      req.sizes.forEach((size, i) => {
        const p = heap!.malloc(size);
        if (p === 0) throw new Error(`malloc(${size}) returned 0`);
        writePattern(heap!, p, size, req.tagBase + i);
        blocks.push(p, size, req.tagBase + i);
      });
      return blocks;
    }
    case "realloc": {
      const q = heap!.realloc(req.address, req.size);
      const kept = Math.min(req.size, req.oldSize);
      const damage = patternMismatch(heap!, q, req.oldSize, req.tag, kept);
      if (damage !== null) throw new Error(`realloc lost the contents: ${damage}`);
      writePattern(heap!, q, req.size, req.newTag);
      return q;
    }
    case "verify":
      return patternMismatch(heap!, req.address, req.size, req.tag);
    case "free":
      heap!.free(req.address);
      return null;
    case "freeAll": {
      for (let i = 0; i < req.blocks.length; i += 3) {
        const damage = patternMismatch(heap!, req.blocks[i], req.blocks[i + 1], req.blocks[i + 2]);
        if (damage !== null) throw new Error(`pattern damaged: ${damage}`);
        heap!.free(req.blocks[i]);
      }
      return null;
    }
    case "freeRacing": {
      // Every racer frees the same blocks in the same order, released at once:
      // counts the frees that went through and the double frees reported.
      const gate = new Int32Array(req.gate);
      Atomics.add(gate, 0, 1);
      while (Atomics.load(gate, 0) < req.racers) Atomics.wait(gate, 1, 0, 0.01);
      let freed = 0;
      let doubles = 0;
      for (const p of req.blocks) {
        try {
          heap!.free(p);
          freed++;
        } catch (e) {
          if ((e as { code?: string }).code !== "double-free") throw e;
          doubles++;
        }
      }
      return { freed, doubles };
    }
    case "raceEach": {
      // One block at a time, every racer released together for each (a
      // spinning barrier: the racers meet within a few hundred nanoseconds).
      // Answers per block the address realloc returned (free: 0), or the
      // error code.
      const gate = new Int32Array(req.gate);
      const results: (number | string)[] = [];
      for (let k = 0; k < req.blocks.length; k++) {
        Atomics.add(gate, 0, 1);
        while (Atomics.load(gate, 0) < req.racers * (k + 1));
        try {
          if (req.action === "free") heap!.free(req.blocks[k]), results.push(0);
          else results.push(heap!.realloc(req.blocks[k], req.size!));
        } catch (e) {
          results.push((e as { code?: string }).code ?? String(e));
        }
      }
      return results;
    }
    case "stats":
      return heap!.stats();
    case "check":
      heap!.check();
      return null;
    case "trim":
      return heap!.trim();
    case "close":
      heap!.close();
      heap = null;
      return null;
    case "exit":
      // Leaves without detaching: the heap keeps this Worker's pages until adopted.
      setTimeout(() => scope.close(), 0);
      return null;
  }
}

scope.onmessage = (event: MessageEvent) => {
  const { id, ...req } = event.data;
  try {
    scope.postMessage({ id, ok: true, value: call(req as OpsRequest) });
  } catch (e) {
    scope.postMessage({ id, ok: false, error: report(e) });
  }
};
