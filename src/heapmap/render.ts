/**
 * renderHeapMap: heap snapshots to one self-contained HTML page (styles,
 * script and data inline; it loads nothing).
 *
 * The snapshots are packed for the page: each page of the arena becomes a
 * row of numbers (see packPage), which keeps a series of a few hundred
 * snapshots of a few thousand pages in a few MiB. The page's script
 * (client.ts) draws everything from that data.
 */

import type { HeapSnapshot, PageKind, PageSnapshot } from "../snapshot.ts";
import { CLIENT_CSS, CLIENT_JS } from "./client.ts";

/** Options of renderHeapMap. */
export interface HeapMapOptions {
  /** The page's title. Default "heap map". */
  title?: string;
  /** Index of the snapshot shown first. Default: the one with the most bytes allocated. */
  initial?: number;
  /**
   * Poll `snapshot.json` (relative to the page) every `live` milliseconds
   * and add each answer to the series (what serveHeapMap serves). Default off.
   */
  live?: number;
}

/** Kind codes of packed pages, in the order the page's script knows them. */
export const KINDS: readonly PageKind[] = [
  "metadata",
  "class",
  "fit",
  "retained",
  "released",
  "guard",
  "unused",
];

/**
 * One packed page: address, bytes, kind code, class, live, capacity,
 * liveBytes, committed, purgedPages, owner, then (when the snapshot has
 * them) touched and the blocks.
 */
type PackedPage = (number | string | number[])[];

/** A snapshot as the page's script reads it. */
export interface PackedSnapshot {
  time: number;
  label: string;
  mode: HeapSnapshot["mode"];
  stats: HeapSnapshot["stats"];
  arena: HeapSnapshot["arena"];
  fragmentation: HeapSnapshot["fragmentation"];
  classes: HeapSnapshot["classes"];
  large: number[][];
  pages: PackedPage[];
  sites?: HeapSnapshot["sites"];
}

function packPage(p: PageSnapshot): PackedPage {
  const row: PackedPage = [
    p.address,
    p.bytes,
    KINDS.indexOf(p.kind),
    p.class,
    p.live,
    p.capacity,
    p.liveBytes,
    p.committed,
    p.purgedPages,
    p.owner,
  ];
  if (p.blocks !== undefined) row.push(p.touched ?? 0, p.blocks);
  return row;
}

/** Packs one snapshot for the page (also what serveHeapMap sends each second). */
export function packSnapshot(s: HeapSnapshot): PackedSnapshot {
  if (s?.version !== 1 || !Array.isArray(s.pages)) {
    throw new TypeError("renderHeapMap: expected snapshots from heap.snapshot()");
  }
  return {
    time: s.time,
    label: s.label ?? "",
    mode: s.mode,
    stats: s.stats,
    arena: s.arena,
    fragmentation: s.fragmentation,
    classes: s.classes,
    large: s.large.map((b) => [b.address, b.bytes, b.requested, b.guardBytes]),
    pages: s.pages.map(packPage),
    ...(s.sites ? { sites: s.sites } : {}),
  };
}

/** JSON that is safe inside a <script> element. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, "\\u003c").replace(/\u2028|\u2029/g, "");
}

/**
 * One self-contained HTML page showing `snapshots` (one, or a series in
 * time order): the arena map, large blocks, per-class table,
 * fragmentation figures, and for a series a timeline, a slider and the
 * time x address view; by allocation site when a snapshot has sites.
 */
export function renderHeapMap(
  snapshots: HeapSnapshot | readonly HeapSnapshot[],
  options: HeapMapOptions = {},
): string {
  const list = Array.isArray(snapshots) ? snapshots : [snapshots as HeapSnapshot];
  if (list.length === 0 && !options.live) {
    throw new RangeError("renderHeapMap: give at least one snapshot");
  }
  const packed = list.map(packSnapshot);
  let initial = options.initial ?? -1;
  if (initial < 0) {
    initial = 0;
    packed.forEach((s, i) => {
      if (s.stats.allocatedBytes > packed[initial].stats.allocatedBytes) initial = i;
    });
  }
  if (
    !Number.isInteger(initial) || initial < 0 || (initial >= packed.length && packed.length > 0)
  ) {
    throw new RangeError(`renderHeapMap: initial must index a snapshot, got ${options.initial}`);
  }
  const title = escapeHtml(options.title ?? "heap map");
  const config = { kinds: KINDS, initial, live: options.live ?? 0 };
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<style>${CLIENT_CSS}</style>
</head>
<body>
<header><h1>${title}</h1><div id="mode"></div></header>
<section id="timeline-section">
  <h2>Over time</h2>
  <div id="timeline"></div>
  <div id="slider-row"><input type="range" id="slider" min="0" max="0" value="0" aria-label="snapshot">
  <span id="slider-label"></span></div>
</section>
<section id="map-section">
  <h2>Arena <span class="hint">(a cell per page in address order; fill = live share; hover for details, click for blocks)</span></h2>
  <div id="legend"></div>
  <div id="map"></div>
  <h3>Large blocks</h3>
  <div id="large"></div>
  <div id="blocks"></div>
</section>
<section id="figures-section">
  <h2>Fragmentation</h2>
  <table id="figures"></table>
  <h2>Size classes</h2>
  <table id="classes"></table>
</section>
<section id="timeaddr-section">
  <h2>Time &times; address <span class="hint">(x: snapshots in time, y: arena addresses upwards, colour: how full that stretch was)</span></h2>
  <canvas id="timeaddr" width="600" height="256"></canvas>
  <div id="timeaddr-key"><span class="key"><b style="background: hsl(0, 80%, 48%)"></b>full</span>
  <span class="key"><b style="background: hsl(120, 80%, 68%)"></b>half full</span>
  <span class="key"><b style="background: hsl(240, 80%, 88%)"></b>nearly empty</span>
  <span class="key"><b style="background: #c8c8c8"></b>retained</span>
  <span class="key"><b style="background: #dcdcdc"></b>released</span>
  <span class="key"><b style="background: #f2f2f2; border: 1px solid #ccc"></b>not carved</span>
  <span id="timeaddr-axis" class="hint"></span></div>
</section>
<section id="sites-section">
  <h2>By allocation site <span class="hint">(debug mode: colour = site, red outline = still live at the series' end; click a block)</span></h2>
  <div id="sites-legend"></div>
  <canvas id="sites" width="900" height="10"></canvas>
  <pre id="site-stack"></pre>
</section>
<div id="tooltip" role="tooltip"></div>
<script>
const HEAPMAP_CONFIG = ${scriptJson(config)};
const HEAPMAP_DATA = ${scriptJson(packed)};
${CLIENT_JS}
</script>
</body>
</html>
`;
}

function escapeHtml(text: string): string {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
