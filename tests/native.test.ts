import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap } from "../mod.ts";
import { KiB, MiB } from "./helpers.ts";

const LIBC = Deno.build.os === "darwin" ? "libSystem.B.dylib" : "libc.so.6";

function openLibc() {
  return Deno.dlopen(LIBC, {
    memset: { parameters: ["pointer", "i32", "usize"], result: "pointer" },
    memcpy: { parameters: ["pointer", "pointer", "usize"], result: "pointer" },
    memcmp: { parameters: ["pointer", "pointer", "usize"], result: "i32" },
    strlen: { parameters: ["pointer"], result: "usize" },
  });
}

describe("native code and blocks", () => {
  it("libc memset through heap.pointer(p) writes exactly the block, as heap.bytes(p) sees", () => {
    const libc = openLibc();
    try {
      using heap = new Heap();
      for (const size of [16, 100, 4096, 20 * KiB, 300 * KiB, 2 * MiB]) {
        const before = heap.malloc(size);
        const p = heap.malloc(size);
        const after = heap.malloc(size);
        heap.bytes(before).fill(1);
        heap.bytes(after).fill(3);
        heap.bytes(p).fill(2);
        const result = libc.symbols.memset(heap.pointer(p), 0xc3, BigInt(size));
        assert.equal(Deno.UnsafePointer.value(result), BigInt(p), "memset returns its argument");
        const b = heap.bytes(p);
        for (let i = 0; i < size; i++) {
          if (b[i] !== 0xc3) assert.fail(`size ${size}: byte ${i} is ${b[i]}`);
        }
        for (let i = size; i < b.length; i++) assert.equal(b[i], 2, "past the length memset got");
        assert.ok(heap.bytes(before).every((x) => x === 1), "the block before is untouched");
        assert.ok(heap.bytes(after).every((x) => x === 3), "the block after is untouched");
        for (const q of [before, p, after]) heap.free(q);
      }
      heap.check();
    } finally {
      libc.close();
    }
  });

  it("libc strlen reads a C string written through heap.bytes(p)", () => {
    const libc = openLibc();
    try {
      using heap = new Heap();
      for (const size of [8, 64, 20_000, MiB]) {
        const p = heap.malloc(size);
        const text = new TextEncoder().encode("tsmalloc".repeat(size)).subarray(0, size - 1);
        const b = heap.bytes(p, size);
        b.set(text);
        b[size - 1] = 0;
        assert.equal(libc.symbols.strlen(heap.pointer(p)), BigInt(size - 1));
        b[3] = 0;
        assert.equal(libc.symbols.strlen(heap.pointer(p)), 3n);
        heap.free(p);
      }
      heap.check();
    } finally {
      libc.close();
    }
  });

  it("libc memcpy and memcmp work between blocks of any two kinds", () => {
    const libc = openLibc();
    try {
      using heap = new Heap();
      const sizes = [48, 20_000, 400 * KiB];
      for (const from of sizes) {
        for (const to of sizes) {
          const n = Math.min(from, to);
          const src = heap.malloc(from);
          const dst = heap.calloc(1, to);
          const s = heap.bytes(src);
          for (let i = 0; i < s.length; i++) s[i] = (i * 13) & 0xff;
          assert.notEqual(libc.symbols.memcmp(heap.pointer(dst), heap.pointer(src), BigInt(n)), 0);
          libc.symbols.memcpy(heap.pointer(dst), heap.pointer(src), BigInt(n));
          assert.equal(libc.symbols.memcmp(heap.pointer(dst), heap.pointer(src), BigInt(n)), 0);
          const d = heap.bytes(dst);
          for (let i = 0; i < n; i++) if (d[i] !== ((i * 13) & 0xff)) assert.fail(`byte ${i}`);
          heap.free(src);
          heap.free(dst);
        }
      }
      heap.check();
    } finally {
      libc.close();
    }
  });
});
