import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap, HeapError } from "../mod.ts";
import {
  CAllocator,
  LuaAllocator,
  openLua,
  openSqlite,
  openZlib,
  SqliteAllocator,
  ZlibAllocator,
} from "../native/mod.ts";
import { checked, KiB, MiB } from "./helpers.ts";
import {
  compressibleData,
  cString,
  deflateAll,
  inflateAll,
  LUA_ERRMEM,
  luaScript,
  openDatabase,
  query,
  runLua,
  SQLITE_NOMEM,
  sqliteWorkload,
} from "./native_workloads.ts";

/** Opens a library, or returns why it cannot (the describe blocks skip with that reason). */
function tryOpen<T>(open: () => T, name: string): [T, false] | [null, string] {
  try {
    return [open(), false];
  } catch (error) {
    return [null, `${name} is not installed (${(error as Error).message.split("\n")[0]})`];
  }
}

const [luaLib, noLua] = tryOpen(openLua, "Lua 5.4 (liblua5.4-0)");
const [sqliteLib, noSqlite] = tryOpen(openSqlite, "SQLite 3 (libsqlite3-0)");
const [zlibLib, noZlib] = tryOpen(openZlib, "zlib (zlib1g)");
const lua = luaLib?.symbols!;
const sqlite = sqliteLib?.symbols!;
const zlib = zlibLib?.symbols!;
const libc = Deno.dlopen(Deno.build.os === "darwin" ? "libSystem.B.dylib" : "libc.so.6", {
  memset: { parameters: ["pointer", "i32", "usize"], result: "pointer" },
}).symbols;

/** Calls a C function pointer from JS as C code would. */
function fn<const D extends Deno.ForeignFunction>(pointer: Deno.PointerObject, definition: D) {
  return new Deno.UnsafeFnPointer(pointer as Deno.PointerObject<D>, definition);
}

/** Lua's own allocator, for reference results. */
function luaReference(script: string): string {
  const L = lua.luaL_newstate();
  lua.luaL_openlibs(L);
  try {
    return runLua(lua, L, script);
  } finally {
    lua.lua_close(L);
  }
}

/** A Lua state on `alloc`'s heap with the standard libraries. */
function newLuaState(alloc: LuaAllocator): Deno.PointerValue {
  const L = lua.lua_newstate(alloc.function, alloc.userData);
  assert.notEqual(L, null, "lua_newstate");
  lua.luaL_openlibs(L);
  return L;
}

/** Asserts that nothing the library allocated is live and the heap is consistent. */
function assertEmpty(heap: Heap, alloc: { liveBlocks: number; lastError: unknown }): void {
  assert.equal(alloc.lastError, undefined, `error inside a callback: ${alloc.lastError}`);
  assert.equal(alloc.liveBlocks, 0, "blocks the library still holds");
  heap.check();
  // leaks(), not stats().liveBlocks: debug mode's quarantine holds freed blocks.
  assert.equal(heap.leaks().length, 0, "live blocks on the heap");
}

describe("CAllocator: malloc, calloc, realloc, free as C function pointers", () => {
  const malloc = (c: CAllocator) => fn(c.malloc, { parameters: ["usize"], result: "usize" });
  const free = (c: CAllocator) => fn(c.free, { parameters: ["usize"], result: "void" });
  const realloc = (c: CAllocator) =>
    fn(c.realloc, { parameters: ["usize", "usize"], result: "usize" });
  const calloc = (c: CAllocator) =>
    fn(c.calloc, { parameters: ["usize", "usize"], result: "usize" });

  it("serves C calls with blocks of the heap, with C's semantics for NULL, 0 and overflow", () => {
    using heap = new Heap();
    using c = new CAllocator(heap);
    const m = malloc(c), f = free(c), r = realloc(c), z = calloc(c);
    const sizes = [1, 24, 1000, 5000, 100 * KiB, 600 * KiB];
    const blocks = sizes.map((size) => {
      const p = Number(m.call(BigInt(size)));
      assert.ok(p !== 0 && p % 16 === 0, `malloc(${size})`);
      assert.ok(heap.usableSize(p) >= size);
      libc.memset(heap.pointer(p), 0x5a, BigInt(size));
      return p;
    });
    assert.equal(c.liveBlocks, sizes.length);
    const grown = Number(r.call(BigInt(blocks[2]), 300_000n));
    assert.ok(heap.bytes(grown, 1000).every((b) => b === 0x5a), "realloc keeps the contents");
    blocks[2] = grown;
    const zeroed = Number(z.call(1000n, 3n));
    assert.ok(heap.bytes(zeroed, 3000).every((b) => b === 0), "calloc zeroes");
    assert.equal(z.call(2n ** 40n, 2n ** 40n), 0n, "calloc of an overflowing product is NULL");
    assert.equal(m.call(2n ** 62n), 0n, "malloc of more than can be had is NULL");
    const fresh = Number(r.call(0n, 64n));
    assert.notEqual(fresh, 0, "realloc(NULL, n) allocates");
    assert.equal(r.call(BigInt(fresh), 0n), 0n, "realloc(p, 0) frees and returns NULL");
    f.call(0n);
    for (const p of [...blocks, zeroed]) f.call(BigInt(p));
    assertEmpty(heap, c);
  });

  it("keeps an error thrown inside (a bad free) for the caller; C sees nothing", () => {
    using heap = new Heap();
    using c = new CAllocator(heap);
    const p = Number(malloc(c).call(64n));
    free(c).call(BigInt(p + 16));
    assert.ok(c.lastError instanceof HeapError);
    assert.equal((c.lastError as HeapError).code, "invalid-free");
    free(c).call(BigInt(p));
    free(c).call(BigInt(p));
    assert.equal((c.lastError as HeapError).code, "double-free");
    assert.equal(c.errorCount, 2);
    heap.close();
    assert.equal(malloc(c).call(64n), 0n, "a closed heap gives NULL");
    assert.equal((c.lastError as HeapError).code, "closed");
  });

  it("close() releases the callbacks once; a label must be a string", () => {
    using heap = new Heap();
    const c = new CAllocator(heap);
    c.close();
    c[Symbol.dispose]();
    assert.throws(() => new CAllocator(heap, { label: 3 as unknown as string }), TypeError);
  });
});

describe("Lua 5.4 on a heap", { skip: noLua }, () => {
  it("runs a script of tables and strings with the same result as Lua's own allocator, and frees everything at lua_close", () => {
    const script = luaScript(60_000);
    const expected = luaReference(script);
    using heap = new Heap();
    using alloc = new LuaAllocator(heap);
    const L = newLuaState(alloc);
    assert.equal(runLua(lua, L, script), expected);
    const stats = checked(heap);
    assert.ok(stats.liveBlocks > 1000 && stats.allocatedBytes > MiB, "Lua's memory is on the heap");
    assert.equal(alloc.liveBlocks, stats.liveBlocks);
    lua.lua_close(L);
    assertEmpty(heap, alloc);
  });

  it("large tables and strings (blocks with mappings of their own) come and go correctly", () => {
    const script = `
      local big, strings = {}, {}
      for i = 1, 300000 do big[i] = i * 3 end
      for i = 1, 20 do strings[i] = string.rep(string.char(64 + i), 200000 + i) end
      local sum = 0
      for i = 1, #big, 1000 do sum = sum + big[i] end
      for i = 1, 20, 3 do strings[i] = nil end
      collectgarbage()
      local n = 0
      for _, s in pairs(strings) do n = n + #s end
      big = nil
      collectgarbage()
      return sum .. ":" .. n`;
    const expected = luaReference(script);
    using heap = new Heap();
    using alloc = new LuaAllocator(heap);
    const L = newLuaState(alloc);
    for (let round = 0; round < 3; round++) assert.equal(runLua(lua, L, script), expected);
    heap.check();
    lua.lua_close(L);
    assertEmpty(heap, alloc);
  });

  it("past limitBytes Lua raises a memory error, and the state carries on", () => {
    using heap = new Heap({ limitBytes: 4 * MiB });
    using alloc = new LuaAllocator(heap);
    const L = newLuaState(alloc);
    const result = runLua(lua, L, luaScript(200_000));
    assert.match(result, new RegExp(`^error ${LUA_ERRMEM}: not enough memory`));
    assert.ok(checked(heap).committedBytes <= 4 * MiB);
    lua.lua_gc(L, 2); // LUA_GCCOLLECT
    assert.equal(runLua(lua, L, luaScript(1000)), luaReference(luaScript(1000)));
    lua.lua_close(L);
    assertEmpty(heap, alloc);
  });

  it("on a heap whose arena is above 2^32 (lowAddresses: false) the same script gives the same result", () => {
    const script = luaScript(20_000);
    using heap = new Heap({ lowAddresses: false });
    using alloc = new LuaAllocator(heap);
    const L = newLuaState(alloc);
    assert.equal(runLua(lua, L, script), luaReference(script));
    lua.lua_close(L);
    assertEmpty(heap, alloc);
  });

  it("close() refuses while a state is open", () => {
    using heap = new Heap();
    const alloc = new LuaAllocator(heap);
    const L = newLuaState(alloc);
    assert.throws(() => alloc.close(), /lua_close/);
    lua.lua_close(L);
    alloc.close();
    alloc.close();
  });
});

describe("SQLite 3 on a heap", { skip: noSqlite }, () => {
  const ROWS = 50_000;

  it("builds and queries 50k indexed rows with the same results as SQLite's own allocator; the default comes back at close", () => {
    const ownDb = openDatabase(sqlite);
    const expected = sqliteWorkload(sqlite, ownDb, ROWS);
    sqlite.sqlite3_close(ownDb);
    using heap = new Heap();
    const alloc = new SqliteAllocator(heap);
    const db = openDatabase(sqlite);
    assert.equal(sqliteWorkload(sqlite, db, ROWS), expected);
    const stats = checked(heap);
    assert.ok(
      stats.allocatedBytes > 2 * MiB,
      `SQLite's memory is on the heap (${stats.allocatedBytes})`,
    );
    assert.equal(sqlite.sqlite3_close(db), 0);
    alloc.close();
    assertEmpty(heap, alloc);
    // Back on SQLite's allocator, with memory statistics on again.
    const after = openDatabase(sqlite);
    assert.ok(sqlite.sqlite3_memory_used() > 0n, "sqlite3_memory_used counts again");
    assert.equal(checked(heap).liveBlocks, 0, "SQLite no longer allocates from the heap");
    sqlite.sqlite3_close(after);
  });

  it("past limitBytes SQLite reports SQLITE_NOMEM, and the program carries on", () => {
    const ownDb = openDatabase(sqlite);
    const expected = sqliteWorkload(sqlite, ownDb, 2000);
    sqlite.sqlite3_close(ownDb);
    using heap = new Heap({ limitBytes: 8 * MiB });
    using alloc = new SqliteAllocator(heap);
    const db = openDatabase(sqlite);
    try {
      let error: (Error & { code?: number }) | undefined;
      try {
        sqliteWorkload(sqlite, db, ROWS);
      } catch (e) {
        error = e as Error;
      }
      assert.equal(error?.code, SQLITE_NOMEM, `SQLITE_NOMEM expected, got ${error}`);
      assert.ok(checked(heap).committedBytes <= 8 * MiB);
      assert.match(
        query(sqlite, db, "SELECT count(*) FROM items"),
        /^\d+$/,
        "the connection answers",
      );
    } finally {
      assert.equal(sqlite.sqlite3_close(db), 0);
    }
    const again = openDatabase(sqlite);
    try {
      assert.equal(sqliteWorkload(sqlite, again, 2000), expected, "a new connection under the cap");
    } finally {
      assert.equal(sqlite.sqlite3_close(again), 0);
    }
    alloc.close();
    assertEmpty(heap, alloc);
  });

  it("on a heap whose arena is above 2^32 (lowAddresses: false) the results are the same", () => {
    const ownDb = openDatabase(sqlite);
    const expected = sqliteWorkload(sqlite, ownDb, 3000);
    sqlite.sqlite3_close(ownDb);
    using heap = new Heap({ lowAddresses: false });
    using alloc = new SqliteAllocator(heap);
    const db = openDatabase(sqlite);
    assert.equal(sqliteWorkload(sqlite, db, 3000), expected);
    assert.equal(sqlite.sqlite3_close(db), 0);
    alloc.close();
    assertEmpty(heap, alloc);
  });

  it("close() refuses while a connection is open; one heap at a time", () => {
    using heap = new Heap();
    const alloc = new SqliteAllocator(heap);
    assert.throws(() => new SqliteAllocator(heap), TypeError);
    const db = openDatabase(sqlite);
    query(sqlite, db, "CREATE TABLE t(x)");
    assert.throws(() => alloc.close(), /sqlite3_close/);
    query(sqlite, db, "INSERT INTO t VALUES (42)");
    assert.equal(query(sqlite, db, "SELECT x FROM t"), "42", "still working after the refusal");
    sqlite.sqlite3_close(db);
    alloc.close();
    assertEmpty(heap, alloc);
  });
});

describe("zlib on a heap", { skip: noZlib }, () => {
  it("a round trip of 6 MiB: the same compressed bytes as with zlib's own allocator", () => {
    const data = compressibleData(6 * MiB, 7);
    const expected = deflateAll(zlib, null, data, 6);
    using heap = new Heap();
    using alloc = new ZlibAllocator(heap);
    const compressed = deflateAll(zlib, alloc, data, 6);
    assert.ok(compressed.length < data.length / 2);
    assert.deepEqual(compressed, expected);
    const restored = inflateAll(zlib, alloc, compressed.slice(), data.length);
    assert.deepEqual(restored, data);
    assert.ok(heap.stats().allocCount >= 5, "zlib allocated from the heap");
    assertEmpty(heap, alloc);
  });

  it("past limitBytes deflateInit fails with Z_MEM_ERROR, and smaller streams carry on", () => {
    using heap = new Heap({ limitBytes: 320 * KiB });
    using alloc = new ZlibAllocator(heap);
    const data = compressibleData(256 * KiB, 3);
    assert.throws(() => deflateAll(zlib, alloc, data, 9), /deflateInit_ returned -4/);
    assert.equal(alloc.liveBlocks, 0, "zlib freed what it had");
    const compressed = deflateAll(zlib, null, data, 9);
    assert.deepEqual(inflateAll(zlib, alloc, compressed.slice(), data.length), data);
    assert.ok(checked(heap).committedBytes <= 320 * KiB);
    assertEmpty(heap, alloc);
  });
});

describe("debug mode with C code", { skip: noLua || noSqlite }, () => {
  it("an overflow C writes into a Lua block is reported with its allocation site naming Lua", () => {
    using heap = new Heap({ debug: true });
    using alloc = new LuaAllocator(heap);
    const L = newLuaState(alloc);
    const userdata = lua.lua_newuserdatauv(L, 100n, 0);
    lua.lua_setglobal(L, cString("victim"));
    libc.memset(userdata, 0x41, 100n); // in bounds
    heap.check();
    libc.memset(userdata, 0x41, 101n); // one byte past the userdata: C's bug
    let report: unknown;
    try {
      heap.check();
    } catch (e) {
      report = e;
    }
    assert.ok(report instanceof HeapError, `check() reports the overflow: ${report}`);
    assert.equal(report.code, "overflow");
    assert.match(report.allocationStack ?? "", /Lua lua_Alloc/);
    lua.lua_close(L);
    assert.equal(alloc.liveBlocks, 0, "Lua let go of every block");
  });

  it("blocks of a Lua state and a SQLite connection left open are listed as leaks, by library", () => {
    using heap = new Heap({ debug: true });
    using luaAlloc = new LuaAllocator(heap);
    const L = newLuaState(luaAlloc);
    runLua(lua, L, "kept = {} for i = 1, 100 do kept[i] = ('v'):rep(i) end");
    const sqliteAlloc = new SqliteAllocator(heap);
    const db = openDatabase(sqlite);
    query(sqlite, db, "CREATE TABLE t(x TEXT)");
    query(sqlite, db, "INSERT INTO t VALUES ('leaked connection')");
    const leaks = heap.leaks();
    const byLibrary = (name: RegExp) => leaks.filter((b) => name.test(b.stack)).length;
    assert.equal(byLibrary(/Lua lua_Alloc/), luaAlloc.liveBlocks);
    assert.equal(byLibrary(/SQLite x(Malloc|Realloc)/), sqliteAlloc.liveBlocks);
    assert.ok(luaAlloc.liveBlocks > 100 && sqliteAlloc.liveBlocks > 10);
    const report = heap.leakReport();
    assert.match(report, /Lua lua_Alloc/);
    assert.match(report, /SQLite xMalloc/);
    sqlite.sqlite3_close(db);
    sqliteAlloc.close();
    lua.lua_close(L);
    assertEmpty(heap, luaAlloc);
    assert.equal(heap.leaks().length, 0);
  });

  it("an overflow through a CAllocator is caught at free, kept in lastError with the library's label", () => {
    using heap = new Heap({ debug: true });
    using c = new CAllocator(heap, { label: "libexample" });
    const m = fn(c.malloc, { parameters: ["usize"], result: "pointer" });
    const f = fn(c.free, { parameters: ["pointer"], result: "void" });
    const p = m.call(40n);
    libc.memset(p, 0, 48n);
    f.call(p);
    assert.ok(c.lastError instanceof HeapError);
    assert.equal(c.lastError.code, "overflow");
    assert.match(c.lastError.allocationStack ?? "", /libexample malloc/);
  });
});
