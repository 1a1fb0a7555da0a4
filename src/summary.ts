/**
 * heap.summary(): a heap snapshot as a short text table for a terminal or a
 * log, one row per size class (the classes holding the most committed
 * memory first, at most MAX_ROWS), one for fit pages and one for large blocks.
 *
 *   heap: 9.4 MiB live in 12.0 MiB committed (78%), 161 pages, 2 large blocks
 *    class   block  pages     live  utilization
 *        3      64     40   38,912  [###################-]  95%
 *      fit       -      2      310  [#############-------]  66%
 *    large       -      -        2  1.5 MiB
 *   stranded 1.1 MiB, idle committed 2.5 MiB, largest free run 3.0 MiB, retained 0 B
 */

import type { HeapSnapshot } from "./snapshot.ts";

const MAX_ROWS = 16;
const BAR = 20;

/** Formats `s` as the table described above. */
export function formatSummary(s: HeapSnapshot): string {
  const st = s.stats;
  const used = s.pages.filter((p) => p.kind === "class" || p.kind === "fit");
  const lines = [
    `heap: ${bytes(st.allocatedBytes)} live in ${bytes(st.committedBytes)} committed ` +
    `(${percent(st.utilization)}), ${used.length} pages, ${s.large.length} large blocks`,
    `${pad("class", 6)}${pad("block", 8)}${pad("pages", 7)}${pad("live", 10)}  utilization`,
  ];
  const classes = [...s.classes].sort((a, b) => b.committed - a.committed);
  for (const c of classes.slice(0, MAX_ROWS)) {
    const liveBytes = c.live * c.blockSize;
    lines.push(
      `${pad(String(c.class), 6)}${pad(String(c.blockSize), 8)}${pad(String(c.pages), 7)}` +
        `${pad(c.live.toLocaleString("en-US"), 10)}  ${bar(liveBytes, c.committed)}`,
    );
  }
  if (classes.length > MAX_ROWS) lines.push(`   ... ${classes.length - MAX_ROWS} more classes`);
  const fit = s.pages.filter((p) => p.kind === "fit");
  if (fit.length > 0) {
    const live = fit.reduce((n, p) => n + p.live, 0);
    const liveBytes = fit.reduce((n, p) => n + p.liveBytes, 0);
    const committed = fit.reduce((n, p) => n + p.committed, 0);
    lines.push(
      `${pad("fit", 6)}${pad("-", 8)}${pad(String(fit.length), 7)}` +
        `${pad(live.toLocaleString("en-US"), 10)}  ${bar(liveBytes, committed)}`,
    );
  }
  if (s.large.length > 0) {
    const total = s.large.reduce((n, b) => n + b.bytes, 0);
    lines.push(
      `${pad("large", 6)}${pad("-", 8)}${pad("-", 7)}` +
        `${pad(s.large.length.toLocaleString("en-US"), 10)}  ${bytes(total)}`,
    );
  }
  const f = s.fragmentation;
  lines.push(
    `stranded ${bytes(f.strandedBytes)}, idle committed ${bytes(f.idleCommittedBytes)}, ` +
      `largest free run ${bytes(f.largestFreeRunBytes)}, retained ${bytes(st.retainedBytes)}`,
  );
  return lines.join("\n");
}

function pad(text: string, width: number): string {
  return text.padStart(width);
}

function bar(part: number, whole: number): string {
  const ratio = whole > 0 ? Math.min(1, part / whole) : 0;
  const filled = Math.round(ratio * BAR);
  return `[${"#".repeat(filled)}${"-".repeat(BAR - filled)}] ${percent(ratio).padStart(4)}`;
}

function percent(ratio: number): string {
  return `${Math.round(ratio * 100)}%`;
}

/** Bytes in B, KiB, MiB or GiB with one decimal. */
export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) v /= 1024, u++;
  return `${v.toFixed(1)} ${units[u]}`;
}
