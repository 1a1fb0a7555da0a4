/**
 * A Worker of runSharedShadow (tests/shadow_model.ts): attaches to the
 * shared heap, runs its seeded shadow-model run in batches, hands a few
 * blocks to the next Worker after each batch and takes in those handed to
 * it (the event loop turns between batches), then frees what it holds and
 * detaches when told to finish.
 */

import { Heap } from "../../mod.ts";
import { ShadowRun, type ShadowWorkerMessage, type ShadowWorkerReport } from "../shadow_model.ts";
import { type Handle, scope } from "./common.ts";

let run: ShadowRun | null = null;
let heap: Heap | null = null;
let received = 0;
let id = 0;

function send(report: ShadowWorkerReport): void {
  scope.postMessage(report);
}

function fail(error: unknown): void {
  send({
    type: "error",
    message: error instanceof Error ? error.stack ?? error.message : String(error),
  });
}

async function start(m: Extract<ShadowWorkerMessage, { type: "start" }>): Promise<void> {
  id = m.id;
  heap = Heap.attach(m.handle as Handle, m.debug ? { debug: { stacks: false } } : {});
  run = new ShadowRun(heap, m.config);
  while (run.done < m.ops) {
    run.step(Math.min(m.batch, m.ops - run.done));
    const blocks = run.handOff(m.handOff);
    if (blocks.length > 0) send({ type: "blocks", to: (m.id + 1) % m.workers, blocks });
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  send({ type: "done", id: m.id });
}

scope.onmessage = (event: MessageEvent<ShadowWorkerMessage>) => {
  const m = event.data;
  try {
    if (m.type === "start") start(m).catch(fail);
    else if (m.type === "blocks") {
      received += m.blocks.length;
      run!.receive(m.blocks);
    } else if (m.type === "finish") {
      run!.freeAll();
      heap!.close();
      send({ type: "finished", id, counts: run!.counts, received });
    }
  } catch (error) {
    fail(error);
  }
};
