/**
 * A general C allocator over a Heap: function pointers with the C
 * signatures of malloc, calloc, realloc, free, aligned_alloc and
 * malloc_usable_size, for any C library that takes its allocator as
 * function pointers.
 *
 * Sizes and addresses arrive as 64-bit values (C's size_t and void *), which
 * Deno hands a callback as BigInts: they are read whole, so a size beyond
 * what can be had is refused (NULL), never truncated. The library adapters
 * (lua.ts, sqlite.ts, zlib.ts) take narrower parameters where their C types
 * allow it, and cost less a call.
 */

import type { Heap } from "../mod.ts";
import { type CallbackOwner, Callbacks } from "./callbacks.ts";

/** Options of `new CAllocator()`. */
export interface CAllocatorOptions {
  /**
   * Names the library in JS stacks, so debug mode's allocation sites (leak
   * reports, overflow reports) say which library asked: frames read
   * "<label> malloc", "<label> realloc"... Default "C".
   */
  label?: string;
}

const MAX_SIZE = Number.MAX_SAFE_INTEGER;

/**
 * C-callable malloc, calloc, realloc, free, aligned_alloc and
 * malloc_usable_size over a heap, valid until close(). A failure returns
 * NULL (0 from malloc_usable_size); an error thrown inside (a free of an
 * address that is not a block, a closed heap, debug mode's reports) is kept
 * in `lastError` and never crosses into C.
 *
 * ```ts
 * import { Heap } from "@tsmalloc/tsmalloc";
 * import { CAllocator } from "@tsmalloc/tsmalloc/native";
 * using heap = new Heap();
 * using c = new CAllocator(heap, { label: "mylib" });
 * // pass c.malloc, c.realloc and c.free to the library's set-allocator function
 * ```
 */
export class CAllocator implements CallbackOwner {
  /** The heap the blocks come from. */
  readonly heap: Heap;
  /** `void *malloc(size_t size)` */
  readonly malloc: Deno.PointerObject;
  /** `void *calloc(size_t count, size_t size)`: zeroed; NULL when the product overflows. */
  readonly calloc: Deno.PointerObject;
  /** `void *realloc(void *p, size_t size)`: realloc(NULL, n) allocates, realloc(p, 0) frees and returns NULL. */
  readonly realloc: Deno.PointerObject;
  /** `void free(void *p)`: free(NULL) does nothing. */
  readonly free: Deno.PointerObject;
  /** `void *aligned_alloc(size_t alignment, size_t size)`: alignment a power of two. */
  readonly alignedAlloc: Deno.PointerObject;
  /** `size_t malloc_usable_size(void *p)` */
  readonly usableSize: Deno.PointerObject;
  readonly #callbacks = new Callbacks();
  #live = 0;

  /** Makes the callbacks; they allocate from `heap` until close(). */
  constructor(heap: Heap, options: CAllocatorOptions = {}) {
    const label = options.label ?? "C";
    if (typeof label !== "string") {
      throw new TypeError(`label must be a string, got ${typeof label}`);
    }
    this.heap = heap;
    const callbacks = this.#callbacks;
    this.malloc = callbacks.make(
      `${label} malloc`,
      { parameters: ["u64"], result: "u64" },
      (size) => {
        try {
          return this.#counted(size > MAX_SIZE ? 0 : heap.malloc(Number(size)));
        } catch (error) {
          return callbacks.fail(error);
        }
      },
    );
    this.calloc = callbacks.make(
      `${label} calloc`,
      { parameters: ["u64", "u64"], result: "u64" },
      (count, size) => {
        try {
          if (count > MAX_SIZE || size > MAX_SIZE) return 0;
          return this.#counted(heap.calloc(Number(count), Number(size)));
        } catch (error) {
          return callbacks.fail(error);
        }
      },
    );
    this.realloc = callbacks.make(
      `${label} realloc`,
      { parameters: ["u64", "u64"], result: "u64" },
      (address, size) => {
        try {
          if (size > MAX_SIZE) return 0;
          const p = Number(address);
          const result = heap.realloc(p, Number(size));
          if (p === 0 && result !== 0) this.#live++;
          else if (p !== 0 && size === 0n) this.#live--;
          return result;
        } catch (error) {
          return callbacks.fail(error);
        }
      },
    );
    this.free = callbacks.make(
      `${label} free`,
      { parameters: ["u64"], result: "void" },
      (address) => {
        try {
          if (address === 0n) return;
          this.#live--; // C lets go of the block even if the heap throws
          heap.free(Number(address));
        } catch (error) {
          callbacks.fail(error);
        }
      },
    );
    this.alignedAlloc = callbacks.make(
      `${label} aligned_alloc`,
      { parameters: ["u64", "u64"], result: "u64" },
      (alignment, size) => {
        try {
          if (alignment > MAX_SIZE || size > MAX_SIZE) return 0;
          return this.#counted(heap.alignedAlloc(Number(alignment), Number(size)));
        } catch (error) {
          return callbacks.fail(error);
        }
      },
    );
    this.usableSize = callbacks.make(
      `${label} malloc_usable_size`,
      { parameters: ["u64"], result: "u64" },
      (address) => {
        try {
          return address === 0n ? 0 : heap.usableSize(Number(address));
        } catch (error) {
          return callbacks.fail(error);
        }
      },
    );
  }

  #counted(address: number): number {
    if (address !== 0) this.#live++;
    return address;
  }

  /** The most recent error thrown inside a callback, or undefined. */
  get lastError(): unknown {
    return this.#callbacks.lastError;
  }

  /** How many errors the callbacks caught. */
  get errorCount(): number {
    return this.#callbacks.errorCount;
  }

  /** Blocks handed out through these functions and not freed through them. */
  get liveBlocks(): number {
    return this.#live;
  }

  /** Releases the callbacks: C must not call the function pointers afterwards. */
  close(): void {
    this.#callbacks.close();
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}
