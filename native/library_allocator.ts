/**
 * What the allocators made for one C library (Lua, SQLite, zlib) share: the
 * heap, their callbacks, the blocks the library holds, and a close() that
 * refuses while the library still holds any (it would call a dead function
 * pointer).
 */

import type { Heap } from "../mod.ts";
import { type CallbackOwner, Callbacks } from "./callbacks.ts";
import { CBlocks } from "./blocks.ts";

/** The base of LuaAllocator, SqliteAllocator and ZlibAllocator. */
export abstract class LibraryAllocator implements CallbackOwner {
  /** The heap the library's memory comes from. */
  readonly heap: Heap;
  /** The callbacks C calls, and the errors caught inside them (for subclasses). */
  protected readonly callbacks: Callbacks = new Callbacks();
  /** The blocks the library holds (for subclasses). */
  protected readonly blocks: CBlocks;

  /** An allocator for one library, on `heap`. */
  constructor(heap: Heap) {
    this.heap = heap;
    this.blocks = new CBlocks(heap);
  }

  /** The most recent error thrown inside a callback (the library saw NULL), or undefined. */
  get lastError(): unknown {
    return this.callbacks.lastError;
  }

  /** How many errors the callbacks caught. */
  get errorCount(): number {
    return this.callbacks.errorCount;
  }

  /** Blocks the library holds: 0 once it has let go of everything (see each close()). */
  get liveBlocks(): number {
    return this.blocks.live;
  }

  /** Releases the callbacks; see each library's close(). */
  abstract close(): void;

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Releases the callbacks, or throws, changing nothing, while the library
   * holds blocks: `owner` names the class, `holder` the library and `hint`
   * what to call first.
   */
  protected releaseCallbacks(owner: string, holder: string, hint: string): void {
    if (this.callbacks.closed) return;
    if (this.blocks.live > 0) {
      throw new Error(`${owner}.close: ${holder} still holds ${this.blocks.live} blocks; ${hint}`);
    }
    this.callbacks.close();
  }
}
