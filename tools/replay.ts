/**
 * Trace replay: runs the malloc/calloc/realloc/memalign/free stream of a real
 * program (see bench/traces/README.md for the format) through
 * tsmalloc's Heap and C allocators, and reports time and memory.
 *
 *   deno task replay bench/traces/*.trace.gz [--allocators heap,glibc,mimalloc,jemalloc]
 *                    [--svg out.svg] [--runs 3] [--sample 10000] [--no-touch]
 *                    [--warmup N] [--in-process] [--json results.json]
 *
 * By default every (trace, allocator, run) is replayed in a fresh Deno
 * process (started with GLIBC_TUNABLES set, so jemalloc loads): C
 * allocators are process-wide, so a previous replay would leave them grown,
 * RSS would carry over, and V8's type feedback from one allocator would slow
 * the next. --in-process replays everything here instead (re-executing this
 * process with GLIBC_TUNABLES if jemalloc is asked for and it is missing).
 *
 * Each child parses the gzip trace into typed arrays first (not timed), then
 * replays it. Every block gets a tag byte (1..255): its first and last bytes
 * (and one byte per 4 KiB page) are written after malloc/calloc/realloc and
 * checked before free and realloc; calloc'd memory is checked for zeros and
 * realloc'd memory for the kept prefix. These writes and checks are part of
 * the timed replay for every allocator, each through its cheapest honest path
 * (see bench/comparators.ts). --no-touch leaves them out.
 *
 * Memory: "footprint" is each allocator's own figure (Heap: committed bytes;
 * glibc: mallinfo2 arena + mmapped; mimalloc: committed, which it takes
 * eagerly on Linux; jemalloc: stats.resident), net of its value before the
 * replay (glibc's arena also holds Deno's own blocks), sampled every --sample events
 * and right after the trace's peak of live bytes (Heap and mimalloc track
 * their exact peak themselves). "Native RSS" is resident memory outside
 * V8's heap (Deno.memoryUsage() rss - heapTotal, so the bigint garbage of C
 * handles does not count) minus its value before the replay, sampled the
 * same way; it includes a few MiB that V8 itself mallocs while compiling.
 * Sampling time is not counted in the replay time.
 *
 * A fresh process replays cold: V8 compiles Heap's code (and the replay loop)
 * while it runs, which made Heap's first replay of gcc-cc1 about 2x slower
 * than its third in one process (glibc: 1.2x). --warmup N replays the trace N
 * times first (fresh allocator instances; C allocators are process-wide, so
 * what they retain from the warm-up is in the memory baseline and their
 * footprint reads low): use it for steady-state times, cold runs for memory.
 */

import process from "node:process";
import { parseArgs } from "node:util";
import {
  ALL_ALLOCATORS,
  type Allocator,
  createAllocator,
  type Handle,
  heapOf,
  JEMALLOC_ENV,
  jemallocEnvPresent,
} from "../bench/comparators.ts";
import { specialize } from "../bench/harness.ts";
import type { HeapOptions } from "../mod.ts";

// ---- trace model -----------------------------------------------------------------------

export const OP_MALLOC = 0;
export const OP_CALLOC = 1;
export const OP_REALLOC = 2;
export const OP_MEMALIGN = 3;
export const OP_FREE = 4;
/** `arg` of a realloc(NULL, n) event. */
export const NO_ID = 0xffff_ffff;

/** A parsed trace: one entry per event in parallel typed arrays. */
export interface Trace {
  name: string;
  events: number;
  /** OP_* per event. */
  op: Uint8Array;
  /** ID (malloc, calloc, memalign, free) or NEWID (realloc). */
  id: Uint32Array;
  /** calloc: N; realloc: OLDID or NO_ID; memalign: ALIGN; else 0. */
  arg: Uint32Array;
  /** SIZE (calloc: the element size; bytes = N * SIZE); free: 0. */
  size: Float64Array;
  /** Highest ID + 1: the handle table size. */
  idCount: number;
  counts: { malloc: number; calloc: number; realloc: number; memalign: number; free: number };
  /** Highest sum of requested bytes of live blocks, and the event where it is first reached. */
  peakLiveBytes: number;
  peakEvent: number;
  peakLiveBlocks: number;
  liveBlocksAtEnd: number;
  liveBytesAtEnd: number;
  /** Comment lines (without "# "). */
  comments: string[];
}

/** A format or consistency error in a trace. */
export class TraceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TraceError";
  }
}

/** Growable parallel arrays for the parser. */
class EventArrays {
  op = new Uint8Array(1 << 16);
  id = new Uint32Array(1 << 16);
  arg = new Uint32Array(1 << 16);
  size = new Float64Array(1 << 16);
  length = 0;

  push(op: number, id: number, arg: number, size: number): void {
    if (this.length === this.op.length) this.grow();
    const i = this.length++;
    this.op[i] = op;
    this.id[i] = id;
    this.arg[i] = arg;
    this.size[i] = size;
  }

  private grow(): void {
    const n = this.op.length * 2;
    const op = new Uint8Array(n), id = new Uint32Array(n), arg = new Uint32Array(n);
    const size = new Float64Array(n);
    op.set(this.op), id.set(this.id), arg.set(this.arg), size.set(this.size);
    this.op = op, this.id = id, this.arg = arg, this.size = size;
  }
}

const CH_NL = 10, CH_CR = 13, CH_SPACE = 32, CH_TAB = 9, CH_HASH = 35, CH_DASH = 45;
const CH_0 = 48, CH_9 = 57;
const FIELDS: Record<string, number> = { a: 2, c: 3, r: 3, m: 3, f: 1 };

/**
 * Parses a gzip-compressed trace into typed arrays and checks it: every
 * free/realloc names a live ID, every allocation a dead one. Accepts the
 * compressed bytes, a stream of them, or a Blob.
 */
export async function parseTrace(
  source: Uint8Array | ReadableStream<Uint8Array> | Blob,
  name = "trace",
): Promise<Trace> {
  const compressed: ReadableStream<Uint8Array<ArrayBuffer>> = source instanceof ReadableStream
    ? source as ReadableStream<Uint8Array<ArrayBuffer>>
    : source instanceof Blob
    ? source.stream()
    : new Blob([source as Uint8Array<ArrayBuffer>]).stream();
  const text = compressed.pipeThrough(new DecompressionStream("gzip"));
  const ev = new EventArrays();
  const comments: string[] = [];
  let comment: number[] | null = null;
  let line = 1;
  let kind = 0; // 0 = at line start
  let nf = 0;
  let inNumber = false;
  let value = 0;
  const f = [0, 0, 0, 0];

  const fail = (why: string): never => {
    throw new TraceError(`${name}: line ${line}: ${why}`);
  };
  const endLine = () => {
    if (inNumber) {
      if (nf < 4) f[nf] = value;
      nf++;
      inNumber = false;
    }
    if (kind !== 0) {
      const k = String.fromCharCode(kind);
      const want = FIELDS[k];
      if (want === undefined) fail(`unknown event "${k}"`);
      if (nf !== want) fail(`"${k}" needs ${want} fields, got ${nf}`);
      for (let i = 0; i < nf; i++) {
        if (f[i] < 0 && !(k === "r" && i === 0)) fail("'-' is only allowed as realloc's OLDID");
      }
      switch (k) {
        case "a":
          ev.push(OP_MALLOC, f[0], 0, f[1]);
          break;
        case "c":
          ev.push(OP_CALLOC, f[0], f[1], f[2]);
          break;
        case "r":
          if (f[1] < 0) fail("realloc NEWID cannot be '-'");
          ev.push(OP_REALLOC, f[1], f[0] < 0 ? NO_ID : f[0], f[2]);
          break;
        case "m":
          ev.push(OP_MEMALIGN, f[0], f[1], f[2]);
          break;
        case "f":
          ev.push(OP_FREE, f[0], 0, 0);
          break;
      }
    }
    kind = 0;
    nf = 0;
    line++;
  };

  for await (const chunk of text) {
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (comment !== null) {
        if (b === CH_NL) {
          comments.push(new TextDecoder().decode(new Uint8Array(comment)).replace(/^#\s?/, ""));
          comment = null;
          line++;
        } else comment.push(b);
        continue;
      }
      if (b >= CH_0 && b <= CH_9) {
        if (kind === 0) fail("a line must start with an event letter or '#'");
        if (!inNumber) {
          inNumber = true;
          value = 0;
        }
        value = value * 10 + (b - CH_0);
      } else if (b === CH_SPACE || b === CH_TAB) {
        if (inNumber) {
          if (nf < 4) f[nf] = value;
          nf++;
          inNumber = false;
        }
      } else if (b === CH_NL) {
        endLine();
      } else if (b === CH_CR) {
        // tolerate CRLF
      } else if (kind === 0) {
        if (b === CH_HASH) comment = [b];
        else kind = b;
      } else if (b === CH_DASH && !inNumber) {
        if (nf < 4) f[nf] = -1;
        nf++;
      } else {
        fail(`unexpected character "${String.fromCharCode(b)}"`);
      }
    }
  }
  if (comment !== null) {
    comments.push(new TextDecoder().decode(new Uint8Array(comment)).replace(/^#\s?/, ""));
  } else if (kind !== 0 || inNumber) endLine();

  const n = ev.length;
  const trace: Trace = {
    name,
    events: n,
    op: ev.op.slice(0, n),
    id: ev.id.slice(0, n),
    arg: ev.arg.slice(0, n),
    size: ev.size.slice(0, n),
    idCount: 0,
    counts: { malloc: 0, calloc: 0, realloc: 0, memalign: 0, free: 0 },
    peakLiveBytes: 0,
    peakEvent: -1,
    peakLiveBlocks: 0,
    liveBlocksAtEnd: 0,
    liveBytesAtEnd: 0,
    comments,
  };
  analyze(trace);
  return trace;
}

/** Reads and parses a `.trace.gz` file. */
export async function readTraceFile(path: string): Promise<Trace> {
  const file = await Deno.open(path, { read: true });
  const base = path.split("/").pop() ?? path;
  return await parseTrace(file.readable, base.replace(/\.trace\.gz$|\.gz$/, ""));
}

/** Fills in counts, ID range and live-byte peaks; throws TraceError on inconsistent IDs. */
function analyze(t: Trace): void {
  let maxId = -1;
  for (let i = 0; i < t.events; i++) {
    if (t.id[i] > maxId) maxId = t.id[i];
    if (t.op[i] === OP_REALLOC && t.arg[i] !== NO_ID && t.arg[i] > maxId) maxId = t.arg[i];
  }
  t.idCount = maxId + 1;
  const live = new Uint8Array(t.idCount);
  const bytes = new Float64Array(t.idCount);
  let liveBytes = 0, liveBlocks = 0;
  const c = t.counts;
  const bad = (i: number, why: string): never => {
    throw new TraceError(`${t.name}: event ${i}: ${why}`);
  };
  const born = (i: number, id: number, n: number) => {
    if (live[id]) bad(i, `ID ${id} is already live`);
    live[id] = 1;
    bytes[id] = n;
    liveBytes += n;
    liveBlocks++;
  };
  const die = (i: number, id: number) => {
    if (!live[id]) bad(i, `ID ${id} is not live`);
    live[id] = 0;
    liveBytes -= bytes[id];
    liveBlocks--;
  };
  for (let i = 0; i < t.events; i++) {
    const id = t.id[i];
    switch (t.op[i]) {
      case OP_MALLOC:
        c.malloc++;
        born(i, id, t.size[i]);
        break;
      case OP_CALLOC:
        c.calloc++;
        born(i, id, t.arg[i] * t.size[i]);
        break;
      case OP_MEMALIGN: {
        c.memalign++;
        const a = t.arg[i];
        if (a === 0 || (a & (a - 1)) !== 0) bad(i, `alignment ${a} is not a power of two`);
        born(i, id, t.size[i]);
        break;
      }
      case OP_REALLOC:
        c.realloc++;
        if (t.arg[i] !== NO_ID) die(i, t.arg[i]);
        born(i, id, t.size[i]);
        break;
      case OP_FREE:
        c.free++;
        die(i, id);
        break;
    }
    if (liveBytes > t.peakLiveBytes) {
      t.peakLiveBytes = liveBytes;
      t.peakEvent = i;
    }
    if (liveBlocks > t.peakLiveBlocks) t.peakLiveBlocks = liveBlocks;
  }
  t.liveBlocksAtEnd = liveBlocks;
  t.liveBytesAtEnd = liveBytes;
  // The recorder's trailer counts, when present, must match what was parsed.
  for (const line of t.comments) {
    const m = /events malloc=(\d+) calloc=(\d+) realloc=(\d+) memalign=(\d+) free=(\d+)/.exec(line);
    if (m === null) continue;
    const want = { malloc: +m[1], calloc: +m[2], realloc: +m[3], memalign: +m[4], free: +m[5] };
    for (const key of Object.keys(want) as (keyof typeof want)[]) {
      if (want[key] !== c[key]) {
        throw new TraceError(`${t.name}: trailer says ${key}=${want[key]}, parsed ${c[key]}`);
      }
    }
  }
}

/**
 * A trace as one buffer (header JSON, then the arrays), so that a replay
 * process can load it with one read instead of parsing: parsing makes and
 * drops many buffers, which Deno allocates with glibc malloc, and that would
 * distort glibc's footprint and the RSS of the replay that follows.
 */
export function encodeTrace(t: Trace): Uint8Array {
  const { op: _op, id: _id, arg: _arg, size: _size, ...meta } = t;
  const json = new TextEncoder().encode(JSON.stringify(meta));
  const head = Math.ceil((8 + json.length) / 8) * 8;
  const n = t.events;
  const total = head + n * 8 + n * 4 + n * 4 + n;
  const out = new Uint8Array(total);
  new DataView(out.buffer).setUint32(0, 0x54525331, true); // "TRS1"
  new DataView(out.buffer).setUint32(4, json.length, true);
  out.set(json, 8);
  let at = head;
  out.set(new Uint8Array(t.size.buffer, t.size.byteOffset, n * 8), at);
  at += n * 8;
  out.set(new Uint8Array(t.id.buffer, t.id.byteOffset, n * 4), at);
  at += n * 4;
  out.set(new Uint8Array(t.arg.buffer, t.arg.byteOffset, n * 4), at);
  at += n * 4;
  out.set(t.op, at);
  return out;
}

/** The inverse of encodeTrace; the arrays are views of `bytes`. */
export function decodeTrace(bytes: Uint8Array): Trace {
  if (bytes.byteOffset % 8 !== 0) bytes = bytes.slice();
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, true) !== 0x54525331) throw new TraceError("not an encoded trace");
  const jsonLength = dv.getUint32(4, true);
  const meta = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + jsonLength)));
  const n: number = meta.events;
  let at = bytes.byteOffset + Math.ceil((8 + jsonLength) / 8) * 8;
  const size = new Float64Array(bytes.buffer, at, n);
  at += n * 8;
  const id = new Uint32Array(bytes.buffer, at, n);
  at += n * 4;
  const arg = new Uint32Array(bytes.buffer, at, n);
  at += n * 4;
  const op = new Uint8Array(bytes.buffer, at, n);
  return { ...meta, op, id, arg, size };
}

// ---- replay engine ----------------------------------------------------------------------------

/** Options for replay(). */
export interface ReplayOptions {
  /** Write and check block bytes (default true). */
  touch?: boolean;
  /** Sample memory every this many events (default 10000). */
  sampleEvery?: number;
  /** Free the blocks still live at the end and close the allocator (default true). */
  cleanup?: boolean;
}

/** Memory over the run, one entry per sample. */
export interface Samples {
  event: number[];
  /** Requested bytes of live blocks (from the trace). */
  live: number[];
  /** The allocator's own footprint (NaN where it has none). */
  footprint: number[];
  /** Heap only: stats().allocatedBytes (usable bytes of live blocks). */
  allocated: number[];
  /**
   * Resident memory outside V8's heap (Deno.memoryUsage() rss - heapTotal)
   * minus its value before the replay: the JS garbage a C allocator's bigint
   * handles make does not count, V8's own malloc'd memory (JIT zones) does.
   */
  rss: number[];
}

/** What one replay measured. */
export interface ReplayResult {
  trace: string;
  allocator: string;
  events: number;
  touch: boolean;
  /** Replay time (parsing and sampling excluded). */
  ms: number;
  opsPerSec: number;
  peakLiveBytes: number;
  footprintSource: string;
  /** Peak footprint by the allocator's own figure (exact for heap/mimalloc, else sampled). */
  peakFootprint: number;
  /** peakFootprint / peakLiveBytes. */
  peakRatio: number;
  /** Footprint right after the last event (blocks the program never freed still live). */
  endFootprint: number;
  peakRssDelta: number;
  endRssDelta: number;
  /** Blocks whose bytes were checked (before free/realloc, after calloc). */
  verified: number;
  /** Checks that failed. */
  mismatches: number;
  /** First event whose check failed, or -1. */
  firstMismatch: number;
  /** Requests the allocator could not serve (nil) or does not support. */
  failures: number;
  /** heap.check() after the replay: "ok", an error message, or "n/a". */
  check: string;
  samples: Samples;
}

/**
 * The replay loop, specialized per allocator (see bench/harness.ts: it must
 * only use its parameters). `st` holds counters: 0 serial, 1 verified,
 * 2 mismatches, 3 failures, 4 live bytes, 5 first mismatching event.
 */
function replayLoop(
  a: Allocator,
  op: Uint8Array,
  id: Uint32Array,
  arg: Uint32Array,
  size: Float64Array,
  handles: Handle[],
  sizes: Float64Array,
  tags: Uint8Array,
  st: Float64Array,
  touch: boolean,
  addresses: boolean,
) {
  const nil = a.nil;
  const NONE = 0xffffffff;
  const mismatch = (i: number) => {
    st[2]++;
    if (st[5] < 0) st[5] = i;
  };
  const tagNext = () => {
    const s = st[0] + 1;
    st[0] = s;
    return (s % 255) + 1;
  };
  /** A new block for ID k: recorded, counted when the allocator failed, else tagged and marked. */
  const born = (k: number, h: Handle, n: number) => {
    handles[k] = h;
    sizes[k] = n;
    if (h === nil) {
      st[3]++;
    } else if (touch) {
      const t = tagNext();
      tags[k] = t;
      a.mark(h, n, t);
    }
  };
  return (from: number, to: number) => {
    let live = st[4];
    for (let i = from; i < to; i++) {
      const o = op[i];
      const k = id[i];
      if (o === 4) {
        const h = handles[k];
        if (h !== nil) {
          if (touch) {
            if (a.verify(h, sizes[k], tags[k])) st[1]++;
            else mismatch(i);
          }
          a.free(h);
          handles[k] = nil;
        }
        live -= sizes[k];
      } else if (o === 0) {
        const n = size[i];
        born(k, a.malloc(n), n);
        live += n;
      } else if (o === 2) {
        const old = arg[i];
        const n = size[i];
        if (old === NONE) {
          born(k, a.realloc ? a.realloc(nil, n) : a.malloc(n), n);
          live += n;
        } else {
          const h0 = handles[old];
          const n0 = sizes[old];
          const t = tags[old];
          live += n - n0;
          if (h0 === nil) {
            // Its allocation failed earlier: treat as a fresh allocation.
            const h = a.malloc(n);
            handles[old] = nil;
            handles[k] = h;
            sizes[k] = n;
            if (h === nil) st[3]++;
            else if (touch) a.mark(h, n, t);
          } else {
            if (touch) {
              if (a.verify(h0, n0, t)) st[1]++;
              else mismatch(i);
            }
            const h = a.realloc ? a.realloc(h0, n) : nil;
            if (h === nil) {
              st[3]++; // the old block stays live under OLDID; a different NEWID is dead
              if (k !== old) {
                handles[k] = nil;
                sizes[k] = n;
              }
            } else {
              handles[old] = nil;
              handles[k] = h;
              sizes[k] = n;
              tags[k] = t;
              if (touch) {
                // Growing keeps the old first and last bytes; shrinking only the first is sure.
                if (!a.verify(h, n < n0 ? 1 : n0, t)) mismatch(i);
                a.mark(h, n, t);
              }
            }
          }
        }
      } else if (o === 1) {
        const count = arg[i];
        const each = size[i];
        const n = count * each;
        const h = a.calloc ? a.calloc(count, each) : nil;
        if (touch && h !== nil) {
          if (a.verify(h, n, 0)) st[1]++;
          else mismatch(i);
        }
        born(k, h, n);
        live += n;
      } else {
        const align = arg[i];
        const n = size[i];
        const h = a.alignedAlloc ? a.alignedAlloc(align, n) : nil;
        if (addresses && h !== nil) {
          const ok = typeof h === "bigint" ? h % BigInt(align) === 0n : h % align === 0;
          if (!ok) mismatch(i);
        }
        born(k, h, n);
        live += n;
      }
    }
    st[4] = live;
  };
}

/** Replays a parsed trace through one allocator. */
export function replay(trace: Trace, a: Allocator, options: ReplayOptions = {}): ReplayResult {
  const touch = options.touch ?? true;
  const every = Math.max(1, options.sampleEvery ?? 10_000);
  const heap = heapOf(a);
  const handles: Handle[] = new Array(trace.idCount).fill(a.nil);
  const sizes = new Float64Array(trace.idCount);
  const tags = new Uint8Array(trace.idCount);
  const st = new Float64Array([0, 0, 0, 0, 0, -1]);
  const addresses = typeof a.nil === "bigint" || ["heap", "bump", "freelist"].includes(a.name);
  const run = specialize(replayLoop, `${a.name} ${trace.name}`)(
    a,
    trace.op,
    trace.id,
    trace.arg,
    trace.size,
    handles,
    sizes,
    tags,
    st,
    touch,
    addresses,
  );
  const samples: Samples = { event: [], live: [], footprint: [], allocated: [], rss: [] };
  // Figures are net of what the allocator and the process held before the
  // replay (glibc's arena also serves Deno itself). gc() exists when the
  // process runs with --v8-flags=--expose-gc, as replay children do.
  (globalThis as { gc?: () => void }).gc?.();
  const footprint0 = a.footprint ? a.footprint() : NaN;
  const footprint = () => a.footprint ? a.footprint() - footprint0 : NaN;
  const nativeRss = () => {
    const m = Deno.memoryUsage();
    return m.rss - m.heapTotal;
  };
  const rss0 = nativeRss();
  const sample = (event: number) => {
    samples.event.push(event);
    samples.live.push(st[4]);
    samples.footprint.push(footprint());
    samples.allocated.push(heap ? heap.stats().allocatedBytes : NaN);
    samples.rss.push(nativeRss() - rss0);
  };
  sample(0);
  const peakAt = trace.peakEvent + 1;
  let ms = 0;
  for (let from = 0; from < trace.events;) {
    let to = Math.min(trace.events, from + every - (from % every));
    if (from < peakAt && peakAt < to) to = peakAt;
    const t0 = performance.now();
    run(from, to);
    ms += performance.now() - t0;
    sample(to);
    from = to;
  }
  const endFootprint = footprint();
  const endRssDelta = nativeRss() - rss0;
  let peakFootprint = a.peakFootprint ? a.peakFootprint() - footprint0 : NaN;
  const sampled = samples.footprint.filter((v) => !Number.isNaN(v));
  if (Number.isNaN(peakFootprint) && sampled.length > 0) peakFootprint = Math.max(...sampled);
  const peakRssDelta = Math.max(...samples.rss);
  let check = "n/a";
  if (heap) {
    try {
      heap.check();
      check = "ok";
    } catch (e) {
      check = e instanceof Error ? e.message : String(e);
    }
  }
  if (options.cleanup ?? true) {
    for (let k = 0; k < handles.length; k++) {
      if (handles[k] !== a.nil) a.free(handles[k]);
      handles[k] = a.nil;
    }
    if (heap && check === "ok") {
      try {
        heap.check();
      } catch (e) {
        check = `after freeing leftovers: ${e instanceof Error ? e.message : String(e)}`;
      }
    }
  }
  return {
    trace: trace.name,
    allocator: a.name,
    events: trace.events,
    touch,
    ms,
    opsPerSec: trace.events / (ms / 1000),
    peakLiveBytes: trace.peakLiveBytes,
    footprintSource: a.footprintSource ?? "none",
    peakFootprint,
    peakRatio: peakFootprint / trace.peakLiveBytes,
    endFootprint,
    peakRssDelta,
    endRssDelta,
    verified: st[1],
    mismatches: st[2],
    firstMismatch: st[5],
    failures: st[3],
    check,
    samples,
  };
}

// ---- SVG chart ----------------------------------------------------------------------------------

/** One chart: memory of several series over the events of one trace. */
export interface ChartPanel {
  title: string;
  events: number;
  series: { label: string; event: number[]; bytes: number[]; color: string; dash?: string }[];
}

const COLORS: Record<string, string> = {
  heap: "#1f6feb",
  glibc: "#d1242f",
  mimalloc: "#1a7f37",
  jemalloc: "#9a6700",
  thing: "#8250df",
  uint8array: "#bf3989",
  bump: "#57606a",
};

const SHORT_SOURCE: Record<string, string> = {
  glibc: "mallinfo2",
  mimalloc: "commit, eager",
  jemalloc: "resident",
};

/** Builds chart panels from replay results: live bytes, Heap committed/allocated, others' footprint. */
export function chartPanels(results: readonly ReplayResult[]): ChartPanel[] {
  const panels: ChartPanel[] = [];
  for (const traceName of [...new Set(results.map((r) => r.trace))]) {
    const rs = results.filter((r) => r.trace === traceName);
    const first = rs[0];
    const series: ChartPanel["series"] = [{
      label: "live bytes (trace)",
      event: first.samples.event,
      bytes: first.samples.live,
      color: "#000000",
    }];
    for (const r of rs) {
      if (series.some((s) => s.label.startsWith(r.allocator + " "))) continue; // first run only
      const color = COLORS[r.allocator] ?? "#6e7781";
      if (r.allocator === "heap") {
        series.push({
          label: "heap committed",
          event: r.samples.event,
          bytes: r.samples.footprint,
          color,
        });
        series.push({
          label: "heap allocated (usable)",
          event: r.samples.event,
          bytes: r.samples.allocated,
          color,
          dash: "6 4",
        });
      } else if (r.samples.footprint.some((v) => !Number.isNaN(v))) {
        series.push({
          label: `${r.allocator} (${SHORT_SOURCE[r.allocator] ?? r.footprintSource})`,
          event: r.samples.event,
          bytes: r.samples.footprint,
          color,
          dash: "2 3",
        });
      }
    }
    panels.push({
      title: `${traceName}: ${fmtInt(first.events)} events, peak live ${mib(first.peakLiveBytes)}`,
      events: first.events,
      series,
    });
  }
  return panels;
}

/**
 * The chart as SVG, drawn by Vega-Lite (compiled to Vega, rendered headless):
 * one panel per trace, stacked, each with its own scales; a line per series.
 */
export async function renderSvg(panels: readonly ChartPanel[]): Promise<string> {
  const { vega, vegaLite } = await chartLibraries();
  const rows: { panel: string; series: string; event: number; mib: number }[] = [];
  const labels: string[] = [];
  const colors: string[] = [];
  const dashes: number[][] = [];
  for (const p of panels) {
    for (const s of p.series) {
      if (!labels.includes(s.label)) {
        labels.push(s.label);
        colors.push(s.color);
        dashes.push(s.dash ? s.dash.split(" ").map(Number) : [1, 0]);
      }
      s.event.forEach((event, i) => {
        const bytes = s.bytes[i];
        if (!Number.isNaN(bytes)) {
          rows.push({ panel: p.title, series: s.label, event, mib: bytes / MIB });
        }
      });
    }
  }
  const spec = {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    background: "white",
    data: { values: rows },
    facet: {
      row: {
        field: "panel",
        type: "nominal",
        sort: panels.map((p) => p.title),
        title: null,
        header: { labelAngle: 0, labelOrient: "top", labelAnchor: "start", labelFontSize: 13 },
      },
    },
    spec: {
      width: 640,
      height: 240,
      mark: { type: "line", strokeWidth: 1.5 },
      encoding: {
        x: { field: "event", type: "quantitative", title: "events", scale: { nice: false } },
        y: { field: "mib", type: "quantitative", title: "MiB" },
        color: {
          field: "series",
          type: "nominal",
          scale: { domain: labels, range: colors },
          legend: { title: null, orient: "right", labelLimit: 320 },
        },
        strokeDash: { field: "series", type: "nominal", scale: { domain: labels, range: dashes } },
        order: { field: "event", type: "quantitative" },
      },
    },
    resolve: { scale: { x: "independent", y: "independent" } },
  };
  const compiled = vegaLite.compile(spec as Parameters<typeof vegaLite.compile>[0]).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Vega and Vega-Lite, loaded on first use (the replay itself does not need them). */
async function chartLibraries() {
  // Vega's data loader pulls in Node's deprecated punycode module: keep its warning off stderr.
  (process as unknown as { noDeprecation: boolean }).noDeprecation = true;
  const vega = await import("npm:vega@^5.33.0");
  const vegaLite = await import("npm:vega-lite@^5.23.0");
  return { vega, vegaLite };
}

const MIB = 1024 * 1024;

// ---- formatting ------------------------------------------------------------------------------

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function mib(bytes: number): string {
  if (Number.isNaN(bytes)) return "-";
  return (bytes / (1024 * 1024)).toFixed(bytes < 10 * 1024 * 1024 ? 2 : 1) + " MiB";
}

const median = (xs: number[]) => {
  const s = [...xs].sort((p, q) => p - q);
  return s.length === 0 ? NaN : s[Math.floor((s.length - 1) / 2)];
};

/** A Markdown table of results for one trace; times are medians over runs, ratios vs glibc. */
export function formatTable(results: readonly ReplayResult[]): string {
  const byAlloc = new Map<string, ReplayResult[]>();
  for (const r of results) byAlloc.set(r.allocator, [...(byAlloc.get(r.allocator) ?? []), r]);
  const glibc = byAlloc.get("glibc");
  const glibcMs = glibc ? median(glibc.map((r) => r.ms)) : NaN;
  const glibcMin = glibc ? Math.min(...glibc.map((r) => r.ms)) : NaN;
  const ratio = (x: number, base: number) => Number.isNaN(base) ? "-" : (x / base).toFixed(2) + "x";
  const lines = [
    "| allocator | time ms: median [min] | Mops/s | vs glibc: median [min] | peak footprint | " +
    "peak / live | end footprint | peak native RSS | RSS / live | end native RSS | verified | bad | " +
    "failed |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const [name, rs] of byAlloc) {
    const ms = median(rs.map((r) => r.ms));
    const min = Math.min(...rs.map((r) => r.ms));
    const r = rs.find((x) => x.ms === ms) ?? rs[0];
    lines.push(
      `| ${name} | ${ms.toFixed(1)} [${min.toFixed(1)}]${
        rs.length > 1 ? ` (${rs.length} runs)` : ""
      } | ${(r.events / ms / 1000).toFixed(2)} | ${ratio(ms, glibcMs)} [${
        ratio(min, glibcMin)
      }] | ${mib(r.peakFootprint)} | ${
        Number.isNaN(r.peakRatio) ? "-" : r.peakRatio.toFixed(2)
      } | ${mib(r.endFootprint)} | ${mib(r.peakRssDelta)} | ${
        (r.peakRssDelta / r.peakLiveBytes).toFixed(2)
      } | ${mib(r.endRssDelta)} | ${fmtInt(r.verified)} | ${r.mismatches} | ${r.failures} |`,
    );
  }
  return lines.join("\n");
}

// ---- command line ------------------------------------------------------------------------------

const DEFAULT_ALLOCATORS = "heap,glibc,mimalloc,jemalloc";
const RESULT_PREFIX = "@@replay-result ";

function usage(): string {
  return [
    "usage: deno task replay <trace.gz>... [options]   (recorded traces: bench/traces/*.trace.gz)",
    "  --allocators a,b,...  heap,glibc,mimalloc,jemalloc (default), thing, uint8array, bump,",
    "                        freelist",
    "  --svg FILE            chart of live bytes, Heap committed/allocated and others' footprint",
    "  --runs N              replays per (trace, allocator), each in a fresh process; median time",
    "  --sample N            sample memory every N events (default 10000)",
    "  --no-touch            do not write or check block bytes",
    "  --warmup N            replay N times before the measured run (steady-state time)",
    "  --in-process          replay everything in this process (one run, shared state)",
    "  --json FILE           write every result (with samples) as JSON",
    "  --heap-options K=V,.. options for the heap, e.g. idleRatio=Infinity,retainBytes=0",
  ].join("\n");
}

/**
 * Progress over the replay runs: on a terminal, a bar (cli-progress) with
 * each run's result line printed above it; otherwise just the lines.
 */
async function runProgress(runs: number) {
  if (!Deno.stderr.isTerminal()) {
    return { log: (line: string) => console.error(line), step: (_label: string) => {}, stop() {} };
  }
  // @ts-types="npm:@types/cli-progress@^3.11.0"
  const { default: cliProgress } = await import("npm:cli-progress@^3.12.0");
  const bars = new cliProgress.MultiBar({
    stream: process.stderr,
    format: "replay [{bar}] {value}/{total} runs | {label} | ETA {eta_formatted}",
    hideCursor: true,
    clearOnComplete: true,
  }, cliProgress.Presets.shades_classic);
  const bar = bars.create(runs, 0, { label: "" });
  return {
    log: (line: string) => bars.log(line + "\n"),
    step: (label: string) => bar.increment(1, { label }),
    stop: () => bars.stop(),
  };
}

/** Runs the command line; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        allocators: { type: "string", default: DEFAULT_ALLOCATORS },
        svg: { type: "string" },
        runs: { type: "string", default: "1" },
        sample: { type: "string", default: "10000" },
        "no-touch": { type: "boolean", default: false },
        warmup: { type: "string", default: "0" },
        "in-process": { type: "boolean", default: false },
        json: { type: "string" },
        "heap-options": { type: "string", default: "" },
        child: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    console.error(`${e instanceof Error ? e.message : e}\n${usage()}`);
    return 2;
  }
  const v = parsed.values;
  const traces = parsed.positionals;
  if (v.help || traces.length === 0) {
    console.error(usage());
    return v.help ? 0 : 2;
  }
  const allocators = v.allocators.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  const unknown = allocators.filter((a) => !(ALL_ALLOCATORS as readonly string[]).includes(a));
  if (unknown.length > 0) {
    console.error(`unknown allocator "${unknown[0]}" (known: ${ALL_ALLOCATORS.join(", ")})`);
    console.error(usage());
    return 2;
  }
  for (const path of traces) {
    try {
      Deno.statSync(path);
    } catch (e) {
      console.error(`cannot read trace ${path}: ${e instanceof Error ? e.message : e}`);
      return 2;
    }
  }
  const runs = Math.max(1, Number(v.runs) | 0);
  const sampleEvery = Math.max(1, Number(v.sample) | 0);
  const touch = !v["no-touch"];
  const warmup = Math.max(0, Number(v.warmup) | 0);
  const heapText = v["heap-options"];
  let heap: HeapOptions;
  try {
    heap = parseHeapOptions(heapText);
  } catch (e) {
    console.error(`${e instanceof Error ? e.message : e}\n${usage()}`);
    return 2;
  }

  if (v.child) {
    return await child(traces[0], allocators[0], { touch, sampleEvery, warmup, heap, heapText });
  }

  const inProcess = v["in-process"];
  if (inProcess && allocators.includes("jemalloc") && !jemallocEnvPresent()) {
    // jemalloc needs the tunable at process start: run this command again with it.
    console.error("note: re-running with GLIBC_TUNABLES set so that jemalloc can load");
    const cmd = new Deno.Command(Deno.execPath(), {
      args: [...runArgs(true), ...args],
      env: JEMALLOC_ENV,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    });
    return (await cmd.output()).code;
  }

  const results: ReplayResult[] = [];
  let bad = false;
  const scratch = inProcess ? "" : await Deno.makeTempDir({ prefix: "tsmalloc-replay-" });
  const progress = await runProgress(traces.length * allocators.length * (inProcess ? 1 : runs));
  try {
    for (const path of traces) {
      const traceResults: ReplayResult[] = [];
      const t0 = performance.now();
      let trace: Trace | undefined = await readTraceFile(path);
      progress.log(
        `${trace.name}: parsed ${fmtInt(trace.events)} events in ${
          (performance.now() - t0).toFixed(0)
        } ms (peak live ${mib(trace.peakLiveBytes)}, ${fmtInt(trace.peakLiveBlocks)} blocks, ` +
          `${fmtInt(trace.liveBlocksAtEnd)} never freed)`,
      );
      let snapshot = "";
      if (!inProcess) {
        snapshot = `${scratch}/${trace.name}.bin`;
        await Deno.writeFile(snapshot, encodeTrace(trace));
        trace = undefined;
      }
      // Runs interleave (run 1 of every allocator, then run 2...), so that a
      // burst of load from other processes does not land on one allocator only.
      for (let run = 1; run <= (inProcess ? 1 : runs); run++) {
        for (const name of allocators) {
          const label = `${path.split("/").pop()} | ${name}${
            runs > 1 ? ` run ${run}/${runs}` : ""
          }`;
          let r: ReplayResult | null = null;
          if (inProcess) {
            const a = createAllocator(name, { heap });
            for (let w = 0; a !== null && w < warmup; w++) {
              const wa = createAllocator(name, { heap })!;
              replay(trace!, wa, { touch, sampleEvery });
              wa.close?.();
            }
            if (a !== null) r = replay(trace!, a, { touch, sampleEvery });
            a?.close?.();
          } else {
            r = await spawnChild(snapshot, name, { touch, sampleEvery, warmup, heap, heapText });
          }
          progress.step(label);
          if (r === null) {
            progress.log(`${label}: skipped`);
            continue;
          }
          progress.log(
            `${label}: ${r.ms.toFixed(1)} ms, ${(r.opsPerSec / 1e6).toFixed(2)} Mops/s, ` +
              `peak ${mib(r.peakFootprint)} (${r.peakRatio.toFixed(2)}x live), ` +
              `${fmtInt(r.verified)} blocks verified, ${r.mismatches} bad, ${r.failures} failed` +
              (r.check !== "n/a" ? `, check ${r.check}` : ""),
          );
          if (r.mismatches > 0 || r.failures > 0 || (r.check !== "ok" && r.check !== "n/a")) {
            bad = true;
          }
          traceResults.push(r);
        }
      }
      results.push(...traceResults);
      if (traceResults.length > 0) {
        console.log(
          `\n### ${traceResults[0].trace} (${fmtInt(traceResults[0].events)} events, ` +
            `peak live ${mib(traceResults[0].peakLiveBytes)}${touch ? "" : ", no byte writes"}` +
            `${heapText === "" ? "" : `, heap options ${heapText}`})\n`,
        );
        console.log(formatTable(traceResults));
      }
    }
  } finally {
    progress.stop();
    if (scratch !== "") await Deno.remove(scratch, { recursive: true });
  }
  if (v.svg && results.length > 0) {
    await Deno.writeTextFile(v.svg, await renderSvg(chartPanels(results)));
    console.error(`wrote ${v.svg}`);
  }
  if (v.json) {
    await Deno.writeTextFile(v.json, JSON.stringify(results, null, 1));
    console.error(`wrote ${v.json}`);
  }
  return bad ? 1 : 0;
}

/** `deno run` arguments that start this tool again with the permissions it needs. */
function runArgs(forMain: boolean): string[] {
  const config = new URL("../deno.json", import.meta.url).pathname;
  const lock = new URL("./deno.lock", import.meta.url).pathname;
  const self = new URL(import.meta.url).pathname;
  return [
    "run",
    "--config",
    config,
    "--lock",
    lock,
    "--v8-flags=--expose-gc",
    "--allow-ffi",
    "--allow-env",
    "--allow-read",
    ...(forMain ? ["--allow-write", "--allow-run"] : []),
    self,
  ];
}

/** What a child replay is told (heapText: --heap-options as given, passed on verbatim). */
interface ChildOptions {
  touch: boolean;
  sampleEvery: number;
  warmup: number;
  heap: HeapOptions;
  heapText: string;
}

/** Numeric Heap options that --heap-options may set. */
const HEAP_NUMBER_OPTIONS = ["arenaBytes", "retainBytes", "idleRatio", "idleFloorBytes"] as const;
const HEAP_BOOLEAN_OPTIONS = ["secure", "debug", "lowAddresses"] as const;

/**
 * Parses --heap-options: comma-separated key=value pairs of HeapOptions;
 * numbers (Infinity too) for the sizes and ratios, true/false for secure,
 * debug and lowAddresses.
 */
export function parseHeapOptions(text: string): HeapOptions {
  const options: Record<string, number | boolean> = {};
  for (const pair of text.split(",").map((p) => p.trim()).filter((p) => p !== "")) {
    const [key, value, extra] = pair.split("=");
    if (value === undefined || extra !== undefined) {
      throw new Error(`--heap-options: expected key=value, got "${pair}"`);
    }
    if ((HEAP_NUMBER_OPTIONS as readonly string[]).includes(key)) {
      const n = Number(value);
      if (value.trim() === "" || Number.isNaN(n)) {
        throw new Error(`--heap-options: ${key} must be a number, got "${value}"`);
      }
      options[key] = n;
    } else if ((HEAP_BOOLEAN_OPTIONS as readonly string[]).includes(key)) {
      if (value !== "true" && value !== "false") {
        throw new Error(`--heap-options: ${key} must be true or false, got "${value}"`);
      }
      options[key] = value === "true";
    } else {
      throw new Error(
        `--heap-options: unknown option "${key}" (known: ${
          [...HEAP_NUMBER_OPTIONS, ...HEAP_BOOLEAN_OPTIONS].join(", ")
        })`,
      );
    }
  }
  return options as HeapOptions;
}

/** Replays one trace with one allocator in a fresh process and returns its result. */
async function spawnChild(
  path: string,
  allocator: string,
  o: ChildOptions,
): Promise<ReplayResult | null> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      ...runArgs(false),
      "--child",
      path,
      "--allocators",
      allocator,
      "--sample",
      String(o.sampleEvery),
      "--warmup",
      String(o.warmup),
      ...(o.touch ? [] : ["--no-touch"]),
      ...(o.heapText === "" ? [] : ["--heap-options", o.heapText]),
    ],
    env: JEMALLOC_ENV,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  });
  const out = await cmd.output();
  const text = new TextDecoder().decode(out.stdout);
  const line = text.split("\n").find((l) => l.startsWith(RESULT_PREFIX));
  if (out.code !== 0 && line === undefined) {
    throw new Error(`replay of ${path} with ${allocator} failed (exit ${out.code})`);
  }
  return line === undefined ? null : JSON.parse(line.slice(RESULT_PREFIX.length));
}

/** The child side: parse, replay once, print the result as one JSON line. */
async function child(path: string, allocator: string, o: ChildOptions): Promise<number> {
  const trace = path.endsWith(".bin")
    ? decodeTrace(await Deno.readFile(path))
    : await readTraceFile(path);
  const a = createAllocator(allocator, { heap: o.heap });
  if (a === null) return 0; // the note says why
  for (let w = 0; w < o.warmup; w++) {
    const wa = createAllocator(allocator, { heap: o.heap })!;
    replay(trace, wa, o);
    wa.close?.();
  }
  // Let V8 free what loading left behind before the baseline is taken.
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 20));
    gc();
  }
  const r = replay(trace, a, o);
  console.log(RESULT_PREFIX + JSON.stringify(r));
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
