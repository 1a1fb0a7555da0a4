/**
 * Blocks handed to C code through callbacks, with the addresses C passes
 * back read from 32-bit parameters where the heap allows it.
 *
 * A C-to-JS callback pays for every 64-bit or pointer argument (Deno makes a
 * BigInt or a pointer object of it). A heap's arena usually sits below 2^32
 * (HeapOptions.lowAddresses), so a callback that takes the address as a
 * `u32` gets every arena block whole, for free. Blocks elsewhere (large
 * blocks have mappings of their own, anywhere) are "wide": they are
 * remembered here by their low 32 bits, and the address C passes back is
 * looked up when any wide block is live. Two rules keep that unambiguous:
 * a wide block is handed out only if its low 32 bits are neither the start
 * of a live block of the heap nor another wide block's, and an arena block
 * only if its address is not a wide block's low 32 bits; a block that breaks
 * a rule is set aside, another is taken, and the ones set aside are freed.
 * An address whose low 32 bits are 0 would read as NULL: it is set aside too.
 *
 * realloc never lets the heap move a block itself (its result could break
 * the rules after the old block is gone): a block that does not fit in place
 * is copied to a new block handed out by malloc's rules, and the old one is
 * freed, so a failure leaves the old block intact, as C's realloc promises.
 */

import type { Heap } from "../mod.ts";
import { moveMemory } from "../src/os/libc.ts";

const TWO_32 = 2 ** 32;
/** Blocks set aside for breaking a rule before malloc gives up. */
const MAX_SET_ASIDE = 16;

/** The heap operations the callbacks of one C library run. */
export class CBlocks {
  /** The heap the blocks come from. */
  readonly heap: Heap;
  /** Whether C passes addresses back as 32-bit values (the heap's arena is below 2^32). */
  readonly narrow: boolean;
  /** Debug mode: realloc always moves, so stale pointers and overflows show. */
  readonly #alwaysMove: boolean;
  /** Wide blocks handed out, by their low 32 bits. */
  readonly #wide = new Map<number, number>();
  /** Blocks handed out and not freed. */
  live = 0;
  /**
   * The buffer behind heap.bytes() of a small block (the heap's arena) and
   * its address: realloc copies inside it in JS, without an FFI memmove.
   */
  readonly #arena: Uint8Array;
  readonly #arenaStart: number;

  /** The blocks of one C library on `heap`. */
  constructor(heap: Heap) {
    this.heap = heap;
    const probe = heap.malloc(1);
    if (probe === 0) throw new RangeError("the heap has no memory for a first block");
    this.narrow = probe < TWO_32;
    // Debug mode's usable size is the size asked for; the core's is a size class.
    this.#alwaysMove = heap.usableSize(probe) === 1;
    const view = heap.bytes(probe, 1);
    this.#arena = new Uint8Array(view.buffer);
    this.#arenaStart = probe - view.byteOffset;
    heap.free(probe);
  }

  /** The full address of a block C passes back (its low 32 bits when narrow). */
  resolve(address: number): number {
    if (this.#wide.size === 0) return address;
    return this.#wide.get(address) ?? address;
  }

  /** malloc for C: the address to hand out, or 0. */
  malloc(size: number): number {
    const address = this.heap.malloc(size);
    if (address === 0) return 0;
    if (this.narrow && (address >= TWO_32 || this.#wide.size !== 0 && this.#wide.has(address))) {
      return this.#admit(address, size);
    }
    this.live++;
    return address;
  }

  /**
   * free for C, of a full address (see resolve). C lets go of the block
   * even when the heap throws (debug mode found it damaged and retires it).
   */
  free(address: number): void {
    this.live--;
    if (address >= TWO_32) this.#wide.delete(address % TWO_32);
    this.heap.free(address);
  }

  /**
   * realloc for C, of a full address: in place when the block holds `size`
   * bytes (unless that would waste more than half of a large block), else
   * moved by malloc, copy and free. 0 on failure, the old block intact.
   */
  realloc(address: number, size: number): number {
    const usable = this.heap.usableSize(address);
    if (size <= usable && !this.#alwaysMove && (size > usable / 2 || address < TWO_32)) {
      return address;
    }
    const moved = this.malloc(size);
    if (moved === 0) return 0;
    this.#copy(moved, address, Math.min(size, usable));
    this.free(address);
    return moved;
  }

  #copy(to: number, from: number, length: number): void {
    const start = this.#arenaStart;
    const end = start + this.#arena.length;
    if (from >= start && from + length <= end && to >= start && to + length <= end) {
      this.#arena.copyWithin(to - start, from - start, from - start + length);
    } else {
      moveMemory(to, from, length);
    }
  }

  /** Usable size of a block, of a full address. */
  usableSize(address: number): number {
    return this.heap.usableSize(address);
  }

  /** Hands out `address` (a fresh block of `size` bytes) or another block if it breaks a rule. */
  #admit(address: number, size: number): number {
    const setAside: number[] = [];
    while (address !== 0 && this.#ambiguous(address)) {
      setAside.push(address);
      address = setAside.length > MAX_SET_ASIDE ? 0 : this.heap.malloc(size);
    }
    for (const block of setAside) this.heap.free(block);
    if (address === 0) return 0;
    if (address >= TWO_32) this.#wide.set(address % TWO_32, address);
    this.live++;
    return address;
  }

  /** Whether C could not tell `address` apart from another block by its low 32 bits. */
  #ambiguous(address: number): boolean {
    if (address < TWO_32) return this.#wide.has(address);
    const low = address % TWO_32;
    return low === 0 || this.#wide.has(low) || this.#isBlock(low);
  }

  #isBlock(address: number): boolean {
    try {
      this.heap.usableSize(address);
      return true;
    } catch {
      return false;
    }
  }
}
