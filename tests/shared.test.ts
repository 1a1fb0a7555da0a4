/**
 * Shared heaps across Workers: `new Heap({ shared: true })`, `heap.share()`,
 * `Heap.attach(handle)` in Workers (scripts in tests/workers/).
 *
 * Every wait on a Worker is bounded (WAIT_MS); a wait that runs out fails the
 * test and terminates the Workers. The main thread calls no heap method that
 * could wait on a lock while a Worker may hold it (check() while Workers run
 * is done by a checker Worker). After a failure the heap is left mapped: in
 * Deno 2.9 terminate() does not stop a Worker inside a synchronous run (it
 * takes effect at the Worker's next turn of the event loop), and such a
 * Worker must not touch unmapped memory.
 */

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, HeapError, type HeapStats } from "../mod.ts";
import { assertStillWorks, KiB, MiB, needs } from "./helpers.ts";
import { poke } from "./native_memory.ts";
import type { ChurnCounters, ChurnStart } from "./workers/churn.ts";
import {
  type ErrorReport,
  type Handle,
  patternMismatch,
  tagOf,
  threadExited,
} from "./workers/common.ts";
import { type DoomedStart, HOLED_SIZE } from "./workers/doomed.ts";
import type { OpsRequest } from "./workers/ops.ts";
import type { XmallocStart } from "./workers/xmalloc.ts";

/** Longest wait for any answer from a Worker. */
const WAIT_MS = 60_000;

/**
 * Tests that start Workers: a Worker's module is read from disk, which takes
 * --allow-read (`deno task test` grants it; `deno test --allow-ffi` skips them).
 */
const WORKERS = { skip: needs("read") };

function spawn(name: string): Worker {
  return new Worker(new URL(`./workers/${name}.ts`, import.meta.url).href, { type: "module" });
}

/** `promise`, or a rejection after WAIT_MS; either way failure terminates `workers`. */
async function bounded<T>(promise: Promise<T>, what: string, workers: Worker[]): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${WAIT_MS} ms`)), WAIT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } catch (e) {
    for (const w of workers) w.terminate();
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** Waits (bounded) until thread `tid` of this process has exited. */
async function threadExit(tid: number, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!threadExited(tid)) {
    if (Date.now() > deadline) {
      throw new Error(`${what}: thread ${tid} still runs after ${WAIT_MS} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * Listens to `worker`: the returned function resolves with the first message
 * of a type (received before or after the call), and rejects on an error
 * message or event.
 */
function listen(worker: Worker): <T>(type: string) => Promise<T> {
  const received = new Map<string, unknown>();
  const waiting = new Map<string, (message: unknown) => void>();
  let failure: Error | null = null;
  const failures: ((e: Error) => void)[] = [];
  const fail = (e: Error) => {
    failure ??= e;
    for (const reject of failures) reject(e);
  };
  worker.onmessage = (e: MessageEvent) => {
    if (e.data.type === "error") {
      fail(new Error(`${e.data.error.name}: ${e.data.error.message}\n${e.data.error.stack}`));
    } else if (waiting.has(e.data.type)) waiting.get(e.data.type)!(e.data);
    else received.set(e.data.type, e.data);
  };
  worker.onerror = (e) => {
    e.preventDefault();
    fail(new Error(e.message));
  };
  return <T>(type: string) =>
    new Promise<T>((resolve, reject) => {
      if (failure) return reject(failure);
      failures.push(reject);
      if (received.has(type)) resolve(received.get(type) as T);
      else waiting.set(type, resolve as (message: unknown) => void);
    });
}

// ---- remote-controlled Workers (workers/ops.ts) ----------------------------------------

interface Answer {
  id: number;
  ok: boolean;
  value?: unknown;
  error?: ErrorReport;
}

/** A Worker that runs one heap call per request. */
class Remote {
  readonly worker: Worker;
  #next = 0;
  #waiting = new Map<number, (answer: Answer) => void>();
  #crashed: Promise<never>;

  constructor(readonly name: string) {
    this.worker = spawn("ops");
    let crash!: (e: Error) => void;
    this.#crashed = new Promise<never>((_, reject) => crash = reject);
    this.#crashed.catch(() => {});
    this.worker.onmessage = (e: MessageEvent) => {
      const done = this.#waiting.get(e.data.id);
      this.#waiting.delete(e.data.id);
      done?.(e.data);
    };
    this.worker.onerror = (e) => {
      e.preventDefault();
      crash(new Error(`${name}: ${e.message}`));
    };
  }

  /** Sends one request and waits (bounded) for the answer. */
  send(req: OpsRequest): Promise<Answer> {
    const id = ++this.#next;
    const answer = new Promise<Answer>((resolve) => this.#waiting.set(id, resolve));
    this.worker.postMessage({ id, ...req });
    return bounded(Promise.race([answer, this.#crashed]), `${this.name} ${req.op}`, [
      this.worker,
    ]);
  }

  /** The call's result; throws if it threw in the Worker. */
  async call<T = unknown>(req: OpsRequest): Promise<T> {
    const answer = await this.send(req);
    if (!answer.ok) {
      const { name, message } = answer.error!;
      throw new Error(`${this.name}: ${req.op} threw ${name}: ${message}`);
    }
    return answer.value as T;
  }

  /** The error the call threw in the Worker; fails if it did not throw. */
  async fails(req: OpsRequest): Promise<ErrorReport> {
    const answer = await this.send(req);
    assert.ok(!answer.ok, `${this.name}: ${req.op} should have thrown, returned ${answer.value}`);
    return answer.error!;
  }

  /** Attaches to the heap; returns the Worker's OS thread id. */
  async attach(handle: Handle): Promise<number> {
    return (await this.call<{ tid: number }>({ op: "attach", handle })).tid;
  }

  terminate(): void {
    this.worker.terminate();
  }
}

/** `n` remote Workers, terminated when `body` ends, whatever happens. */
async function withRemotes<T>(n: number, body: (remotes: Remote[]) => Promise<T>): Promise<T> {
  const remotes = Array.from({ length: n }, (_, i) => new Remote(String.fromCharCode(65 + i)));
  try {
    return await body(remotes);
  } finally {
    for (const r of remotes) r.terminate();
  }
}

/** Asserts that a Worker's call threw HeapError `code` for `address`. */
function assertHeapErrorReport(error: ErrorReport, code: string, address: number, what: string) {
  assert.equal(error.name, "HeapError", `${what}: ${error.name}: ${error.message}`);
  assert.equal(error.code, code, `${what}: ${error.message}`);
  assert.equal(error.address, address, `${what}: address`);
}

/** The usable sizes of the blocks in triples (address, size, tag) added up. */
function usableTotal(heap: Heap, triples: number[]): number {
  let total = 0;
  for (let i = 0; i < triples.length; i += 3) total += heap.usableSize(triples[i]);
  return total;
}

/** Checks the pattern of, then frees, the blocks in triples (address, size, tag). */
function verifyAndFree(heap: Heap, triples: number[], from = 0, to = triples.length / 3): void {
  for (let i = from; i < to; i++) {
    const damage = patternMismatch(heap, triples[3 * i], triples[3 * i + 1], triples[3 * i + 2]);
    assert.equal(damage, null, "block contents kept");
    heap.free(triples[3 * i]);
  }
}

// ---- churn fleet ---------------------------------------------------------------

interface ChurnConfig {
  /** Operations per Worker (one Worker per entry). */
  ops: number[];
  seed: number;
  debug?: ChurnStart["debug"];
  /** Per Worker: hand every block to the others and detach when done. */
  leaveEarly?: boolean[];
  /** Leave out large blocks (their mappings come and go). */
  noLarge?: boolean;
  /** Stops the run (the Workers are terminated) when it aborts. */
  signal?: AbortSignal;
  /** Awaited once every block is freed, before the Workers are told to detach. */
  beforeClose?: () => Promise<void>;
  /**
   * Have a checker Worker call check() after every this many handoff batches
   * (0: never). Not the main thread: a check() that waited forever on a stuck
   * Worker would hang it, where a Worker's answer is awaited with a bound.
   */
  checkEvery?: number;
}

interface ChurnResult {
  /** Final counters, indexed by Worker id - 1. */
  counters: ChurnCounters[];
  /** check() calls made (and passed) in the checker Worker while the churn Workers ran. */
  checksWhileRunning: number;
}

/**
 * Runs churn Workers on `heap` until every block is freed and every Worker
 * detached. The main thread routes handoff batches to their target Worker
 * (or, when it has left, to another one) and counts the blocks in flight.
 */
async function runChurn(heap: Heap, config: ChurnConfig): Promise<ChurnResult> {
  const n = config.ops.length;
  const workers = config.ops.map(() => spawn("churn"));
  const ids = workers.map((_, i) => i + 1);
  const left = new Set<number>();
  const ended = new Map<number, ChurnCounters>(); // finished or left
  const closed = new Map<number, ChurnCounters>();
  let outstanding = 0; // blocks handed to a Worker and not yet acknowledged
  let batches = 0;
  let checks = 0;
  let next = 0;
  const checker = config.checkEvery ? new Remote("checker") : null;
  let checking: Promise<void> | null = null;
  let allEnded!: () => void;
  let allClosed!: () => void;
  let abort!: (e: unknown) => void;
  const failed = new Promise<never>((_, reject) => abort = reject);
  const ending = new Promise<void>((resolve) => allEnded = resolve);
  const closing = new Promise<void>((resolve) => allClosed = resolve);
  failed.catch(() => {});
  config.signal?.addEventListener("abort", () => abort(new Error("churn stopped")));

  const route = (to: number, blocks: number[]) => {
    if (left.has(to)) {
      // Another Worker that is still there, or (the last one left) the one that allocated them.
      const owner = Math.floor(blocks[2] / 2 ** 24);
      const others = ids.filter((id) => !left.has(id) && id !== owner);
      to = others.length > 0 ? others[next++ % others.length] : owner;
    }
    outstanding += blocks.length / 3;
    workers[to - 1].postMessage({ type: "foreign", blocks });
  };
  const settle = () => {
    if (ended.size === n && outstanding === 0) allEnded();
  };
  workers.forEach((w, i) => {
    w.onerror = (e) => {
      e.preventDefault();
      abort(new Error(`churn Worker ${i + 1}: ${e.message}`));
    };
    w.onmessage = (e: MessageEvent) => {
      const m = e.data;
      try {
        if (m.type === "handoff") {
          route(m.to, m.blocks);
          if (checker && ++batches % config.checkEvery! === 0 && checking === null) {
            // check() stops the world: every churn Worker waits between two of its calls.
            checking = checker.call({ op: "check" }).then(() => {
              checks++;
              checking = null;
            }, abort);
          }
        } else if (m.type === "bounce") {
          outstanding -= m.blocks.length / 3;
          route(m.id, m.blocks);
        } else if (m.type === "ack") {
          outstanding -= m.count;
          settle();
        } else if (m.type === "finished" || m.type === "left") {
          ended.set(m.counters.id, m.counters);
          if (m.type === "left") left.add(m.counters.id);
          settle();
        } else if (m.type === "closed") {
          closed.set(m.counters.id, m.counters);
          if (closed.size + left.size === n) allClosed();
        } else if (m.type === "error") {
          abort(new Error(`churn Worker ${m.id}: ${m.error.message}\n${m.error.stack ?? ""}`));
        }
      } catch (err) {
        abort(err);
      }
    };
  });

  const handle = heap.share();
  if (checker) await checker.attach(handle);
  workers.forEach((w, i) => {
    const start: ChurnStart = {
      type: "start",
      handle,
      id: i + 1,
      peers: ids.filter((id) => id !== i + 1),
      ops: config.ops[i],
      seed: config.seed + 7919 * i,
      debug: config.debug,
      leaveEarly: config.leaveEarly?.[i] ?? false,
      noLarge: config.noLarge ?? false,
    };
    w.postMessage(start);
  });
  try {
    await bounded(Promise.race([ending, failed]), "churn Workers finishing", workers);
    if (checking) await checking;
    await checker?.call({ op: "close" });
    await config.beforeClose?.();
    for (const id of ids) if (!left.has(id)) workers[id - 1].postMessage({ type: "close" });
    await bounded(Promise.race([closing, failed]), "churn Workers detaching", workers);
  } finally {
    for (const w of workers) w.terminate();
    checker?.terminate();
  }
  return {
    counters: ids.map((id) => closed.get(id) ?? ended.get(id)!),
    checksWhileRunning: checks,
  };
}

function sum(counters: ChurnCounters[], field: keyof ChurnCounters): number {
  return counters.reduce((total, c) => total + c[field], 0);
}

/** The end state every churn run must reach once every Worker has detached. */
function assertChurnLeftHeapEmpty(heap: Heap, result: ChurnResult, ops: number[]): void {
  const { counters } = result;
  assert.deepEqual(counters.map((c) => c.ops), ops, "every Worker ran all of its operations");
  for (const c of counters) {
    assert.ok(c.handedOff > 0, `Worker ${c.id} handed blocks to other Workers`);
    assert.ok(c.foreignFreed > 0, `Worker ${c.id} freed other Workers' blocks`);
  }
  assert.equal(sum(counters, "foreignFreed"), sum(counters, "handedOff"), "every handoff freed");

  heap.check();
  const s = heap.stats();
  assert.equal(s.allocatedBytes, 0, "allocatedBytes once every block is freed");
  assert.equal(s.liveBlocks, 0, "liveBlocks once every block is freed");
  assert.equal(s.allocCount, sum(counters, "allocs"), "allocCount is the Workers' total");
  assert.equal(s.freeCount, sum(counters, "frees"), "freeCount is the Workers' total");
  assert.equal(s.largeBlocks, 0);

  // The detached Workers' pages are adopted and, all empty, given back.
  assert.ok(heap.trim() > 0, "trim() gives back the detached Workers' empty pages");
  heap.check();
  const t = heap.stats();
  assert.equal(t.retainedBytes, 0, "trim() leaves no retained page");
  assert.equal(
    t.committedBytes,
    t.metadataBytes,
    "after trim() only metadata stays committed: every page came back",
  );
}

// ---- tests -------------------------------------------------------------------------

describe("shared heap: Workers churning on one heap", () => {
  it(
    "4 Workers x 200k seeded ops, 1 free in 8 made by another Worker: patterns intact, heap consistent and empty after they detach",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      const ops = [200_000, 200_000, 200_000, 200_000];
      const result = await runChurn(heap, { ops, seed: 1234, checkEvery: 16 });
      assert.ok(result.checksWhileRunning > 0, "check() ran while the Workers were running");
      assertChurnLeftHeapEmpty(heap, result, ops);
      assert.ok(sum(result.counters, "large") > 0, "the mix had large blocks");
      assert.ok(sum(result.counters, "callocs") > 0 && sum(result.counters, "reallocs") > 0);
      heap.close();
    },
  );
});

describe("shared heap in debug mode", () => {
  it(
    "DEBUG MODE: 4 debug-mode Workers x 200k seeded ops, 1 free in 8 made by another Worker: patterns intact, heap consistent and empty after they detach",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true, debug: { stacks: false } });
      const ops = [200_000, 200_000, 200_000, 200_000];
      const result = await runChurn(heap, {
        ops,
        seed: 5678,
        debug: { stacks: false },
      });
      assertChurnLeftHeapEmpty(heap, result, ops);
      heap.close();
    },
  );

  // Without large blocks: with them, the same race also read a large block another Worker
  // had just unmapped, and the whole process died of SIGSEGV.
  it(
    "DEBUG MODE: check() in a debug-mode Worker while debug-mode Workers churn passes every time",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true, debug: { stacks: false } });
      const ops = [200_000, 200_000, 200_000, 200_000];
      const debug = { stacks: false };
      let checks = 0;
      const result = await withRemotes(1, async ([checker]) => {
        await checker.call({ op: "attach", handle: heap.share(), debug: true });
        const stop = new AbortController();
        let running = true;
        const checking = (async () => {
          while (running) {
            await checker.call({ op: "check" });
            checks++;
          }
        })();
        checking.catch(() => stop.abort());
        try {
          // Checks stop before the Workers detach (see the next test for that).
          return await runChurn(heap, {
            ops,
            seed: 5678,
            debug,
            noLarge: true,
            signal: stop.signal,
            beforeClose: async () => {
              running = false;
              await checking;
            },
          });
        } catch (e) {
          await checking; // its error, if the run stopped because a check failed
          throw e;
        } finally {
          running = false;
        }
      });
      assert.ok(checks > 1, "check() ran while the Workers churned");
      assertChurnLeftHeapEmpty(heap, result, ops);
      heap.close();
    },
  );

  it(
    "DEBUG MODE: while debug-mode Workers detach (close() gives their quarantine back), check() in another Worker passes every time",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true, debug: { stacks: false } });
      const failures: string[] = [];
      let checks = 0;
      await withRemotes(2, async ([checker, d]) => {
        const handle = heap.share();
        await checker.attach(handle); // not in debug mode: its check() is the stop-the-world one
        let running = true;
        const checking = (async () => {
          while (running) {
            const answer = await checker.send({ op: "check" });
            if (!answer.ok) failures.push(answer.error!.message);
            checks++;
          }
        })();
        try {
          for (let round = 0; round < 20; round++) {
            await d.call({ op: "attach", handle, debug: true });
            const sizes = Array.from({ length: 3000 }, (_, i) => 16 + (i * 13) % 500);
            const blocks = await d.call<number[]>({
              op: "mallocMany",
              sizes,
              tagBase: tagOf(4, 0),
            });
            await d.call({ op: "freeAll", blocks }); // into D's quarantine
            await d.call({ op: "close" });
          }
        } finally {
          running = false;
          await checking;
        }
      });
      assert.ok(checks > 0);
      assert.equal(
        failures.length,
        0,
        `${failures.length} of ${checks} checks failed, the first with: ${failures[0]}`,
      );
      heap.check();
      assert.equal(heap.stats().allocatedBytes, 0);
      heap.close();
    },
  );
});

describe("shared heap in secure mode", () => {
  it(
    "3 Workers x 100k seeded ops on a secure shared heap: patterns intact, heap consistent and empty after they detach",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true, secure: true });
      assert.equal(heap.share().secure, true, "the handle says secure");
      const ops = [100_000, 100_000, 100_000];
      const result = await runChurn(heap, { ops, seed: 31, checkEvery: 16 });
      assertChurnLeftHeapEmpty(heap, result, ops);
      heap.close();
    },
  );

  it("a free list rebuilt after a corrupted link leaves out the blocks another Worker freed; the owner takes them back once", () => {
    const heap = new Heap({ shared: true, secure: true });
    // A second owner in the same thread frees like another Worker, deterministically.
    const other = Heap.attach(heap.share());
    const blocks = Array.from({ length: 40 }, () => heap.malloc(64));
    for (let i = 10; i < 20; i++) other.free(blocks[i]); // wait for the owner to take them back
    heap.free(blocks[5]);
    poke(blocks[5], 4); // the encoded free-list link is the block's first 4 bytes
    assert.throws(() => heap.malloc(64), (e) => e instanceof HeapError && e.code === "corrupt");
    heap.check(); // the rebuilt list holds no block that still waits for its owner
    const again = Array.from({ length: 2000 }, () => heap.malloc(64));
    assert.equal(new Set([...blocks.slice(20), ...blocks.slice(0, 5), ...again]).size, 2025);
    for (const p of [...blocks.slice(0, 5), ...blocks.slice(6, 10), ...blocks.slice(20)]) {
      other.free(p);
    }
    for (const p of again) heap.free(p);
    heap.check();
    assert.equal(heap.stats().allocatedBytes, 0);
    assert.equal(heap.stats().liveBlocks, 0);
    other.close();
    heap.close();
  });
});

describe("shared heap: producer/consumer (xmalloc-test pattern)", () => {
  it(
    "one Worker only allocates, another only frees what it receives: 200k blocks, heap consistent and empty, freed memory reused by the producer",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      const handle = heap.share();
      const TOTAL = 200_000;
      const producer = spawn("xmalloc");
      const consumer = spawn("xmalloc");
      const workers = [producer, consumer];
      let abort!: (e: unknown) => void;
      const failed = new Promise<never>((_, reject) => abort = reject);
      failed.catch(() => {});
      let produced = -1;
      let consumed = 0;
      let closedCount = 0;
      let drained!: () => void;
      let closed!: () => void;
      const draining = new Promise<void>((resolve) => drained = resolve);
      const closing = new Promise<void>((resolve) => closed = resolve);
      const settle = () => {
        if (produced === consumed) drained();
      };
      for (const [w, name] of [[producer, "producer"], [consumer, "consumer"]] as const) {
        w.onerror = (e) => {
          e.preventDefault();
          abort(new Error(`${name}: ${e.message}`));
        };
        w.onmessage = (e: MessageEvent) => {
          const m = e.data;
          if (m.type === "batch") consumer.postMessage({ type: "batch", blocks: m.blocks });
          else if (m.type === "consumed") {
            consumed += m.count;
            producer.postMessage({ type: "credit" });
            settle();
          } else if (m.type === "produced") {
            produced = m.allocs;
            settle();
          } else if (m.type === "closed") {
            if (++closedCount === 2) closed();
          } else if (m.type === "error") {
            abort(new Error(`${name}: ${m.error.message}\n${m.error.stack ?? ""}`));
          }
        };
      }
      const start: XmallocStart = { type: "start", role: "consumer", handle };
      consumer.postMessage(start);
      producer.postMessage(
        {
          ...start,
          role: "producer",
          total: TOTAL,
          batch: 1000,
          window: 8,
          seed: 4242,
        } satisfies XmallocStart,
      );
      try {
        await bounded(Promise.race([draining, failed]), "producer/consumer", workers);
        for (const w of workers) w.postMessage({ type: "close" });
        await bounded(Promise.race([closing, failed]), "producer/consumer detaching", workers);
      } finally {
        for (const w of workers) w.terminate();
      }
      assert.equal(produced, TOTAL);
      assert.equal(consumed, TOTAL);

      heap.check();
      const s = heap.stats();
      assert.equal(s.allocatedBytes, 0);
      assert.equal(s.liveBlocks, 0);
      assert.equal(s.allocCount, TOTAL);
      assert.equal(s.freeCount, TOTAL);
      // Blocks the consumer frees go back to the producer's pages and are used again.
      // Sizes average above 2 KiB (see xmalloc.ts): TOTAL KiB is a floor of all bytes allocated.
      assert.ok(
        s.peakCommittedBytes < TOTAL * KiB / 4,
        `peak committed ${s.peakCommittedBytes} B for ${TOTAL} blocks allocated in all`,
      );
      heap.trim();
      heap.check();
      const t = heap.stats();
      assert.equal(t.committedBytes, t.metadataBytes, "after trim() only metadata stays committed");
      heap.close();
    },
  );
});

describe("shared heap: Workers that leave", () => {
  it(
    "Workers that detach early hand their blocks to the others, whose frees and allocations go on while the detached Workers' pages are adopted",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      const ops = [60_000, 100_000, 140_000, 200_000];
      const result = await runChurn(heap, {
        ops,
        seed: 99,
        leaveEarly: [true, true, true, false],
        checkEvery: 8,
      });
      assertChurnLeftHeapEmpty(heap, result, ops);
      heap.close();
    },
  );

  it(
    "a Worker terminated while it allocates in a loop: once its thread is gone, the main thread's next allocation adopts its pages; its blocks stay live and intact until freed; trim() then gives every page back",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      const INITIAL = 20_000;
      const record = new SharedArrayBuffer(8 + 8 * 3 * 40_000);
      const worker = spawn("doomed");
      const next = listen(worker);
      let count: number;
      let ready: { tid: number; count: number; stats: HeapStats };
      try {
        worker.postMessage(
          {
            type: "start",
            handle: heap.share(),
            record,
            initial: INITIAL,
            seed: 77,
          } satisfies DoomedStart,
        );
        ready = await bounded(next("ready"), "doomed Worker ready", [worker]);
        assert.equal(ready.count, INITIAL);
        assert.equal(ready.stats.liveBlocks, INITIAL, "the Worker's stats() counts its blocks");
        const looping = await bounded(next<{ count: number }>("looping"), "doomed Worker looping", [
          worker,
        ]);
        // Deno runs terminate() at the Worker's next turn of the event loop, between two
        // rounds of its loop: it cannot stop a Worker inside a (synchronous) heap call.
        worker.terminate();
        await threadExit(ready.tid, "terminated Worker");
        count = Atomics.load(new Int32Array(record, 0, 1), 0);
        assert.ok(count >= looping.count && looping.count > INITIAL, "terminated while allocating");
      } finally {
        worker.terminate();
      }
      const blocks = Array.from(new Float64Array(record, 8, 3 * count));

      // Its blocks are intact and still count: the program may hold their addresses.
      for (let i = 0; i < count; i++) {
        assert.equal(
          patternMismatch(heap, blocks[3 * i], blocks[3 * i + 1], blocks[3 * i + 2]),
          null,
        );
      }
      let s = heap.stats();
      assert.equal(s.liveBlocks, count, "liveBlocks counts the dead Worker's blocks");
      assert.equal(s.allocatedBytes, usableTotal(heap, blocks));

      // The next allocation that needs a page adopts the dead Worker's pages:
      // it comes from one of them, which has room and live blocks of its class.
      const q = heap.malloc(HOLED_SIZE);
      const unit = (p: number) => Math.floor(p / (64 * KiB));
      const units = new Set<number>();
      for (let i = 0; i < count; i++) {
        if (heap.usableSize(blocks[3 * i]) === heap.usableSize(q)) units.add(unit(blocks[3 * i]));
      }
      assert.ok(units.has(unit(q)), "the main thread's malloc is served by an adopted page");
      heap.check();
      assert.equal(heap.stats().liveBlocks, count + 1);
      heap.free(q);

      verifyAndFree(heap, blocks);
      heap.check();
      s = heap.stats();
      assert.equal(s.allocatedBytes, 0, "allocatedBytes after the main thread freed them");
      assert.equal(s.liveBlocks, 0);
      assert.ok(heap.trim() > 0, "trim() gives memory back");
      heap.check();
      const t = heap.stats();
      assert.ok(t.committedBytes < s.committedBytes, "committedBytes drops");
      assert.ok(
        t.committedBytes < ready.stats.committedBytes,
        "below what the Worker had committed",
      );
      assert.equal(t.committedBytes, t.metadataBytes, "every page came back");
      heap.close();
    },
  );

  it(
    "DEBUG MODE: a debug-mode Worker that exits without close(): the Worker that adopts its pages gives back the blocks its quarantine held",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      await withRemotes(1, async ([a]) => {
        const handle = heap.share();
        const tid = (await a.call<{ tid: number }>({
          op: "attach",
          handle,
          debug: { stacks: false },
        })).tid;
        const sizes = Array.from({ length: 300 }, (_, i) => i % 100 === 0 ? 300 * KiB : 16 + i * 7);
        const blocks = await a.call<number[]>({ op: "mallocMany", sizes, tagBase: tagOf(6, 0) });
        await a.call({ op: "freeAll", blocks }); // all of them into A's quarantine
        assert.equal(heap.stats().liveBlocks, 300, "quarantined blocks are live for the core");
        await a.call({ op: "exit" });
        await threadExit(tid, "debug-mode Worker that exited");

        heap.trim(); // adopts A's pages, and the blocks of its quarantine with them
        heap.check();
        const s = heap.stats();
        assert.equal(s.liveBlocks, 0, "no quarantined block left live");
        assert.equal(s.allocatedBytes, 0);
        assertStillWorks(heap);
      });
      heap.close();
    },
  );

  it(
    "a Worker that exits without detaching: blocks freed while its pages wait for adoption are taken back when trim() adopts them",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      await withRemotes(1, async ([a]) => {
        const tid = await a.attach(heap.share());
        // 4000 blocks of 1 KiB first (pages of their own), then 4000 of mixed sizes.
        const sizes = Array.from(
          { length: 8000 },
          (_, i) => i < 4000 ? 1024 : 16 + (i * 37) % 2000,
        );
        const blocks = await a.call<number[]>({ op: "mallocMany", sizes, tagBase: tagOf(5, 0) });
        await a.call({ op: "exit" });
        await threadExit(tid, "Worker that exited");

        assert.equal(heap.stats().liveBlocks, 8000);
        verifyAndFree(heap, blocks, 0, 4000); // into pages whose owner is gone
        heap.check();
        const s = heap.stats();
        assert.equal(s.liveBlocks, 4000);
        assert.equal(s.allocatedBytes, usableTotal(heap, blocks.slice(3 * 4000)));
        assert.ok(
          heap.trim() >= 3 * 1024 * KiB,
          "trim() adopts the pages and gives back the empty ones",
        );
        heap.check();
        assert.ok(heap.stats().committedBytes <= s.committedBytes - 3 * 1024 * KiB);

        verifyAndFree(heap, blocks, 4000);
        heap.trim();
        heap.check();
        const t = heap.stats();
        assert.equal(t.allocatedBytes, 0);
        assert.equal(t.liveBlocks, 0);
        assert.equal(t.committedBytes, t.metadataBytes, "every page came back");
      });
      heap.close();
    },
  );

  it(
    "owner slots of detached Workers are reused: 72 attaches, at most 9 at a time",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      const handle = heap.share();
      const failures: string[] = [];
      await withRemotes(8, async (remotes) => {
        // Each round every Worker attaches, allocates, frees and detaches again.
        for (let round = 0; round < 9 && failures.length === 0; round++) {
          for (const [i, r] of remotes.entries()) {
            const answer = await r.send({ op: "attach", handle });
            if (!answer.ok) {
              const { name, message } = answer.error!;
              failures.push(`attach ${round * 8 + i + 1}: ${name}: ${message}`);
              continue;
            }
            const [p] = await r.call<number[]>({ op: "mallocMany", sizes: [64], tagBase: 1 });
            await r.call({ op: "free", address: p });
            await r.call({ op: "close" });
          }
          heap.trim(); // adopts the detached Workers' pages
        }
      });
      assert.deepEqual(failures, [], "every attach succeeds: at most 9 are attached at once");
      heap.check();
      assert.equal(heap.stats().allocatedBytes, 0);
      heap.close();
    },
  );

  it(
    "an adopter takes back only blocks of pages it owns: pages it adopted, retired and another Worker reused stay that Worker's",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      await withRemotes(4, async ([a, b, c, d]) => {
        const handle = heap.share();
        for (const r of [a, b, c, d]) await r.attach(handle);
        const ofSize = (n: number, size: number) => Array.from({ length: n }, () => size);
        // A fills 8 pages and detaches; B frees every block (the pages wait on A's pending list).
        const fromA = await a.call<number[]>({
          op: "mallocMany",
          sizes: ofSize(512, 1024),
          tagBase: 0,
        });
        await a.call({ op: "close" });
        await b.call({ op: "freeAll", blocks: fromA });
        heap.check();
        // C needs a page: it adopts A's pages, all empty, which retire.
        const fromC = await c.call<number[]>({ op: "mallocMany", sizes: [16], tagBase: 1 });
        heap.check();
        // D takes the retired pages, fills them, and B frees one block of each.
        const fromD = await d.call<number[]>({
          op: "mallocMany",
          sizes: ofSize(512, 1024),
          tagBase: 2,
        });
        const firstOfPage = new Map<number, number[]>();
        for (let i = 0; i < fromD.length; i += 3) {
          const unit = Math.floor(fromD[i] / (64 * KiB));
          if (!firstOfPage.has(unit)) firstOfPage.set(unit, fromD.slice(i, i + 3));
        }
        await b.call({ op: "freeAll", blocks: [...firstOfPage.values()].flat() });
        heap.check();
        // C collects the blocks freed into its pages: D's pages are none of its business.
        await c.call({ op: "trim" });
        heap.check();
        const freedByB = new Set([...firstOfPage.values()].map(([p]) => p));
        const rest: number[] = [];
        for (let i = 0; i < fromD.length; i += 3) {
          if (!freedByB.has(fromD[i])) rest.push(...fromD.slice(i, i + 3));
        }
        await d.call({ op: "freeAll", blocks: rest });
        await c.call({ op: "freeAll", blocks: fromC });
        heap.check();
        const s = heap.stats();
        assert.equal(s.allocatedBytes, 0);
        assert.equal(s.liveBlocks, 0);
      });
      heap.close();
    },
  );
});

describe("shared heap: share() and attach()", () => {
  it("share() on a heap made without { shared: true } throws TypeError", () => {
    using plain = new Heap();
    assert.throws(() => plain.share(), TypeError);
    using secure = new Heap({ secure: true });
    assert.throws(() => secure.share(), TypeError);
    const shared = new Heap({ shared: true });
    shared.close();
    assert.throws(() => shared.share(), (e) => e instanceof HeapError && e.code === "closed");
  });

  it("Heap.attach() throws TypeError for values that are not a handle", () => {
    using heap = new Heap({ shared: true });
    const handle = heap.share();
    // deno-lint-ignore no-explicit-any
    const bogus: any[] = [null, undefined, 42, "shared-heap", {}, { ...handle, tsmalloc: "heap" }];
    for (const value of bogus) {
      assert.throws(() => Heap.attach(value), TypeError, `Heap.attach(${JSON.stringify(value)})`);
    }
  });

  it("Heap.attach() throws TypeError for a handle whose fields do not describe the shared heap", () => {
    using heap = new Heap({ shared: true });
    const handle = heap.share();
    const cases: [string, unknown][] = [
      ["tag only", { tsmalloc: "shared-heap" }],
      ["base 0", { ...handle, base: 0 }],
      ["base NaN", { ...handle, base: NaN }],
      ["base a string", { ...handle, base: String(handle.base) }],
      ["base 64 KiB further", { ...handle, base: handle.base + 64 * KiB }],
      ["size 64 KiB smaller", { ...handle, size: handle.size - 64 * KiB }],
      ["size 0", { ...handle, size: 0 }],
      ["size 1.5", { ...handle, size: 1.5 }],
      ["secure flag flipped", { ...handle, secure: !handle.secure }],
    ];
    const outcomes = cases.map(([name, value]) => {
      try {
        // deno-lint-ignore no-explicit-any
        Heap.attach(value as any).close();
        return `${name}: attached`;
      } catch (e) {
        return `${name}: ${e instanceof Error ? e.constructor.name : typeof e}`;
      }
    });
    assert.deepEqual(outcomes, cases.map(([name]) => `${name}: TypeError`));
  });

  it("Heap.attach() accepts a shared heap wherever the OS mapped it, 64 KiB-aligned or not", () => {
    // Away from the low address, mmap aligns a reservation to the page only
    // (Linux aligns multiples of 2 MiB further): these sizes are not.
    const heaps = Array.from(
      { length: 4 },
      (_, i) =>
        new Heap({ shared: true, arenaBytes: 16 * MiB + (i + 1) * 64 * KiB, lowAddresses: false }),
    );
    try {
      for (const heap of heaps) {
        const handle = heap.share();
        const other = Heap.attach(handle);
        const p = other.malloc(100);
        heap.free(p); // an address from either owner is valid in the other
        const q = heap.malloc(100);
        other.free(q);
        other.check();
        other.close();
        heap.check();
      }
    } finally {
      for (const heap of heaps) heap.close();
    }
  });

  it("Heap.attach() throws TypeError for a handle whose base is negative or not mapped", () => {
    using heap = new Heap({ shared: true });
    // deno-lint-ignore no-explicit-any
    assert.throws(() => Heap.attach({ ...heap.share(), base: -64 * KiB } as any), TypeError);
    // deno-lint-ignore no-explicit-any
    assert.throws(() => Heap.attach({ ...heap.share(), base: 64 * KiB } as any), TypeError);
  });
  it("Heap.attach() throws TypeError for a forged handle whose base is mapped but not readable and writable (reserved PROT_NONE address space), or is not a heap", () => {
    using heap = new Heap({ shared: true });
    const handle = heap.share();
    // The arena's address space past its carved top is reserved PROT_NONE.
    const reserved = handle.base + handle.size - 16 * MiB;
    for (const base of [reserved, handle.base + 64 * KiB]) {
      assert.throws(
        () => Heap.attach({ ...handle, base, size: 16 * MiB }),
        TypeError,
        `base 0x${base.toString(16)}`,
      );
    }
    assertStillWorks(heap);
  });
});

describe("shared heap: frees and reallocs across Workers", () => {
  it(
    "a double free across Workers throws HeapError double-free in the second Worker and the heap stays consistent",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      await withRemotes(2, async ([a, b]) => {
        const handle = heap.share();
        await a.attach(handle);
        await b.attach(handle);
        const one = async (r: Remote, size: number) =>
          (await r.call<number[]>({ op: "mallocMany", sizes: [size], tagBase: 7 }))[0];

        // A block of the main thread's page: A frees it, then B.
        for (const size of [64, 20 * KiB]) {
          const p = heap.malloc(size);
          await a.call({ op: "free", address: p });
          assertHeapErrorReport(
            await b.fails({ op: "free", address: p }),
            "double-free",
            p,
            `${size} B`,
          );
          heap.check();
        }
        // A block of A's page, freed by A, then by B.
        for (const size of [200, 20 * KiB, 300 * KiB]) {
          const p = await one(a, size);
          await a.call({ op: "free", address: p });
          assertHeapErrorReport(
            await b.fails({ op: "free", address: p }),
            "double-free",
            p,
            `${size} B`,
          );
          heap.check();
        }
        // A block of A's page, freed by B (not yet collected by A), then by A, then by B again.
        for (const size of [32, 20 * KiB]) {
          const p = await one(a, size);
          await b.call({ op: "free", address: p });
          assertHeapErrorReport(
            await a.fails({ op: "free", address: p }),
            "double-free",
            p,
            "owner",
          );
          assertHeapErrorReport(
            await b.fails({ op: "free", address: p }),
            "double-free",
            p,
            "again",
          );
          heap.check();
        }
        let s = heap.stats();
        assert.equal(s.allocatedBytes, 0, "each block counted as freed once");
        assert.equal(s.liveBlocks, 0);
        // Everyone can still allocate, and the blocks freed above are taken back.
        for (const r of [a, b]) {
          const blocks = await r.call<number[]>({
            op: "mallocMany",
            sizes: [32, 64, 200, 20 * KiB, 300 * KiB],
            tagBase: 100,
          });
          await r.call({ op: "freeAll", blocks });
          await r.call({ op: "trim" });
        }
        heap.check();
        s = heap.stats();
        assert.equal(s.allocatedBytes, 0);
        assert.equal(s.liveBlocks, 0);
      });
      heap.close();
    },
  );

  it(
    "two Workers that free the same blocks at once: each block is freed once and reported as a double free once, whoever owns its page",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      await withRemotes(2, async ([a, b]) => {
        const handle = heap.share();
        await a.attach(handle);
        await b.attach(handle);
        const sizes = Array.from(
          { length: 3000 },
          (_, i) => i % 50 === 0 ? 20 * KiB : 16 + i % 500,
        );
        // Blocks of the main thread's pages (both racers free remotely), then of
        // A's pages (A frees locally while B frees remotely).
        const mine = sizes.map((size) => heap.malloc(size));
        const triples = await a.call<number[]>({ op: "mallocMany", sizes, tagBase: 1 });
        const theirs = triples.filter((_, i) => i % 3 === 0);
        for (const [blocks, left] of [[mine, theirs.length], [theirs, 0]] as const) {
          const gate = new SharedArrayBuffer(8);
          const race = (r: Remote) =>
            r.call<{ freed: number; doubles: number }>({
              op: "freeRacing",
              blocks,
              gate,
              racers: 2,
            });
          const [ra, rb] = await Promise.all([race(a), race(b)]);
          assert.equal(ra.freed + rb.freed, blocks.length, "every block freed once");
          assert.equal(ra.doubles + rb.doubles, blocks.length, "every second free reported");
          heap.check();
          assert.equal(heap.stats().liveBlocks, left, "each block counted as freed once");
        }
        assert.equal(heap.stats().allocatedBytes, 0);
        // The blocks are reused: every Worker allocates and frees again.
        for (const r of [a, b]) {
          const again = await r.call<number[]>({ op: "mallocMany", sizes, tagBase: 9 });
          await r.call({ op: "freeAll", blocks: again });
        }
        heap.check();
        assert.equal(heap.stats().liveBlocks, 0);
      });
      heap.close();
    },
  );

  it(
    "DEBUG MODE: a double free across debug-mode Workers throws HeapError double-free in the second Worker",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true, debug: { stacks: false } });
      await withRemotes(2, async ([a, b]) => {
        const handle = heap.share();
        for (const r of [a, b]) await r.call({ op: "attach", handle, debug: true });
        for (const size of [64, 20 * KiB, 300 * KiB]) {
          const p = heap.malloc(size);
          await a.call({ op: "free", address: p }); // into A's quarantine
          assertHeapErrorReport(
            await b.fails({ op: "free", address: p }),
            "double-free",
            p,
            `${size} B`,
          );
          const [q] = await a.call<number[]>({ op: "mallocMany", sizes: [size], tagBase: 9 });
          await b.call({ op: "free", address: q });
          assertHeapErrorReport(await a.fails({ op: "free", address: q }), "double-free", q, "A");
        }
        for (const r of [a, b]) await r.call({ op: "close" }); // quarantines go back to the heap
        heap.check();
        const s = heap.stats();
        assert.equal(s.allocatedBytes, 0);
        assert.equal(s.liveBlocks, 0);
      });
      heap.close();
    },
  );

  it(
    "realloc in another Worker keeps the contents of small, medium and large blocks",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      await withRemotes(2, async ([a, b]) => {
        const handle = heap.share();
        await a.attach(handle);
        await b.attach(handle);
        const steps: [number, number, number][] = [
          [100, 3000, 50], // small: moves, then shrinks in place
          [20 * KiB, 100 * KiB, 10 * KiB], // medium
          [300 * KiB, 700 * KiB, 200 * KiB], // large: mremap, then shrinks
          [600, 300 * KiB, 40], // small to large and back down
        ];
        const kept: number[] = [];
        for (const [i, [size, grown, shrunk]] of steps.entries()) {
          const tag = tagOf(3, 10 * i);
          const [p] = await a.call<number[]>({ op: "mallocMany", sizes: [size], tagBase: tag });
          const q = await b.call<number>({
            op: "realloc",
            address: p,
            size: grown,
            oldSize: size,
            tag,
            newTag: tag + 1,
          });
          const r = await b.call<number>({
            op: "realloc",
            address: q,
            size: shrunk,
            oldSize: grown,
            tag: tag + 1,
            newTag: tag + 2,
          });
          kept.push(r, shrunk, tag + 2);
        }
        heap.check();
        assert.equal(heap.stats().liveBlocks, steps.length);
        await a.call({ op: "freeAll", blocks: kept });
        heap.check();
        const s = heap.stats();
        assert.equal(s.allocatedBytes, 0);
        assert.equal(s.liveBlocks, 0);
      });
      heap.close();
    },
  );
});

/**
 * Races `action` in A against a free in B on each block, one block at a
 * time (both released together for each): returns A's and B's results per
 * block (realloc's address, 0 for a free, or the HeapError code).
 */
async function raceEach(
  a: Remote,
  b: Remote,
  blocks: number[],
  action: "free" | "realloc",
  size?: number,
): Promise<[(number | string)[], (number | string)[]]> {
  const gate = new SharedArrayBuffer(8);
  return await Promise.all([
    a.call<(number | string)[]>({ op: "raceEach", action, blocks, size, gate, racers: 2 }),
    b.call<(number | string)[]>({ op: "raceEach", action: "free", blocks, gate, racers: 2 }),
  ]);
}

describe("shared heap: simultaneous frees and reallocs of one block", () => {
  for (
    const [mode, options, sizes] of [
      ["", {}, [300 * KiB, 200 * KiB]],
      ["DEBUG MODE, quarantine off: ", {
        debug: { quarantineBytes: 0, quarantineBlocks: 0, stacks: false },
      }, [64, 20 * KiB, 300 * KiB]],
    ] as const
  ) {
    it(
      `${mode}two Workers free the same block at once: exactly one free wins, the other gets double-free, counters stay exact`,
      WORKERS,
      async () => {
        const heap = new Heap({ shared: true, ...options });
        await withRemotes(2, async ([a, b]) => {
          const handle = heap.share();
          for (const r of [a, b]) {
            await r.call({ op: "attach", handle, debug: "debug" in options && options.debug });
          }
          const blocks = Array.from(
            { length: 300 },
            (_, i) => heap.malloc(sizes[i % sizes.length]),
          );
          const [ra, rb] = await raceEach(a, b, blocks, "free");
          for (let k = 0; k < blocks.length; k++) {
            assert.deepEqual(
              [ra[k], rb[k]].sort(),
              [0, "double-free"],
              `block ${k} (${sizes[k % sizes.length]} B): A ${ra[k]}, B ${rb[k]}`,
            );
          }
          for (const r of [a, b]) await r.call({ op: "close" });
          heap.check();
          const s = heap.stats();
          assert.equal(s.liveBlocks, 0);
          assert.equal(s.allocatedBytes, 0);
        });
        heap.close();
      },
    );
  }

  for (
    const [mode, options, size, grown] of [
      ["small blocks", {}, 100, 3000],
      ["large blocks (mremap)", {}, 200 * KiB, 900 * KiB],
      ["SECURE MODE, large blocks (map, copy, unmap)", { secure: true }, 200 * KiB, 900 * KiB],
      ["DEBUG MODE, small blocks", { debug: { stacks: false } }, 100, 3000],
    ] as const
  ) {
    it(
      `${mode}: realloc racing another Worker's free of the block: one of them wins, the loser gets double-free and leaves nothing behind`,
      WORKERS,
      async () => {
        const heap = new Heap({ shared: true, ...options });
        await withRemotes(2, async ([a, b]) => {
          const handle = heap.share();
          for (const r of [a, b]) {
            await r.call({ op: "attach", handle, debug: "debug" in options && options.debug });
          }
          const blocks = Array.from({ length: 300 }, () => heap.malloc(size));
          const [ra, rb] = await raceEach(a, b, blocks, "realloc", grown);
          const moved: number[] = [];
          for (let k = 0; k < blocks.length; k++) {
            const reallocWon = typeof ra[k] === "number" && rb[k] === "double-free";
            const freeWon = ra[k] === "double-free" && rb[k] === 0;
            // Grown in place, then freed: realloc came first, and both went through.
            const bothInTurn = ra[k] === blocks[k] && rb[k] === 0;
            assert.ok(
              reallocWon || freeWon || bothInTurn,
              `block ${k}: realloc ${ra[k]}, free ${rb[k]}`,
            );
            if (reallocWon) moved.push(ra[k] as number);
          }
          for (const p of moved) heap.free(p);
          for (const r of [a, b]) await r.call({ op: "close" });
          heap.trim(); // debug mode: the main thread's quarantine goes back
          heap.check();
          const s = heap.stats();
          assert.equal(s.liveBlocks, 0, "no block left behind");
          assert.equal(s.allocatedBytes, 0);
        });
        heap.close();
      },
    );
  }
});

describe("shared heap: stats() and check() from any Worker", () => {
  it(
    "stats() reports the same totals in every Worker and in the main thread",
    WORKERS,
    async () => {
      const heap = new Heap({ shared: true });
      await withRemotes(3, async ([a, b, c]) => {
        const handle = heap.share();
        for (const r of [a, b, c]) await r.attach(handle);
        const fromA = await a.call<number[]>({
          op: "mallocMany",
          sizes: [16, 100, 1000, 5000, 300 * KiB],
          tagBase: tagOf(1, 0),
        });
        await b.call({ op: "mallocMany", sizes: [20 * KiB, 50 * KiB, 64], tagBase: tagOf(2, 0) });
        await b.call({ op: "free", address: fromA[3] }); // a block of A's page, freed by B
        await c.call({ op: "mallocMany", sizes: [8], tagBase: tagOf(3, 0) });
        heap.malloc(48);
        // Every Worker is idle: all of them see the same heap.
        const main = heap.stats();
        assert.equal(main.liveBlocks, 9);
        for (const r of [a, b, c]) {
          const seen = await r.call<HeapStats>({ op: "stats" });
          assert.deepEqual(seen, main, `stats() in Worker ${r.name} and in the main thread`);
        }
      });
      heap.close();
    },
  );

  it("check() passes from every Worker and from the main thread", WORKERS, async () => {
    const heap = new Heap({ shared: true });
    await withRemotes(2, async ([a, b]) => {
      const handle = heap.share();
      for (const r of [a, b]) await r.attach(handle);
      const blocks = await a.call<number[]>({
        op: "mallocMany",
        sizes: [16, 100, 1000, 20 * KiB, 300 * KiB],
        tagBase: tagOf(1, 0),
      });
      await b.call({ op: "free", address: blocks[3] });
      for (const r of [a, b]) await r.call({ op: "check" });
      heap.check();
      await b.call({ op: "freeAll", blocks: [...blocks.slice(0, 3), ...blocks.slice(6)] });
      for (const r of [a, b]) await r.call({ op: "check" });
      heap.check();
      assert.equal(heap.stats().allocatedBytes, 0);
    });
    heap.close();
  });
});
