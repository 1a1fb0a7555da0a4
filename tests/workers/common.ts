/**
 * What the Worker scripts of tests/shared.test.ts share: the message scope,
 * block patterns that tell every block (and its Worker) apart, the size mix,
 * and the calling thread's OS id (to know when a terminated Worker's thread
 * is really gone). Nothing here depends on timing.
 */

import { type Heap, HeapError } from "../../mod.ts";
import { KiB, type Rng } from "../helpers.ts";

/** The handle `heap.share()` returns (the type is not exported by mod.ts). */
export type Handle = ReturnType<Heap["share"]>;

/** The parts of a Worker's global scope the scripts use (typed without the worker lib). */
export interface WorkerScope {
  onmessage: ((event: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
}

/** The Worker's global scope. */
export const scope = globalThis as unknown as WorkerScope;

/** An error as it crosses postMessage (HeapError fields kept). */
export interface ErrorReport {
  name: string;
  message: string;
  code?: string;
  address?: number;
  stack?: string;
}

export function report(e: unknown): ErrorReport {
  if (e instanceof HeapError) {
    return { name: e.name, message: e.message, code: e.code, address: e.address, stack: e.stack };
  }
  if (e instanceof Error) return { name: e.name, message: e.message, stack: e.stack };
  return { name: "unknown", message: String(e) };
}

/** Tag of the `seq`-th block of Worker `id`: unique in the whole test (seq < 2^24). */
export function tagOf(id: number, seq: number): number {
  return ((id << 24) | (seq & 0xffffff)) >>> 0;
}

/** The Worker id a tag names. */
export function idOfTag(tag: number): number {
  return tag >>> 24;
}

/** The filler byte of a tagged block: never 0, so a zeroed block never passes. */
function fillByte(tag: number): number {
  return 1 + (((tag ^ Math.imul(tag >>> 24, 97)) >>> 0) % 251);
}

/**
 * Writes the pattern of `tag` over the first `size` bytes of the block:
 * the tag (little-endian u32) in bytes 0..3 and the tag's filler byte after.
 */
export function writePattern(heap: Heap, p: number, size: number, tag: number): void {
  if (size === 0) return;
  const bytes = heap.bytes(p, size);
  bytes.fill(fillByte(tag));
  for (let i = 0; i < 4 && i < size; i++) bytes[i] = (tag >>> (8 * i)) & 0xff;
}

/**
 * Checks the pattern of `tag` over the first `length` bytes of a block of
 * `size` bytes (length < size after a shrinking realloc). Returns a
 * description of the first difference, or null.
 */
export function patternMismatch(
  heap: Heap,
  p: number,
  size: number,
  tag: number,
  length = size,
): string | null {
  if (length === 0) return null;
  const bytes = heap.bytes(p, length);
  for (let i = 0; i < 4 && i < length; i++) {
    if (bytes[i] !== ((tag >>> (8 * i)) & 0xff)) {
      return `0x${p.toString(16)} (${size} B, tag ${tag.toString(16)}): tag byte ${i} is ${
        bytes[i]
      }`;
    }
  }
  const at = firstNot(bytes, Math.min(4, length), fillByte(tag));
  return at < 0
    ? null
    : `0x${p.toString(16)} (${size} B, tag ${tag.toString(16)}): byte ${at} is ${bytes[at]}, not ${
      fillByte(tag)
    }`;
}

/** Index of the first byte at or after `from` that is not `byte`, or -1 (word-wise where aligned). */
export function firstNot(bytes: Uint8Array, from: number, byte: number): number {
  const n = bytes.length;
  let i = from;
  while (i < n && (bytes.byteOffset + i) % 4 !== 0) {
    if (bytes[i] !== byte) return i;
    i++;
  }
  const words = (n - i) >>> 2;
  if (words > 0) {
    const w = new Uint32Array(bytes.buffer, bytes.byteOffset + i, words);
    const word = Math.imul(byte, 0x01010101) >>> 0;
    for (let k = 0; k < words; k++) {
      if (w[k] !== word) {
        for (let j = i + 4 * k; j < i + 4 * k + 4; j++) if (bytes[j] !== byte) return j;
      }
    }
    i += 4 * words;
  }
  for (; i < n; i++) if (bytes[i] !== byte) return i;
  return -1;
}

/**
 * The churn's size mix: mostly small (half of them up to 128 B), some
 * medium up to 64 KiB, a few large around 300 KiB.
 */
export function drawSize(rng: Rng): number {
  const r = rng.next();
  if (r < 0.45) return rng.int(1, 128);
  if (r < 0.88) return rng.int(129, 1024);
  if (r < 0.9993) return rng.int(1025, 64 * KiB);
  return rng.int(280 * KiB, 320 * KiB);
}

/** Lets the event loop run (messages from the main thread get in). */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

let gettid: (() => number) | undefined;

/** The calling thread's OS thread id (Linux). */
export function threadId(): number {
  gettid ??= Deno.dlopen("libc.so.6", { gettid: { parameters: [], result: "i32" } }).symbols
    .gettid;
  return gettid();
}

let tgkill: ((pid: number, tid: number, signal: number) => number) | undefined;
let getpid: (() => number) | undefined;

/** True once thread `tid` of this process has exited (Linux: tgkill with signal 0 fails). */
export function threadExited(tid: number): boolean {
  if (tgkill === undefined || getpid === undefined) {
    const libc = Deno.dlopen("libc.so.6", {
      tgkill: { parameters: ["i32", "i32", "i32"], result: "i32" },
      getpid: { parameters: [], result: "i32" },
    }).symbols;
    tgkill = libc.tgkill;
    getpid = libc.getpid;
  }
  return tgkill(getpid(), tid, 0) !== 0;
}
