/**
 * Lua 5.4's allocator on a heap: a `lua_Alloc` for `lua_newstate`.
 *
 *   void *lua_Alloc(void *ud, void *ptr, size_t osize, size_t nsize);
 *
 * Lua funnels every allocation, resize and free through this one function,
 * so its cost is the C-to-JS callback's, which grows with each argument, and
 * more for an argument Deno must box (docs/native.md). The declaration is as
 * narrow as the C types allow:
 * - `ud` as `u8`: this allocator needs no user data (pass NULL);
 * - `ptr` as `u32` when the heap's arena lies below 2^32 (see blocks.ts for
 *   the blocks that do not), else `u64`;
 * - `osize` as `u32`: read only as a type tag when ptr is NULL (the heap
 *   knows each block's size);
 * - `nsize` as `u64`: a size must never be truncated (a 4 GiB + 16 byte
 *   string read as 16 bytes would be an overflow), so it costs a BigInt;
 * - the result as `u64`: a number (a `pointer` result needs a pointer object).
 */

import type { Heap } from "../mod.ts";
import { LibraryAllocator } from "./library_allocator.ts";

const MAX_SIZE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * A `lua_Alloc` that allocates from a heap, valid until close().
 *
 * ```ts
 * import { Heap } from "@tsmalloc/tsmalloc";
 * import { LuaAllocator, openLua } from "@tsmalloc/tsmalloc/native";
 * const lua = openLua();
 * using heap = new Heap({ limitBytes: 64 * 2 ** 20 });
 * using alloc = new LuaAllocator(heap);
 * const L = lua.symbols.lua_newstate(alloc.function, alloc.userData);
 * // ... run Lua; heap.stats() counts its memory ...
 * lua.symbols.lua_close(L);
 * ```
 */
export class LuaAllocator extends LibraryAllocator {
  /** The `lua_Alloc` to pass to `lua_newstate` (and `lua_setallocf`). */
  readonly function: Deno.PointerObject;
  /** The `ud` to pass with it: NULL. */
  readonly userData: null = null;

  /** Makes the `lua_Alloc`; it allocates from `heap` until close(). */
  constructor(heap: Heap) {
    super(heap);
    const blocks = this.blocks;
    const callbacks = this.callbacks;
    if (blocks.narrow) {
      this.function = callbacks.make(
        "Lua lua_Alloc",
        { parameters: ["u8", "u32", "u32", "u64"], result: "u64" },
        (_ud, ptr, _osize, nsize) => {
          try {
            if (nsize === 0n) {
              if (ptr !== 0) blocks.free(blocks.resolve(ptr));
              return 0;
            }
            if (nsize > MAX_SIZE) return 0;
            const size = Number(nsize);
            return ptr === 0 ? blocks.malloc(size) : blocks.realloc(blocks.resolve(ptr), size);
          } catch (error) {
            return callbacks.fail(error);
          }
        },
      );
    } else {
      this.function = callbacks.make(
        "Lua lua_Alloc",
        { parameters: ["u8", "u64", "u32", "u64"], result: "u64" },
        (_ud, ptr, _osize, nsize) => {
          try {
            if (nsize === 0n) {
              if (ptr !== 0n) blocks.free(Number(ptr));
              return 0;
            }
            if (nsize > MAX_SIZE) return 0;
            const size = Number(nsize);
            return ptr === 0n ? blocks.malloc(size) : blocks.realloc(Number(ptr), size);
          } catch (error) {
            return callbacks.fail(error);
          }
        },
      );
    }
  }

  /**
   * Releases the callback. Throws, changing nothing, while Lua still holds
   * blocks: a state that is still open would call a dead function pointer.
   */
  close(): void {
    this.releaseCallbacks("LuaAllocator", "Lua", "lua_close every state first");
  }
}
