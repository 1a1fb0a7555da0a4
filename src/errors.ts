/** What went wrong, as a stable machine-readable code. */
export type HeapErrorCode =
  | "invalid-free"
  | "double-free"
  | "closed"
  | "corrupt"
  | "overflow"
  | "underflow"
  | "use-after-free";

/**
 * The error every heap check throws. `address` is the address the caller
 * passed (or the block where corruption was found); the heap is unchanged by
 * the failed call and keeps working.
 */
export class HeapError extends Error {
  /** Stable code that names the kind of misuse or damage. */
  readonly code: HeapErrorCode;
  /** The address involved (0 when none). */
  readonly address: number;

  constructor(code: HeapErrorCode, address: number, message: string) {
    super(`${code} at ${hex(address)}: ${message}`);
    this.name = "HeapError";
    this.code = code;
    this.address = address;
  }
}

/** `0x7f...` form used in every message. */
export function hex(address: number): string {
  return Number.isFinite(address) ? "0x" + address.toString(16) : String(address);
}
