/**
 * The trace replay tool (tools/replay.ts): parser, replay engine, chart.
 *
 * Traces are generated here from a seeded shadow model, gzip-compressed in
 * memory with CompressionStream and parsed from the bytes, so no file is
 * written. The one test that runs the command line end to end (--svg to a
 * file) runs only when the test process has write permission.
 */

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  chartPanels,
  decodeTrace,
  encodeTrace,
  formatTable,
  main,
  NO_ID,
  OP_CALLOC,
  OP_FREE,
  OP_MALLOC,
  OP_MEMALIGN,
  OP_REALLOC,
  parseHeapOptions,
  parseTrace,
  renderSvg,
  replay,
  type Trace,
  TraceError,
} from "./replay.ts";
import { type Allocator, createAllocator, createHeap } from "../bench/comparators.ts";
import { mulberry32, needs } from "../tests/helpers.ts";

async function gzip(text: string): Promise<Uint8Array> {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** What the generator knows about the trace it wrote. */
interface Expected {
  text: string;
  events: number;
  counts: { malloc: number; calloc: number; realloc: number; memalign: number; free: number };
  peakLiveBytes: number;
  peakLiveBlocks: number;
  liveBlocksAtEnd: number;
  idCount: number;
  /** Checks a touching replay makes: frees, reallocs of a live block, callocs. */
  checks: number;
}

/**
 * A random trace in the recorder's format: dense IDs reused after free,
 * realloc(NULL), realloc to a new ID, calloc, memalign, size 0, a few large
 * blocks, comments in the middle and a trailer with the counts.
 */
function makeTrace(seed: number, events: number): Expected {
  const r = mulberry32(seed);
  const lines = ["# tracekit v1", "# program: replay.test.ts generator"];
  const counts = { malloc: 0, calloc: 0, realloc: 0, memalign: 0, free: 0 };
  const live = new Map<number, number>(); // id -> bytes
  const spare: number[] = [];
  let nextId = 0, liveBytes = 0, peakLiveBytes = 0, peakLiveBlocks = 0, checks = 0;
  const newId = () => (spare.length > 0 ? spare.pop()! : nextId++);
  const size = () => {
    const u = r();
    if (u < 0.02) return 0;
    if (u < 0.05) return 130 * 1024 + Math.floor(r() * 200 * 1024); // large blocks
    if (u < 0.15) return 1024 + Math.floor(r() * 20000);
    return 1 + Math.floor(r() * 300);
  };
  const randomLive = () => {
    const ids = [...live.keys()];
    return ids[Math.floor(r() * ids.length)];
  };
  for (let e = 0; e < events; e++) {
    if (e === Math.floor(events / 2)) lines.push("# a comment in the middle");
    const u = r();
    if (live.size > 0 && u < 0.35) {
      const id = randomLive();
      lines.push(`f ${id}`);
      liveBytes -= live.get(id)!;
      live.delete(id);
      spare.push(id);
      counts.free++;
      checks++;
    } else if (live.size > 0 && u < 0.5) {
      const old = randomLive();
      const n = 1 + Math.floor(r() * 40000);
      liveBytes -= live.get(old)!;
      live.delete(old);
      let id = old;
      if (r() < 0.2) {
        id = newId();
        spare.push(old);
      }
      lines.push(`r ${old} ${id} ${n}`);
      live.set(id, n);
      liveBytes += n;
      counts.realloc++;
      checks++;
    } else if (u < 0.53) {
      const id = newId();
      const n = 1 + Math.floor(r() * 500);
      lines.push(`r - ${id} ${n}`);
      live.set(id, n);
      liveBytes += n;
      counts.realloc++;
    } else if (u < 0.63) {
      const id = newId(), count = 1 + Math.floor(r() * 20), each = 1 + Math.floor(r() * 64);
      lines.push(`c ${id} ${count} ${each}`);
      live.set(id, count * each);
      liveBytes += count * each;
      counts.calloc++;
      checks++;
    } else if (u < 0.67) {
      const id = newId(), align = 2 ** (4 + Math.floor(r() * 9)), n = size();
      lines.push(`m ${id} ${align} ${n}`);
      live.set(id, n);
      liveBytes += n;
      counts.memalign++;
    } else {
      const id = newId(), n = size();
      lines.push(`a ${id} ${n}`);
      live.set(id, n);
      liveBytes += n;
      counts.malloc++;
    }
    if (liveBytes > peakLiveBytes) peakLiveBytes = liveBytes;
    if (live.size > peakLiveBlocks) peakLiveBlocks = live.size;
  }
  lines.push(
    `# end: events malloc=${counts.malloc} calloc=${counts.calloc} realloc=${counts.realloc} ` +
      `memalign=${counts.memalign} free=${counts.free}`,
  );
  return {
    text: lines.join("\n") + "\n",
    events,
    counts,
    peakLiveBytes,
    peakLiveBlocks,
    liveBlocksAtEnd: live.size,
    idCount: nextId,
    checks,
  };
}

const expected = makeTrace(0x7e57, 3000);
const tracePromise = gzip(expected.text).then((gz) => parseTrace(gz, "generated"));

function assertCleanReplay(t: Trace, a: Allocator) {
  const r = replay(t, a, { sampleEvery: 250 });
  assert.equal(r.events, expected.events);
  assert.equal(r.mismatches, 0, `first bad event ${r.firstMismatch}`);
  assert.equal(r.failures, 0);
  assert.equal(r.verified, expected.checks);
  assert.ok(r.ms > 0);
  assert.ok(r.samples.event.length >= expected.events / 250);
  assert.equal(r.samples.event.at(-1), expected.events);
  return r;
}

describe("replay tool: parser", () => {
  it("parses a gzip trace into typed arrays with the right counts and peaks", async () => {
    const t = await tracePromise;
    assert.equal(t.events, expected.events);
    assert.deepEqual(t.counts, expected.counts);
    assert.equal(t.peakLiveBytes, expected.peakLiveBytes);
    assert.equal(t.peakLiveBlocks, expected.peakLiveBlocks);
    assert.equal(t.liveBlocksAtEnd, expected.liveBlocksAtEnd);
    assert.equal(t.idCount, expected.idCount);
    assert.ok(t.op instanceof Uint8Array && t.id instanceof Uint32Array);
    assert.ok(t.size instanceof Float64Array && t.arg instanceof Uint32Array);
    assert.equal(t.comments[0], "tracekit v1");
    assert.ok(t.comments.includes("a comment in the middle"));
  });

  it("decodes every event form", async () => {
    const text = "# h\na 0 48\nc 1 13 16\nr 0 0 100\nr - 2 7\nr 2 3 9\nm 4 64 100\nf 1\n";
    const t = await parseTrace(await gzip(text), "forms");
    assert.deepEqual([...t.op], [
      OP_MALLOC,
      OP_CALLOC,
      OP_REALLOC,
      OP_REALLOC,
      OP_REALLOC,
      OP_MEMALIGN,
      OP_FREE,
    ]);
    assert.deepEqual([...t.id], [0, 1, 0, 2, 3, 4, 1]);
    assert.deepEqual([...t.arg], [0, 13, 0, NO_ID, 2, 64, 0]);
    assert.deepEqual([...t.size], [48, 16, 100, 7, 9, 100, 0]);
    assert.equal(t.peakLiveBytes, 100 + 208 + 9 + 100);
    assert.equal(t.liveBlocksAtEnd, 3);
  });

  it("accepts a last line without a newline and CRLF line ends", async () => {
    const t = await parseTrace(await gzip("a 0 5\r\nf 0"), "crlf");
    assert.equal(t.events, 2);
    assert.equal(t.counts.free, 1);
  });

  it("rejects malformed and inconsistent traces", async () => {
    const bad: [string, RegExp][] = [
      ["a 0 8\nf 1\n", /event 1: ID 1 is not live/],
      ["a 0 8\na 0 8\n", /ID 0 is already live/],
      ["a 0 8\nr 1 1 8\n", /ID 1 is not live/],
      ["x 0 8\n", /line 1: unknown event "x"/],
      ["a 0\n", /line 1: "a" needs 2 fields, got 1/],
      ["a 0 8\nf -\n", /'-' is only allowed as realloc's OLDID/],
      ["a 0 8z\n", /unexpected character "z"/],
      ["m 0 48 8\n", /alignment 48 is not a power of two/],
      ["a 0 8\n# end: events malloc=2 calloc=0 realloc=0 memalign=0 free=0\n", /trailer/],
    ];
    for (const [text, message] of bad) {
      await assert.rejects(parseTrace(await gzip(text), "bad"), (e: unknown) => {
        assert.ok(e instanceof TraceError, String(e));
        assert.match(e.message, message);
        return true;
      });
    }
  });

  it("round-trips through the binary snapshot replay children load", async () => {
    const t = await tracePromise;
    const u = decodeTrace(encodeTrace(t));
    assert.equal(u.events, t.events);
    assert.deepEqual(u.counts, t.counts);
    assert.equal(u.peakLiveBytes, t.peakLiveBytes);
    assert.deepEqual(u.op, t.op);
    assert.deepEqual(u.id, t.id);
    assert.deepEqual(u.arg, t.arg);
    assert.deepEqual(u.size, t.size);
  });
});

describe("replay tool: engine", () => {
  it("replays through Heap, checking every block, and the heap checks clean", async () => {
    const t = await tracePromise;
    const a = createHeap();
    const r = assertCleanReplay(t, a);
    assert.equal(r.check, "ok");
    assert.equal(r.allocator, "heap");
    // Committed memory at the peak holds at least the live bytes.
    assert.ok(r.peakRatio >= 1, `peak ratio ${r.peakRatio}`);
    assert.ok(r.endFootprint > 0);
    a.close?.();
  });

  it("--heap-options sets the heap's options; a zero idle budget peaks no higher than none", async () => {
    const t = await tracePromise;
    assert.deepEqual(parseHeapOptions("idleRatio=Infinity, retainBytes=0,secure=false"), {
      idleRatio: Infinity,
      retainBytes: 0,
      secure: false,
    });
    assert.deepEqual(parseHeapOptions(""), {});
    for (const bad of ["idleRatio", "idleRatio=x", "bogus=1", "secure=1", "a=b=c"]) {
      assert.throws(() => parseHeapOptions(bad), Error, bad);
    }
    const lean = createAllocator("heap", {
      heap: parseHeapOptions("idleRatio=0,idleFloorBytes=0"),
    })!;
    const loose = createAllocator("heap", { heap: parseHeapOptions("idleRatio=Infinity") })!;
    const leanRun = assertCleanReplay(t, lean);
    const looseRun = assertCleanReplay(t, loose);
    assert.ok(leanRun.peakFootprint <= looseRun.peakFootprint);
    lean.close?.();
    loose.close?.();
  });

  it("replays through glibc (FFI) with the same checks", async () => {
    const t = await tracePromise;
    const a = createAllocator("glibc", { note: () => {} });
    if (a === null) return; // no libc.so.6: nothing to compare with
    const r = assertCleanReplay(t, a);
    assert.equal(r.check, "n/a");
    assert.ok(Number.isFinite(r.peakFootprint));
  });

  it("replays through the bare free list (the floor comparator) with every block intact", async () => {
    const t = await tracePromise;
    const a = createAllocator("freelist")!;
    const r = assertCleanReplay(t, a);
    assert.ok(r.peakFootprint >= t.peakLiveBytes);
    a.close?.();
  });

  it("counts no checks with --no-touch", async () => {
    const t = await tracePromise;
    const a = createHeap();
    const r = replay(t, a, { touch: false });
    assert.equal(r.verified, 0);
    assert.equal(r.mismatches, 0);
    a.close?.();
  });

  it("catches an allocator that hands out overlapping blocks", async () => {
    const t = await tracePromise;
    // A ring allocator over 64 KiB: it wraps around over blocks still live.
    const u8 = new Uint8Array(64 * 1024 + 512 * 1024);
    let top = 0;
    const ring: Allocator = {
      name: "ring",
      nil: 0,
      reusesMemory: true,
      malloc(size) {
        if (top + size > 64 * 1024) top = 0;
        const at = top + 16;
        top += Math.ceil(size / 16) * 16;
        return at;
      },
      free() {},
      realloc(h, size) {
        const at = this.malloc(size) as number;
        if (h !== 0) u8.copyWithin(at, h as number, (h as number) + size);
        return at;
      },
      calloc(count, size) {
        const at = this.malloc(count * size) as number;
        u8.fill(0, at, at + count * size);
        return at;
      },
      alignedAlloc(_alignment, size) {
        return this.malloc(size);
      },
      fill(h, size, byte) {
        u8.fill(byte, h as number, (h as number) + size);
      },
      mark(h, size, byte) {
        if (size > 0) u8[h as number] = u8[(h as number) + size - 1] = byte;
      },
      verify(h, size, byte) {
        return size === 0 || (u8[h as number] === byte && u8[(h as number) + size - 1] === byte);
      },
      failures: () => 0,
    };
    const r = replay(t, ring, {});
    assert.ok(r.mismatches > 0, "overlaps went unnoticed");
    assert.ok(r.firstMismatch >= 0);
  });
});

describe("replay tool: report", () => {
  it("draws an SVG chart of committed and live bytes and formats a table", async () => {
    const t = await tracePromise;
    const a = createHeap();
    const r = replay(t, a, { sampleEvery: 100 });
    a.close?.();
    const panels = chartPanels([r]);
    const svg = await renderSvg(panels);
    assert.ok(svg.startsWith("<svg"));
    assert.match(svg, /<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.match(svg, /<\/svg>\s*$/);
    assert.match(svg, /heap committed/);
    assert.match(svg, /live bytes \(trace\)/);
    // One line per series, each drawn from its samples (Vega draws a line as a path).
    const lines = svg.match(/<path[^>]*aria-roledescription="line mark"/g) ?? [];
    assert.equal(lines.length, panels[0].series.length);
    const table = formatTable([r]);
    assert.match(table, /^\| allocator \| time ms/);
    assert.match(table, /\| heap \| /);
  });

  it("the command line refuses an unknown allocator or a missing trace with exit code 2", async () => {
    const error = console.error;
    const said: string[] = [];
    console.error = (m: string) => said.push(m);
    try {
      assert.equal(await main(["/nonexistent/x.trace.gz", "--allocators", "heap"]), 2);
      assert.match(said.join("\n"), /cannot read trace \/nonexistent\/x\.trace\.gz/);
      assert.equal(await main(["x.trace.gz", "--allocators", "heap,nope"]), 2);
      assert.match(said.join("\n"), /unknown allocator "nope"/);
    } finally {
      console.error = error;
    }
  });

  it(
    "writes the SVG file from the command line (--in-process --svg)",
    { skip: needs("write") },
    async () => {
      const dir = await Deno.makeTempDir({ prefix: "replay-test-" });
      try {
        const trace = `${dir}/small.trace.gz`;
        await Deno.writeFile(trace, await gzip(expected.text));
        const svg = `${dir}/out.svg`;
        const log = console.log;
        console.log = () => {};
        let code: number;
        try {
          code = await main([trace, "--in-process", "--allocators", "heap", "--svg", svg]);
        } finally {
          console.log = log;
        }
        assert.equal(code, 0);
        const text = await Deno.readTextFile(svg);
        assert.match(text, /<svg/);
        assert.match(text, /small: 3,000 events/);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
});
