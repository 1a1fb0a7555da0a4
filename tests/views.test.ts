/**
 * Views from heap.bytes(): what they reach, and that no access through one
 * crashes the process or breaks the heap. Reading a view whose memory was
 * unmapped would kill the process, so those reads run in a subprocess
 * (tests/subprocess/stale_views.ts), which must exit normally.
 */

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap } from "../mod.ts";
import { assertStillWorks, checked, KiB, MiB, needs } from "./helpers.ts";

const SCRIPT = new URL("./subprocess/stale_views.ts", import.meta.url).pathname;

function denoPath(): string {
  try {
    return Deno.execPath();
  } catch {
    return "deno"; // no read permission: the one on PATH
  }
}

/** Runs one scenario of stale_views.ts; returns what it printed. */
async function runScenario(name: string): Promise<string> {
  const output = await new Deno.Command(denoPath(), {
    args: ["run", "--allow-ffi", SCRIPT, name],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(
    output.signal,
    null,
    `${name}: the process was killed by ${output.signal}\n${stderr}`,
  );
  assert.equal(output.code, 0, `${name}: exit code ${output.code}\n${stdout}${stderr}`);
  assert.match(stdout, new RegExp(`^survived ${name}: `));
  return stdout;
}

/** Every view the scenario poked read `undefined` and had length 0. */
function assertAllDetached(stdout: string): void {
  const seen = stdout.trim().split(": ")[1].split(" length ");
  assert.ok(seen.length > 1, stdout);
  assert.doesNotMatch(stdout, /\b7\b/, `a stale view kept a write: ${stdout}`);
  assert.doesNotMatch(stdout, /length [1-9]/, `a stale view kept its length: ${stdout}`);
}

describe("views that outlive their memory", () => {
  const cases: [string, string][] = [
    ["large-freed", "a large block's views are detached when it is freed"],
    ["large-shrunk", "a large block's views are detached when realloc shrinks it"],
    ["large-moved", "a large block's views are detached when realloc grows or moves it"],
    ["closed-small", "a small block's view returned out of a `using` scope is detached"],
    ["closed-medium", "fit and medium blocks' views are detached by close()"],
    ["closed-large", "a large block's view is detached by close()"],
    ["closed-debug", "debug mode's views are detached by close()"],
    ["closed-secure", "secure mode's views are detached by close()"],
    ["closed-whole-buffer", "a view of a view's whole buffer is detached by close()"],
    ["debug-large-freed", "debug mode: a large block's views die when quarantine unmaps it"],
    ["secure-small-freed", "secure mode: any block's views are detached when it is freed"],
  ];
  for (const [scenario, rule] of cases) {
    it(`${rule} (read and written in a subprocess that exits normally)`, {
      skip: needs("run"),
    }, async () => {
      assertAllDetached(await runScenario(scenario));
    });
  }

  it("a large block's view made after realloc in place stays valid", () => {
    using heap = new Heap();
    const p = heap.malloc(MiB);
    const view = heap.bytes(p);
    view[MiB - 1] = 9;
    assert.equal(heap.realloc(p, MiB - 100), p); // fits: the mapping stays
    assert.equal(view.length, MiB);
    assert.equal(view[MiB - 1], 9);
    heap.free(p);
    assert.equal(view.length, 0);
  });

  it("a large block's views share one buffer until it is freed", () => {
    using heap = new Heap();
    const p = heap.malloc(MiB);
    assert.equal(heap.bytes(p).buffer, heap.bytes(p, 10).buffer);
    heap.free(p);
  });
});

describe("what a view's buffer reaches", () => {
  for (const options of [{}, { debug: true }, { secure: true }]) {
    const mode = JSON.stringify(options);
    it(`a typed array at the view's buffer's offset 0 does not reach the heap's metadata ${mode}`, () => {
      using heap = new Heap(options);
      const p = heap.malloc(64);
      const view = heap.bytes(p);
      // The mistake: forgetting view.byteOffset.
      new Float64Array(view.buffer, 0, 8).fill(1.5);
      const stats = checked(heap);
      assert.equal(stats.liveBlocks, 1);
      const q = heap.malloc(64);
      assert.equal(typeof q, "number");
      assert.ok(q > 0);
      heap.free(q);
    });
  }

  it("a view's buffer starts at or after the heap's data: every block is inside it", () => {
    using heap = new Heap();
    const blocks = [16, 100, 2000, 50 * KiB].map((n) => heap.malloc(n));
    const views = blocks.map((p) => heap.bytes(p));
    for (const v of views) assert.equal(v.buffer, views[0].buffer);
    // The lowest block sits within the first 64 KiB page of the buffer.
    const lowest = Math.min(...views.map((v) => v.byteOffset));
    assert.ok(lowest < 64 * KiB, `lowest block at buffer offset ${lowest}`);
    for (const p of blocks) heap.free(p);
  });

  for (const options of [{}, { debug: true }, { secure: true }]) {
    const mode = JSON.stringify(options);
    it(`transferring a view's buffer never harms the heap, which hands out a fresh one ${mode}`, () => {
      using heap = new Heap(options);
      const p = heap.malloc(64);
      const big = heap.malloc(MiB);
      for (const q of [p, big]) {
        const view = heap.bytes(q);
        view[0] = 42;
        const buffer = view.buffer as ArrayBuffer;
        const moved = structuredClone(buffer, { transfer: [buffer] });
        assert.ok(moved.byteLength > 0);
        assert.equal(view.length, 0);
        assert.equal(heap.bytes(q)[0], 42, "the block is intact behind a fresh buffer");
      }
      for (let i = 0; i < 100; i++) {
        const q = heap.malloc(16 * (i + 1));
        assert.ok(Number.isSafeInteger(q) && q > 0, `malloc returned ${q}`);
        heap.free(q);
      }
      heap.free(p);
      heap.free(big);
      assertStillWorks(heap);
    });
  }

  it("a view made after the arena grew reaches its block", () => {
    using heap = new Heap();
    const blocks: number[] = [];
    const first = heap.malloc(64);
    heap.bytes(first)[0] = 1; // the first buffer ends at the first read-write top
    for (let i = 0; i < 200; i++) blocks.push(heap.malloc(64 * KiB)); // 12.5 MiB of pages
    const last = blocks[blocks.length - 1];
    const view = heap.bytes(last);
    view.fill(3);
    assert.equal(heap.bytes(last)[64 * KiB - 1], 3);
    assert.equal(heap.bytes(first)[0], 1);
    for (const p of blocks) heap.free(p);
    heap.free(first);
    heap.check();
  });
});

describe("debug mode and views", () => {
  it("a write through a freed block's view is still caught as use-after-free", () => {
    using heap = new Heap({ debug: true });
    const p = heap.malloc(64);
    const view = heap.bytes(p);
    heap.free(p);
    view[3] = 1;
    assert.throws(
      () => heap.check(),
      (e: Error & { code?: string }) => e.code === "use-after-free",
    );
  });

  it("bytes(p) spans exactly the size asked for in debug mode, the usable size otherwise", () => {
    using debug = new Heap({ debug: true });
    using plain = new Heap();
    assert.equal(debug.bytes(debug.malloc(20)).length, 20);
    assert.equal(plain.bytes(plain.malloc(20)).length, 32);
  });
});
