/**
 * Heap maps of a recorded trace or of a built-in workload:
 *
 *   deno task heapmap TRACE.gz --out map.html [--every N] [--debug] [--png peak.png]
 *   deno task heapmap --demo --out map.html [--every N] [--png peak.png]
 *
 * A trace (the format of `deno task replay`, read by its reader) is
 * replayed through a fresh Heap; a snapshot is taken every N operations
 * (default: about 200 in all), with every block's state at the peak of live
 * bytes and at the end. --demo runs a debug-mode workload that fragments
 * the heap and recovers, with a block leaked from one site. --png also
 * saves a screenshot of the map at its peak (headless Chromium). Progress
 * goes to stderr. A bad path, trace line or option: a message, exit code 2.
 */

import { parseArgs } from "node:util";
import { Heap, type HeapSnapshot } from "../mod.ts";
import { renderHeapMap } from "../heapmap.ts";
import {
  OP_CALLOC,
  OP_FREE,
  OP_MALLOC,
  OP_MEMALIGN,
  OP_REALLOC,
  readTraceFile,
  type Trace,
  TraceError,
} from "./replay.ts";
import { openPage } from "./chromium.ts";

const USAGE = "usage: deno task heapmap TRACE.gz --out map.html [--every N] [--debug] " +
  "[--png peak.png]\n       deno task heapmap --demo --out map.html [--every N] [--png peak.png]";
const TARGET_SNAPSHOTS = 200;

interface Run {
  snapshots: HeapSnapshot[];
  /** Index of the snapshot at the peak of live bytes. */
  peak: number;
}

/** Replays `trace` through a fresh heap, snapshotting every `every` events. */
export function replayToSnapshots(
  trace: Trace,
  every: number,
  debug: boolean,
  progress: (done: number) => void = () => {},
): Run {
  using heap = new Heap({ debug: debug ? { stacks: false } : false });
  const address = new Float64Array(trace.idCount);
  const snapshots: HeapSnapshot[] = [];
  let peak = 0;
  const take = (i: number, blocks: boolean, what = "") => {
    snapshots.push(heap.snapshot({ blocks, label: `event ${i.toLocaleString("en-US")}${what}` }));
  };
  take(0, false);
  for (let i = 0; i < trace.events; i++) {
    const id = trace.id[i];
    const size = trace.size[i];
    switch (trace.op[i]) {
      case OP_MALLOC:
        address[id] = heap.malloc(size);
        break;
      case OP_CALLOC:
        address[id] = heap.calloc(trace.arg[i], size);
        break;
      case OP_REALLOC: {
        const old = trace.arg[i] === 0xffff_ffff ? 0 : address[trace.arg[i]];
        address[id] = heap.realloc(old, size);
        if (trace.arg[i] !== 0xffff_ffff && trace.arg[i] !== id) address[trace.arg[i]] = 0;
        break;
      }
      case OP_MEMALIGN:
        address[id] = heap.alignedAlloc(trace.arg[i], size);
        break;
      case OP_FREE:
        heap.free(address[id]);
        address[id] = 0;
        break;
    }
    if (i === trace.peakEvent) {
      peak = snapshots.length;
      take(i + 1, true, " (peak of live bytes)");
    } else if ((i + 1) % every === 0) take(i + 1, false);
    if ((i + 1) % 65536 === 0) progress(i + 1);
  }
  take(trace.events, true, " (end)");
  return { snapshots, peak };
}

/**
 * The built-in workload (debug mode): lists of small records grow, most are
 * dropped at random (pages stay partly used: utilization falls), new
 * records of other sizes fill the holes, then everything goes but one
 * site's blocks (the leak), and trim() gives the empty pages back.
 */
export function demoSnapshots(every: number): Run {
  using heap = new Heap({ debug: { quarantineBlocks: 0, quarantineBytes: 0 } });
  const snapshots: HeapSnapshot[] = [];
  let ops = 0;
  let peak = 0;
  let peakBytes = -1;
  const step = (phase: string) => {
    if (++ops % every !== 0) return;
    snapshots.push(heap.snapshot({ label: phase }));
    if (heap.stats().allocatedBytes > peakBytes) {
      peakBytes = heap.stats().allocatedBytes;
      peak = snapshots.length - 1;
    }
  };
  let seed = 12345;
  const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const records: number[] = [];
  const allocateRecord = (size: number) => heap.malloc(size);
  const allocateCacheEntry = (size: number) => heap.malloc(size);
  const allocateLeakySession = () => heap.malloc(200);
  for (let i = 0; i < 30000; i++) {
    records.push(allocateRecord(random() < 0.7 ? 48 : random() < 0.8 ? 160 : 2400));
    if (i % 500 === 0) allocateLeakySession(); // never freed: the leak
    step("growing");
  }
  snapshots.push(heap.snapshot({ blocks: true, label: "peak" }));
  peak = snapshots.length - 1;
  for (let i = records.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [records[i], records[j]] = [records[j], records[i]];
  }
  for (const p of records.splice(0, Math.floor(records.length * 0.85))) {
    heap.free(p);
    step("dropping 85% at random");
  }
  snapshots.push(heap.snapshot({ blocks: true, label: "fragmented" }));
  for (let i = 0; i < 12000; i++) {
    records.push(allocateCacheEntry(random() < 0.6 ? 64 : 1200));
    step("refilling holes with other sizes");
  }
  for (const p of records.splice(0)) {
    heap.free(p);
    step("freeing everything but the leak");
  }
  heap.trim();
  snapshots.push(heap.snapshot({ blocks: true, label: "end (after trim)" }));
  return { snapshots, peak };
}

/** Runs the command; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: true,
      options: {
        out: { type: "string" },
        every: { type: "string" },
        demo: { type: "boolean" },
        debug: { type: "boolean" },
        png: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    return fail(`heapmap: ${(error as Error).message}\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.out) return fail(`heapmap: --out map.html is required\n${USAGE}`);
  if (values.demo ? positionals.length !== 0 : positionals.length !== 1) {
    return fail(`heapmap: give one trace file or --demo\n${USAGE}`);
  }
  let every = 0;
  if (values.every !== undefined) {
    every = Number(values.every);
    if (!Number.isSafeInteger(every) || every < 1) {
      return fail(`heapmap: --every must be a positive integer, got "${values.every}"`);
    }
  }
  let run: Run;
  let title: string;
  try {
    if (values.demo) {
      title = "heap map: demo workload";
      run = demoSnapshots(every || 400);
    } else {
      const path = positionals[0];
      const started = performance.now();
      const trace = await readTraceFile(path);
      every ||= Math.max(1, Math.ceil(trace.events / TARGET_SNAPSHOTS));
      title = `heap map: ${trace.name}`;
      console.error(
        `${trace.name}: ${trace.events.toLocaleString("en-US")} events read in ` +
          `${Math.round(performance.now() - started)} ms; a snapshot every ${every}`,
      );
      let lastReport = performance.now();
      run = replayToSnapshots(trace, every, values.debug === true, (done) => {
        if (performance.now() - lastReport < 1000) return;
        lastReport = performance.now();
        console.error(
          `  replayed ${done.toLocaleString("en-US")} of ` +
            `${trace.events.toLocaleString("en-US")} events (${
              Math.round(100 * done / trace.events)
            }%)`,
        );
      });
    }
  } catch (error) {
    if (error instanceof TraceError) return fail(`heapmap: ${error.message}`);
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied) {
      return fail(`heapmap: cannot read ${positionals[0]}: ${(error as Error).message}`);
    }
    if (error instanceof TypeError && /gzip|decompress|corrupt/i.test(error.message)) {
      return fail(`heapmap: ${positionals[0]} is not a gzip-compressed trace`);
    }
    throw error;
  }
  const html = renderHeapMap(run.snapshots, { title, initial: run.peak });
  try {
    await Deno.writeTextFile(values.out, html);
  } catch (error) {
    return fail(`heapmap: cannot write ${values.out}: ${(error as Error).message}`);
  }
  console.error(
    `${values.out}: ${run.snapshots.length} snapshots, ${(html.length / 2 ** 20).toFixed(1)} MiB`,
  );
  if (values.png) {
    const url = new URL(values.out, `file://${Deno.cwd()}/`).href;
    await using page = await openPage(url, { width: 1100, height: 900 });
    if (page.errors.length > 0) throw new Error(`the page reported: ${page.errors.join("; ")}`);
    await Deno.writeFile(values.png, await page.screenshot());
    console.error(`${values.png}: screenshot of the map at snapshot ${run.peak + 1}`);
  }
  return 0;
}

function fail(message: string): number {
  console.error(message);
  return 2;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
