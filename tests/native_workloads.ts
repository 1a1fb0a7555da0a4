/**
 * Workloads of real C libraries, shared by the native tests and benchmarks:
 * a Lua script building tables and strings, a SQLite database with indexes
 * and queries, a zlib round trip. Each returns a text summary of its results,
 * so a run on a heap can be compared with a run on the library's own allocator.
 */

import {
  type LUA_SYMBOLS,
  type SQLITE_SYMBOLS,
  Z_STREAM_SIZE,
  type ZLIB_SYMBOLS,
  type ZlibAllocator,
} from "../native/mod.ts";

type Lua = Deno.DynamicLibrary<typeof LUA_SYMBOLS>["symbols"];
type Sqlite = Deno.DynamicLibrary<typeof SQLITE_SYMBOLS>["symbols"];
type Zlib = Deno.DynamicLibrary<typeof ZLIB_SYMBOLS>["symbols"];

/** A NUL-terminated UTF-8 copy of `text`. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(text + "\0");
}

// ---- Lua -----------------------------------------------------------------------

/** A script building `n` small tables keyed by strings, concatenating, dropping half. */
export function luaScript(n: number): string {
  return `
    local t = {}
    for i = 1, ${n} do
      t["key" .. i] = { i, tostring(i * 7), string.rep("x", i % 50) }
    end
    local parts, sum = {}, 0
    for i = 1, ${n}, 7 do
      local v = t["key" .. i]
      sum = sum + v[1] + #v[3]
      parts[#parts + 1] = v[2]
    end
    for i = 1, ${n}, 2 do t["key" .. i] = nil end
    collectgarbage()
    local s = table.concat(parts, ",")
    local words = {}
    for w in string.gmatch(s, "%d+") do words[#words + 1] = w:upper() .. "!" end
    return sum .. ":" .. #s .. ":" .. #words .. ":" .. string.sub(s, 1, 40)
  `;
}

/**
 * Runs `script` in state `L` (libraries opened); returns what it returns as
 * a string, or "error <code>: <message>" when it fails (a memory error too).
 */
export function runLua(lua: Lua, L: Deno.PointerValue, script: string): string {
  const status = lua.luaL_loadstring(L, cString(script));
  const run = status === 0 ? lua.lua_pcallk(L, 0, 1, 0, 0n, null) : status;
  const text = lua.lua_tolstring(L, -1, null);
  const value = text === null ? "(nil)" : Deno.UnsafePointerView.getCString(text);
  lua.lua_settop(L, 0);
  return run === 0 ? value : `error ${run}: ${value}`;
}

/** LUA_ERRMEM: what lua_pcall returns when the allocator said no. */
export const LUA_ERRMEM = 4;

// ---- SQLite ----------------------------------------------------------------------

export const SQLITE_ROW = 100;
export const SQLITE_DONE = 101;
export const SQLITE_NOMEM = 7;

/** Opens an in-memory database; throws on failure. */
export function openDatabase(sqlite: Sqlite): Deno.PointerObject {
  const out = new BigUint64Array(1);
  const rc = sqlite.sqlite3_open(cString(":memory:"), out);
  const db = Deno.UnsafePointer.create(out[0]);
  if (rc !== 0 || db === null) throw new Error(`sqlite3_open failed: ${rc}`);
  return db;
}

/** Runs `sql` and returns its rows as "a|b|c" lines; throws an Error with SQLite's code and message. */
export function query(sqlite: Sqlite, db: Deno.PointerObject, sql: string): string {
  const out = new BigUint64Array(1);
  let rc = sqlite.sqlite3_prepare_v2(db, cString(sql), -1, out, null);
  if (rc !== 0) throw sqliteError(sqlite, db, rc);
  const stmt = Deno.UnsafePointer.create(out[0]);
  const rows: string[] = [];
  try {
    const columns = sqlite.sqlite3_column_count(stmt);
    while ((rc = sqlite.sqlite3_step(stmt)) === SQLITE_ROW) {
      const row: string[] = [];
      for (let c = 0; c < columns; c++) {
        const text = sqlite.sqlite3_column_text(stmt, c);
        row.push(text === null ? "NULL" : Deno.UnsafePointerView.getCString(text));
      }
      rows.push(row.join("|"));
    }
    if (rc !== SQLITE_DONE) throw sqliteError(sqlite, db, rc);
  } finally {
    sqlite.sqlite3_finalize(stmt);
  }
  return rows.join("\n");
}

/** An Error carrying SQLite's result code (`code`) and message. */
export function sqliteError(
  sqlite: Sqlite,
  db: Deno.PointerObject,
  rc: number,
): Error & { code: number } {
  const message = Deno.UnsafePointerView.getCString(sqlite.sqlite3_errmsg(db)!);
  return Object.assign(new Error(`SQLite ${rc}: ${message}`), { code: rc & 0xff });
}

/** A seeded name for row `i`. */
function rowName(i: number): string {
  const x = Math.imul(i ^ 0x5bd1e995, 0x9e3779b1) >>> 0;
  return `item-${x.toString(36)}-${i % 97}`;
}

/**
 * A table of `rows` rows with two secondary indexes, filled through a
 * prepared statement in one transaction, then queried, updated and pruned.
 * Returns every query's rows.
 */
export function sqliteWorkload(sqlite: Sqlite, db: Deno.PointerObject, rows: number): string {
  query(
    sqlite,
    db,
    "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, category INTEGER, price INTEGER)",
  );
  query(sqlite, db, "CREATE INDEX items_name ON items(name)");
  query(sqlite, db, "CREATE INDEX items_category ON items(category, price)");
  query(sqlite, db, "BEGIN");
  const out = new BigUint64Array(1);
  const insert = "INSERT INTO items(id, name, category, price) VALUES (?, ?, ?, ?)";
  let rc = sqlite.sqlite3_prepare_v2(db, cString(insert), -1, out, null);
  if (rc !== 0) throw sqliteError(sqlite, db, rc);
  const stmt = Deno.UnsafePointer.create(out[0]);
  try {
    for (let i = 1; i <= rows; i++) {
      sqlite.sqlite3_bind_int64(stmt, 1, BigInt(i));
      sqlite.sqlite3_bind_text(stmt, 2, cString(rowName(i)), -1, -1n);
      sqlite.sqlite3_bind_int64(stmt, 3, BigInt(i % 50));
      sqlite.sqlite3_bind_int64(stmt, 4, BigInt((i * 7919) % 10007));
      rc = sqlite.sqlite3_step(stmt);
      if (rc !== SQLITE_DONE) throw sqliteError(sqlite, db, rc);
      sqlite.sqlite3_reset(stmt);
    }
  } finally {
    sqlite.sqlite3_finalize(stmt);
  }
  query(sqlite, db, "COMMIT");
  const results = [
    query(sqlite, db, "SELECT count(*), sum(price), min(name), max(name) FROM items"),
    query(
      sqlite,
      db,
      "SELECT category, count(*), sum(price) FROM items GROUP BY category ORDER BY category",
    ),
    query(sqlite, db, "SELECT id, name FROM items WHERE name >= 'item-5' ORDER BY name LIMIT 20"),
    query(
      sqlite,
      db,
      "SELECT count(*) FROM items WHERE category = 7 AND price BETWEEN 100 AND 5000",
    ),
  ];
  query(
    sqlite,
    db,
    "UPDATE items SET price = price + 1, name = name || '-u' WHERE category % 3 = 0",
  );
  query(sqlite, db, "DELETE FROM items WHERE id % 10 = 0");
  results.push(
    query(sqlite, db, "SELECT count(*), sum(price), max(name) FROM items"),
    query(
      sqlite,
      db,
      "SELECT a.category, count(*) FROM items a JOIN items b ON a.id = b.id + 1 " +
        "WHERE a.category = b.category + 1 GROUP BY a.category ORDER BY 2 DESC LIMIT 5",
    ),
    query(
      sqlite,
      db,
      "SELECT group_concat(name, ',') FROM (SELECT name FROM items ORDER BY price DESC LIMIT 50)",
    ),
  );
  return results.join("\n--\n");
}

// ---- zlib --------------------------------------------------------------------------

const Z_FINISH = 4;
const Z_STREAM_END = 1;

/** `bytes` bytes of seeded text-like data (compresses about 3:1). */
export function compressibleData(bytes: number, seed: number): Uint8Array<ArrayBuffer> {
  const words = ["heap", "page", "block", "free", "arena", "malloc", "zlib", "lua", "sqlite", "\n"];
  const out = new Uint8Array(bytes);
  let s = seed >>> 0;
  let i = 0;
  while (i < bytes) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const word = words[s % words.length];
    for (let j = 0; j < word.length && i < bytes; j++) out[i++] = word.charCodeAt(j);
    if (i < bytes) out[i++] = 48 + (s >>> 28);
  }
  return out;
}

/** A z_stream in JS memory, with its allocator fields set by `allocator` (or zlib's own when null). */
function newStream(allocator: ZlibAllocator | null): BigUint64Array<ArrayBuffer> {
  const stream = new BigUint64Array(Z_STREAM_SIZE / 8);
  if (allocator !== null) allocator.setStreamFields(Deno.UnsafePointer.of(stream)!);
  return stream;
}

function setBuffers(
  stream: BigUint64Array,
  input: Uint8Array<ArrayBuffer>,
  output: Uint8Array<ArrayBuffer>,
): void {
  const u32 = new Uint32Array(stream.buffer);
  stream[0] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(input)));
  u32[2] = input.length; // avail_in
  stream[3] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(output)));
  u32[8] = output.length; // avail_out
}

/** Compresses `input` in one deflate call (level 1 to 9); returns the compressed bytes. */
export function deflateAll(
  zlib: Zlib,
  allocator: ZlibAllocator | null,
  input: Uint8Array<ArrayBuffer>,
  level: number,
): Uint8Array {
  const stream = newStream(allocator);
  const pointer = Deno.UnsafePointer.of(stream);
  let rc = zlib.deflateInit_(pointer, level, zlib.zlibVersion(), Z_STREAM_SIZE);
  if (rc !== 0) throw new Error(`deflateInit_ returned ${rc}`);
  const output = new Uint8Array(Number(zlib.deflateBound(pointer, BigInt(input.length))));
  setBuffers(stream, input, output);
  rc = zlib.deflate(pointer, Z_FINISH);
  const total = Number(stream[5]); // total_out
  zlib.deflateEnd(pointer);
  if (rc !== Z_STREAM_END) throw new Error(`deflate returned ${rc}`);
  return output.subarray(0, total);
}

/** Decompresses `input` into `outputBytes` bytes in one inflate call. */
export function inflateAll(
  zlib: Zlib,
  allocator: ZlibAllocator | null,
  input: Uint8Array<ArrayBuffer>,
  outputBytes: number,
): Uint8Array {
  const stream = newStream(allocator);
  const pointer = Deno.UnsafePointer.of(stream);
  let rc = zlib.inflateInit_(pointer, zlib.zlibVersion(), Z_STREAM_SIZE);
  if (rc !== 0) throw new Error(`inflateInit_ returned ${rc}`);
  const output = new Uint8Array(outputBytes);
  setBuffers(stream, input, output);
  rc = zlib.inflate(pointer, Z_FINISH);
  const total = Number(stream[5]);
  zlib.inflateEnd(pointer);
  if (rc !== Z_STREAM_END) throw new Error(`inflate returned ${rc}`);
  return output.subarray(0, total);
}
