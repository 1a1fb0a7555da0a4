/**
 * What every allocator made for C code shares: its C-callable functions
 * (Deno.UnsafeCallback), their lifetime, and the errors caught inside them.
 *
 * An exception must never cross into C: Deno would swallow it and hand C a
 * 0 (with a `usize` result Deno 2.9 panics instead), so every callback
 * catches, keeps the error here for the caller and returns 0, which C code
 * reads as "out of memory". Results are declared `u64`, never `usize` or
 * `pointer`: a number returned for a `pointer` result becomes NULL.
 */

/** The error state and lifetime every C allocator of this module has. */
export interface CallbackOwner {
  /** The most recent error thrown inside a callback (C saw NULL or nothing), or undefined. */
  readonly lastError: unknown;
  /** How many errors callbacks caught since the allocator was made. */
  readonly errorCount: number;
  /** Releases the callbacks: the function pointers are dead afterwards. */
  close(): void;
}

/** The callbacks of one allocator, and the errors they caught. */
export class Callbacks {
  readonly #callbacks: Deno.UnsafeCallback[] = [];
  #closed = false;
  /** The most recent error thrown inside one of these callbacks, or undefined. */
  lastError: unknown = undefined;
  /** How many errors these callbacks caught. */
  errorCount = 0;

  /**
   * A C function pointer that calls `fn`. `label` names the function in JS
   * stacks (debug mode's allocation sites), e.g. "Lua lua_Alloc". A `u64`
   * result may be returned as a number (Deno's types say bigint only).
   */
  make<const D extends Deno.UnsafeCallbackDefinition>(
    label: string,
    definition: D,
    fn: (
      ...args: Parameters<Deno.UnsafeCallbackFunction<D["parameters"], D["result"]>>
    ) => number | bigint | void,
  ): Deno.PointerObject {
    Object.defineProperty(fn, "name", { value: label });
    const callback = new Deno.UnsafeCallback(
      definition,
      fn as Deno.UnsafeCallbackFunction<D["parameters"], D["result"]>,
    );
    this.#callbacks.push(callback as unknown as Deno.UnsafeCallback);
    return callback.pointer;
  }

  /** Keeps an error caught in a callback; returns 0 for the callback to return. */
  fail(error: unknown): 0 {
    this.lastError = error;
    this.errorCount++;
    return 0;
  }

  /** Whether close() ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Throws if closed: `what` is the operation asked for. */
  assertOpen(what: string): void {
    if (this.#closed) throw new TypeError(`${what}: the allocator is closed`);
  }

  /** Releases every callback once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const callback of this.#callbacks) callback.close();
    this.#callbacks.length = 0;
  }
}
