/**
 * Native access for the death tests: writes that bypass the heap (as a buggy
 * C caller's would) and probes that ask the kernel whether memory can be read,
 * which answer instead of faulting the process.
 */

const libc = Deno.dlopen("libc.so.6", {
  memset: { parameters: ["usize", "i32", "usize"], result: "usize" },
  pipe: { parameters: ["buffer"], result: "i32" },
  write: { parameters: ["i32", "usize", "usize"], result: "isize" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  mincore: { parameters: ["usize", "usize", "buffer"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
}).symbols;

const pipeFds = new Int32Array(2);
if (libc.pipe(pipeFds) !== 0) throw new Error("pipe() failed");
const sink = new Uint8Array(1);

/** Writes `length` bytes of `byte` at `address` from native code. */
export function poke(address: number, length: number, byte = 0x41): void {
  libc.memset(BigInt(address), byte, BigInt(length));
}

/**
 * True if the byte at `address` can be read. The kernel reads it for
 * write(2) into a pipe and answers EFAULT instead of faulting the process.
 */
export function readable(address: number): boolean {
  if (Number(libc.write(pipeFds[1], BigInt(address), 1n)) !== 1) return false;
  libc.read(pipeFds[0], sink, 1n);
  return true;
}

/** True if the OS page at `address` is mapped (with any protection). */
export function mapped(address: number): boolean {
  const page = address - (address % 4096);
  return libc.mincore(BigInt(page), 4096n, new Uint8Array(1)) === 0;
}

/**
 * Bytes of `[address, address + length)` that are resident, by mincore(2):
 * exact for the pages of one range, unlike the process RSS, which moves with
 * the JS heap, the garbage collector and the kernel.
 */
export function residentBytes(address: number, length: number): number {
  const start = address - (address % 4096);
  const pages = Math.ceil((address + length - start) / 4096);
  const vector = new Uint8Array(pages);
  if (libc.mincore(BigInt(start), BigInt(pages * 4096), vector) !== 0) {
    throw new Error(`mincore(0x${start.toString(16)}, ${pages} pages) failed`);
  }
  let resident = 0;
  for (const v of vector) resident += v & 1;
  return resident * 4096;
}

const statmPath = new TextEncoder().encode("/proc/self/statm\0");
const statm = new Uint8Array(256);

/**
 * The process's resident set in bytes: the second field of /proc/self/statm,
 * read through libc (Deno's permissions would ask for --allow-all to read
 * /proc/self from JavaScript).
 */
export function residentSetBytes(): number {
  const fd = libc.open(statmPath, 0);
  if (fd < 0) throw new Error("cannot open /proc/self/statm");
  const n = Number(libc.read(fd, statm, BigInt(statm.length)));
  libc.close(fd);
  const fields = new TextDecoder().decode(statm.subarray(0, Math.max(0, n))).split(" ");
  return Number(fields[1]) * 4096;
}
