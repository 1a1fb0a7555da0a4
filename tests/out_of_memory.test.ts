import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap } from "../mod.ts";
import { assertStillWorks, KiB, MiB, needs } from "./helpers.ts";

const SMALL_ARENA = 16 * MiB;

/** Whether the kernel grants every mapping (vm.overcommit_memory = 1). */
const ALWAYS_OVERCOMMIT = (() => {
  try {
    return Deno.readTextFileSync("/proc/sys/vm/overcommit_memory").trim() === "1";
  } catch {
    return false;
  }
})();

/** Mallocs `size` until it returns 0 (bounded); returns the blocks. */
function fillUntilZero(heap: Heap, size: number, limit = 1_000_000): number[] {
  const blocks: number[] = [];
  for (let i = 0; i < limit; i++) {
    const p = heap.malloc(size);
    if (p === 0) return blocks;
    blocks.push(p);
  }
  assert.fail(`malloc(${size}) never returned 0 after ${limit} blocks`);
}

describe("out of memory", () => {
  it("impossible requests return 0 instead of throwing, and the heap keeps working", () => {
    using heap = new Heap();
    const keep = heap.malloc(100);
    heap.bytes(keep).fill(7);
    const before = heap.stats();
    const attempts: [string, () => number][] = [
      ["malloc(2**52)", () => heap.malloc(2 ** 52)],
      ["malloc(Number.MAX_SAFE_INTEGER)", () => heap.malloc(Number.MAX_SAFE_INTEGER)],
      ["malloc(2**47)", () => heap.malloc(2 ** 47)],
      ["alignedAlloc(2**40, 16)", () => heap.alignedAlloc(2 ** 40, 16)],
      ["alignedAlloc(2**46, 4096)", () => heap.alignedAlloc(2 ** 46, 4096)],
      ["alignedAlloc(16, 2**50)", () => heap.alignedAlloc(16, 2 ** 50)],
      ["alignedAlloc(4096, 2**52)", () => heap.alignedAlloc(4096, 2 ** 52)],
      ["calloc(2**26, 2**26)", () => heap.calloc(2 ** 26, 2 ** 26)],
      ["realloc(0, 2**52)", () => heap.realloc(0, 2 ** 52)],
      ["realloc(keep, 2**50)", () => heap.realloc(keep, 2 ** 50)],
    ];
    for (const [what, attempt] of attempts) {
      let result: number | undefined;
      assert.doesNotThrow(() => {
        result = attempt();
      }, what);
      if (result !== 0 && ALWAYS_OVERCOMMIT && what.startsWith("alignedAlloc(2**")) {
        // vm.overcommit_memory=1 grants any mapping that fits the address space:
        // then a huge alignment is honoured instead of refused.
        assert.equal(result! % 2 ** 40, 0, what);
        heap.free(result!);
        continue;
      }
      assert.equal(result, 0, what);
    }
    const after = heap.stats();
    assert.equal(after.liveBlocks, before.liveBlocks);
    assert.equal(after.allocatedBytes, before.allocatedBytes);
    assert.equal(after.largeBlocks, before.largeBlocks);
    assert.ok(heap.bytes(keep).every((b) => b === 7), "the live block is untouched");
    heap.check();
    assertStillWorks(heap);
    heap.free(keep);
    heap.check();
  });

  it("a small arena filled with 64 KiB blocks returns 0, and allocates again after frees", () => {
    using heap = new Heap({ arenaBytes: SMALL_ARENA });
    const blocks = fillUntilZero(heap, 64 * KiB);
    assert.ok(blocks.length >= 200, `only ${blocks.length} blocks of 64 KiB fit in 16 MiB`);
    assert.ok(blocks.length * 64 * KiB <= SMALL_ARENA);
    // Exhaustion is stable: more attempts keep returning 0 and change nothing.
    const full = heap.stats();
    for (let i = 0; i < 10; i++) assert.equal(heap.malloc(64 * KiB), 0);
    assert.equal(heap.calloc(1, 64 * KiB), 0);
    assert.deepEqual(heap.stats(), full);
    heap.check();

    // One free makes room for exactly one more block.
    heap.free(blocks[7]);
    const again = heap.malloc(64 * KiB);
    assert.notEqual(again, 0);
    blocks[7] = again;
    assert.equal(heap.malloc(64 * KiB), 0);

    // Freeing everything makes the whole arena available again.
    for (const p of blocks) heap.free(p);
    heap.check();
    const refill = fillUntilZero(heap, 64 * KiB);
    assert.equal(refill.length, blocks.length);
    for (const p of refill) heap.free(p);
    heap.check();
  });

  it("an exhausted arena still serves blocks above 128 KiB, which have mappings of their own", () => {
    using heap = new Heap({ arenaBytes: SMALL_ARENA });
    const blocks = fillUntilZero(heap, 1000);
    assert.equal(heap.malloc(100), 0);
    const big = heap.malloc(MiB);
    assert.notEqual(big, 0);
    heap.bytes(big).fill(3);
    heap.free(big);
    for (const p of blocks) heap.free(p);
    heap.check();
  });

  it("an emptied arena serves medium blocks again after it was filled with small pages", () => {
    using heap = new Heap({ arenaBytes: SMALL_ARENA });
    const small = fillUntilZero(heap, KiB);
    assert.ok(small.length * KiB >= 14 * MiB);
    for (const p of small) heap.free(p);
    heap.trim();
    const empty = heap.stats();
    assert.equal(empty.liveBlocks, 0);
    assert.equal(empty.committedBytes, empty.metadataBytes, "nothing but metadata is committed");
    // The arena is empty, so requests that fit must succeed.
    for (const size of [64 * KiB, 20_000, 128 * KiB]) {
      const p = heap.malloc(size);
      assert.notEqual(p, 0, `malloc(${size}) on an empty ${SMALL_ARENA / MiB} MiB arena`);
      heap.free(p);
    }
    const medium = fillUntilZero(heap, 64 * KiB);
    assert.ok(medium.length * 64 * KiB >= 12 * MiB, `only ${medium.length} blocks of 64 KiB`);
    for (const p of medium) heap.free(p);
    heap.check();
  });

  it("an emptied arena serves small blocks again after it was filled with medium pages", () => {
    using heap = new Heap({ arenaBytes: SMALL_ARENA });
    const medium = fillUntilZero(heap, 64 * KiB);
    for (const p of medium) heap.free(p);
    heap.trim();
    const small = fillUntilZero(heap, KiB);
    assert.ok(
      small.length * KiB >= 12 * MiB,
      `only ${small.length * KiB} bytes of 1 KiB blocks fit in an empty ${
        SMALL_ARENA / MiB
      } MiB arena`,
    );
    for (const p of small) heap.free(p);
    heap.check();
  });
});

describe("out of memory at the OS's limit of memory mappings (vm.max_map_count)", () => {
  /** Runs tests/programs/at_map_limit.ts in a subprocess (its mappings use up the limit). */
  async function atMapLimit(mode: string, headroom: number) {
    const program = new URL("./programs/at_map_limit.ts", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-ffi", program, mode, String(headroom)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `the subprocess failed: ${stderr}`);
    return JSON.parse(new TextDecoder().decode(out.stdout).trim());
  }

  // A few headrooms: the limit is met at each step of a large block's
  // mapping (the mmap, then each guard page's mprotect).
  for (const [mode, headrooms] of [["secure", [20, 21, 22, 23]], ["debug", [20, 21]]] as const) {
    it(
      `${mode.toUpperCase()} MODE: large blocks until the limit is met: malloc returns 0, throws nothing, leaves nothing behind${
        mode === "secure" ? ", and no block lacks its guard pages" : ""
      }`,
      { skip: needs("run") },
      async () => {
        for (const headroom of headrooms) {
          const r = await atMapLimit(mode, headroom);
          const what = `headroom ${headroom}: ${JSON.stringify(r)}`;
          assert.ok(r.outOfMemory, `the limit was met: ${what}`);
          assert.equal(r.threw, "", what);
          assert.equal(r.unguarded, 0, what);
          assert.equal(r.liveAtEnd, 0, what);
          assert.equal(r.largeAtEnd, 0, what);
        }
      },
    );
  }
});
