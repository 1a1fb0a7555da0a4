/**
 * The OS layer: the only file that talks to libc.
 *
 * Everything the allocator needs from the kernel goes through the handful of
 * functions below. Addresses cross this boundary as bigints because a 64-bit
 * parameter given a bigint stays on Deno's fast FFI path while a JS number
 * drops off it (ten times slower); inside the allocator they are plain
 * numbers. None of these functions is on the malloc/free fast path.
 *
 * Linux only (x86_64 and aarch64; tested on x86_64): the allocator relies on
 * pages given back with MADV_DONTNEED reading as zero afterwards (calloc
 * skips zeroing them), which other systems' nearest advice (macOS's
 * MADV_FREE) does not promise. The first call on another system throws.
 */

const LIBC = "libc.so.6";

export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
/**
 * Linux 4.17+: map at the hinted address or fail with EEXIST, never over an
 * existing mapping (older kernels ignore the flag and take the address as a
 * plain hint).
 */
export const MAP_FIXED_NOREPLACE = 0x100000;
/** The pages read as zero afterwards (private anonymous memory). */
export const MADV_DONTNEED = 4;
/**
 * Linux 5.14+: fault the pages in now, writable, in one call: about a tenth
 * of what each page's first touch costs (docs/performance.md).
 */
export const MADV_POPULATE_WRITE = 23;
export const MREMAP_MAYMOVE = 1;
export const OS_PAGE_SIZE = 4096;

/** `(void *)-1` as the unsigned integer `mmap`/`mremap` return on failure. */
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

const symbols = {
  mmap: {
    parameters: ["usize", "usize", "i32", "i32", "i32", "i64"],
    result: "usize",
  },
  munmap: { parameters: ["usize", "usize"], result: "i32" },
  madvise: { parameters: ["usize", "usize", "i32"], result: "i32" },
  mprotect: { parameters: ["usize", "usize", "i32"], result: "i32" },
  memmove: { parameters: ["usize", "usize", "usize"], result: "usize" },
  errno: {
    name: "__errno_location",
    parameters: [],
    result: "pointer",
  },
  sched_yield: { parameters: [], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

/** Thread identity and liveness (Linux: glibc 2.30+ has gettid and tgkill). */
const threadSymbols = {
  gettid: { parameters: [], result: "i32" },
  getpid: { parameters: [], result: "i32" },
  tgkill: { parameters: ["i32", "i32", "i32"], result: "i32" },
} as const;
const ESRCH = 3;

const mremapSymbol = {
  mremap: {
    parameters: ["usize", "usize", "usize", "i32", "usize"],
    result: "usize",
  },
} as const;

type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];
type Mremap = Deno.DynamicLibrary<typeof mremapSymbol>["symbols"]["mremap"];

let libc: Libc | undefined;
let threads: Deno.DynamicLibrary<typeof threadSymbols>["symbols"] | undefined;
/** This process's id, asked for once (every Worker of the process shares it). */
let processId = 0;
let mremapFn: Mremap | undefined;

/** Opens libc once per process (per Worker) on first use. */
function lib(): Libc {
  if (libc === undefined) {
    if (Deno.build.os !== "linux") {
      throw new Error(`tsmalloc runs on Linux only (this is ${Deno.build.os})`);
    }
    libc = Deno.dlopen(LIBC, symbols).symbols;
    mremapFn = Deno.dlopen(LIBC, mremapSymbol).symbols.mremap;
  }
  return libc;
}

/** The calling thread's `errno` right after a failed call. */
export function lastErrno(): number {
  const p = lib().errno();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/**
 * Maps `length` bytes of anonymous private memory, at `hint` if the OS
 * agrees (see MAP_FIXED_NOREPLACE). Returns the address, or 0 when the OS
 * refuses (the caller turns that into an out-of-memory result).
 */
export function mapMemory(length: number, prot: number, flags = 0, hint = 0): number {
  if (!(length > 0 && length <= Number.MAX_SAFE_INTEGER)) return 0;
  const r = lib().mmap(
    BigInt(hint),
    BigInt(length),
    prot,
    MAP_PRIVATE | MAP_ANONYMOUS | flags,
    -1,
    0n,
  );
  return r === MAP_FAILED ? 0 : Number(r);
}

/** Unmaps `[address, address + length)`. Throws if the kernel refuses. */
export function unmapMemory(address: number, length: number): void {
  if (length === 0) return;
  if (lib().munmap(BigInt(address), BigInt(length)) !== 0) {
    throw new Error(`munmap(0x${address.toString(16)}, ${length}) failed: errno ${lastErrno()}`);
  }
}

/** Whether MADV_POPULATE_WRITE worked so far (false after the kernel refused it once). */
let populateWorks = true;

/**
 * Faults the OS pages that `[address, address + length)` touches in now, as a
 * first touch would page by page. Only a speed-up: does nothing where the
 * kernel lacks the advice. Returns whether it called madvise.
 */
export function populatePages(address: number, length: number): boolean {
  if (!populateWorks || length === 0) return false;
  // madvise wants a page-aligned start (EINVAL otherwise, which would read as
  // "no POPULATE_WRITE here" below and turn populating off for good).
  const start = address - address % OS_PAGE_SIZE;
  const end = Math.ceil((address + length) / OS_PAGE_SIZE) * OS_PAGE_SIZE;
  if (lib().madvise(BigInt(start), BigInt(end - start), MADV_POPULATE_WRITE) !== 0) {
    // EINVAL: a kernel before 5.14. Anything else (ENOMEM...) the first touch will meet too.
    if (lastErrno() === 22) populateWorks = false;
  }
  return true;
}

/** Whether populatePages faults pages in (false before Linux 5.14). */
export function canPopulate(): boolean {
  return populateWorks;
}

/** Gives the pages back to the OS; they read as zero when touched again. */
export function releasePages(address: number, length: number): void {
  if (lib().madvise(BigInt(address), BigInt(length), MADV_DONTNEED) !== 0) {
    throw new Error(`madvise(0x${address.toString(16)}, ${length}) failed: errno ${lastErrno()}`);
  }
}

/** Changes protection; returns false when the kernel refuses (e.g. out of map entries). */
export function protectMemory(address: number, length: number, prot: number): boolean {
  return lib().mprotect(BigInt(address), BigInt(length), prot) === 0;
}

/** `memmove` between any two native addresses. */
export function moveMemory(dst: number, src: number, length: number): void {
  if (length > 0) lib().memmove(BigInt(dst), BigInt(src), BigInt(length));
}

/**
 * Resizes a mapping, moving it if it has to (Linux `mremap`). Returns the new
 * address, or 0 if the kernel refuses or the platform has no `mremap`.
 */
export function remapMemory(
  address: number,
  oldLength: number,
  newLength: number,
  mayMove: boolean,
): number {
  lib();
  if (mremapFn === undefined) return 0;
  const r = mremapFn(
    BigInt(address),
    BigInt(oldLength),
    BigInt(newLength),
    mayMove ? MREMAP_MAYMOVE : 0,
    0n,
  );
  return r === MAP_FAILED ? 0 : Number(r);
}

/** True where the platform can resize a mapping in place or by moving its page tables. */
export function canRemap(): boolean {
  lib();
  return mremapFn !== undefined;
}

/** Gives up the CPU to another thread (the back-off of the shared heap's locks). */
export function yieldThread(): void {
  lib().sched_yield();
}

/** The calling thread's OS thread id (0 where the platform has no gettid). */
export function currentThreadId(): number {
  threads ??= Deno.dlopen(LIBC, threadSymbols).symbols;
  return threads.gettid();
}

/**
 * True unless thread `tid` of this process has exited (checked by sending it
 * signal 0, which delivers nothing). Unknown (0) ids count as alive.
 */
export function threadAlive(tid: number): boolean {
  if (tid === 0) return true;
  threads ??= Deno.dlopen(LIBC, threadSymbols).symbols;
  processId ||= threads.getpid();
  return threads.tgkill(processId, tid, 0) === 0 || lastErrno() !== ESRCH;
}

/**
 * True if every byte of `[address, address + length)` can be read and
 * written, so that views of it cannot fault. The answer comes from /proc/self/maps, read with
 * libc: mincore says yes for a reserved PROT_NONE page too, and a
 * kernel-side read (process_vm_readv, or write(2) of it into a pipe) tells a
 * readable page from another but not a writable one, where the maps list
 * each mapping's protection.
 */
export function isReadWrite(address: number, length: number): boolean {
  const fd = lib().open(new TextEncoder().encode("/proc/self/maps\0"), 0);
  if (fd < 0) return false;
  const chunks: Uint8Array[] = [];
  try {
    for (;;) {
      const chunk = new Uint8Array(64 * 1024);
      const n = Number(lib().read(fd, chunk, BigInt(chunk.length)));
      if (n <= 0) break;
      chunks.push(chunk.subarray(0, n));
    }
  } finally {
    lib().close(fd);
  }
  // Lines "start-end perms ...", in address order: the range must be covered
  // by consecutive mappings that are all "rw".
  let covered = address;
  const end = address + length;
  const decoder = new TextDecoder();
  const text = chunks.map((c) => decoder.decode(c, { stream: true })).join("") + decoder.decode();
  for (const line of text.split("\n")) {
    const match = /^([0-9a-f]+)-([0-9a-f]+) (..)/.exec(line);
    if (match === null) continue;
    const from = parseInt(match[1], 16);
    const to = parseInt(match[2], 16);
    if (to <= covered) continue;
    if (from > covered || match[3] !== "rw") return false;
    covered = to;
    if (covered >= end) return true;
  }
  return false;
}

/** A typed-array-ready buffer over `[address, address + length)`; make one per mapping. */
export function viewMemory(address: number, length: number): ArrayBuffer {
  const p = Deno.UnsafePointer.create(BigInt(address));
  if (p === null) throw new RangeError("cannot view address 0");
  return Deno.UnsafePointerView.getArrayBuffer(p, length);
}
