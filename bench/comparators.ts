/**
 * Allocators to compare tsmalloc's Heap with, behind one interface.
 *
 * Every comparator hands out a handle: a number (Heap, @thi.ng/malloc,
 * Uint8Array slots, bump, freelist) or a bigint (C allocators through FFI, in their
 * fastest binding: sizes as "u32", addresses as "usize" bigints passed
 * straight back). The null handle is `nil` (0 or 0n).
 *
 * Memory access is part of the interface because it costs very different
 * amounts per allocator and the replay tool must pay it honestly:
 *  - Heap: one Uint8Array over the whole arena, taken once from the public
 *    `heap.bytes()` (its `.buffer` is the arena reservation); large blocks,
 *    which live in mappings of their own, get a `heap.bytes()` view each,
 *    made on first touch and dropped on free.
 *  - C allocators: libc `memset`/`memcmp` through FFI on the bigint address.
 *    A block up to 4 KiB is written in one `memset` call over all of it,
 *    which is cheaper than two single-byte calls (those need BigInt address
 *    arithmetic, about 25 ns each); above 4 KiB the first byte, one byte per
 *    4 KiB page and the last byte are written one call each.
 *  - @thi.ng/malloc, Uint8Array, bump, freelist: plain typed-array stores.
 *
 * A comparator whose library cannot be loaded is skipped with a note on
 * stderr. jemalloc can only be loaded when the process was started with
 * GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384 (see JEMALLOC_ENV).
 */

import { Heap, type HeapOptions } from "../mod.ts";
import { MemPool } from "npm:@thi.ng/malloc@^6.1.150";

/** An allocation: an address (number or bigint) or a slot number. */
export type Handle = number | bigint;

/** The common interface of every comparator. */
export interface Allocator {
  /** Short name used on the command line and in tables. */
  readonly name: string;
  /** The handle that means "no block" (0 or 0n); malloc returns it on failure. */
  readonly nil: Handle;
  /** False for allocators whose free does not make memory reusable (bump). */
  readonly reusesMemory: boolean;
  malloc(size: number): Handle;
  free(h: Handle): void;
  realloc?(h: Handle, size: number): Handle;
  calloc?(count: number, size: number): Handle;
  alignedAlloc?(alignment: number, size: number): Handle;
  /** Bytes the allocator currently holds from the OS by its own accounting. */
  footprint?(): number;
  /** Highest footprint since creation, when the allocator tracks it itself. */
  peakFootprint?(): number;
  /** What footprint() measures, for tables. */
  readonly footprintSource?: string;
  /** Forget every allocation at once (only bump has it: its free does nothing). */
  reset?(): void;
  close?(): void;
  /** Writes `size` bytes of `byte` at the start of the block. */
  fill(h: Handle, size: number, byte: number): void;
  /** Writes `byte` at the first and last byte of the block and one byte of every 4 KiB page. */
  mark(h: Handle, size: number, byte: number): void;
  /** True when the first and last byte of the block both hold `byte` (true for size 0). */
  verify(h: Handle, size: number, byte: number): boolean;
  /** Requests the allocator could not serve (it returned nil) since creation. */
  failures(): number;
  /** Allocations since creation, where the allocator counts them (the heap's stats()). */
  allocCount?(): number;
}

/** Environment jemalloc needs at process start for Deno.dlopen to succeed. */
export const JEMALLOC_ENV = { GLIBC_TUNABLES: "glibc.rtld.optional_static_tls=16384" };

/** Every comparator name, in table order. */
export const ALL_ALLOCATORS = [
  "heap",
  "glibc",
  "mimalloc",
  "jemalloc",
  "thing",
  "uint8array",
  "bump",
  "freelist",
] as const;
export type AllocatorName = typeof ALL_ALLOCATORS[number];

/** True when this process can dlopen jemalloc (the tunable is set). */
export function jemallocEnvPresent(): boolean {
  try {
    return (Deno.env.get("GLIBC_TUNABLES") ?? "").includes("optional_static_tls");
  } catch {
    return false;
  }
}

/** Options for createAllocator. */
export interface CreateOptions {
  /** Options for tsmalloc's Heap. */
  heap?: HeapOptions;
  /** Bytes of the @thi.ng/malloc pool (an ArrayBuffer). Default 512 MiB. */
  thingBytes?: number;
  /** Bytes of address space for the bump allocator. Default 64 GiB. */
  bumpBytes?: number;
  /** Where skip notes go; default console.error. */
  note?: (message: string) => void;
}

/** Makes one comparator, or returns null (after a note) when it cannot be loaded. */
export function createAllocator(name: string, options: CreateOptions = {}): Allocator | null {
  const note = options.note ?? ((m: string) => console.error(m));
  try {
    switch (name) {
      case "heap":
        return createHeap(options.heap);
      case "glibc":
        return createGlibc();
      case "mimalloc":
        return createMimalloc();
      case "jemalloc":
        if (!jemallocEnvPresent()) {
          note(
            "note: jemalloc skipped: start the process with " +
              "GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384 to load libjemalloc.so.2",
          );
          return null;
        }
        return createJemalloc();
      case "thing":
        return createThing(options.thingBytes ?? 512 * 1024 * 1024);
      case "uint8array":
        return createTypedArrays();
      case "bump":
        return createBump(options.bumpBytes ?? 64 * 2 ** 30);
      case "freelist":
        return createFreeList(4 * 2 ** 30); // offsets stay below 2^32, as in the Heap's arena
      default:
        throw new Error(`unknown allocator "${name}" (known: ${ALL_ALLOCATORS.join(", ")})`);
    }
  } catch (e) {
    if (e instanceof Error && e.message.startsWith("unknown allocator")) throw e;
    note(`note: ${name} skipped: ${e instanceof Error ? e.message : String(e)}`);
    return null;
  }
}

/** Makes every named comparator that can be loaded (all of them by default). */
export function loadAllocators(
  names: readonly string[] = ALL_ALLOCATORS,
  options: CreateOptions = {},
): Allocator[] {
  const out: Allocator[] = [];
  for (const n of names) {
    const a = createAllocator(n, options);
    if (a !== null) out.push(a);
  }
  return out;
}

// ---- memory access shared by the C allocators -------------------------------------

const PAGE = 4096;
/** Blocks up to this size are written and checked with one libc call over all of it. */
const WHOLE_BLOCK_MAX = 4096;

interface CMemory {
  memset: (p: bigint, c: number, n: number) => void;
  memcmp: (a: bigint, b: bigint, n: number) => number;
  patterns: bigint[];
}

let libcMem: CMemory | undefined;

/**
 * libc memset/memcmp with a "u32" length, and 256 patterns of WHOLE_BLOCK_MAX
 * bytes each (pattern[v] is all v) to compare blocks against.
 */
function cMemory(): CMemory {
  if (libcMem !== undefined) return libcMem;
  const lib = Deno.dlopen("libc.so.6", {
    memset: { parameters: ["usize", "i32", "u32"], result: "void" },
    memcmp: { parameters: ["usize", "usize", "u32"], result: "i32" },
    malloc: { parameters: ["usize"], result: "usize" },
  }).symbols;
  const base = lib.malloc(BigInt(256 * WHOLE_BLOCK_MAX)) as bigint;
  if (base === 0n) throw new Error("cannot allocate the comparison patterns");
  const patterns: bigint[] = [];
  for (let v = 0; v < 256; v++) {
    const p = base + BigInt(v * WHOLE_BLOCK_MAX);
    lib.memset(p, v, WHOLE_BLOCK_MAX);
    patterns.push(p);
  }
  libcMem = { memset: lib.memset, memcmp: lib.memcmp, patterns };
  return libcMem;
}

/** fill/mark/verify for memory at bigint addresses. */
function cAccess(): Pick<Allocator, "fill" | "mark" | "verify"> {
  const { memset, memcmp, patterns } = cMemory();
  return {
    fill(h, size, byte) {
      if (size > 0) memset(h as bigint, byte, size);
    },
    mark(h, size, byte) {
      if (size <= WHOLE_BLOCK_MAX) {
        if (size > 0) memset(h as bigint, byte, size);
        return;
      }
      const p = h as bigint;
      memset(p, byte, 1);
      for (let o = PAGE; o < size; o += PAGE) memset(p + BigInt(o), byte, 1);
      memset(p + BigInt(size - 1), byte, 1);
    },
    verify(h, size, byte) {
      const p = h as bigint;
      if (size <= WHOLE_BLOCK_MAX) return size === 0 || memcmp(p, patterns[byte], size) === 0;
      return memcmp(p, patterns[byte], 1) === 0 &&
        memcmp(p + BigInt(size - 1), patterns[byte], 1) === 0;
    },
  };
}

/** Writes `size` bytes of `byte` at `o`: a loop for small runs (u8.fill costs ~30 ns flat). */
function fillView(u8: Uint8Array, o: number, size: number, byte: number): void {
  if (size <= 48) {
    for (let i = o, end = o + size; i < end; i++) u8[i] = byte;
  } else u8.fill(byte, o, o + size);
}

/**
 * Loads `name` once more with RTLD_NODELETE, so that it stays mapped after
 * Deno closes its own handle. mimalloc and jemalloc register pthread-key
 * destructors; `deno bench` runs each file on a thread that exits after the
 * file's libraries were closed, and the exiting thread then called into the
 * unmapped library (SIGSEGV in __nptl_deallocate_tsd, seen here with
 * `deno bench bench/`). Throws when the library cannot be loaded.
 */
function pinLibrary(name: string): void {
  const RTLD_NOW = 2, RTLD_NODELETE = 0x1000;
  const libdl = Deno.dlopen("libc.so.6", {
    dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
    dlerror: { parameters: [], result: "pointer" },
  });
  try {
    const handle = libdl.symbols.dlopen(
      new TextEncoder().encode(name + "\0"),
      RTLD_NOW | RTLD_NODELETE,
    );
    if (handle === null) {
      const e = libdl.symbols.dlerror();
      throw new Error(e === null ? `cannot load ${name}` : Deno.UnsafePointerView.getCString(e));
    }
  } finally {
    libdl.close();
  }
}

/** Largest size the "u32" bindings can pass. */
const U32_MAX = 0xffff_ffff;

// ---- tsmalloc ----------------------------------------------------------------------

/**
 * tsmalloc's Heap; blocks are written through one view of the arena's data
 * (the buffer behind any arena block's bytes() view, which spans the data
 * made read-write so far), remade when a block lies beyond it. `heap`: an
 * existing heap to wrap instead of a new one.
 */
export function createHeap(options?: HeapOptions, heap: Heap = new Heap(options)): Allocator {
  const probe = heap.malloc(16);
  const view = heap.bytes(probe, 1);
  /** Address of the data buffer's first byte. */
  const base = probe - view.byteOffset;
  let u8 = new Uint8Array(view.buffer);
  heap.free(probe);
  /**
   * The data view if the block at `base + o` is in the arena (remade if the
   * block lies beyond it), or null for a large block (a mapping of its own).
   */
  const data = (o: number, size: number): Uint8Array | null => {
    if (o >= 0 && o + size <= u8.length) return u8;
    // The block's whole usable size: a buffer that ends inside the block would drop writes.
    const v = heap.bytes(base + o);
    if (o < 0 || v.byteOffset !== o) return null;
    u8 = new Uint8Array(v.buffer);
    return u8;
  };
  // Large blocks (own mappings): one view each, made on first touch, dropped on free.
  const views = new Map<number, Uint8Array>();
  const blockView = (a: number): Uint8Array => {
    let v = views.get(a);
    if (v === undefined) views.set(a, v = heap.bytes(a));
    return v;
  };
  let failures = 0;
  return {
    name: "heap",
    nil: 0,
    reusesMemory: true,
    footprintSource: "stats().committedBytes",
    allocCount: () => heap.stats().allocCount,
    malloc: (size) => heap.malloc(size),
    free(h) {
      const a = h as number;
      // Only large blocks have views here: no map lookup on every free.
      if (views.size !== 0) views.delete(a);
      heap.free(a);
    },
    realloc(h, size) {
      const a = h as number;
      if (views.size !== 0) views.delete(a);
      const r = heap.realloc(a, size);
      if (r === 0 && size !== 0) failures++;
      return r;
    },
    calloc(count, size) {
      const r = heap.calloc(count, size);
      if (r === 0) failures++;
      return r;
    },
    alignedAlloc(alignment, size) {
      const r = heap.alignedAlloc(alignment, size);
      if (r === 0) failures++;
      return r;
    },
    footprint: () => heap.stats().committedBytes,
    peakFootprint: () => heap.stats().peakCommittedBytes,
    close: () => heap.close(),
    fill(h, size, byte) {
      const o = (h as number) - base;
      const v = data(o, size);
      if (v !== null) fillView(v, o, size, byte);
      else fillView(blockView(h as number), 0, size, byte);
    },
    mark(h, size, byte) {
      if (size === 0) return;
      const o = (h as number) - base;
      const arena = data(o, size);
      const v = arena ?? blockView(h as number);
      const at = arena !== null ? o : 0;
      v[at] = byte;
      for (let p = PAGE; p < size; p += PAGE) v[at + p] = byte;
      v[at + size - 1] = byte;
    },
    verify(h, size, byte) {
      if (size === 0) return true;
      const o = (h as number) - base;
      const arena = data(o, size);
      if (arena !== null) return arena[o] === byte && arena[o + size - 1] === byte;
      const v = blockView(h as number);
      return v[0] === byte && v[size - 1] === byte;
    },
    failures: () => failures,
    // The Heap object itself, for tools that want stats(): not part of Allocator.
    ...{ heap },
  };
}

/** The Heap behind a comparator made by createHeap, or undefined. */
export function heapOf(a: Allocator): Heap | undefined {
  return (a as unknown as { heap?: Heap }).heap;
}

// ---- glibc -------------------------------------------------------------------------

/** glibc malloc through FFI; footprint from mallinfo2() (arena + mmapped bytes). */
export function createGlibc(): Allocator {
  const U = "usize" as const;
  const lib = Deno.dlopen("libc.so.6", {
    malloc: { parameters: ["u32"], result: "usize" },
    free: { parameters: ["usize"], result: "void" },
    realloc: { parameters: ["usize", "u32"], result: "usize" },
    calloc: { parameters: ["u32", "u32"], result: "usize" },
    memalign: { parameters: ["u32", "u32"], result: "usize" },
    mallinfo2: { parameters: [], result: { struct: [U, U, U, U, U, U, U, U, U, U] } },
  }).symbols;
  const mallinfo = () => {
    const m = lib.mallinfo2();
    const w = new BigUint64Array(m.buffer, m.byteOffset, 10);
    return Number(w[0] + w[4]); // arena (sbrk'd, all arenas) + hblkhd (mmapped chunks)
  };
  let failures = 0;
  return {
    name: "glibc",
    nil: 0n,
    reusesMemory: true,
    footprintSource: "mallinfo2 arena+hblkhd",
    malloc: (size) => (size >>> 0) === size ? lib.malloc(size) : 0n,
    free: (h) => lib.free(h as bigint),
    realloc(h, size) {
      const r = size <= U32_MAX ? lib.realloc(h as bigint, size) : 0n;
      if (r === 0n && size !== 0) failures++;
      return r;
    },
    calloc(count, size) {
      const r = count <= U32_MAX && size <= U32_MAX ? lib.calloc(count, size) : 0n;
      if (r === 0n) failures++;
      return r;
    },
    alignedAlloc(alignment, size) {
      const r = size <= U32_MAX ? lib.memalign(alignment, size) : 0n;
      if (r === 0n) failures++;
      return r;
    },
    footprint: mallinfo,
    failures: () => failures,
    ...cAccess(),
  };
}

// ---- mimalloc ------------------------------------------------------------------------

/** mimalloc 2 through FFI (mi_ prefixed API); footprint from mi_process_info. */
export function createMimalloc(): Allocator {
  const B = "buffer" as const;
  pinLibrary("libmimalloc.so.2");
  const lib = Deno.dlopen("libmimalloc.so.2", {
    mi_malloc: { parameters: ["u32"], result: "usize" },
    mi_free: { parameters: ["usize"], result: "void" },
    mi_realloc: { parameters: ["usize", "u32"], result: "usize" },
    mi_calloc: { parameters: ["u32", "u32"], result: "usize" },
    mi_malloc_aligned: { parameters: ["u32", "u32"], result: "usize" },
    mi_process_info: { parameters: [B, B, B, B, B, B, B, B], result: "void" },
  }).symbols;
  const info = new BigUint64Array(8);
  const slot = (i: number) => info.subarray(i, i + 1);
  const out = [0, 1, 2, 3, 4, 5, 6, 7].map(slot);
  const processInfo = () => {
    lib.mi_process_info(out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7]);
    return info;
  };
  let failures = 0;
  return {
    name: "mimalloc",
    nil: 0n,
    reusesMemory: true,
    footprintSource: "mi_process_info commit (eager)",
    malloc: (size) => (size >>> 0) === size ? lib.mi_malloc(size) : 0n,
    free: (h) => lib.mi_free(h as bigint),
    realloc(h, size) {
      const r = size <= U32_MAX ? lib.mi_realloc(h as bigint, size) : 0n;
      if (r === 0n && size !== 0) failures++;
      return r;
    },
    calloc(count, size) {
      const r = count <= U32_MAX && size <= U32_MAX ? lib.mi_calloc(count, size) : 0n;
      if (r === 0n) failures++;
      return r;
    },
    alignedAlloc(alignment, size) {
      const r = size <= U32_MAX ? lib.mi_malloc_aligned(size, alignment) : 0n;
      if (r === 0n) failures++;
      return r;
    },
    // current_commit and peak_commit. mimalloc commits its arenas eagerly on
    // Linux (the OS backs pages on first touch), so these overstate residency.
    footprint: () => Number(processInfo()[5]),
    peakFootprint: () => Number(processInfo()[6]),
    failures: () => failures,
    ...cAccess(),
  };
}

// ---- jemalloc ------------------------------------------------------------------------

const MALLOCX_ZERO = 0x40;

/** jemalloc 5 through FFI (mallocx/dallocx/rallocx); footprint = mallctl stats.resident. */
export function createJemalloc(): Allocator {
  const B = "buffer" as const;
  pinLibrary("libjemalloc.so.2");
  const lib = Deno.dlopen("libjemalloc.so.2", {
    mallocx: { parameters: ["u32", "i32"], result: "usize" },
    dallocx: { parameters: ["usize", "i32"], result: "void" },
    rallocx: { parameters: ["usize", "u32", "i32"], result: "usize" },
    mallctl: { parameters: [B, B, B, B, "usize"], result: "i32" },
  }).symbols;
  const enc = new TextEncoder();
  const epochName = enc.encode("epoch\0");
  const residentName = enc.encode("stats.resident\0");
  const one = new BigUint64Array([1n]);
  const value = new BigUint64Array(1);
  const length = new BigUint64Array(1);
  const resident = () => {
    lib.mallctl(epochName, null, null, one, 8n); // refresh the cached statistics
    length[0] = 8n;
    if (lib.mallctl(residentName, value, length, null, 0n) !== 0) return NaN;
    return Number(value[0]);
  };
  let failures = 0;
  // mallocx(0) is undefined behaviour: size 0 asks for 1 byte.
  return {
    name: "jemalloc",
    nil: 0n,
    reusesMemory: true,
    footprintSource: "mallctl stats.resident",
    malloc: (size) => (size >>> 0) === size ? lib.mallocx(size === 0 ? 1 : size, 0) : 0n,
    free: (h) => {
      if (h !== 0n) lib.dallocx(h as bigint, 0);
    },
    realloc(h, size) {
      let r: Handle;
      if (size > U32_MAX) r = 0n;
      else if (h === 0n) r = lib.mallocx(size === 0 ? 1 : size, 0);
      else if (size === 0) {
        lib.dallocx(h as bigint, 0);
        return 0n;
      } else r = lib.rallocx(h as bigint, size, 0);
      if (r === 0n) failures++;
      return r;
    },
    calloc(count, size) {
      const total = count * size;
      const r = total <= U32_MAX ? lib.mallocx(total === 0 ? 1 : total, MALLOCX_ZERO) : 0n;
      if (r === 0n) failures++;
      return r;
    },
    alignedAlloc(alignment, size) {
      const lg = 31 - Math.clz32(alignment); // MALLOCX_LG_ALIGN
      const r = size <= U32_MAX ? lib.mallocx(size === 0 ? 1 : size, lg) : 0n;
      if (r === 0n) failures++;
      return r;
    },
    footprint: resident,
    failures: () => failures,
    ...cAccess(),
  };
}

// ---- @thi.ng/malloc --------------------------------------------------------------------

/** @thi.ng/malloc's MemPool over one ArrayBuffer; offsets are handles, 0 = could not serve. */
export function createThing(bytes: number): Allocator {
  const pool = new MemPool({ size: bytes });
  const u8 = new Uint8Array(pool.buf);
  let failures = 0;
  return {
    name: "thing",
    nil: 0,
    reusesMemory: true,
    footprintSource: "pool top (bytes ever carved)",
    malloc(size) {
      const p = pool.malloc(size);
      if (p === 0) failures++;
      return p;
    },
    free(h) {
      if (h !== 0) pool.free(h as number);
    },
    realloc(h, size) {
      const p = h === 0 ? pool.malloc(size) : pool.realloc(h as number, size);
      if (p === 0 && size !== 0) failures++;
      return p;
    },
    calloc(count, size) {
      const p = pool.calloc(count * size);
      if (p === 0) failures++;
      return p;
    },
    footprint: () => pool.stats().top,
    failures: () => failures,
    fill(h, size, byte) {
      fillView(u8, h as number, size, byte);
    },
    mark(h, size, byte) {
      if (size === 0) return;
      const o = h as number;
      u8[o] = byte;
      for (let p = PAGE; p < size; p += PAGE) u8[o + p] = byte;
      u8[o + size - 1] = byte;
    },
    verify(h, size, byte) {
      const o = h as number;
      return size === 0 || (u8[o] === byte && u8[o + size - 1] === byte);
    },
  };
}

// ---- new Uint8Array(n) -------------------------------------------------------------------

/**
 * `new Uint8Array(n)` per allocation, kept alive in a slot table (handle =
 * slot + 1). There is no free: "free" drops the reference and the garbage
 * collector reclaims the memory whenever it runs.
 */
export function createTypedArrays(): Allocator {
  const empty = new Uint8Array(0);
  const slots: Uint8Array[] = [];
  const spare: number[] = [];
  return {
    name: "uint8array",
    nil: 0,
    reusesMemory: true,
    malloc(size) {
      const a = new Uint8Array(size);
      const i = spare.length > 0 ? spare.pop()! : slots.length;
      slots[i] = a;
      return i + 1;
    },
    free(h) {
      const i = (h as number) - 1;
      if (i >= 0) {
        slots[i] = empty;
        spare.push(i);
      }
    },
    realloc(h, size) {
      const i = (h as number) - 1;
      const a = new Uint8Array(size);
      if (i < 0) {
        const j = spare.length > 0 ? spare.pop()! : slots.length;
        slots[j] = a;
        return j + 1;
      }
      const old = slots[i];
      a.set(old.length <= size ? old : old.subarray(0, size));
      slots[i] = a;
      return h;
    },
    calloc(count, size) {
      const a = new Uint8Array(count * size);
      const i = spare.length > 0 ? spare.pop()! : slots.length;
      slots[i] = a;
      return i + 1;
    },
    failures: () => 0,
    fill(h, size, byte) {
      fillView(slots[(h as number) - 1], 0, size, byte);
    },
    mark(h, size, byte) {
      if (size === 0) return;
      const a = slots[(h as number) - 1];
      a[0] = byte;
      for (let p = PAGE; p < size; p += PAGE) a[p] = byte;
      a[size - 1] = byte;
    },
    verify(h, size, byte) {
      const a = slots[(h as number) - 1];
      return size === 0 || (a[0] === byte && a[size - 1] === byte);
    },
  };
}

// ---- one mapping for the TypeScript floors (bump, freelist) ---------------------------------

/** One mmap'd read-write region (MAP_NORESERVE) with a byte view, and the block access over it. */
function mapRegion(bytes: number) {
  const lib = Deno.dlopen("libc.so.6", {
    mmap: { parameters: ["usize", "usize", "i32", "i32", "i32", "i64"], result: "usize" },
    munmap: { parameters: ["usize", "usize"], result: "i32" },
  }).symbols;
  const PROT_RW = 3, MAP_PRIVATE_ANON_NORESERVE = 0x02 | 0x20 | 0x4000;
  const p = lib.mmap(0n, BigInt(bytes), PROT_RW, MAP_PRIVATE_ANON_NORESERVE, -1, 0n) as bigint;
  if (p === 0xffff_ffff_ffff_ffffn) throw new Error(`mmap of ${bytes} bytes failed`);
  const base = Number(p);
  const u8 = new Uint8Array(
    Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(p)!, bytes),
  );
  return {
    base,
    u8,
    close() {
      lib.munmap(p, BigInt(bytes));
    },
    fill(h: Handle, size: number, byte: number) {
      fillView(u8, (h as number) - base, size, byte);
    },
    mark(h: Handle, size: number, byte: number) {
      if (size === 0) return;
      const o = (h as number) - base;
      u8[o] = byte;
      for (let q = PAGE; q < size; q += PAGE) u8[o + q] = byte;
      u8[o + size - 1] = byte;
    },
    verify(h: Handle, size: number, byte: number) {
      const o = (h as number) - base;
      return size === 0 || (u8[o] === byte && u8[o + size - 1] === byte);
    },
  };
}

// ---- bump (lower bound) --------------------------------------------------------------------

/**
 * A bump pointer over one mmap'd region (MAP_NORESERVE, read-write): malloc
 * is an add and a compare, free does nothing, reset() starts over. A lower
 * bound for what any allocator can cost, not an allocator one could use.
 */
export function createBump(bytes: number): Allocator {
  const { base, u8, close, fill, mark, verify } = mapRegion(bytes);
  let top = 0;
  let failures = 0;
  const alloc = (size: number): number => {
    const at = top;
    const next = at + Math.ceil(size / 16) * 16;
    if (next > bytes) {
      failures++;
      return 0;
    }
    top = next;
    return base + at;
  };
  return {
    name: "bump",
    nil: 0,
    reusesMemory: false,
    footprintSource: "bytes handed out",
    malloc: alloc,
    free() {},
    realloc(h, size) {
      const r = alloc(size);
      if (r !== 0 && h !== 0) {
        const from = (h as number) - base;
        u8.copyWithin(r - base, from, Math.min(from + size, top));
      }
      return r;
    },
    calloc(count, size) {
      const r = alloc(count * size);
      if (r !== 0) u8.fill(0, r - base, r - base + count * size); // reset() reuses memory
      return r;
    },
    alignedAlloc(alignment, size) {
      top = Math.ceil((base + top) / alignment) * alignment - base;
      return alloc(size);
    },
    footprint: () => top,
    reset() {
      top = 0;
    },
    close,
    failures: () => failures,
    fill,
    mark,
    verify,
  };
}

// ---- freelist (the floor of an allocator that reuses memory) -------------------------------

/**
 * The least a TypeScript allocator that reuses memory does: one mapping, a
 * 16-byte header before each block holding its class (16-byte steps up to
 * 64 KiB), one LIFO free list per class linked through the blocks, a bump
 * pointer for new blocks. No checks (a double free corrupts it), no
 * statistics, nothing returned to the OS, blocks above 64 KiB never reused:
 * the floor that the Heap's fast paths (live bit, counters, page lists) add to.
 */
export function createFreeList(bytes: number): Allocator {
  const { base, u8, close, fill, mark, verify } = mapRegion(bytes);
  const u32 = new Uint32Array(u8.buffer);
  const MAX_CLASS = 4096; // 64 KiB in 16-byte steps
  const heads = new Uint32Array(MAX_CLASS + 1); // byte offset of a free block, 0 = none
  let top = 16; // offset 0 means "none"
  let failures = 0;
  const malloc = (size: number): number => {
    const cls = (size + 15) >>> 4 || 1; // a free block holds its link
    if (cls <= MAX_CLASS) {
      const block = heads[cls];
      if (block !== 0) {
        heads[cls] = u32[block >>> 2];
        return base + block;
      }
    }
    const block = top + 16;
    const next = block + cls * 16;
    if (next > bytes) {
      failures++;
      return 0;
    }
    top = next;
    u32[(block - 16) >>> 2] = cls;
    return base + block;
  };
  const free = (h: Handle): void => {
    if (h === 0) return;
    const block = (h as number) - base;
    const cls = u32[(block - 16) >>> 2];
    if (cls > MAX_CLASS) return;
    u32[block >>> 2] = heads[cls];
    heads[cls] = block;
  };
  const sizeOf = (h: Handle) => u32[((h as number) - base - 16) >>> 2] * 16;
  return {
    name: "freelist",
    nil: 0,
    reusesMemory: true,
    footprintSource: "bytes carved",
    malloc,
    free,
    realloc(h, size) {
      if (h === 0) return malloc(size);
      if (size === 0) return free(h), 0;
      if (size <= sizeOf(h)) return h;
      const r = malloc(size);
      if (r !== 0) {
        u8.copyWithin(r - base, (h as number) - base, (h as number) - base + sizeOf(h));
        free(h);
      }
      return r;
    },
    calloc(count, size) {
      const r = malloc(count * size);
      if (r !== 0) u8.fill(0, r - base, r - base + count * size);
      return r;
    },
    alignedAlloc(alignment, size) {
      if (alignment <= 16) return malloc(size);
      // A fresh block from the bump pointer, the gap before it left unused:
      // malloc with the class's list hidden for the call. (A bump helper
      // shared with malloc would be inlined into it, and that made the
      // pair groups after the first 3 ns slower: this comparator is the floor.)
      top = Math.ceil((base + top + 16) / alignment) * alignment - base - 16;
      const cls = (size + 15) >>> 4 || 1;
      const saved = heads[cls <= MAX_CLASS ? cls : 0];
      if (cls <= MAX_CLASS) heads[cls] = 0;
      const r = malloc(size);
      if (cls <= MAX_CLASS) heads[cls] = saved;
      return r;
    },
    footprint: () => top,
    close,
    failures: () => failures,
    fill,
    mark,
    verify,
  };
}
