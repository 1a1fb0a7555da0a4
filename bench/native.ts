/**
 * C libraries on a heap against their own allocators (`deno task bench:native`).
 *
 * For each library it runs the same work alternately on the library's own
 * allocator and on a `Heap` (through the adapters of the "./native" entry
 * point), in one process, and reports each heap run's time as a ratio to
 * the own-allocator run beside it, then the median and range of the ratios:
 *
 *   lua     a script building tables and strings (tests/native_workloads.ts),
 *           a fresh state each run; own: luaL_newstate (libc realloc/free)
 *   sqlite  an in-memory table of --rows rows, two indexes, queries, updates;
 *           own: SQLite's default allocator, memory statistics on (its
 *           default) and, as a second row, off (as the adapter runs it)
 *   zlib    deflate (level 6) and inflate of 8 MiB; and 2000 small streams
 *           (4 KiB each), where allocation is a larger share of the work
 *
 * It also prints the number of allocator calls per run (the heap's malloc +
 * free counts), so the ratio can be read as ns per call, and glibc's
 * malloc+free pair through FFI, for scale.
 *
 * Options: --runs=N (7), --only=lua,sqlite,zlib, --lua=N (script size,
 * 100000), --rows=N (50000).
 */

import { Heap } from "../mod.ts";
import {
  LuaAllocator,
  openLua,
  openSqlite,
  openZlib,
  SQLITE_LIBRARY,
  SqliteAllocator,
  ZlibAllocator,
} from "../native/mod.ts";
import {
  compressibleData,
  deflateAll,
  inflateAll,
  luaScript,
  openDatabase,
  runLua,
  sqliteWorkload,
} from "../tests/native_workloads.ts";

const args = new Map(
  Deno.args.map((a) => a.replace(/^--/, "").split("=")).map(([k, v]) => [k, v ?? "1"]),
);
const RUNS = Number(args.get("runs") ?? 7);
const ONLY = new Set((args.get("only") ?? "lua,sqlite,zlib").split(","));
const LUA_N = Number(args.get("lua") ?? 100_000);
const ROWS = Number(args.get("rows") ?? 50_000);

const lua = openLua().symbols;
const sqlite = openSqlite().symbols;
const zlib = openZlib().symbols;

/** Milliseconds `fn` takes. */
function time(fn: () => void): number {
  const start = performance.now();
  fn();
  return performance.now() - start;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * Runs `own` and `heap` alternately (after one warm-up each), RUNS times;
 * prints the ratio heap/own per pair, and the median and range.
 */
function compare(
  name: string,
  own: () => void,
  heap: () => { calls: number },
): void {
  own();
  heap();
  const ratios: number[] = [];
  const owns: number[] = [];
  const heaps: number[] = [];
  let calls = 0;
  for (let i = 0; i < RUNS; i++) {
    const first = i % 2 === 0;
    let tOwn = 0, tHeap = 0;
    if (first) tOwn = time(own);
    tHeap = time(() => calls = heap().calls);
    if (!first) tOwn = time(own);
    owns.push(tOwn);
    heaps.push(tHeap);
    ratios.push(tHeap / tOwn);
  }
  const extra = (median(heaps) - median(owns)) * 1e6 / calls;
  console.log(
    `${name.padEnd(34)} own ${median(owns).toFixed(1).padStart(7)} ms  heap ${
      median(heaps).toFixed(1).padStart(7)
    } ms  ratio ${median(ratios).toFixed(2)} (${Math.min(...ratios).toFixed(2)}..${
      Math.max(...ratios).toFixed(2)
    })  ${calls} calls, ${extra.toFixed(0)} ns more a call`,
  );
}

// ---- glibc for scale ------------------------------------------------------------------

function glibcPair(): void {
  const libc = Deno.dlopen("libc.so.6", {
    malloc: { parameters: ["u32"], result: "usize" },
    free: { parameters: ["usize"], result: "void" },
  }).symbols;
  const n = 2_000_000;
  const loop = () => {
    for (let i = 0; i < n; i++) libc.free(libc.malloc(64) as bigint);
  };
  loop();
  const ms = time(loop);
  console.log(`glibc malloc+free through FFI: ${(ms * 1e6 / n).toFixed(1)} ns a pair`);
}

// ---- Lua ------------------------------------------------------------------------------

function benchLua(): void {
  const script = luaScript(LUA_N);
  let expected = "";
  compare(
    `lua (script of ${LUA_N})`,
    () => {
      const L = lua.luaL_newstate();
      lua.luaL_openlibs(L);
      expected = runLua(lua, L, script);
      lua.lua_close(L);
    },
    () => {
      const heap = new Heap();
      const alloc = new LuaAllocator(heap);
      const L = lua.lua_newstate(alloc.function, null);
      lua.luaL_openlibs(L);
      const result = runLua(lua, L, script);
      lua.lua_close(L);
      if (result !== expected) throw new Error(`lua: ${result} != ${expected}`);
      const stats = heap.stats();
      alloc.close();
      heap.close();
      return { calls: stats.allocCount + stats.freeCount };
    },
  );
}

// ---- SQLite ---------------------------------------------------------------------------

const PAD_TYPES: "i64"[] = Deno.build.os === "darwin" && Deno.build.arch === "aarch64"
  ? new Array(7).fill("i64")
  : [];
const config = Deno.dlopen(SQLITE_LIBRARY, {
  sqlite3_shutdown: { parameters: [], result: "i32" },
  sqlite3_config: { parameters: ["i32", ...PAD_TYPES, "i32"], result: "i32" },
}).symbols as unknown as {
  sqlite3_shutdown(): number;
  sqlite3_config(...args: unknown[]): number;
};

function setMemstatus(on: boolean): void {
  config.sqlite3_shutdown();
  config.sqlite3_config(9, ...PAD_TYPES.map(() => 0n), on ? 1 : 0);
}

function benchSqlite(): void {
  let expected = "";
  const own = () => {
    const db = openDatabase(sqlite);
    expected = sqliteWorkload(sqlite, db, ROWS);
    sqlite.sqlite3_close(db);
  };
  const onHeap = () => {
    const heap = new Heap();
    const alloc = new SqliteAllocator(heap);
    const db = openDatabase(sqlite);
    const result = sqliteWorkload(sqlite, db, ROWS);
    sqlite.sqlite3_close(db);
    const stats = heap.stats();
    alloc.close();
    heap.close();
    if (result !== expected) throw new Error("sqlite: results differ");
    return { calls: stats.allocCount + stats.freeCount };
  };
  compare(`sqlite (${ROWS} rows), own memstatus on`, own, onHeap);
  compare(`sqlite (${ROWS} rows), own memstatus off`, () => {
    setMemstatus(false);
    own();
    setMemstatus(true);
  }, onHeap);
}

// ---- zlib -----------------------------------------------------------------------------

function benchZlib(): void {
  const big = compressibleData(8 * 2 ** 20, 11);
  const compressed = deflateAll(zlib, null, big, 6).slice();
  const roundTrip = (alloc: ZlibAllocator | null) => {
    const out = deflateAll(zlib, alloc, big, 6);
    if (out.length !== compressed.length) throw new Error("zlib: sizes differ");
    inflateAll(zlib, alloc, compressed, big.length);
  };
  compare("zlib 8 MiB deflate + inflate", () => roundTrip(null), () => {
    const heap = new Heap();
    const alloc = new ZlibAllocator(heap);
    roundTrip(alloc);
    const stats = heap.stats();
    alloc.close();
    heap.close();
    return { calls: stats.allocCount + stats.freeCount };
  });
  const small = Array.from({ length: 2000 }, (_, i) => compressibleData(4096, i));
  const smallCompressed = small.map((d) => deflateAll(zlib, null, d, 6).slice());
  const streams = (alloc: ZlibAllocator | null) => {
    for (let i = 0; i < small.length; i++) {
      deflateAll(zlib, alloc, small[i], 6);
      inflateAll(zlib, alloc, smallCompressed[i], 4096);
    }
  };
  compare("zlib 2000 x 4 KiB streams", () => streams(null), () => {
    const heap = new Heap();
    const alloc = new ZlibAllocator(heap);
    streams(alloc);
    const stats = heap.stats();
    alloc.close();
    heap.close();
    return { calls: stats.allocCount + stats.freeCount };
  });
}

console.log(`Deno ${Deno.version.deno}, ${RUNS} runs each, ratio = heap time / own allocator time`);
glibcPair();
if (ONLY.has("lua")) benchLua();
if (ONLY.has("sqlite")) benchSqlite();
if (ONLY.has("zlib")) benchZlib();
