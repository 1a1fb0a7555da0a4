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
 * Times are CPU time of the main thread (CLOCK_THREAD_CPUTIME_ID): on a
 * machine shared with other work they move far less than wall-clock time.
 * It also prints the number of allocations and frees per run (the heap's
 * counts; SQLite's xSize calls and Lua's in-place resizes are callbacks too),
 * so the difference can be read per call, and glibc's malloc+free pair
 * through FFI, for scale.
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
import { nativeFunction } from "../native/libc.ts";
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

const clock = Deno.dlopen("libc.so.6", {
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
}).symbols;
const CLOCK_THREAD_CPUTIME_ID = 3;
const timespec = new BigInt64Array(2);

/** CPU time of this thread, ms: on a busy shared machine it moves less than wall-clock time. */
function threadCpuMs(): number {
  clock.clock_gettime(CLOCK_THREAD_CPUTIME_ID, timespec);
  return Number(timespec[0]) * 1e3 + Number(timespec[1]) / 1e6;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** One way to run a workload; returns the allocator calls it made (0 for the own allocator). */
type Variant = [label: string, run: () => number];

/**
 * Runs the variants in turn (after one warm-up each), RUNS times, rotating
 * which goes first; prints each heap variant's time as a ratio to the own
 * allocator's time of the same round: median (min..max).
 */
function compare(name: string, own: () => void, variants: Variant[]): void {
  const all: Variant[] = [["own", () => (own(), 0)], ...variants];
  for (const [, run] of all) run();
  const times = all.map(() => [] as number[]);
  const ratios = variants.map(() => [] as number[]);
  const calls = variants.map(() => 0);
  for (let round = 0; round < RUNS; round++) {
    const took = all.map(() => 0);
    for (let k = 0; k < all.length; k++) {
      const i = (k + round) % all.length;
      const start = threadCpuMs();
      const made = all[i][1]();
      took[i] = threadCpuMs() - start;
      if (i > 0) calls[i - 1] = made;
    }
    took.forEach((t, i) => times[i].push(t));
    variants.forEach((_, v) => ratios[v].push(took[v + 1] / took[0]));
  }
  console.log(`${name}: own allocator ${median(times[0]).toFixed(1)} ms CPU (median)`);
  variants.forEach(([label], v) => {
    const r = ratios[v];
    const extra = (median(times[v + 1]) - median(times[0])) * 1e6 / calls[v];
    const perCall = calls[v] === 0
      ? ""
      : `  ${calls[v]} allocs+frees, ${extra.toFixed(0)} ns more each`;
    console.log(
      `  ${label.padEnd(28)} ${median(times[v + 1]).toFixed(1).padStart(8)} ms  ratio ${
        median(r).toFixed(2)
      } (${Math.min(...r).toFixed(2)}..${Math.max(...r).toFixed(2)})${perCall}`,
    );
  });
}

/** A heap variant: a fresh heap per run, or one heap kept across runs (warm, as libc's is). */
function heapVariants(work: (heap: Heap) => void): Variant[] {
  const kept = new Heap();
  const run = (heap: Heap) => {
    const before = heap.stats();
    work(heap);
    const after = heap.stats();
    if (after.liveBlocks !== 0) throw new Error(`${after.liveBlocks} blocks left live`);
    return after.allocCount + after.freeCount - before.allocCount - before.freeCount;
  };
  return [
    ["heap kept across runs", () => run(kept)],
    ["fresh heap each run", () => {
      const heap = new Heap();
      try {
        return run(heap);
      } finally {
        heap.close();
      }
    }],
  ];
}

// ---- the floor: the same callbacks forwarding to libc -------------------------------------
//
// What the callback mechanism alone costs: C calls JS, which calls libc's
// malloc through a fast FFI call. A heap variant's time less this one's is the
// heap's own share.

const libcAlloc = Deno.dlopen("libc.so.6", {
  malloc: { parameters: ["u32"], result: "usize" },
  realloc: { parameters: ["u64", "u64"], result: "usize" },
  free: { parameters: ["u64"], result: "void" },
  malloc_usable_size: { parameters: ["u64"], result: "u32" },
}).symbols;

const luaToLibc = new Deno.UnsafeCallback(
  { parameters: ["u8", "u64", "u32", "u64"], result: "u64" } as const,
  (_ud, ptr, _osize, nsize): bigint => {
    if (nsize === 0n) {
      libcAlloc.free(ptr);
      return 0n;
    }
    return libcAlloc.realloc(ptr, nsize) as bigint;
  },
);

const sqliteToLibc = [
  new Deno.UnsafeCallback(
    { parameters: ["i32"], result: "u64" } as const,
    (size): bigint => libcAlloc.malloc(size) as bigint,
  ),
  new Deno.UnsafeCallback({ parameters: ["u64"], result: "void" } as const, (p) => {
    libcAlloc.free(p);
  }),
  new Deno.UnsafeCallback(
    { parameters: ["u64", "i32"], result: "u64" } as const,
    (p, size): bigint => libcAlloc.realloc(p, BigInt(size)) as bigint,
  ),
  new Deno.UnsafeCallback(
    { parameters: ["u64"], result: "i32" } as const,
    (p) => libcAlloc.malloc_usable_size(p),
  ),
];

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
    `lua, script of ${LUA_N}`,
    () => {
      const L = lua.luaL_newstate();
      lua.luaL_openlibs(L);
      expected = runLua(lua, L, script);
      lua.lua_close(L);
    },
    [
      ["callbacks to libc (no heap)", () => {
        const L = lua.lua_newstate(luaToLibc.pointer, null);
        lua.luaL_openlibs(L);
        const result = runLua(lua, L, script);
        lua.lua_close(L);
        if (result !== expected) throw new Error(`lua: ${result} != ${expected}`);
        return 0;
      }],
      ...heapVariants((heap) => {
        const alloc = new LuaAllocator(heap);
        const L = lua.lua_newstate(alloc.function, null);
        lua.luaL_openlibs(L);
        const result = runLua(lua, L, script);
        lua.lua_close(L);
        alloc.close();
        if (result !== expected) throw new Error(`lua: ${result} != ${expected}`);
      }),
    ],
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

/** SQLite's mem methods, to save and restore around the callbacks-to-libc runs. */
const memMethods = Deno.dlopen(SQLITE_LIBRARY, {
  sqlite3_config: { parameters: ["i32", ...PAD_TYPES, "pointer"], result: "i32" },
}).symbols as unknown as { sqlite3_config(...args: unknown[]): number };

function configMethods(op: number, methods: BigUint64Array): void {
  memMethods.sqlite3_config(op, ...PAD_TYPES.map(() => 0n), Deno.UnsafePointer.of(methods));
}

function benchSqlite(): void {
  let expected = "";
  const own = () => {
    const db = openDatabase(sqlite);
    expected = sqliteWorkload(sqlite, db, ROWS);
    sqlite.sqlite3_close(db);
  };
  const variants = heapVariants((heap) => {
    const alloc = new SqliteAllocator(heap);
    const db = openDatabase(sqlite);
    const result = sqliteWorkload(sqlite, db, ROWS);
    sqlite.sqlite3_close(db);
    alloc.close();
    if (result !== expected) throw new Error("sqlite: results differ");
  });
  const saved = new BigUint64Array(8);
  config.sqlite3_shutdown();
  configMethods(5, saved); // SQLITE_CONFIG_GETMALLOC
  const abs = BigInt(Deno.UnsafePointer.value(nativeFunction("abs")));
  const forwarding = new BigUint64Array([
    ...sqliteToLibc.map((c) => BigInt(Deno.UnsafePointer.value(c.pointer))),
    abs,
    abs,
    abs,
    0n,
  ]);
  variants.unshift(["callbacks to libc (no heap)", () => {
    setMemstatus(false);
    configMethods(4, forwarding); // SQLITE_CONFIG_MALLOC
    own();
    config.sqlite3_shutdown();
    configMethods(4, saved);
    setMemstatus(true);
    return 0;
  }]);
  compare(`sqlite, ${ROWS} rows, own with memstatus on (its default)`, own, variants);
  compare(`sqlite, ${ROWS} rows, own with memstatus off`, () => {
    setMemstatus(false);
    own();
    setMemstatus(true);
  }, variants);
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
  const onHeap = (work: (alloc: ZlibAllocator) => void) =>
    heapVariants((heap) => {
      const alloc = new ZlibAllocator(heap);
      work(alloc);
      alloc.close();
    });
  compare("zlib, 8 MiB deflate + inflate", () => roundTrip(null), onHeap(roundTrip));
  const small = Array.from({ length: 2000 }, (_, i) => compressibleData(4096, i));
  const smallCompressed = small.map((d) => deflateAll(zlib, null, d, 6).slice());
  const streams = (alloc: ZlibAllocator | null) => {
    for (let i = 0; i < small.length; i++) {
      deflateAll(zlib, alloc, small[i], 6);
      inflateAll(zlib, alloc, smallCompressed[i], 4096);
    }
  };
  compare("zlib, 2000 streams of 4 KiB", () => streams(null), onHeap(streams));
}

console.log(`Deno ${Deno.version.deno}, ${RUNS} runs each, ratio = heap time / own allocator time`);
glibcPair();
if (ONLY.has("lua")) benchLua();
if (ONLY.has("sqlite")) benchSqlite();
if (ONLY.has("zlib")) benchZlib();
