/**
 * Multi-Worker benchmark of the shared heap (`deno task bench:threads`).
 *
 * `deno bench` cannot drive Workers, so this is a script. For 1, 2 and 4
 * Workers, each doing the same fixed churn (bench/threads_worker.ts: a window
 * of 1024 live blocks of 16..512 bytes; each iteration frees a random slot's
 * block and mallocs a new one; an op is one malloc or one free), it reports
 * throughput in million ops per second for:
 *
 *   (a) one `new Heap({ shared: true })`, every Worker attached, all frees local;
 *   (b) the same with every retired block passed through a ring in a block of
 *       the heap itself (Atomics head/tail, published once per batch of 1024):
 *       "own" rings, where each Worker frees its own blocks, and "cross" rings,
 *       where Worker 2k and 2k+1 free only each other's. Each Worker times its
 *       malloc phases and free phases apart in thread CPU time, which gives ns
 *       per local free and ns per cross-Worker free at 2 Workers;
 *   (c) glibc malloc/free through FFI in its fastest binding (size "u32",
 *       address "usize" as a bigint passed straight back to free);
 *   (d) the shared heap with one global spin lock (Atomics.compareExchange on
 *       a word in a block of the heap; 64 spins, then sched_yield) around every
 *       malloc and every free: the classic lock around every call;
 *   (e) a private `new Heap()` per Worker: the upper bound.
 *
 * Every configuration has Workers of its own (so each Worker's JIT sees one
 * setup only), started together with the others: first its warm-up runs,
 * then timed runs taken round-robin across all configurations, so that a
 * burst of load from elsewhere hits them alike; the median is shown, with
 * min..max. Before each run the Workers fill their window (untimed) and block on a
 * shared start word; the main thread bumps it, wakes them all, and times from
 * there until the last Worker has added itself to the done word. After every
 * run of a shared setup the main thread runs `heap.check()` and compares
 * `allocatedBytes` with its own blocks; after the Workers close (detach) and
 * the main thread frees its blocks, `check()` must pass and `allocatedBytes`
 * must be 0.
 *
 * Beside wall-clock throughput it reports each Worker thread's CPU time
 * (CLOCK_THREAD_CPUTIME_ID) and how many CPUs other processes used during the
 * runs (/proc/stat minus this process), because on a small shared machine
 * the wall-clock scaling says as much about the neighbours as about the heap.
 * THREADS_DEBUG=1 prints every run's wake-up and finish times.
 *
 * Options: --ops=N (per Worker per run, default 1000000), --runs=N (5),
 * --warmup=N (2), --workers=1,2,4, --only=a,b,c,d,e.
 */

import { Heap } from "../mod.ts";

type Handle = ReturnType<Heap["share"]>;

// ---- declarations shared with bench/threads_worker.ts --------------------------------

/** What the main thread sends first. */
export interface InitMessage {
  type: "init";
  setup: Setup;
  /** This Worker's number, 0..workers-1. */
  index: number;
  workers: number;
  /** Ops (mallocs + frees) of one timed run. */
  ops: number;
  seed: number;
  /** Control words (Int32): see Ctrl. */
  control: SharedArrayBuffer;
  /** Shared setups: the heap to attach to. */
  handle?: Handle;
  /** "ring-*": address of each Worker's outgoing ring (a block of the shared heap). */
  rings?: number[];
  /** "locked": address of the block whose first word is the global lock. */
  lockAddress?: number;
}

export type Setup =
  | "shared" // (a) shared heap, thread-local churn
  | "ring-own" // (b) shared heap, retired blocks go through a ring, each Worker frees its own
  | "ring-cross" // (b) the same, but each Worker frees only its partner's blocks
  | "glibc" // (c) glibc malloc/free through FFI
  | "locked" // (d) shared heap with one spin lock around every call
  | "private"; // (e) a private Heap per Worker

/** What a Worker reports after each timed run. */
export interface RunResult {
  type: "result";
  run: number;
  /** ms from this Worker's wake-up to the end of its timed region. */
  elapsed: number;
  /** performance.timeOrigin + performance.now() at wake-up and at the end of the timed region. */
  start: number;
  end: number;
  /** CPU time the Worker's thread got meanwhile (CLOCK_THREAD_CPUTIME_ID), ms. */
  cpuMs: number;
  /** Ring setups: ms spent in the malloc phases, in the free phases, and waiting for the partner. */
  mallocMs: number;
  freeMs: number;
  waitMs: number;
  mallocs: number;
  frees: number;
}

/** Int32 indices of the control SharedArrayBuffer. */
export const enum Ctrl {
  /** Run number + 1 once the main thread releases run `run`. */
  Go = 0,
  /** Workers done with the timed region of the current run. */
  Done = 16,
  Words = 32,
}

export const WINDOW = 1024;
export const SIZE_MIN = 16;
export const SIZE_MAX = 512;

/** Entries per ring (a power of two), after a 256-byte header (head and tail words). */
export const RING_CAPACITY = 16384;
export const RING_BYTES = 256 + RING_CAPACITY * 4;

// ---- driver ------------------------------------------------------------------------

const libcSymbols = {
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  sysconf: { parameters: ["i32"], result: "i64" },
  // /proc/stat through libc: Deno's own file API wants --allow-all for it.
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
} as const;
let libcCache: Deno.DynamicLibrary<typeof libcSymbols>["symbols"] | undefined;
/** libc for the driver, opened on first use (the Workers import this module too). */
function libc(): Deno.DynamicLibrary<typeof libcSymbols>["symbols"] {
  return libcCache ??= Deno.dlopen("libc.so.6", libcSymbols).symbols;
}
const CLOCK_PROCESS_CPUTIME_ID = 2;
const _SC_CLK_TCK = 2;
const timespec = new BigInt64Array(2);

/** CPU time of this whole process (every thread), ms. */
function processCpuMs(): number {
  libc().clock_gettime(CLOCK_PROCESS_CPUTIME_ID, timespec);
  return Number(timespec[0]) * 1e3 + Number(timespec[1]) / 1e6;
}

const PROC_STAT = new TextEncoder().encode("/proc/stat\0");
const statBuffer = new Uint8Array(512);

/** Busy CPU time of the whole machine from /proc/stat (every process), ms; NaN where unreadable. */
function machineBusyMs(): number {
  const fd = libc().open(PROC_STAT, 0);
  if (fd < 0) return NaN;
  try {
    const n = Number(libc().read(fd, statBuffer, BigInt(statBuffer.length)));
    if (n <= 0) return NaN;
    const line = new TextDecoder().decode(statBuffer.subarray(0, n)).split("\n", 1)[0];
    const ticks = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0);
    const clockTicks = Number(libc().sysconf(_SC_CLK_TCK)) || 100;
    return (total - ticks[3] - ticks[4]) * 1000 / clockTicks;
  } finally {
    libc().close(fd);
  }
}

interface Options {
  ops: number;
  runs: number;
  warmup: number;
  workers: number[];
  only: Set<string>;
}

/** One Worker and the messages it sent that nobody has taken yet. */
class Peer {
  readonly worker: Worker;
  #queue: unknown[] = [];
  #waiting: { resolve: (m: unknown) => void; reject: (e: Error) => void } | null = null;
  #failure: Error | null = null;

  constructor() {
    this.worker = new Worker(new URL("./threads_worker.ts", import.meta.url).href, {
      type: "module",
    });
    this.worker.onmessage = (event) => {
      const message = event.data;
      if (message?.type === "error") this.#fail(new Error(`Worker failed:\n${message.message}`));
      else if (this.#waiting) this.#waiting.resolve(message), this.#waiting = null;
      else this.#queue.push(message);
    };
    this.worker.onerror = (event) => {
      event.preventDefault();
      this.#fail(new Error(`Worker error: ${event.message}`));
    };
  }

  #fail(error: Error): void {
    this.#failure = error;
    if (this.#waiting) this.#waiting.reject(error), this.#waiting = null;
  }

  /** The next message, checked to be of type `type`. */
  async next<T>(type: string): Promise<T> {
    let message: unknown;
    if (this.#failure) throw this.#failure;
    if (this.#queue.length > 0) message = this.#queue.shift();
    else {
      message = await new Promise((resolve, reject) => this.#waiting = { resolve, reject });
    }
    const got = (message as { type?: string })?.type;
    if (got !== type) throw new Error(`expected a "${type}" message from a Worker, got "${got}"`);
    return message as T;
  }
}

/** The results of one configuration (a setup at one Worker count). */
interface ConfigResult {
  setup: Setup;
  workers: number;
  /** Per timed run: million ops per second over the whole parallel region. */
  mops: number[];
  /** Per timed run: the slowest Worker's own time, ms. */
  workerMs: number[];
  /** Per timed run: main thread's release-to-done time, ms. */
  wallMs: number[];
  /** Per timed run: CPU time per op of the Workers' threads, ns (sum over Workers / all ops). */
  cpuNs: number[];
  /** Per timed run: the CPU time of the Worker that got the most, ms. */
  maxCpuMs: number[];
  /** Per timed run: CPUs' worth of time other processes used meanwhile (/proc/stat). */
  otherLoad: number[];
  /** Ring setups, per timed run: ns per malloc (with its ring push) and per free (with its pop). */
  mallocNs: number[];
  freeNs: number[];
  /** Ring setups, per timed run: ms the Workers waited for their partner, summed. */
  waitMs: number[];
  /** What the correctness checks found ("" for setups without a shared heap). */
  checks: string;
  /** The first failed check, if any (the runs go on: the numbers are still worth having). */
  failure: string;
}

const SHARED_SETUPS: ReadonlySet<Setup> = new Set(["shared", "ring-own", "ring-cross", "locked"]);

/** One configuration: its Workers (alive from start() to finish()), its heap, its results. */
class Config {
  readonly result: ConfigResult;
  readonly #setup: Setup;
  readonly #workers: number;
  readonly #options: Options;
  readonly #control = new Int32Array(new SharedArrayBuffer(Ctrl.Words * 4));
  #heap: Heap | null = null;
  /** Blocks of the shared heap the main thread holds: rings, the lock word. */
  readonly #own: number[] = [];
  readonly #ringHeaders: Uint32Array[] = [];
  #baseline = 0;
  #peers: Peer[] = [];
  #run = 0;

  constructor(setup: Setup, workers: number, options: Options) {
    this.#setup = setup;
    this.#workers = workers;
    this.#options = options;
    this.result = {
      setup,
      workers,
      mops: [],
      workerMs: [],
      wallMs: [],
      cpuNs: [],
      maxCpuMs: [],
      otherLoad: [],
      mallocNs: [],
      freeNs: [],
      waitMs: [],
      checks: "",
      failure: "",
    };
  }

  get name(): string {
    return `${this.#setup} x${this.#workers}`;
  }

  /** Makes the heap and the Workers, then runs the warm-up runs. */
  async start(): Promise<void> {
    const setup = this.#setup;
    const workers = this.#workers;
    const message: InitMessage = {
      type: "init",
      setup,
      index: 0,
      workers,
      ops: this.#options.ops,
      seed: 0,
      control: this.#control.buffer as SharedArrayBuffer,
    };
    if (SHARED_SETUPS.has(setup)) {
      const heap = this.#heap = new Heap({ shared: true });
      message.handle = heap.share();
      if (setup === "ring-own" || setup === "ring-cross") {
        message.rings = [];
        for (let i = 0; i < workers; i++) {
          const ring = heap.alignedAlloc(64, RING_BYTES);
          this.#own.push(ring);
          message.rings.push(ring);
          const bytes = heap.bytes(ring, 256);
          this.#ringHeaders.push(new Uint32Array(bytes.buffer, bytes.byteOffset, 64));
        }
      }
      if (setup === "locked") {
        message.lockAddress = heap.alignedAlloc(64, 64);
        this.#own.push(message.lockAddress);
        heap.bytes(message.lockAddress).fill(0);
      }
      this.#baseline = heap.stats().allocatedBytes;
    }
    this.#peers = Array.from({ length: workers }, () => new Peer());
    this.#peers.forEach((peer, index) =>
      peer.worker.postMessage({ ...message, index, seed: 0x5eed0000 + 7919 * index })
    );
    await Promise.all(this.#peers.map((peer) => peer.next("inited")));
    for (let i = 0; i < this.#options.warmup; i++) await this.run(false);
  }

  /** One run: every Worker fills its window, then all are released at once and timed. */
  async run(record = true): Promise<void> {
    const control = this.#control;
    const peers = this.#peers;
    const workers = this.#workers;
    const run = this.#run++;
    for (const header of this.#ringHeaders) header.fill(0);
    Atomics.store(control, Ctrl.Done, 0);
    for (const peer of peers) peer.worker.postMessage({ type: "prepare", run });
    await Promise.all(peers.map((peer) => peer.next("ready")));
    const busy0 = machineBusyMs();
    const cpu0 = processCpuMs();
    // Release everyone at once; the main thread sleeps until the last one is done.
    const t0 = performance.now();
    Atomics.store(control, Ctrl.Go, run + 1);
    Atomics.notify(control, Ctrl.Go);
    for (let done = 0; (done = Atomics.load(control, Ctrl.Done)) < workers;) {
      if (Atomics.wait(control, Ctrl.Done, done, 120_000) === "timed-out") {
        throw new Error(`${this.name}: run ${run} did not finish in 120 s (a hang?)`);
      }
    }
    const wall = performance.now() - t0;
    const ours = processCpuMs() - cpu0;
    const others = Math.max(0, (machineBusyMs() - busy0 - ours) / wall);
    const runs = await Promise.all(peers.map((peer) => peer.next<RunResult>("result")));
    this.#check(`after run ${run}`, this.#baseline);
    if (!record) return;
    const r = this.result;
    const ops = this.#options.ops;
    const sum = (f: (r: RunResult) => number) => runs.reduce((s, r) => s + f(r), 0);
    r.wallMs.push(wall);
    r.mops.push(workers * ops / wall / 1e3);
    r.workerMs.push(Math.max(...runs.map((r) => r.elapsed)));
    r.cpuNs.push(sum((r) => r.cpuMs) * 1e6 / (workers * ops));
    r.maxCpuMs.push(Math.max(...runs.map((r) => r.cpuMs)));
    r.otherLoad.push(others);
    r.mallocNs.push(sum((r) => r.mallocMs) * 1e6 / sum((r) => r.mallocs));
    r.freeNs.push(sum((r) => r.freeMs) * 1e6 / sum((r) => r.frees));
    r.waitMs.push(sum((r) => r.waitMs));
  }

  /** The Workers free everything and close (detach); then the final checks. */
  async finish(): Promise<void> {
    try {
      for (const peer of this.#peers) peer.worker.postMessage({ type: "close" });
      await Promise.all(this.#peers.map((peer) => peer.next("closed")));
      if (this.#heap) {
        for (const address of this.#own) this.#heap.free(address);
        this.#check("after the Workers closed", 0);
        this.result.checks = this.result.failure
          ? `CHECK FAILED: ${this.result.failure}`
          : "check() ok, allocatedBytes 0 after every run";
      }
    } finally {
      this.dispose();
    }
  }

  dispose(): void {
    for (const peer of this.#peers) peer.worker.terminate();
    this.#peers = [];
    this.#heap?.close();
    this.#heap = null;
  }

  /** Shared heaps: check() passes and allocatedBytes is what the main thread holds. */
  #check(when: string, expected: number): void {
    const heap = this.#heap;
    if (!heap) return;
    let failure = "";
    try {
      heap.check();
      const allocated = heap.stats().allocatedBytes;
      if (allocated !== expected) failure = `allocatedBytes ${allocated}, expected ${expected}`;
    } catch (error) {
      failure = `heap.check() threw ${error}`;
    }
    if (failure && !this.result.failure) {
      this.result.failure = `${when}: ${failure}`;
      console.error(`  ${this.name} ${when}: ${failure}`);
    }
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function parseOptions(args: string[]): Options {
  const options: Options = {
    ops: 1_000_000,
    runs: 5,
    warmup: 2,
    workers: [1, 2, 4],
    only: new Set(["a", "b", "c", "d", "e"]),
  };
  for (const arg of args) {
    const [key, value] = arg.replace(/^--/, "").split("=");
    const int = (v: string) => {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${arg}: not an integer`);
      return n;
    };
    if (key === "ops") options.ops = Math.max(2, int(value));
    else if (key === "runs") options.runs = Math.max(1, int(value));
    else if (key === "warmup") options.warmup = int(value);
    else if (key === "workers") options.workers = value.split(",").map(int).filter((n) => n > 0);
    else if (key === "only") options.only = new Set(value.split(","));
    else throw new RangeError(`unknown option ${arg}`);
  }
  return options;
}

const LABELS: Record<Setup, string> = {
  "shared": "(a) shared heap, thread-local churn",
  "ring-own": "(b) shared heap, ring, own frees",
  "ring-cross": "(b) shared heap, ring, partner frees",
  "glibc": "(c) glibc malloc/free via FFI",
  "locked": "(d) shared heap + one global lock",
  "private": "(e) private Heap per Worker",
};

const SETUPS: [string, Setup][] = [
  ["a", "shared"],
  ["b", "ring-own"],
  ["b", "ring-cross"],
  ["c", "glibc"],
  ["d", "locked"],
  ["e", "private"],
];

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  const started = performance.now();
  const cpus = navigator.hardwareConcurrency;
  console.log(
    `tsmalloc multi-Worker benchmark: ${options.ops} ops per Worker per run ` +
      `(window ${WINDOW}, ${SIZE_MIN}..${SIZE_MAX} B), median of ${options.runs} runs ` +
      `after ${options.warmup} warm-up runs; ${cpus} CPUs` +
      (options.workers.some((n) => n > cpus) ? " (more Workers than CPUs oversubscribe)" : ""),
  );
  const results = new Map<string, ConfigResult>();
  const configs: Config[] = [];
  for (const [letter, setup] of SETUPS) {
    if (!options.only.has(letter)) continue;
    for (const workers of options.workers) {
      // Partners are Workers 2k and 2k+1.
      if (setup === "ring-cross" && workers % 2 !== 0) continue;
      configs.push(new Config(setup, workers, options));
    }
  }
  // Every configuration keeps its Workers; the timed runs go round-robin (in alternating
  // order), so that a burst of load from elsewhere on the machine hits all of them alike.
  try {
    for (const config of configs) await config.start();
    for (let round = 0; round < options.runs; round++) {
      const order = round % 2 === 0 ? configs : [...configs].reverse();
      for (const config of order) await config.run();
      console.error(`  round ${round + 1}/${options.runs} done`);
    }
    for (const config of configs) await config.finish();
  } finally {
    for (const config of configs) config.dispose();
  }
  for (const { result: r } of configs) {
    results.set(`${r.setup}/${r.workers}`, r);
    const ring = r.setup.startsWith("ring")
      ? `; malloc ${median(r.mallocNs).toFixed(1)} ns, free ${median(r.freeNs).toFixed(1)} ns, ` +
        `waited ${median(r.waitMs).toFixed(1)} ms`
      : "";
    console.error(
      `  ${LABELS[r.setup]} x${r.workers}: ${median(r.mops).toFixed(2)} Mops/s ` +
        `[${range(r.mops)}], ${median(r.wallMs).toFixed(1)} ms (slowest Worker ` +
        `${median(r.workerMs).toFixed(1)} ms, ${median(r.maxCpuMs).toFixed(1)} ms CPU), ` +
        `${median(r.cpuNs).toFixed(1)} CPU ns/op, other processes ` +
        `${median(r.otherLoad).toFixed(2)} CPUs${ring}${r.checks ? `; ${r.checks}` : ""}`,
    );
  }

  const columns = options.workers;
  const table = (
    title: string,
    value: (r: ConfigResult) => string,
    ratio?: (r: ConfigResult) => number,
  ) => {
    const scaling = ratio && columns.includes(1) && columns.includes(2);
    console.log();
    console.log(
      title.padEnd(40) +
        columns.map((n) => `${n} Worker${n > 1 ? "s" : ""}`.padStart(22)).join("") +
        (scaling ? "   2W/1W" : ""),
    );
    for (const [letter, setup] of SETUPS) {
      if (!options.only.has(letter)) continue;
      const row = columns.map((n) => results.get(`${setup}/${n}`));
      const one = results.get(`${setup}/1`);
      const two = results.get(`${setup}/2`);
      console.log(
        LABELS[setup].padEnd(40) +
          row.map((r) => (r ? value(r) : "-").padStart(22)).join("") +
          (scaling && one && two ? `${(ratio(two) / ratio(one)).toFixed(2)}x`.padStart(8) : ""),
      );
    }
  };
  const mops = (r: ConfigResult) => median(r.mops);
  table(
    "million ops/s (wall), median [min..max]",
    (r) => `${mops(r).toFixed(2)} [${range(r.mops)}]`,
    mops,
  );
  // What the throughput would be if every Worker had a CPU to itself: ops / the busiest thread's CPU time.
  const mopsCpu = (r: ConfigResult) =>
    median(r.maxCpuMs.map((ms) => r.workers * options.ops / ms / 1e3));
  table(
    "million ops/s per CPU time of slowest",
    (r) => r.workers <= cpus ? mopsCpu(r).toFixed(2) : "(oversubscribed)",
    mopsCpu,
  );
  table("CPU ns per op, per Worker thread", (r) => median(r.cpuNs).toFixed(1));
  table("other processes' load, CPUs", (r) => median(r.otherLoad).toFixed(2));

  // ---- targets ----
  console.log();
  const load = Math.max(...configs.map((c) => median(c.result.otherLoad)));
  if (load > 0.25) {
    console.log(
      `warning: other processes used up to ${load.toFixed(2)} of the ${cpus} CPUs during the ` +
        `runs: wall-clock scaling measures them as much as the heap; see the CPU-time tables`,
    );
  }
  const a1 = results.get("shared/1");
  const a2 = results.get("shared/2");
  if (a1 && a2) {
    const ratio = mops(a2) / mops(a1);
    const cpuRatio = mopsCpu(a2) / mopsCpu(a1);
    const e1 = results.get("private/1");
    const e2 = results.get("private/2");
    const ceiling = e1 && e2
      ? ` (private heaps (e), the ceiling on this machine: ${(mops(e2) / mops(e1)).toFixed(2)}x ` +
        `wall-clock, ${(mopsCpu(e2) / mopsCpu(e1)).toFixed(2)}x by CPU time)`
      : "";
    console.log(
      `target: 2 Workers reach >= 1.7x the single-Worker throughput on thread-local churn (a): ` +
        `${ratio.toFixed(2)}x wall-clock -> ${ratio >= 1.7 ? "MET" : "NOT MET"}; ` +
        `${cpuRatio.toFixed(2)}x by CPU time (each Worker on a CPU of its own)${ceiling}`,
    );
  }
  const own = results.get("ring-own/2");
  const cross = results.get("ring-cross/2");
  if (own && cross) {
    const localFree = median(own.freeNs);
    const crossFree = median(cross.freeNs);
    const localMalloc = median(own.mallocNs);
    const crossMalloc = median(cross.mallocNs);
    // The owner takes remote frees back inside malloc's slow path: charge its extra malloc time to them.
    const allIn = crossFree + Math.max(0, crossMalloc - localMalloc);
    console.log(
      `(b) at 2 Workers, ns per op: local free ${localFree.toFixed(1)}, cross-Worker free ` +
        `${crossFree.toFixed(1)}; malloc ${localMalloc.toFixed(1)} beside local frees, ` +
        `${
          crossMalloc.toFixed(1)
        } beside cross-Worker frees (the owner takes remote frees back in malloc)`,
    );
    console.log(
      `target: cross-Worker frees cost at most 2x a local free (b): free call alone ` +
        `${(crossFree / localFree).toFixed(2)}x; with the owner's extra malloc-side work ` +
        `(${allIn.toFixed(1)} ns) ${(allIn / localFree).toFixed(2)}x -> ` +
        `${allIn / localFree <= 2 ? "MET" : "NOT MET"}`,
    );
  }
  const failed = configs.filter((c) => c.result.failure);
  for (const { result: r } of failed) {
    console.log(`CORRECTNESS: ${LABELS[r.setup]} x${r.workers}: ${r.failure}`);
  }
  if (failed.length === 0 && configs.some((c) => SHARED_SETUPS.has(c.result.setup))) {
    console.log(
      "correctness: every shared run passed heap.check() with allocatedBytes as expected, " +
        "and 0 after the Workers closed",
    );
  }
  console.log(`total ${((performance.now() - started) / 1000).toFixed(1)} s`);
  if (failed.length > 0) Deno.exitCode = 1;
}

function range(values: number[]): string {
  return `${Math.min(...values).toFixed(2)}..${Math.max(...values).toFixed(2)}`;
}

if (import.meta.main) await main();
