/**
 * tsmalloc for C libraries: put a C library's memory on a `Heap`, to count
 * it (`stats()`), cap it (`limitBytes`), debug it (debug mode's red zones and
 * leak reports) and free it all with `close()`. Built from TypeScript alone
 * with `Deno.UnsafeCallback`: no compiled code is shipped.
 *
 * - {@link CAllocator}: malloc, calloc, realloc, free, aligned_alloc and
 *   malloc_usable_size as C function pointers, for any library.
 * - {@link LuaAllocator}: a `lua_Alloc` for Lua 5.4's `lua_newstate`.
 * - {@link SqliteAllocator}: SQLite 3's `sqlite3_mem_methods`.
 * - {@link ZlibAllocator}: `zalloc`/`zfree` for zlib's `z_stream`.
 *
 * ```ts
 * import { Heap } from "@tsmalloc/tsmalloc";
 * import { LuaAllocator, openLua } from "@tsmalloc/tsmalloc/native";
 * const lua = openLua();
 * using heap = new Heap();
 * using alloc = new LuaAllocator(heap);
 * const L = lua.symbols.lua_newstate(alloc.function, alloc.userData);
 * lua.symbols.lua_close(L);
 * ```
 *
 * @module
 */

export type {
  DebugOptions,
  Heap,
  HeapOptions,
  HeapStats,
  LeakedBlock,
  SharedHeapHandle,
} from "../mod.ts";
export { CAllocator, type CAllocatorOptions } from "./allocator.ts";
export type { CallbackOwner, Callbacks } from "./callbacks.ts";
export type { CBlocks } from "./blocks.ts";
export { LibraryAllocator } from "./library_allocator.ts";
export { LuaAllocator } from "./lua.ts";
export { SqliteAllocator, type SqliteAllocatorOptions } from "./sqlite.ts";
export { Z_STREAM_SIZE, Z_STREAM_ZALLOC_OFFSET, ZlibAllocator } from "./zlib.ts";
export {
  LUA_LIBRARY,
  LUA_SYMBOLS,
  openLua,
  openSqlite,
  openZlib,
  SQLITE_LIBRARY,
  SQLITE_SYMBOLS,
  ZLIB_LIBRARY,
  ZLIB_SYMBOLS,
} from "./libraries.ts";
