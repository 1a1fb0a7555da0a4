/**
 * SQLite 3's memory on a heap: `sqlite3_mem_methods` installed with
 * `sqlite3_config(SQLITE_CONFIG_MALLOC, ...)`, the default restored on close.
 *
 *   struct sqlite3_mem_methods {          offset
 *     void *(*xMalloc)(int);                  0   callback
 *     void (*xFree)(void*);                   8   callback
 *     void *(*xRealloc)(void*, int);         16   callback
 *     int (*xSize)(void*);                   24   callback
 *     int (*xRoundup)(int);                  32   libc abs: the identity on sizes
 *     int (*xInit)(void*);                   40   libc abs: abs(NULL) = 0 = SQLITE_OK
 *     void (*xShutdown)(void*);              48   libc abs (result ignored)
 *     void *pAppData;                        56   NULL
 *   };
 *
 * What keeps the cost down: SQLite's sizes are `int`, and addresses are
 * `u32` when the heap's arena lies below 2^32 (see blocks.ts), so no
 * argument is boxed; xRoundup, xInit and xShutdown are native functions, no
 * callback; and SQLITE_CONFIG_MEMSTATUS is turned off (as long as this
 * allocator is installed), which spares an xSize callback on every malloc
 * and free (sqlite3_memory_used() then reads 0; the heap's stats() count
 * SQLite's memory instead).
 *
 * `sqlite3_config` is variadic. On x86-64 and on Linux arm64 a variadic
 * argument travels where a fixed one would, so it is declared with fixed
 * parameters; on Apple arm64 variadic arguments go on the stack, so the
 * declaration pads the eight argument registers first.
 */

import type { Heap } from "../mod.ts";
import { LibraryAllocator } from "./library_allocator.ts";
import { nativeFunction } from "./libc.ts";
import { SQLITE_LIBRARY } from "./libraries.ts";

const SQLITE_CONFIG_MALLOC = 4;
const SQLITE_CONFIG_GETMALLOC = 5;
const SQLITE_CONFIG_MEMSTATUS = 9;
const SQLITE_OK = 0;
const MAX_INT = 0x7fff_ffff;

/** Apple arm64: integer arguments that fill x1..x7, so the variadic one lands on the stack. */
const VARIADIC_PAD = Deno.build.os === "darwin" && Deno.build.arch === "aarch64" ? 7 : 0;
const PAD_TYPES: "i64"[] = new Array(VARIADIC_PAD).fill("i64");
const PAD_VALUES: bigint[] = new Array(VARIADIC_PAD).fill(0n);

const SYMBOLS = {
  sqlite3_initialize: { parameters: [], result: "i32" },
  sqlite3_shutdown: { parameters: [], result: "i32" },
  sqlite3_config_pointer: {
    name: "sqlite3_config",
    parameters: ["i32", ...PAD_TYPES, "pointer"],
    result: "i32",
  },
  sqlite3_config_int: {
    name: "sqlite3_config",
    parameters: ["i32", ...PAD_TYPES, "i32"],
    result: "i32",
  },
} as const;

type SqliteSymbols = {
  sqlite3_initialize(): number;
  sqlite3_shutdown(): number;
  sqlite3_config_pointer(...args: unknown[]): number;
  sqlite3_config_int(...args: unknown[]): number;
};

/** Options of `new SqliteAllocator()`. */
export interface SqliteAllocatorOptions {
  /** The SQLite library (the one the program uses). Default: the system's libsqlite3. */
  library?: string;
}

/** The allocator installed in this process's SQLite, if any (SQLite's configuration is global). */
let installed: SqliteAllocator | null = null;

/**
 * Installs a heap as SQLite's memory allocator (for the whole process),
 * until close() puts back the allocator SQLite had. Install it before
 * opening connections; close every connection before close().
 *
 * ```ts
 * import { Heap } from "@tsmalloc/tsmalloc";
 * import { openSqlite, SqliteAllocator } from "@tsmalloc/tsmalloc/native";
 * using heap = new Heap({ limitBytes: 256 * 2 ** 20 });
 * using sqlite = new SqliteAllocator(heap);
 * const lib = openSqlite();
 * // ... sqlite3_open, queries (SQLITE_NOMEM past the cap), sqlite3_close ...
 * ```
 */
export class SqliteAllocator extends LibraryAllocator {
  readonly #library: Deno.DynamicLibrary<typeof SYMBOLS>;
  readonly #sqlite: SqliteSymbols;
  /** The mem methods SQLite had before, put back by close(). */
  readonly #saved = new BigUint64Array(8);
  #open = false;

  /** Shuts SQLite down, installs the heap's methods and initializes SQLite again. */
  constructor(heap: Heap, options: SqliteAllocatorOptions = {}) {
    if (installed !== null) {
      throw new TypeError(
        "SqliteAllocator: SQLite already allocates from a heap; close() it first",
      );
    }
    const path = options.library ?? SQLITE_LIBRARY;
    if (typeof path !== "string") {
      throw new TypeError(`library must be a string, got ${typeof path}`);
    }
    super(heap);
    this.#library = Deno.dlopen(path, SYMBOLS);
    this.#sqlite = this.#library.symbols as unknown as SqliteSymbols;
    try {
      this.#install(this.#makeMethods());
    } catch (error) {
      this.callbacks.close();
      this.#library.close();
      throw error;
    }
    installed = this;
  }

  /** The eight words of a sqlite3_mem_methods over this heap. */
  #makeMethods(): BigUint64Array {
    const blocks = this.blocks;
    const callbacks = this.callbacks;
    const address = blocks.narrow ? "u32" : "u64";
    const full = blocks.narrow
      ? (p: number | bigint) => blocks.resolve(p as number)
      : (p: number | bigint) => Number(p);
    const xMalloc = callbacks.make(
      "SQLite xMalloc",
      { parameters: ["i32"], result: "u64" },
      (size) => {
        try {
          return size > 0 ? blocks.malloc(size) : 0;
        } catch (error) {
          return callbacks.fail(error);
        }
      },
    );
    const xFree = callbacks.make(
      "SQLite xFree",
      { parameters: [address], result: "void" },
      (p) => {
        try {
          if (p !== 0 && p !== 0n) blocks.free(full(p));
        } catch (error) {
          callbacks.fail(error);
        }
      },
    );
    const xRealloc = callbacks.make(
      "SQLite xRealloc",
      { parameters: [address, "i32"], result: "u64" },
      (p, size) => {
        try {
          if (size <= 0) return 0;
          return p === 0 || p === 0n ? blocks.malloc(size) : blocks.realloc(full(p), size);
        } catch (error) {
          return callbacks.fail(error);
        }
      },
    );
    const xSize = callbacks.make(
      "SQLite xSize",
      { parameters: [address], result: "i32" },
      (p) => {
        try {
          return p === 0 || p === 0n ? 0 : Math.min(blocks.usableSize(full(p)), MAX_INT);
        } catch (error) {
          return callbacks.fail(error);
        }
      },
    );
    const abs = nativeFunction("abs");
    const words = [xMalloc, xFree, xRealloc, xSize, abs, abs, abs, null];
    return new BigUint64Array(words.map((p) => BigInt(Deno.UnsafePointer.value(p))));
  }

  #install(methods: BigUint64Array): void {
    const s = this.#sqlite;
    check(s.sqlite3_shutdown(), "sqlite3_shutdown");
    check(
      s.sqlite3_config_pointer(
        SQLITE_CONFIG_GETMALLOC,
        ...PAD_VALUES,
        Deno.UnsafePointer.of(this.#saved),
      ),
      "sqlite3_config(SQLITE_CONFIG_GETMALLOC)",
    );
    check(
      s.sqlite3_config_pointer(SQLITE_CONFIG_MALLOC, ...PAD_VALUES, Deno.UnsafePointer.of(methods)),
      "sqlite3_config(SQLITE_CONFIG_MALLOC)",
    );
    this.#open = true;
    try {
      check(
        s.sqlite3_config_int(SQLITE_CONFIG_MEMSTATUS, ...PAD_VALUES, 0),
        "sqlite3_config(SQLITE_CONFIG_MEMSTATUS)",
      );
      check(s.sqlite3_initialize(), "sqlite3_initialize");
    } catch (error) {
      this.#restore();
      throw error;
    }
  }

  /** Puts back the methods SQLite had and turns memory statistics back on. */
  #restore(): void {
    const s = this.#sqlite;
    s.sqlite3_shutdown();
    s.sqlite3_config_pointer(
      SQLITE_CONFIG_MALLOC,
      ...PAD_VALUES,
      Deno.UnsafePointer.of(this.#saved),
    );
    s.sqlite3_config_int(SQLITE_CONFIG_MEMSTATUS, ...PAD_VALUES, 1);
    this.#open = false;
  }

  /**
   * Shuts SQLite down and puts back the allocator it had before (with
   * memory statistics on). Throws, changing nothing, while SQLite still
   * holds blocks: close every connection (sqlite3_close) first.
   */
  close(): void {
    if (!this.#open) return;
    const s = this.#sqlite;
    s.sqlite3_shutdown();
    if (this.blocks.live > 0) {
      s.sqlite3_initialize();
      throw new Error(
        `SqliteAllocator.close: SQLite still holds ${this.blocks.live} blocks; sqlite3_close every connection first`,
      );
    }
    this.#restore();
    this.callbacks.close();
    this.#library.close();
    installed = null;
  }
}

function check(code: number, what: string): void {
  if (code !== SQLITE_OK) throw new Error(`${what} failed with SQLite result code ${code}`);
}
