/**
 * Lua 5.4 on a heap: count a Lua state's memory, cap it, and find its leaks.
 *
 *   deno run --allow-ffi examples/native_lua.ts
 *
 * Needs Lua 5.4's shared library (Debian/Ubuntu: apt-get install liblua5.4-0).
 */

import { Heap } from "../mod.ts";
import { LuaAllocator, openLua } from "../native/mod.ts";

const lua = openLua().symbols;
const text = (s: string) => new TextEncoder().encode(s + "\0");

/** Runs a chunk of Lua; returns its first result as a string, or the error. */
function run(L: Deno.PointerValue, code: string): string {
  const status = lua.luaL_loadstring(L, text(code)) || lua.lua_pcallk(L, 0, 1, 0, 0n, null);
  const result = lua.lua_tolstring(L, -1, null);
  lua.lua_settop(L, 0);
  const value = result === null ? "nil" : Deno.UnsafePointerView.getCString(result);
  return status === 0 ? value : `error: ${value}`;
}

// 1. Every byte Lua allocates comes from the heap, and stats() sees it.
{
  using heap = new Heap();
  using alloc = new LuaAllocator(heap);
  const L = lua.lua_newstate(alloc.function, alloc.userData);
  lua.luaL_openlibs(L);
  console.log(run(L, `words = {} for i = 1, 50000 do words[i] = "word" .. i end return #words`));
  const { allocatedBytes, liveBlocks } = heap.stats();
  console.log(`Lua holds ${liveBlocks} blocks, ${(allocatedBytes / 2 ** 20).toFixed(1)} MiB`);
  lua.lua_close(L);
  console.log(`after lua_close: ${heap.stats().liveBlocks} blocks live`);
}

// 2. A cap: past limitBytes Lua gets a memory error, and the state carries on.
{
  using heap = new Heap({ limitBytes: 8 * 2 ** 20 });
  using alloc = new LuaAllocator(heap);
  const L = lua.lua_newstate(alloc.function, alloc.userData);
  lua.luaL_openlibs(L);
  console.log(run(L, `local t = {} for i = 1, 1e7 do t[i] = ("x"):rep(i % 100) end`));
  console.log(run(L, `collectgarbage() return "still running: " .. (1 + 1)`));
  lua.lua_close(L);
}

// 3. Debug mode: blocks of a state never closed are listed with their allocation site.
{
  using heap = new Heap({ debug: true });
  const alloc = new LuaAllocator(heap);
  const L = lua.lua_newstate(alloc.function, alloc.userData);
  lua.luaL_openlibs(L);
  run(L, `cache = {} for i = 1, 10 do cache[i] = ("entry"):rep(i) end`);
  console.log(heap.leakReport().split("\n").slice(0, 4).join("\n"));
  lua.lua_close(L);
  alloc.close();
}
