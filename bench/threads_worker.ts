/// <reference lib="deno.worker" />
/**
 * One Worker of the multi-Worker benchmark (bench/threads.ts drives it).
 *
 * A Worker runs exactly one setup for its whole life, so every loop below
 * stays monomorphic. The protocol, all driven by the main thread:
 *
 *   init     -> "inited"    attach / make the allocator, precompute the churn
 *   prepare  -> "ready"     fill the window of live blocks (untimed), then
 *                           block in Atomics.wait on the start word; when the
 *                           main thread bumps it, run the timed churn, add 1
 *                           to the done word and notify, then free the window
 *                           (untimed) and post the run's "result"
 *   close    -> "closed"    free what is left, check, close (detach) the heap
 *
 * The churn: a window of WINDOW live slots; each iteration frees the block of
 * a random slot and mallocs a new one of a random size in SIZE_MIN..SIZE_MAX
 * into it. An op is one malloc or one free, so an iteration is two ops. Slot
 * numbers and sizes are precomputed from the Worker's seed, so every setup
 * replays the very same sequence.
 */

import { Heap } from "../mod.ts";
import {
  Ctrl,
  type InitMessage,
  RING_BYTES,
  RING_CAPACITY,
  type RunResult,
  SIZE_MAX,
  SIZE_MIN,
  WINDOW,
} from "./threads.ts";

/** Ring layout (u32 words of a block of the shared heap, 64-byte aligned). */
const enum Ring {
  /** Entries the consumer has taken (published by the consumer). */
  Head = 0,
  /** Entries the producer has published. */
  Tail = 32,
  /** First entry: an arena offset (address - base) of a block to free. */
  Entries = 64,
}
/** Iterations per ring batch: the ring tail is published, and each phase timed, once per batch. */
const BATCH = 1024;

const libc = Deno.dlopen("libc.so.6", {
  malloc: { parameters: ["u32"], result: "usize" },
  free: { parameters: ["usize"], result: "void" },
  sched_yield: { parameters: [], result: "i32" },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
});

const CLOCK_THREAD_CPUTIME_ID = 3;
const timespec = new BigInt64Array(2);

/** What one threadCpuMs() call adds to an interval it ends (measured in setUp). */
let clockOverheadMs = 0;

/** CPU time this thread has used, in ms (what the OS scheduler gave it, whatever else runs). */
function threadCpuMs(): number {
  libc.symbols.clock_gettime(CLOCK_THREAD_CPUTIME_ID, timespec);
  return Number(timespec[0]) * 1e3 + Number(timespec[1]) / 1e6;
}

let init: InitMessage;
let slotOf: Uint16Array;
let sizeOf: Uint16Array;
let iterations = 0;
let control: Int32Array;

/** xorshift32 stream. */
function stream(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

function randomSize(next: () => number): number {
  return SIZE_MIN + next() % (SIZE_MAX - SIZE_MIN + 1);
}

// ---- tsmalloc heaps ((a), (e)) -----------------------------------------------------

let heap: Heap;
const window: number[] = new Array(WINDOW).fill(0);

function fillHeap(next: () => number): void {
  for (let j = 0; j < WINDOW; j++) window[j] = heap.malloc(randomSize(next));
}

function churnHeap(): void {
  const h = heap;
  const w = window;
  const slots = slotOf;
  const sizes = sizeOf;
  for (let i = 0; i < iterations; i++) {
    const j = slots[i];
    h.free(w[j]);
    w[j] = h.malloc(sizes[i]);
  }
}

function emptyHeap(): void {
  for (let j = 0; j < WINDOW; j++) heap.free(window[j]), window[j] = 0;
}

// ---- (d) one global spin lock around every call ------------------------------------

let lockWord: Int32Array;

function churnLocked(): void {
  const h = heap;
  const w = window;
  const slots = slotOf;
  const sizes = sizeOf;
  const l = lockWord;
  const yieldThread = libc.symbols.sched_yield;
  for (let i = 0; i < iterations; i++) {
    const j = slots[i];
    // The same policy as the heap's own locks: 64 spins, then give up the CPU.
    for (let spins = 0; Atomics.compareExchange(l, 0, 0, 1) !== 0;) {
      if (++spins === 64) spins = 0, yieldThread();
    }
    h.free(w[j]);
    Atomics.store(l, 0, 0);
    for (let spins = 0; Atomics.compareExchange(l, 0, 0, 1) !== 0;) {
      if (++spins === 64) spins = 0, yieldThread();
    }
    w[j] = h.malloc(sizes[i]);
    Atomics.store(l, 0, 0);
  }
}

// ---- (c) glibc through FFI ---------------------------------------------------------

const cWindow: bigint[] = new Array(WINDOW).fill(0n);

function fillGlibc(next: () => number): void {
  for (let j = 0; j < WINDOW; j++) cWindow[j] = libc.symbols.malloc(randomSize(next)) as bigint;
}

function churnGlibc(): void {
  const malloc = libc.symbols.malloc;
  const free = libc.symbols.free;
  const w = cWindow;
  const slots = slotOf;
  const sizes = sizeOf;
  for (let i = 0; i < iterations; i++) {
    const j = slots[i];
    free(w[j]);
    w[j] = malloc(sizes[i]) as bigint;
  }
}

function emptyGlibc(): void {
  for (let j = 0; j < WINDOW; j++) libc.symbols.free(cWindow[j]), cWindow[j] = 0n;
}

// ---- (b) rings of retired blocks ---------------------------------------------------

/** The ring this Worker produces into, and the one it consumes from (the same one for "ring-own"). */
let outRing: Uint32Array;
let inRing: Uint32Array;
let base = 0;

function ringView(address: number): Uint32Array {
  const bytes = heap.bytes(address, RING_BYTES);
  return new Uint32Array(bytes.buffer, bytes.byteOffset, RING_BYTES >>> 2);
}

/**
 * Each iteration retires a random slot's block into the outgoing ring and
 * mallocs a new one (the malloc phase, BATCH iterations at a time), then
 * frees every block the incoming ring holds (the free phase). After the last
 * batch the Worker keeps freeing until it has freed as many blocks as it
 * retired (its producer retires exactly as many). Each phase is timed in
 * thread CPU time, so that the ns per malloc and per free do not count time
 * the OS gave to other threads; the time spent waiting for the partner (a
 * full outgoing ring, an empty incoming one at the end) is counted apart, in
 * wall time.
 */
function churnRing(result: RunResult): void {
  const h = heap;
  const w = window;
  const slots = slotOf;
  const sizes = sizeOf;
  const out = outRing;
  const inp = inRing;
  const yieldThread = libc.symbols.sched_yield;
  const cpu = threadCpuMs;
  const overhead = clockOverheadMs;
  const mask = RING_CAPACITY - 1;
  const b = base;
  let tail = Atomics.load(out, Ring.Tail);
  let outHead = Atomics.load(out, Ring.Head);
  let head = Atomics.load(inp, Ring.Head);
  let frees = 0;
  let mallocMs = 0;
  let freeMs = 0;
  let waitMs = 0;
  const total = iterations;
  /** Frees every published entry of the incoming ring; returns how many. */
  const drain = (): number => {
    const end = Atomics.load(inp, Ring.Tail);
    const n = end - head;
    if (n === 0) return 0;
    for (; head !== end; head++) h.free(b + inp[Ring.Entries + (head & mask)]);
    Atomics.store(inp, Ring.Head, head);
    return n;
  };
  /** A drain timed as free time; false when there was nothing to free (the caller yields). */
  const timedDrain = (): boolean => {
    const c0 = cpu();
    const n = drain();
    if (n === 0) return false;
    freeMs += cpu() - c0 - overhead;
    frees += n;
    return true;
  };
  for (let first = 0; first < total; first += BATCH) {
    const last = Math.min(first + BATCH, total);
    // Room for the batch: a Worker whose partner lags keeps freeing what it receives meanwhile.
    if (tail + (last - first) - outHead > RING_CAPACITY) outHead = Atomics.load(out, Ring.Head);
    if (tail + (last - first) - outHead > RING_CAPACITY) {
      const t = performance.now();
      for (;;) {
        outHead = Atomics.load(out, Ring.Head);
        if (tail + (last - first) - outHead <= RING_CAPACITY) break;
        if (!timedDrain()) yieldThread();
      }
      waitMs += performance.now() - t;
    }
    const c0 = cpu();
    for (let i = first; i < last; i++) {
      const j = slots[i];
      out[Ring.Entries + (tail & mask)] = w[j] - b;
      tail++;
      w[j] = h.malloc(sizes[i]);
    }
    Atomics.store(out, Ring.Tail, tail);
    mallocMs += cpu() - c0 - overhead;
    timedDrain();
  }
  if (frees < total) {
    const t = performance.now();
    while (frees < total) if (!timedDrain()) yieldThread();
    waitMs += performance.now() - t;
  }
  result.mallocMs = mallocMs;
  result.freeMs = freeMs;
  result.waitMs = waitMs;
  result.mallocs = total;
  result.frees = frees;
}

// ---- protocol ----------------------------------------------------------------------

function setUp(message: InitMessage): void {
  const c0 = threadCpuMs();
  for (let i = 0; i < 1000; i++) threadCpuMs();
  clockOverheadMs = (threadCpuMs() - c0) / 1001;
  init = message;
  control = new Int32Array(message.control);
  iterations = Math.floor(message.ops / 2);
  const next = stream(message.seed);
  slotOf = new Uint16Array(iterations);
  sizeOf = new Uint16Array(iterations);
  for (let i = 0; i < iterations; i++) {
    slotOf[i] = next() % WINDOW;
    sizeOf[i] = randomSize(next);
  }
  switch (message.setup) {
    case "private":
      heap = new Heap();
      break;
    case "glibc":
      break;
    default:
      heap = Heap.attach(message.handle!);
  }
  if (message.setup === "locked") {
    const bytes = heap.bytes(message.lockAddress!, 4);
    lockWord = new Int32Array(bytes.buffer, bytes.byteOffset, 1);
  }
  if (message.setup === "ring-own" || message.setup === "ring-cross") {
    base = message.handle!.base;
    const partner = message.setup === "ring-cross" ? message.index ^ 1 : message.index;
    outRing = ringView(message.rings![message.index]);
    inRing = ringView(message.rings![partner]);
  }
}

function timedRun(run: number): RunResult {
  const result: RunResult = {
    type: "result",
    run,
    elapsed: 0,
    start: 0,
    end: 0,
    cpuMs: 0,
    mallocMs: 0,
    freeMs: 0,
    waitMs: 0,
    mallocs: iterations,
    frees: iterations,
  };
  const next = stream(init.seed ^ (0x9e3779b9 * (run + 1)));
  const glibc = init.setup === "glibc";
  if (glibc) fillGlibc(next);
  else fillHeap(next);
  postMessage({ type: "ready", run });
  // Everyone waits here until the main thread releases the run.
  Atomics.wait(control, Ctrl.Go, run);
  const t0 = performance.now();
  const cpu0 = threadCpuMs();
  switch (init.setup) {
    case "glibc":
      churnGlibc();
      break;
    case "locked":
      churnLocked();
      break;
    case "ring-own":
    case "ring-cross":
      churnRing(result);
      break;
    default:
      churnHeap();
  }
  const t1 = performance.now();
  result.elapsed = t1 - t0;
  result.start = performance.timeOrigin + t0;
  result.end = performance.timeOrigin + t1;
  result.cpuMs = threadCpuMs() - cpu0;
  Atomics.add(control, Ctrl.Done, 1);
  Atomics.notify(control, Ctrl.Done);
  if (glibc) emptyGlibc();
  else emptyHeap();
  return result;
}

self.onmessage = (event: MessageEvent) => {
  const message = event.data;
  try {
    switch (message.type) {
      case "init":
        setUp(message as InitMessage);
        postMessage({ type: "inited" });
        break;
      case "prepare":
        postMessage(timedRun(message.run));
        break;
      case "close":
        if (init.setup !== "glibc") {
          // A private heap can be checked here; shared ones are checked by the main thread.
          if (init.setup === "private") {
            heap.check();
            const allocated = heap.stats().allocatedBytes;
            if (allocated !== 0) {
              throw new Error(`private heap: ${allocated} bytes still allocated`);
            }
          }
          heap.close();
        }
        postMessage({ type: "closed" });
        break;
    }
  } catch (error) {
    // Make sure the main thread, which may be blocked waiting for this run, wakes up.
    Atomics.add(control, Ctrl.Done, 1);
    Atomics.notify(control, Ctrl.Done);
    postMessage({ type: "error", message: String((error as Error)?.stack ?? error) });
  }
};
