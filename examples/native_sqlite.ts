/**
 * SQLite 3 on a heap: its memory counted and capped, the default allocator
 * put back on close.
 *
 *   deno run --allow-ffi examples/native_sqlite.ts
 *
 * Needs SQLite's shared library (Debian/Ubuntu: apt-get install libsqlite3-0).
 */

import { Heap } from "../mod.ts";
import { openSqlite, SqliteAllocator } from "../native/mod.ts";

const sqlite = openSqlite().symbols;
const text = (s: string) => new TextEncoder().encode(s + "\0");

/** Runs SQL; returns SQLite's result code (0 = SQLITE_OK, 7 = SQLITE_NOMEM). */
function exec(db: Deno.PointerValue, sql: string): number {
  return sqlite.sqlite3_exec(db, text(sql), null, null, null);
}

function open(): Deno.PointerValue {
  const out = new BigUint64Array(1);
  if (sqlite.sqlite3_open(text(":memory:"), out) !== 0) throw new Error("sqlite3_open failed");
  return Deno.UnsafePointer.create(out[0]);
}

const fill = `
  CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
  CREATE INDEX notes_body ON notes(body);
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
  INSERT INTO notes SELECT i, printf('note %08d %s', i, hex(randomblob(16))) FROM n;`;

// 1. SQLite on a heap capped at 64 MiB: the whole database fits.
{
  using heap = new Heap({ limitBytes: 64 * 2 ** 20 });
  using _sqlite = new SqliteAllocator(heap); // installed for the whole process until closed
  const db = open();
  console.log(`fill: result ${exec(db, fill)}`);
  const { allocatedBytes, liveBlocks } = heap.stats();
  console.log(`SQLite holds ${liveBlocks} blocks, ${(allocatedBytes / 2 ** 20).toFixed(1)} MiB`);
  sqlite.sqlite3_close(db);
  // leaving the block: SqliteAllocator.close() shuts SQLite down and restores its allocator
}

// 2. The same under an 8 MiB cap: SQLITE_NOMEM, and the program carries on.
{
  using heap = new Heap({ limitBytes: 8 * 2 ** 20 });
  using _sqlite = new SqliteAllocator(heap);
  const db = open();
  console.log(`fill under 8 MiB: result ${exec(db, fill)} (7 is SQLITE_NOMEM)`);
  console.log(
    `a small table still works: result ${exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)")}`,
  );
  sqlite.sqlite3_close(db);
}

// 3. Back on SQLite's own allocator.
const db = open();
exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
console.log(
  `SQLite's own allocator again: sqlite3_memory_used() = ${sqlite.sqlite3_memory_used()}`,
);
sqlite.sqlite3_close(db);
