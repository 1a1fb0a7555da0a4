/**
 * Bindings of the few functions of Lua 5.4, SQLite 3 and zlib that the
 * examples, tests and benchmarks call: enough to run a script, a database
 * and a stream on a heap. Library names are the Debian/Ubuntu sonames
 * (packages liblua5.4-0, libsqlite3-0, zlib1g) and their macOS counterparts;
 * pass another path for another system.
 */

const IS_DARWIN = Deno.build.os === "darwin";

/** Default path of Lua 5.4's shared library. */
export const LUA_LIBRARY = IS_DARWIN ? "liblua.5.4.dylib" : "liblua5.4.so.0";
/** Default path of SQLite 3's shared library. */
export const SQLITE_LIBRARY = IS_DARWIN ? "libsqlite3.dylib" : "libsqlite3.so.0";
/** Default path of zlib's shared library. */
export const ZLIB_LIBRARY = IS_DARWIN ? "libz.1.dylib" : "libz.so.1";

/** Lua 5.4: states, scripts, results. */
export const LUA_SYMBOLS = {
  lua_newstate: { parameters: ["pointer", "pointer"], result: "pointer" },
  luaL_newstate: { parameters: [], result: "pointer" },
  luaL_openlibs: { parameters: ["pointer"], result: "void" },
  luaL_loadstring: { parameters: ["pointer", "buffer"], result: "i32" },
  /** lua_pcallk(L, nargs, nresults, errfunc, ctx, k) */
  lua_pcallk: { parameters: ["pointer", "i32", "i32", "i32", "isize", "pointer"], result: "i32" },
  lua_close: { parameters: ["pointer"], result: "void" },
  lua_settop: { parameters: ["pointer", "i32"], result: "void" },
  lua_gettop: { parameters: ["pointer"], result: "i32" },
  /** lua_tolstring(L, index, size_t *len) */
  lua_tolstring: { parameters: ["pointer", "i32", "pointer"], result: "pointer" },
  lua_tointegerx: { parameters: ["pointer", "i32", "pointer"], result: "i64" },
  lua_newuserdatauv: { parameters: ["pointer", "usize", "i32"], result: "pointer" },
  lua_setglobal: { parameters: ["pointer", "buffer"], result: "void" },
  /** lua_gc(L, what, ...) is variadic; LUA_GCCOUNT (3) and LUA_GCCOLLECT (2) take no more. */
  lua_gc: { parameters: ["pointer", "i32"], result: "i32" },
} as const;

/** SQLite 3: connections, statements, results. */
export const SQLITE_SYMBOLS = {
  sqlite3_open: { parameters: ["buffer", "buffer"], result: "i32" },
  sqlite3_close: { parameters: ["pointer"], result: "i32" },
  /** sqlite3_exec(db, sql, callback, arg, char **errmsg) */
  sqlite3_exec: {
    parameters: ["pointer", "buffer", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  /** sqlite3_prepare_v2(db, sql, nbytes, sqlite3_stmt **stmt, const char **tail) */
  sqlite3_prepare_v2: {
    parameters: ["pointer", "buffer", "i32", "buffer", "pointer"],
    result: "i32",
  },
  sqlite3_step: { parameters: ["pointer"], result: "i32" },
  sqlite3_reset: { parameters: ["pointer"], result: "i32" },
  sqlite3_finalize: { parameters: ["pointer"], result: "i32" },
  sqlite3_bind_int64: { parameters: ["pointer", "i32", "i64"], result: "i32" },
  /** sqlite3_bind_text(stmt, index, text, nbytes, destructor): pass -1n (SQLITE_TRANSIENT). */
  sqlite3_bind_text: { parameters: ["pointer", "i32", "buffer", "i32", "isize"], result: "i32" },
  sqlite3_column_count: { parameters: ["pointer"], result: "i32" },
  sqlite3_column_int64: { parameters: ["pointer", "i32"], result: "i64" },
  sqlite3_column_text: { parameters: ["pointer", "i32"], result: "pointer" },
  sqlite3_errmsg: { parameters: ["pointer"], result: "pointer" },
  sqlite3_extended_errcode: { parameters: ["pointer"], result: "i32" },
  sqlite3_memory_used: { parameters: [], result: "i64" },
} as const;

/** zlib: deflate and inflate streams. */
export const ZLIB_SYMBOLS = {
  zlibVersion: { parameters: [], result: "pointer" },
  /** deflateInit_(strm, level, version, sizeof(z_stream)) */
  deflateInit_: { parameters: ["pointer", "i32", "pointer", "i32"], result: "i32" },
  deflate: { parameters: ["pointer", "i32"], result: "i32" },
  deflateEnd: { parameters: ["pointer"], result: "i32" },
  /** inflateInit_(strm, version, sizeof(z_stream)) */
  inflateInit_: { parameters: ["pointer", "pointer", "i32"], result: "i32" },
  inflate: { parameters: ["pointer", "i32"], result: "i32" },
  inflateEnd: { parameters: ["pointer"], result: "i32" },
  deflateBound: { parameters: ["pointer", "u64"], result: "u64" },
} as const;

/** Opens Lua 5.4 (dlopen needs --allow-ffi only). */
export function openLua(path: string = LUA_LIBRARY): Deno.DynamicLibrary<typeof LUA_SYMBOLS> {
  return Deno.dlopen(path, LUA_SYMBOLS);
}

/** Opens SQLite 3. */
export function openSqlite(
  path: string = SQLITE_LIBRARY,
): Deno.DynamicLibrary<typeof SQLITE_SYMBOLS> {
  return Deno.dlopen(path, SQLITE_SYMBOLS);
}

/** Opens zlib. */
export function openZlib(path: string = ZLIB_LIBRARY): Deno.DynamicLibrary<typeof ZLIB_SYMBOLS> {
  return Deno.dlopen(path, ZLIB_SYMBOLS);
}
