/**
 * Helpers over heap blocks for Deno programs that talk to native code: typed
 * views with bounds and alignment checked, C strings, copies, addresses from
 * pointers, and blocks freed by `using`. The names follow
 * `Deno.UnsafePointerView` (`getCString`, `getArrayBuffer`, `copyInto`) and
 * `Deno.UnsafePointer` (`value`), with the heap as first argument: where
 * Deno's functions trust any pointer, these check that the bytes lie inside
 * a live block of the heap and throw otherwise (RangeError for a length or
 * offset out of the block, HeapError for an address that is no live block).
 *
 * ```ts
 * import { Heap } from "@tsmalloc/tsmalloc";
 * import { cString, getCString, typedArray } from "@tsmalloc/tsmalloc";
 *
 * using heap = new Heap();
 * const name = cString(heap, "héllo"); // a NUL-terminated UTF-8 copy
 * getCString(heap, name); // "héllo"
 * const p = heap.malloc(8 * 100);
 * const xs = typedArray(heap, Float64Array, p); // 100 doubles
 * xs[99] = 1.5;
 * heap.free(p);
 * heap.free(name);
 * ```
 *
 * Every view returned here follows the view rules of `heap.bytes()`: it is
 * detached (length 0) when a large block is freed or resized and when the
 * heap is closed.
 *
 * @module
 */

import type { Heap } from "./heap.ts";
import { HeapError } from "./errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A typed array constructor: Uint8Array, Int32Array, Float64Array, BigInt64Array, ... */
export interface TypedArrayConstructor<T> {
  /** Makes a view of `length` elements at `byteOffset` of `buffer`. */
  new (buffer: ArrayBuffer, byteOffset: number, length: number): T;
  /** Bytes per element (the alignment an address needs). */
  readonly BYTES_PER_ELEMENT: number;
  /** The type's name, for messages. */
  readonly name: string;
}

/**
 * A view of the whole live block whose bytes include `address` (an address
 * C returned into a block is fine); throws a HeapError if there is none.
 */
function blockView(heap: Heap, address: number, op: string): { start: number; view: Uint8Array } {
  const start = heap.blockOf(address);
  if (start !== 0) return { start, view: heap.bytes(start) };
  let code: "invalid-address" | "freed-block" = "invalid-address";
  try {
    heap.usableSize(address);
  } catch (error) {
    if (error instanceof HeapError && error.code === "freed-block") code = "freed-block";
  }
  throw new HeapError(
    code,
    address,
    code === "freed-block"
      ? `${op}: the block was freed`
      : `${op}: ${
        address === 0 ? "0 is not a block" : "no live block of this heap holds this address"
      }`,
  );
}

/**
 * A view of the `length` bytes (default: to the block's end) at `offset`
 * bytes from `address`, inside the block that holds `address`.
 */
function span(
  heap: Heap,
  op: string,
  address: number,
  offset: number,
  length?: number,
): Uint8Array {
  const { start, view } = blockView(heap, address, op);
  const size = view.length;
  const from = address - start + offset;
  if (!Number.isSafeInteger(offset) || from < 0 || from > size) {
    throw new RangeError(`${op}: offset ${offset} is outside the block's ${size} bytes`);
  }
  const n = length ?? size - from;
  if (!Number.isSafeInteger(n) || n < 0 || from + n > size) {
    throw new RangeError(
      `${op}: ${n} bytes at offset ${from} do not fit in the block's ${size} bytes`,
    );
  }
  return view.subarray(from, from + n);
}

/**
 * A view of `byteLength` bytes at `address` (default: to the block's end),
 * like `Deno.UnsafePointerView.getArrayBuffer` but bound to the block.
 * `address` may point inside a block.
 */
export function getArrayBuffer(heap: Heap, address: number, byteLength?: number): Uint8Array {
  return span(heap, "getArrayBuffer", address, 0, byteLength);
}

/**
 * A DataView of `byteLength` bytes at `address` (default: to the block's
 * end), for reading C structs field by field (`getInt32(4, true)`).
 */
export function dataView(heap: Heap, address: number, byteLength?: number): DataView {
  const bytes = span(heap, "dataView", address, 0, byteLength);
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * A typed array of `length` elements at `address` (default: as many as fit
 * to the block's end). Throws a RangeError if `address` is not a multiple of
 * the element size or the elements do not fit in the block.
 *
 * ```ts
 * const ints = typedArray(heap, Int32Array, p, 16);
 * ```
 */
export function typedArray<T>(
  heap: Heap,
  type: TypedArrayConstructor<T>,
  address: number,
  length?: number,
): T {
  const width = type.BYTES_PER_ELEMENT;
  if (typeof address === "number" && address % width !== 0) {
    throw new RangeError(
      `typedArray: a ${type.name} needs an address that is a multiple of ${width}, got 0x${
        address.toString(16)
      }`,
    );
  }
  const whole = span(heap, "typedArray", address, 0);
  const count = length ?? Math.floor(whole.length / width);
  if (!Number.isSafeInteger(count) || count < 0 || count * width > whole.length) {
    throw new RangeError(
      `typedArray: ${count} elements of ${width} bytes do not fit in the ${whole.length} bytes from 0x${
        address.toString(16)
      } to the block's end`,
    );
  }
  return new type(whole.buffer as ArrayBuffer, whole.byteOffset, count);
}

/**
 * Reads the NUL-terminated UTF-8 string at `address` (plus `offset`), like
 * `Deno.UnsafePointerView.getCString`, but never past the block's end: a
 * string with no NUL before it throws a RangeError.
 */
export function getCString(heap: Heap, address: number, offset = 0): string {
  const bytes = span(heap, "getCString", address, offset);
  const end = bytes.indexOf(0);
  if (end < 0) {
    throw new RangeError(`getCString: no NUL byte from there to the block's end`);
  }
  return decoder.decode(bytes.subarray(0, end));
}

/**
 * Writes `text` as NUL-terminated UTF-8 at `address` (plus `offset`);
 * returns the bytes written, NUL included. Throws a RangeError, writing
 * nothing, if it does not fit in the block.
 */
export function setCString(heap: Heap, address: number, text: string, offset = 0): number {
  const encoded = encoder.encode(text);
  const bytes = span(heap, "setCString", address, offset);
  if (encoded.length + 1 > bytes.length) {
    throw new RangeError(
      `setCString: ${
        encoded.length + 1
      } bytes (NUL included) do not fit in the ${bytes.length} bytes to the block's end`,
    );
  }
  bytes.set(encoded);
  bytes[encoded.length] = 0;
  return encoded.length + 1;
}

/**
 * C's `strdup`: a new block holding `text` as NUL-terminated UTF-8. Returns
 * its address (free it with `heap.free`), or 0 when out of memory.
 */
export function cString(heap: Heap, text: string): number {
  const encoded = encoder.encode(text);
  const address = heap.malloc(encoded.length + 1);
  if (address === 0) return 0;
  const bytes = heap.bytes(address, encoded.length + 1);
  bytes.set(encoded);
  bytes[encoded.length] = 0;
  return address;
}

/**
 * A new block holding a copy of `source` (no NUL added): the way to hand
 * JS bytes to C. Returns its address, or 0 when out of memory.
 */
export function copyIn(heap: Heap, source: ArrayBufferView | ArrayBuffer): number {
  const bytes = source instanceof ArrayBuffer
    ? new Uint8Array(source)
    : new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  const address = heap.malloc(bytes.length);
  if (address === 0) return 0;
  heap.bytes(address, bytes.length).set(bytes);
  return address;
}

/**
 * Copies `length` bytes (default: all) at `address` into `destination`,
 * like `Deno.UnsafePointerView.copyInto`; returns `destination`.
 */
export function copyInto<T extends ArrayBufferView>(
  heap: Heap,
  address: number,
  destination: T,
): T {
  const target = new Uint8Array(
    destination.buffer,
    destination.byteOffset,
    destination.byteLength,
  );
  target.set(span(heap, "copyInto", address, 0, target.length));
  return destination;
}

/** `memset(address, 0, length)` inside a block (default: to its end). */
export function zero(heap: Heap, address: number, length?: number): void {
  span(heap, "zero", address, 0, length).fill(0);
}

/**
 * `memmove(destination, source, length)` between two blocks (or inside one:
 * overlapping bytes are copied as if through a temporary buffer).
 */
export function copy(heap: Heap, destination: number, source: number, length: number): void {
  const to = span(heap, "copy", destination, 0, length);
  const from = span(heap, "copy", source, 0, length);
  // TypedArray.set copies as memmove does when both views share a buffer.
  to.set(from);
}

/**
 * The address (a plain number, as malloc returns) of a pointer from C: a
 * `Deno.PointerObject` (null is 0), a bigint (a "usize"/"u64" result), or a
 * number. Throws a RangeError above 2^53, where a number cannot hold it.
 */
export function addressOf(pointer: Deno.PointerValue | bigint | number): number {
  const value = typeof pointer === "bigint" || typeof pointer === "number"
    ? pointer
    : Deno.UnsafePointer.value(pointer);
  const address = Number(value);
  if (!Number.isSafeInteger(address) || address < 0) {
    throw new RangeError(`addressOf: ${String(value)} is not an address a number can hold`);
  }
  return address;
}

/**
 * A block freed when it goes out of scope:
 *
 * ```ts
 * {
 *   using block = new ScopedBlock(heap, 256);
 *   lib.symbols.fill(block.pointer, 256);
 * } // freed here, also when the scope is left by an exception
 * ```
 */
export class ScopedBlock implements Disposable {
  /** The heap the block belongs to. */
  readonly heap: Heap;
  /** The block's address. */
  readonly address: number;
  /** The size asked for. */
  readonly size: number;
  #freed = false;

  /**
   * Allocates `size` bytes (zeroed with `{ zero: true }`). Throws a
   * RangeError when out of memory, since there is no block to scope.
   */
  constructor(heap: Heap, size: number, options: { zero?: boolean } = {}) {
    const address = options.zero ? heap.calloc(1, size) : heap.malloc(size);
    if (address === 0) throw new RangeError(`ScopedBlock: out of memory for ${size} bytes`);
    this.heap = heap;
    this.address = address;
    this.size = size;
  }

  /** A view of the block's `size` bytes (see heap.bytes). */
  bytes(): Uint8Array {
    return this.heap.bytes(this.address, this.size);
  }

  /** A pointer object for FFI "pointer" parameters. */
  get pointer(): Deno.PointerObject {
    return this.heap.pointer(this.address);
  }

  /** Frees the block now; later calls (and the end of the scope) do nothing. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.heap.free(this.address);
  }

  /** Frees the block unless it was freed already or its heap is closed. */
  [Symbol.dispose](): void {
    if (this.#freed) return;
    this.#freed = true;
    try {
      this.heap.free(this.address);
    } catch (error) {
      // A closed heap took the block with it; anything else is the caller's to see.
      if ((error as { code?: string }).code !== "closed") throw error;
    }
  }
}
