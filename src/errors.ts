/** What went wrong, as a stable machine-readable code. */
export type HeapErrorCode =
  | "invalid-free"
  | "double-free"
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
  /** The address involved (0 when none). */
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
    let text = `${code} at ${hex(address)}: ${message}`;
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

/** `0x7f...` form used in every message. */
function hex(address: number): string {
  return Number.isFinite(address) ? "0x" + address.toString(16) : String(address);
}

function indent(stack: string): string {
  return stack.split("\n").map((line) => "    " + line.trim()).join("\n");
}
