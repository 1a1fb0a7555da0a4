/**
 * tsmalloc: a general-purpose allocator of native memory for Deno, written in
 * TypeScript on top of libc `mmap`/`munmap`/`madvise` through FFI.
 *
 * ```ts
 * import { Heap } from "@tsmalloc/tsmalloc";
 * using heap = new Heap();
 * const p = heap.malloc(64);
 * heap.bytes(p).fill(1);
 * heap.free(p);
 * ```
 *
 * @module
 */

import { Heap } from "./src/heap.ts";

export { Heap } from "./src/heap.ts";
export type { AttachOptions, HeapOptions, SharedHeapHandle } from "./src/options.ts";
export { HeapError, type HeapErrorCode } from "./src/errors.ts";
export type { HeapStats } from "./src/stats.ts";
export type { DebugOptions, LeakedBlock } from "./src/modes/debug.ts";
export type { HeapErrorDetails } from "./src/errors.ts";
export type {
  ClassSnapshot,
  FragmentationSnapshot,
  HeapSnapshot,
  LargeSnapshot,
  PageKind,
  PageSnapshot,
  SitesSnapshot,
  SnapshotOptions,
} from "./src/snapshot.ts";
export {
  addressOf,
  copy,
  copyIn,
  copyInto,
  cString,
  dataView,
  getArrayBuffer,
  getCString,
  ScopedBlock,
  setCString,
  typedArray,
  type TypedArrayConstructor,
  zero,
} from "./src/views.ts";

let defaultHeap: Heap | undefined;

/** The process-wide heap behind the free functions below, made on first use. */
export function getDefaultHeap(): Heap {
  return defaultHeap ??= new Heap();
}

/** `malloc` on the default heap. */
export function malloc(size: number): number {
  return (defaultHeap ??= new Heap()).malloc(size);
}

/** `calloc` on the default heap. */
export function calloc(count: number, size: number): number {
  return (defaultHeap ??= new Heap()).calloc(count, size);
}

/** `realloc` on the default heap. */
export function realloc(address: number, size: number): number {
  return (defaultHeap ??= new Heap()).realloc(address, size);
}

/** `free` on the default heap. */
export function free(address: number): void {
  (defaultHeap ??= new Heap()).free(address);
}

/** `alignedAlloc` on the default heap. */
export function alignedAlloc(alignment: number, size: number): number {
  return (defaultHeap ??= new Heap()).alignedAlloc(alignment, size);
}

/** `usableSize` on the default heap. */
export function usableSize(address: number): number {
  return (defaultHeap ??= new Heap()).usableSize(address);
}
