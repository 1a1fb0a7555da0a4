/**
 * The options of `new Heap()` and `Heap.attach()`, their defaults, and their
 * checks: an unknown key (a typo such as `idleratio`) or a value of the
 * wrong type throws a TypeError that names the option; a number out of
 * range throws a RangeError.
 */

import { MAX_ARENA_BYTES, MIN_ARENA_BYTES, UNIT_SIZE } from "./arena/arena.ts";
import type { DebugOptions } from "./modes/debug.ts";

/** Options for `new Heap()`. */
export interface HeapOptions {
  /**
   * Address space reserved for small and medium blocks (blocks up to
   * 128 KiB), in bytes: a multiple of 64 KiB from 16 MiB to 4 GiB. It costs
   * no memory until used. Default 4 GiB.
   */
  arenaBytes?: number;
  /**
   * Empty pages kept committed for reuse, in bytes, before the oldest are
   * given back to the OS. 0 gives every empty page back at once, except the
   * one page per size class that stays as that class's current page (so
   * that a malloc/free pair does not map and unmap a page). Unless idleRatio
   * is Infinity, retained pages beyond idleFloorBytes also go back, oldest
   * first, before the heap commits memory past its peak. trim() gives back
   * all of them. Default 16 MiB.
   */
  retainBytes?: number;
  /**
   * Idle memory the heap keeps, as a fraction of allocatedBytes. Idle memory
   * is committed memory of pages in use that holds no live block: free
   * blocks (empty pages are retainBytes' concern). When the heap is about to
   * commit memory past its peak and its idle memory is over this budget, it
   * first gives back the whole OS pages of in-use pages that hold no live
   * block. `Infinity` turns this off. Shared and secure heaps never purge
   * pages in use. Default 0.25.
   */
  idleRatio?: number;
  /**
   * The idle budget is never below this many bytes, whatever idleRatio says;
   * and retained pages up to this many bytes stay when the heap grows past its
   * peak. Default 256 KiB.
   */
  idleFloorBytes?: number;
  /**
   * Debug mode: red zones around every block, junk and poison fills, a
   * quarantine of freed blocks, and the JS stack of every allocation (see
   * debug.ts). `true` takes the defaults.
   */
  debug?: boolean | DebugOptions;
  /**
   * Secure mode, after mimalloc's secure mode, hardened_malloc and Scudo:
   * free-list links encoded with a per-heap random key and checked before
   * they are followed, checksummed page metadata, fresh pages handed out in
   * random order, and inaccessible guard pages at the end of every page and
   * around every large block. Default false.
   */
  secure?: boolean;
  /**
   * A heap that several Workers use at once: pass `heap.share()` to a Worker
   * and call `Heap.attach(handle)` there (see owners.ts). Default false.
   */
  shared?: boolean;
  /**
   * Reserve the arena at 256 MiB when that address range is free, so that
   * block addresses are below 2^31: V8 then handles them as small integers
   * (no heap number per address returned from a call it did not inline),
   * which makes a malloc+free pair about 20% faster. One heap at a time gets that
   * place; the others work the same, a little slower. Set false if a native
   * library in the process needs the low 2 GiB for itself (MAP_32BIT users
   * such as old LuaJIT builds). Default true.
   */
  lowAddresses?: boolean;
  /**
   * A cap on the heap's memory, in bytes: past it, malloc, calloc, realloc
   * and alignedAlloc return 0 (as when the OS refuses memory) and the heap
   * carries on. What is counted is the footprint: the full size of every
   * page in use (64 KiB or 1 MiB, touched or not), the committed bytes of
   * retained empty pages, the mappings of large blocks, and the heap's
   * metadata. That is `committedBytes` plus the untouched part of pages in
   * use, so `committedBytes` never passes the cap. It is checked only when a
   * page is taken or a mapping made or grown (retained pages go back to the
   * OS first when that keeps the heap under the cap), never on a malloc or
   * free served from a page in use. A non-negative integer, or Infinity (the
   * default) for no cap.
   */
  limitBytes?: number;
}

/** What `heap.share()` returns and `Heap.attach()` takes: plain numbers, structured-clonable. */
export interface SharedHeapHandle {
  /** Marks the object as a shared-heap handle. */
  readonly tsmalloc: "shared-heap";
  /** Address of the arena. */
  readonly base: number;
  /** Bytes reserved for the arena. */
  readonly size: number;
  /** Whether the heap runs in secure mode. */
  readonly secure: boolean;
}

/** Options of `Heap.attach()`: the attaching Worker's own debug mode. */
export interface AttachOptions {
  /** Debug mode for this Worker's calls (see HeapOptions.debug). */
  debug?: boolean | DebugOptions;
}

const DEFAULT_ARENA_BYTES = 2 ** 32;
const DEFAULT_RETAIN_BYTES = 16 * 1024 * 1024;
const DEFAULT_IDLE_RATIO = 0.25;
const DEFAULT_IDLE_FLOOR_BYTES = 256 * 1024;

/** HeapOptions checked, with every default filled in. */
export interface ResolvedHeapOptions {
  arenaBytes: number;
  retainBytes: number;
  idleRatio: number;
  idleFloorBytes: number;
  limitBytes: number;
  lowAddresses: boolean;
}

/** Checks `options` (see validateHeapOptions, and arenaBytes' range) and fills in the defaults. */
export function resolveHeapOptions(options: HeapOptions): ResolvedHeapOptions {
  validateHeapOptions(options);
  const arenaBytes = options.arenaBytes ?? DEFAULT_ARENA_BYTES;
  if (
    arenaBytes < MIN_ARENA_BYTES || arenaBytes > MAX_ARENA_BYTES || arenaBytes % UNIT_SIZE !== 0
  ) {
    throw new RangeError(
      `arenaBytes must be a multiple of 64 KiB from 16 MiB to 4 GiB, got ${arenaBytes}`,
    );
  }
  return {
    arenaBytes,
    retainBytes: options.retainBytes ?? DEFAULT_RETAIN_BYTES,
    idleRatio: options.idleRatio ?? DEFAULT_IDLE_RATIO,
    idleFloorBytes: options.idleFloorBytes ?? DEFAULT_IDLE_FLOOR_BYTES,
    limitBytes: options.limitBytes ?? Infinity,
    lowAddresses: options.lowAddresses !== false,
  };
}

type Kind = "boolean" | "count" | "ratio" | "limit" | "debug";

/** Every option and the kind of value it takes. */
const HEAP_OPTIONS: Record<string, Kind> = {
  arenaBytes: "count",
  retainBytes: "count",
  idleRatio: "ratio",
  idleFloorBytes: "count",
  limitBytes: "limit",
  debug: "debug",
  secure: "boolean",
  shared: "boolean",
  lowAddresses: "boolean",
};

const DEBUG_OPTIONS: Record<string, Kind> = {
  quarantineBytes: "count",
  quarantineBlocks: "count",
  stacks: "boolean",
};

/** Throws unless `options` is an object of Heap.attach's options (debug), each of its kind. */
export function validateAttachOptions(options: unknown): void {
  checkObject(options, "Heap.attach options", { debug: "debug" }, "");
  const debug = (options as { debug?: unknown }).debug;
  if (typeof debug === "object" && debug !== null) {
    checkObject(debug, "debug", DEBUG_OPTIONS, "debug.");
  }
}

/** Throws unless `options` is an object of known options, each undefined or of its kind. */
export function validateHeapOptions(options: unknown, what = "Heap options"): void {
  checkObject(options, what, HEAP_OPTIONS, "");
  const debug = (options as { debug?: unknown }).debug;
  if (typeof debug === "object" && debug !== null) {
    checkObject(debug, "debug", DEBUG_OPTIONS, "debug.");
  }
}

function checkObject(
  options: unknown,
  what: string,
  known: Record<string, Kind>,
  prefix: string,
): void {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(`${what} must be an object, got ${describe(options)}`);
  }
  for (const key of Object.keys(options)) {
    const kind = Object.hasOwn(known, key) ? known[key] : undefined;
    if (kind === undefined) {
      throw new TypeError(
        `unknown option ${prefix}${key} (known: ${Object.keys(known).join(", ")})`,
      );
    }
    const value = (options as Record<string, unknown>)[key];
    if (value !== undefined) checkValue(`${prefix}${key}`, kind, value);
  }
}

function checkValue(name: string, kind: Kind, value: unknown): void {
  switch (kind) {
    case "boolean":
      if (typeof value !== "boolean") {
        throw new TypeError(`option ${name} must be a boolean, got ${describe(value)}`);
      }
      return;
    case "debug":
      if (typeof value !== "boolean" && (typeof value !== "object" || value === null)) {
        throw new TypeError(
          `option ${name} must be a boolean or an object of debug options, got ${describe(value)}`,
        );
      }
      return;
    case "count":
      if (typeof value !== "number") {
        throw new TypeError(`option ${name} must be a number, got ${describe(value)}`);
      }
      if (!Number.isSafeInteger(value) || value < 0) {
        throw new RangeError(`option ${name} must be a non-negative integer, got ${value}`);
      }
      return;
    case "limit":
      if (typeof value !== "number") {
        throw new TypeError(`option ${name} must be a number, got ${describe(value)}`);
      }
      if (value !== Infinity && (!Number.isSafeInteger(value) || value < 0)) {
        throw new RangeError(
          `option ${name} must be a non-negative integer or Infinity, got ${value}`,
        );
      }
      return;
    case "ratio":
      if (typeof value !== "number") {
        throw new TypeError(`option ${name} must be a number, got ${describe(value)}`);
      }
      if (!(value >= 0)) {
        throw new RangeError(`option ${name} must be a number >= 0 or Infinity, got ${value}`);
      }
  }
}

/** A value as a message shows it: its type, and the value itself when short. */
function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  switch (typeof value) {
    case "string":
      return `the string ${JSON.stringify(value.length > 20 ? value.slice(0, 20) + "..." : value)}`;
    case "number":
    case "boolean":
    case "bigint":
      return `${typeof value} ${String(value)}${typeof value === "bigint" ? "n" : ""}`;
    default:
      return typeof value;
  }
}
