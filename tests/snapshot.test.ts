/**
 * heap.snapshot() and heap.summary(): what a snapshot says adds up to the
 * heap's own counters, tiles the arena, survives JSON, and leaves the heap
 * exactly as it was, in every mode.
 */

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, type HeapOptions, type HeapSnapshot } from "../mod.ts";
import { assertHeapError, KiB, MiB, needs, Rng } from "./helpers.ts";
import type { SnapshotStart } from "./workers/snapshot.ts";
import { threadExited } from "./workers/common.ts";

const WAIT_MS = 60_000;

/** A seeded mix of malloc, calloc, realloc, alignedAlloc and free; returns the live blocks. */
function randomWorkload(heap: Heap, seed: number, steps = 6000): number[] {
  const rng = new Rng(seed);
  const live: number[] = [];
  const size = () =>
    rng.chance(0.85)
      ? rng.int(1, 1024)
      : rng.chance(0.8)
      ? rng.int(1025, 128 * KiB)
      : rng.int(128 * KiB + 1, 600 * KiB);
  for (let i = 0; i < steps; i++) {
    const r = rng.next();
    if (live.length > 0 && r < 0.4) {
      const j = rng.int(0, live.length - 1);
      heap.free(live[j]);
      live[j] = live[live.length - 1];
      live.pop();
    } else if (live.length > 0 && r < 0.5) {
      const j = rng.int(0, live.length - 1);
      const q = heap.realloc(live[j], size());
      assert.notEqual(q, 0);
      live[j] = q;
    } else if (r < 0.55) {
      live.push(heap.calloc(rng.int(1, 16), rng.int(1, 256)));
    } else if (r < 0.58) {
      live.push(heap.alignedAlloc(2 ** rng.int(4, 12), size()));
    } else {
      live.push(heap.malloc(size()));
    }
    if (i === Math.floor(steps * 0.7)) {
      // Free most of it, so empty, retained and released pages appear.
      rng.shuffle(live);
      for (const p of live.splice(0, Math.floor(live.length * 0.8))) heap.free(p);
      if (rng.chance(0.5)) heap.trim();
    }
  }
  return live;
}

/** Asserts every invariant a snapshot owes the heap's counters. */
export function assertSnapshotAddsUp(s: HeapSnapshot): void {
  const st = s.stats;
  let live = s.large.length;
  let liveBytes = 0;
  let committed = s.largeTableBytes;
  let purged = 0;
  let retained = 0;
  for (const b of s.large) liveBytes += b.bytes, committed += b.bytes;
  for (const p of s.pages) {
    live += p.live;
    liveBytes += p.liveBytes;
    committed += p.committed;
    purged += p.purgedPages * 4096;
    if (p.kind === "retained") retained += p.committed;
    assert.ok(p.live <= p.capacity || p.kind !== "class", `page ${p.address} over capacity`);
    assert.ok(p.committed >= 0 && p.committed <= p.bytes, `page ${p.address} committed`);
  }
  assert.equal(live, st.liveBlocks, "live blocks add up to stats().liveBlocks");
  assert.equal(liveBytes, st.allocatedBytes, "live bytes add up to stats().allocatedBytes");
  assert.equal(committed, st.committedBytes, "committed bytes add up to stats().committedBytes");
  assert.equal(purged, st.purgedBytes, "purged OS pages add up to stats().purgedBytes");
  assert.equal(retained, st.retainedBytes, "retained pages add up to stats().retainedBytes");
  // Pages tile the arena in address order, from its base to its end.
  assert.equal(s.pages[0].address, s.arena.base);
  assert.equal(s.pages[0].kind, "metadata");
  for (let i = 1; i < s.pages.length; i++) {
    assert.equal(s.pages[i].address, s.pages[i - 1].address + s.pages[i - 1].bytes, `page ${i}`);
  }
  const last = s.pages[s.pages.length - 1];
  assert.equal(last.address + last.bytes, s.arena.base + s.arena.bytes);
  // Per class figures add up to the class pages.
  for (const c of s.classes) {
    const pages = s.pages.filter((p) => p.kind === "class" && p.class === c.class);
    assert.equal(c.pages, pages.length);
    assert.equal(c.live, pages.reduce((n, p) => n + p.live, 0));
    assert.equal(c.live + c.free, pages.reduce((n, p) => n + p.capacity, 0));
  }
  const f = s.fragmentation;
  assert.equal(f.utilization, st.utilization);
  assert.ok(f.largestFreeRunBytes <= f.freePageBytes);
  assert.ok(f.freeSpaceFragmentation >= 0 && f.freeSpaceFragmentation <= 1);
  // JSON round-trips.
  assert.deepEqual(JSON.parse(JSON.stringify(s)), s);
}

/** Asserts that per-block states agree with the per-page live counts. */
function assertBlocksAgree(s: HeapSnapshot): void {
  for (const p of s.pages) {
    if (p.kind === "class") {
      const hex = p.blocks as string;
      assert.equal(hex.length, Math.ceil(p.capacity / 4));
      let bits = 0;
      for (const ch of hex) {
        for (let v = parseInt(ch, 16); v !== 0; v &= v - 1) bits++;
      }
      assert.equal(bits, p.live, `page ${p.address}: live bits`);
      assert.ok(p.touched! <= p.capacity);
    } else if (p.kind === "fit") {
      const chunks = p.blocks as number[];
      assert.equal(chunks.filter((c) => c > 0).length, p.live);
      assert.equal(chunks.reduce((n, c) => n + Math.abs(c), 0), p.bytes, "fit chunks tile");
    }
  }
}

/** What stats() says of the user's blocks in debug mode, and the snapshot of the core's. */
const BLOCK_FIGURES = [
  "allocatedBytes",
  "peakAllocatedBytes",
  "liveBlocks",
  "allocCount",
  "freeCount",
  "utilization",
] as const;

function assertUnchanged(heap: Heap, take: () => HeapSnapshot, debug = false): HeapSnapshot {
  const before = heap.stats();
  const leaksBefore = heap.leaks().map((b) => [b.address, b.size]);
  const s = take();
  heap.check();
  assert.deepEqual(heap.stats(), before, "stats() unchanged by a snapshot");
  assert.deepEqual(heap.leaks().map((b) => [b.address, b.size]), leaksBefore);
  if (!debug) {
    assert.deepEqual(s.stats, before, "the snapshot's totals are stats()");
    return s;
  }
  // Debug mode: the pages hold the core's blocks (red zones, headers, the
  // quarantine), and so do the snapshot's totals; stats() counts the user's.
  const core: Record<string, number> = { ...s.stats };
  const user: Record<string, number> = { ...before };
  for (const figure of BLOCK_FIGURES) delete core[figure], delete user[figure];
  assert.deepEqual(core, user, "the snapshot's totals are stats() but for the blocks");
  assert.ok(s.stats.liveBlocks >= before.liveBlocks, "the core holds every user block");
  assert.ok(s.stats.allocatedBytes >= before.allocatedBytes);
  return s;
}

const MODES: [string, HeapOptions][] = [
  ["default", {}],
  ["secure", { secure: true }],
  ["debug", { debug: { quarantineBlocks: 64 } }],
  ["shared", { shared: true }],
  ["idle purging at every step", { idleRatio: 0, idleFloorBytes: 0 }],
];

describe("heap.snapshot()", () => {
  for (const [name, options] of MODES) {
    it(`adds up to stats(), tiles the arena and changes nothing (${name})`, () => {
      using heap = new Heap({ arenaBytes: 256 * MiB, ...options });
      for (const seed of [1, 2, 3]) {
        randomWorkload(heap, seed * 7919 + name.length);
        const s = assertUnchanged(heap, () => heap.snapshot(), name === "debug");
        assertSnapshotAddsUp(s);
        assert.equal(s.pages.some((p) => "blocks" in p), false, "no blocks unless asked");
        const withBlocks = assertUnchanged(
          heap,
          () => heap.snapshot({ blocks: true }),
          name === "debug",
        );
        assertSnapshotAddsUp(withBlocks);
        assertBlocksAgree(withBlocks);
      }
    });
  }

  it("throws HeapError(closed) on a closed heap", () => {
    const heap = new Heap({ arenaBytes: 64 * MiB });
    heap.close();
    assertHeapError(() => heap.snapshot(), "closed", 0);
    assertHeapError(() => heap.summary(), "closed", 0);
  });

  it("names its mode and keeps a label", () => {
    using heap = new Heap({ arenaBytes: 64 * MiB, secure: true });
    const blocks = [heap.malloc(100), heap.malloc(70 * KiB)];
    const s = heap.snapshot({ label: "after load" });
    assert.deepEqual(s.mode, { secure: true, debug: false, shared: false });
    // Secure mode: every carved page ends with its guard page.
    const carved = s.pages.filter((p) => p.kind !== "metadata" && p.kind !== "unused");
    assert.ok(carved.length >= 4);
    carved.forEach((p, i) => assert.equal(p.kind === "guard", i % 2 === 1, `entry ${i}`));
    for (const g of carved.filter((p) => p.kind === "guard")) assert.equal(g.bytes, 4096);
    for (const p of blocks) heap.free(p);
    assert.equal(s.label, "after load");
    assert.equal(s.version, 1);
    assert.ok(Math.abs(s.time - Date.now()) < 60_000);
  });

  it("shows pages of each kind: class, fit, retained, released, metadata, unused", () => {
    using heap = new Heap({ arenaBytes: 256 * MiB, retainBytes: 128 * KiB });
    const small = Array.from({ length: 4000 }, () => heap.malloc(64));
    const fit = Array.from({ length: 100 }, () => heap.malloc(5000));
    const big = heap.malloc(1 * MiB);
    const spread = Array.from({ length: 40 }, (_, i) => heap.malloc(i % 2 ? 100 : 3000));
    for (const p of small) heap.free(p);
    const s = heap.snapshot();
    const kinds = new Set(s.pages.map((p) => p.kind));
    for (const kind of ["metadata", "class", "fit", "retained", "released", "unused"]) {
      assert.ok(kinds.has(kind as never), `a ${kind} page`);
    }
    assert.deepEqual(s.large.map((b) => b.address), [big]);
    const cls64 = s.classes.find((c) => c.blockSize === 64);
    // Every page of class 64 emptied; at most its current page stays, holding no live block.
    assert.ok(cls64 === undefined || (cls64.pages === 1 && cls64.live === 0), "class 64 emptied");
    const fitPages = s.pages.filter((p) => p.kind === "fit");
    assert.equal(fitPages.reduce((n, p) => n + p.live, 0), 100 + 20);
    assert.ok(s.fragmentation.largestFreeRunBytes >= 64 * KiB);
    for (const p of [...fit, ...spread, big]) heap.free(p);
  });

  it("counts stranded and idle bytes of a page that keeps one live block", () => {
    using heap = new Heap({ arenaBytes: 64 * MiB });
    const blocks = Array.from({ length: 1024 }, () => heap.malloc(64));
    for (const p of blocks.slice(1)) heap.free(p);
    const s = heap.snapshot();
    const page = s.pages.find((p) => p.kind === "class" && p.blockSize === 64)!;
    assert.equal(page.live, 1);
    assert.equal(s.fragmentation.strandedBytes, (page.capacity - 1) * 64);
    assert.equal(s.fragmentation.idleCommittedBytes, page.committed - 64);
    assert.equal(s.fragmentation.partlyUsedPages, 1);
    heap.free(blocks[0]);
  });

  it("records allocation sites in debug mode with { blocks: true }", () => {
    using heap = new Heap({ arenaBytes: 64 * MiB, debug: true });
    const fromA = Array.from({ length: 5 }, () => allocateHere(heap, 40));
    const fromB = Array.from({ length: 3 }, () => allocateThere(heap, 200));
    const s = heap.snapshot({ blocks: true });
    const sites = s.sites!;
    assert.equal(sites.blocks.length / 4, 8);
    const stackOf = (address: number) => {
      const i = sites.blocks.findIndex((v, j) => j % 4 === 0 && v === address);
      return sites.stacks[sites.blocks[i + 2]];
    };
    assert.match(stackOf(fromA[0]), /allocateHere/);
    assert.match(stackOf(fromB[0]), /allocateThere/);
    assert.equal(new Set(fromA.map(stackOf)).size, 1, "one site for the same stack");
    assert.equal(heap.snapshot().sites, undefined, "sites only with blocks");
    for (const p of [...fromA, ...fromB]) heap.free(p);
  });

  it("reads a shared heap from an attached Worker", { skip: needs("read") }, async () => {
    using heap = new Heap({ arenaBytes: 128 * MiB, shared: true });
    const mine = randomWorkload(heap, 99, 2000);
    const remote = mine.splice(0, mine.length >>> 1);
    const worker = new Worker(new URL("./workers/snapshot.ts", import.meta.url).href, {
      type: "module",
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const reply = new Promise<
      { ok: boolean; snapshot: HeapSnapshot; error?: string; tid: number }
    >(
      (resolve) => worker.onmessage = (e) => resolve(e.data),
    );
    worker.postMessage(
      {
        handle: heap.share(),
        sizes: Array.from({ length: 500 }, (_, i) => 16 + (i % 40) * 24),
        remote,
      } satisfies SnapshotStart,
    );
    const data = await Promise.race([
      reply,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("the Worker did not answer")), WAIT_MS);
      }),
    ]).finally(() => clearTimeout(timer));
    worker.terminate();
    // The heap is unmapped at the end of this test: not before the Worker's thread is gone.
    const deadline = Date.now() + WAIT_MS;
    while (!threadExited(data.tid)) {
      assert.ok(Date.now() < deadline, "the Worker's thread did not exit");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(data.ok, data.error);
    assert.equal(data.snapshot.mode.shared, true);
    assertSnapshotAddsUp(data.snapshot);
    assertBlocksAgree(data.snapshot);
    const owners = new Set(data.snapshot.pages.filter((p) => p.live > 0).map((p) => p.owner));
    assert.deepEqual([...owners].sort(), [1, 2], "pages of both Workers hold live blocks");
    assertSnapshotAddsUp(assertUnchanged(heap, () => heap.snapshot()));
    for (const p of mine) heap.free(p);
    heap.check();
  });
});

function allocateHere(heap: Heap, size: number): number {
  return heap.malloc(size);
}

function allocateThere(heap: Heap, size: number): number {
  return heap.malloc(size);
}

describe("heap.summary()", () => {
  it("is a short table with a row per class and a utilization bar", () => {
    using heap = new Heap({ arenaBytes: 64 * MiB });
    const a = Array.from({ length: 2000 }, () => heap.malloc(64));
    const b = Array.from({ length: 50 }, () => heap.malloc(3000));
    const text = heap.summary();
    const lines = text.split("\n");
    assert.ok(lines.length <= 24, "fits in a log line block");
    assert.match(lines[0], /^heap: .* live in .* committed \(\d+%\)/);
    assert.ok(lines.some((l) => /^\s+3\s+64\s+\d+\s+2,000\s+\[#+-*\]\s+\d+%$/.test(l)), text);
    assert.ok(lines.some((l) => /^\s+fit\s/.test(l)), text);
    assert.match(lines[lines.length - 1], /^stranded .* largest free run/);
    for (const p of [...a, ...b]) heap.free(p);
  });
});
