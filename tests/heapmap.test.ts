/**
 * The heap map: renderHeapMap's page opened in headless Chromium (DevTools
 * protocol, tools/chromium.ts), serveHeapMap over HTTP on 127.0.0.1, and
 * the `deno task heapmap` command.
 */

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, type HeapSnapshot } from "../mod.ts";
import { renderHeapMap, serveHeapMap } from "../heapmap.ts";
import { chromiumPath, openPage } from "../tools/chromium.ts";
import { MiB, needs, Rng } from "./helpers.ts";

const BROWSER = needs("run", "net", "read", "write", "env") ||
  (chromiumPath() === null ? "needs chromium (apt-get install chromium)" : false);

/** A series: growth, random frees (fragmentation), regrowth; the middle one with blocks. */
function series(options = {}): HeapSnapshot[] {
  using heap = new Heap({ arenaBytes: 256 * MiB, ...options });
  const rng = new Rng(2024);
  const live: number[] = [];
  const snapshots: HeapSnapshot[] = [heap.snapshot({ label: "empty" })];
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < 4000; i++) live.push(heap.malloc(rng.pick([24, 64, 200, 700, 3000])));
    if (round === 2) live.push(heap.malloc(2 * MiB));
    rng.shuffle(live);
    for (const p of live.splice(0, Math.floor(live.length * (round < 3 ? 0.3 : 0.7)))) {
      heap.free(p);
    }
    snapshots.push(heap.snapshot({ blocks: round === 3, label: `round ${round}` }));
  }
  for (const p of live) heap.free(p);
  return snapshots;
}

async function writePage(html: string): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".html" });
  await Deno.writeTextFile(path, html);
  return path;
}

describe("renderHeapMap", () => {
  it("is one self-contained page that loads nothing", () => {
    const html = renderHeapMap(series());
    assert.match(html, /^<!DOCTYPE html>/);
    assert.doesNotMatch(html, /<script[^>]+src=|<link[^>]+href=|https?:\/\/(?!www\.w3\.org)/);
    assert.doesNotMatch(html.slice(html.indexOf("HEAPMAP_DATA")), /<\/script>[\s\S]*<\/script>/);
  });

  it("rejects what is not a snapshot", () => {
    assert.throws(() => renderHeapMap([]), RangeError);
    assert.throws(() => renderHeapMap([{} as HeapSnapshot]), TypeError);
  });

  it(
    "draws a cell per page, the legend, the timeline; the slider moves the map (Chromium)",
    { skip: BROWSER },
    async () => {
      const snapshots = series();
      const path = await writePage(renderHeapMap(snapshots, { initial: 4 }));
      await using page = await openPage(`file://${path}`);
      assert.equal(await page.evaluate("document.body.dataset.ready"), "1", "the script ran");
      const cells = () => page.evaluate<number>("document.querySelectorAll('#map .cell').length");
      assert.equal(await cells(), snapshots[4].pages.length);
      assert.ok(snapshots[4].pages.length > 5, "a real map, not an empty one");
      const filled = await page.evaluate<number>(
        "[...document.querySelectorAll('#map .cell > i')].filter(i => i.offsetHeight > 0).length",
      );
      assert.ok(filled > 0, "page cells are filled by occupancy");
      const tip = await page.evaluate<string>(
        "(() => { const c = document.querySelector('#map .cell.class'), r = c.getBoundingClientRect(); c.dispatchEvent(new MouseEvent('mousemove', { clientX: r.left + 2, clientY: r.top + 2, bubbles: true })); return document.getElementById('tooltip').textContent; })()",
      );
      assert.match(
        tip,
        /class page at 0x[0-9a-f]+, 64\.0 KiB\nclass \d+, blocks of \d+ B\nlive \d+ \/ \d+ blocks/,
      );
      assert.match(tip, /committed [\d.]+ KiB/);
      const legend = await page.evaluate<string>("document.getElementById('legend').textContent");
      for (const text of ["64 B", "fit", "retained", "released"]) assert.ok(legend.includes(text));
      assert.equal(
        await page.evaluate(
          "document.querySelectorAll('#timeline-chart path[data-series]').length",
        ),
        3,
        "allocated, committed and utilization lines",
      );
      const signature = () =>
        page.evaluate<string>(
          "[...document.querySelectorAll('#map .cell')].map(c => c.className + c.style.background + (c.firstChild?.style?.height ?? '')).join('|')",
        );
      const before = await signature();
      await page.evaluate(
        "(() => { const s = document.getElementById('slider'); s.value = '1'; s.dispatchEvent(new Event('input')); })()",
      );
      assert.equal(await page.evaluate("document.body.dataset.current"), "1");
      assert.equal(await cells(), snapshots[1].pages.length);
      assert.notEqual(await signature(), before, "the slider changed the map");
      const label = await page.evaluate<string>(
        "document.getElementById('slider-label').textContent",
      );
      assert.match(label, /snapshot 2 of 7: round 0/);
      // Blocks: the snapshot taken with { blocks: true } draws them on click.
      await page.evaluate(
        "(() => { const s = document.getElementById('slider'); s.value = '4'; s.dispatchEvent(new Event('input')); document.querySelector('#map .cell.class').click(); })()",
      );
      assert.equal(await page.evaluate("document.querySelectorAll('#blocks canvas').length"), 1);
      assert.ok(
        await page.evaluate<number>("document.querySelectorAll('#classes tr').length") > 2,
        "the class table has rows",
      );
      assert.equal(
        await page.evaluate("document.querySelectorAll('#large .lblock').length"),
        snapshots[4].large.length,
      );
      assert.deepEqual(page.errors, []);
      await Deno.remove(path);
    },
  );

  it(
    "fails its checks when the page renders nothing (Chromium)",
    { skip: BROWSER },
    async () => {
      const html = renderHeapMap(series()).replace(/HEAPMAP_DATA = \[/, "HEAPMAP_DATA = [null, ");
      const path = await writePage(html);
      await using page = await openPage(`file://${path}`);
      assert.notEqual(await page.evaluate("document.body.dataset.ready"), "1");
      assert.ok(page.errors.length > 0, "a broken page reports its error");
      await Deno.remove(path);
    },
  );

  it("shows blocks by allocation site in debug mode (Chromium)", { skip: BROWSER }, async () => {
    using heap = new Heap({ arenaBytes: 64 * MiB, debug: true });
    const kept = Array.from({ length: 50 }, () => heap.malloc(100));
    const temp = Array.from({ length: 80 }, () => heap.malloc(40));
    const first = heap.snapshot({ blocks: true });
    for (const p of temp) heap.free(p);
    const last = heap.snapshot({ blocks: true });
    const path = await writePage(renderHeapMap([first, last], { initial: 0 }));
    await using page = await openPage(`file://${path}`);
    assert.equal(
      await page.evaluate("getComputedStyle(document.getElementById('sites-section')).display"),
      "block",
    );
    assert.ok(await page.evaluate<number>("document.getElementById('sites').height") >= 10);
    const legend = await page.evaluate<string>(
      "document.getElementById('sites-legend').textContent",
    );
    assert.match(legend, /130 live blocks from 2 sites/);
    const sitesData = () =>
      page.evaluate<Record<string, string>>("({ ...document.getElementById('sites').dataset })");
    assert.deepEqual(await sitesData(), { blocks: "130", leaks: "50", highlighted: "0" });
    // Click the first block drawn (one of the 50 kept): its stack shows, its site's blocks stay lit.
    await page.evaluate(
      "(() => { const c = document.getElementById('sites'), r = c.getBoundingClientRect(); c.dispatchEvent(new MouseEvent('click', { clientX: r.left + 1, clientY: r.top + 3, bubbles: true })); })()",
    );
    assert.match(
      await page.evaluate<string>("document.getElementById('site-stack').textContent"),
      /allocation #\d+\n.*heapmap\.test\.ts/,
    );
    assert.equal((await sitesData()).highlighted, "50", "the other blocks of the same site");
    assert.deepEqual(page.errors, []);
    for (const p of kept) heap.free(p);
    await Deno.remove(path);
  });
});

describe("serveHeapMap", () => {
  it("serves the live map and fresh snapshots on 127.0.0.1", { skip: needs("net") }, async () => {
    using heap = new Heap({ arenaBytes: 64 * MiB });
    await using server = serveHeapMap(heap, { port: 0 });
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await fetch(server.url);
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.match(html, /"live":1000/);
    const p = heap.malloc(100);
    const fresh = await (await fetch(new URL("snapshot.json", server.url))).json();
    assert.equal(fresh.stats.liveBlocks, 1);
    heap.free(p);
    const after = await (await fetch(new URL("snapshot.json", server.url))).json();
    assert.equal(after.stats.liveBlocks, 0);
    assert.equal(
      await fetch(new URL("nothing", server.url)).then((r) => r.body?.cancel()),
      undefined,
    );
  });

  it("says which port is in use", { skip: needs("net") }, async () => {
    using heap = new Heap({ arenaBytes: 64 * MiB });
    await using first = serveHeapMap(heap);
    assert.throws(
      () => serveHeapMap(heap, { port: first.port }),
      new RegExp(`port ${first.port} on 127\\.0\\.0\\.1 is in use`),
    );
    assert.throws(() => serveHeapMap(heap, { port: 70000 }), RangeError);
  });

  it("closes: the port is free again", { skip: needs("net") }, async () => {
    using heap = new Heap({ arenaBytes: 64 * MiB });
    const server = serveHeapMap(heap);
    await server.close();
    await server.close();
    await using again = serveHeapMap(heap, { port: server.port });
    assert.equal(again.port, server.port);
  });

  it("refreshes the page in the browser (Chromium)", { skip: BROWSER }, async () => {
    using heap = new Heap({ arenaBytes: 64 * MiB });
    await using server = serveHeapMap(heap, { refreshMs: 100 });
    await using page = await openPage(server.url);
    const blocks = Array.from({ length: 1000 }, () => heap.malloc(64));
    const grown = await page.evaluate<number>(
      "new Promise((resolve) => { const start = HEAPMAP_DATA.length; const t = setInterval(() => { if (HEAPMAP_DATA.length > start + 1) { clearInterval(t); resolve(HEAPMAP_DATA[HEAPMAP_DATA.length - 1].stats.liveBlocks); } }, 20); })",
    );
    assert.equal(grown, 1000);
    assert.deepEqual(page.errors, []);
    for (const p of blocks) heap.free(p);
  });
});

describe("deno task heapmap", () => {
  const run = async (...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../tools/heapmap.ts", import.meta.url).pathname, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  };
  const PERMS = needs("run", "read", "write");

  it("maps a trace, with progress, a snapshot every N events", { skip: PERMS }, async () => {
    const dir = await Deno.makeTempDir();
    const trace = `${dir}/small.trace.gz`;
    const lines = ["# a small trace"];
    for (let i = 0; i < 3000; i++) lines.push(`a ${i} ${16 + (i % 40) * 30}`);
    for (let i = 0; i < 3000; i += 2) lines.push(`f ${i}`);
    lines.push("c 5000 4 100", "r 5000 5001 900", "m 5002 4096 100");
    const gz = new Blob([lines.join("\n") + "\n"]).stream().pipeThrough(
      new CompressionStream("gzip"),
    );
    await Deno.writeFile(trace, gz);
    const { code, stderr } = await run(trace, "--out", `${dir}/map.html`, "--every", "500");
    assert.equal(code, 0, stderr);
    assert.match(stderr, /4,503 events read .* a snapshot every 500/);
    const html = await Deno.readTextFile(`${dir}/map.html`);
    const data = JSON.parse(html.match(/HEAPMAP_DATA = (.*);\n/)![1]);
    // Start, every 500 events (the one after event 3,000 is the peak's, with blocks), the end.
    assert.equal(data.length, 1 + Math.floor(4503 / 500) + 1);
    assert.ok(data.some((s: { label: string }) => /peak/.test(s.label)));
    await Deno.remove(dir, { recursive: true });
  });

  it("--demo fragments the heap and recovers, leaking from one site", { skip: PERMS }, async () => {
    const dir = await Deno.makeTempDir();
    const { code, stderr } = await run("--demo", "--out", `${dir}/demo.html`);
    assert.equal(code, 0, stderr);
    const html = await Deno.readTextFile(`${dir}/demo.html`);
    const data = JSON.parse(html.match(/HEAPMAP_DATA = (.*);\n/)![1]);
    const byLabel = (label: string) => data.find((s: { label: string }) => s.label === label);
    const [peak, fragmented, end] = [
      byLabel("peak"),
      byLabel("fragmented"),
      byLabel("end (after trim)"),
    ];
    assert.ok(fragmented.stats.utilization < peak.stats.utilization - 0.3, "utilization falls");
    assert.equal(fragmented.stats.committedBytes, peak.stats.committedBytes, "pages stay");
    assert.ok(end.stats.committedBytes < fragmented.stats.committedBytes / 4, "and come back");
    assert.equal(end.sites.stacks.length, 1, "what is left comes from one site");
    assert.match(end.sites.stacks[0], /allocateLeakySession/);
    await Deno.remove(dir, { recursive: true });
  });

  it("exits 2 with a message for a bad path, trace line or option", { skip: PERMS }, async () => {
    const dir = await Deno.makeTempDir();
    const bad = `${dir}/bad.trace.gz`;
    await Deno.writeFile(
      bad,
      new Blob(["a 1 10\nq 2\n"]).stream().pipeThrough(new CompressionStream("gzip")),
    );
    const cases: [string[], RegExp][] = [
      [[`${dir}/missing.trace.gz`, "--out", `${dir}/m.html`], /cannot read .*missing/],
      [[bad, "--out", `${dir}/m.html`], /line 2: unknown event "q"/],
      [[bad, "--out", `${dir}/m.html`, "--every", "0"], /--every must be a positive integer/],
      [["--demo", "--out", `${dir}/m.html`, "--colour"], /Unknown option '--colour'/],
      [["--demo"], /--out map.html is required/],
    ];
    for (const [args, message] of cases) {
      const { code, stderr } = await run(...args);
      assert.equal(code, 2, `${args.join(" ")}: ${stderr}`);
      assert.match(stderr, message);
    }
    await Deno.remove(dir, { recursive: true });
  });
});
