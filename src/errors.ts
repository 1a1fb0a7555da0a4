/**
 * What went wrong, as a stable machine-readable code:
 *
 * - `invalid-free`: free or realloc of an address that is not the start of a
 *   live block of this heap.
 * - `double-free`: free or realloc of a block that was already freed.
 * - `invalid-address`: usableSize, bytes, pointer (or a helper of views.ts)
 *   of an address that is not the start of a live block, 0 included.
 * - `freed-block`: usableSize, bytes or pointer of a block that was freed
 *   (nothing was freed twice; the caller holds a stale address).
 * - `closed`: any call on a closed heap but close().
 * - `corrupt`: the heap's own structures are damaged (a block header
 *   overwritten, a free list broken): found by check() or on the way.
 * - `overflow` / `underflow` (debug mode): bytes after / before a block
 *   were overwritten.
 * - `use-after-free` (debug mode): a freed block was written while held in
 *   quarantine.
 */
export type HeapErrorCode =
  | "invalid-free"
  | "double-free"
  | "invalid-address"
  | "freed-block"
  | "closed"
  | "corrupt"
  | "overflow"
  | "underflow"
  | "use-after-free";

/** What debug mode knows about the block involved in an error. */
export interface HeapErrorDetails {
  /** Size the block was allocated with. */
  size?: number;
  /** JS stack at the block's allocation. */
  stack?: string;
  /** JS stack at the block's first free (double frees, use after free). */
  freeStack?: string;
}

/**
 * The error every heap check throws. `address` is the address the caller
 * passed (or the block where damage was found). After a HeapError the heap
 * is still consistent and keeps working; a damaged block is retired.
 */
export class HeapError extends Error {
  /** Stable code that names the kind of misuse or damage. */
  readonly code: HeapErrorCode;
  /** The address involved (0 when none, or when the caller passed 0). */
  readonly address: number;
  /** The block's size, when debug mode knows it. */
  readonly size?: number;
  /** Where the block was allocated (JS stack), when debug mode recorded it. */
  readonly allocationStack?: string;
  /** Where the block was first freed, for double frees and use after free in debug mode. */
  readonly freeStack?: string;

  /** Makes an error whose message names the code, address and any debug details. */
  constructor(
    code: HeapErrorCode,
    address: number,
    message: string,
    details: HeapErrorDetails = {},
  ) {
    let text = address === 0 ? `${code}: ${message}` : `${code} at ${hex(address)}: ${message}`;
    if (details.size !== undefined) text += ` (block of ${details.size} bytes)`;
    if (details.stack) text += `\n  allocated at:\n${indent(details.stack)}`;
    if (details.freeStack) text += `\n  first freed at:\n${indent(details.freeStack)}`;
    super(text);
    this.name = "HeapError";
    this.code = code;
    this.address = address;
    if (details.size !== undefined) this.size = details.size;
    if (details.stack !== undefined) this.allocationStack = details.stack;
    if (details.freeStack !== undefined) this.freeStack = details.freeStack;
  }
}

/** `0x7f...` form used in every message; anything that is no address is shown as it is. */
function hex(address: number): string {
  return Number.isSafeInteger(address) && address > 0
    ? "0x" + address.toString(16)
    : `${String(address)} (not an address)`;
}

/**
 * The error for an address that is no live block's start: a caller that
 * frees it (free, realloc) gets invalid-free, a caller that only looks at it
 * gets invalid-address.
 */
export function notABlock(op: string, address: number, why: string): HeapError {
  if (address === 0) {
    return new HeapError(
      frees(op) ? "invalid-free" : "invalid-address",
      0,
      `${op}: 0 is not a block`,
    );
  }
  return new HeapError(frees(op) ? "invalid-free" : "invalid-address", address, `${op}: ${why}`);
}

/** The error for a block that was freed: double-free if the caller frees it again, else freed-block. */
export function freedBlock(op: string, address: number, details: HeapErrorDetails = {}): HeapError {
  return frees(op)
    ? new HeapError("double-free", address, `${op}: the block was already freed`, details)
    : new HeapError("freed-block", address, `${op}: the block was freed`, details);
}

/** Whether operation `op` frees the block it is given. */
function frees(op: string): boolean {
  return op === "free" || op === "realloc";
}

/** "1 block", "2 blocks". */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function indent(stack: string): string {
  return stack.split("\n").map((line) => "    " + line.trim()).join("\n");
}

/** How check()'s validators report the first inconsistency they find (by throwing "corrupt"). */
export type Fail = (address: number, what: string) => never;
