/**
 * Debug mode: red zones, junk and poison fills, a quarantine, and the JS
 * stack of every allocation, layered over the core allocator.
 *
 * Every user block sits inside a larger core block:
 *
 *   core block
 *   +--------------------+----------------------+-------------------------+-------+
 *   | leading canary     | user bytes           | trailing canary         | guard |
 *   | max(32, alignment) | exactly `size`       | >= 16 B, to the block's | page  |
 *   | bytes of 0xFE      | 0xAA when allocated, | end (large blocks: to   | large |
 *   |                    | 0xDD when freed      | the end of the page)    | only  |
 *   +--------------------+----------------------+-------------------------+-------+
 *                        ^ the address malloc returns; usableSize = size
 *
 * A large block's last page is made inaccessible (PROT_NONE), so a write
 * that runs past the canary faults at once instead of corrupting a neighbour.
 *
 * A freed block is poisoned and held in a FIFO quarantine (bounded in bytes
 * and in blocks) before its core block is really freed; its poison is checked
 * when it leaves and by check(). A block found damaged is retired: it stays
 * out of circulation for the life of the heap.
 *
 * The records (size, stacks) are JS objects in a Map owned by this layer:
 * debug information, not allocator state, and deliberately off the hot path
 * of the default mode, which never creates this layer.
 */

import { HeapError, type HeapErrorCode } from "./errors.ts";
import { OS_PAGE_SIZE, PROT_NONE } from "./os.ts";
import { MAX_CLASS_ALIGNMENT, MAX_CLASS_SIZE } from "./size_classes.ts";

/** Knobs of `new Heap({ debug: { ... } })`. */
export interface DebugOptions {
  /** Freed bytes held back from reuse. Default 8 MiB. */
  quarantineBytes?: number;
  /** Freed blocks held back from reuse. Default 4096. */
  quarantineBlocks?: number;
  /** Record the JS stack of every allocation (costs a few microseconds each). Default true. */
  stacks?: boolean;
}

/** A live block as `heap.leaks()` reports it. */
export interface LeakedBlock {
  address: number;
  size: number;
  /** JS stack at allocation ("" when stacks are off). */
  stack: string;
}

/** What the debug layer needs from the core allocator, bypassing debug mode. */
export interface CoreAccess {
  /** Allocates a core block (alignment a power of two >= 16); 0 when out of memory. */
  allocate(size: number, alignment: number): number;
  /** Frees a core block. */
  release(address: number): void;
  /** Usable size of a core block. */
  usableSize(address: number): number;
  /** True if the core block has a mapping of its own. */
  isLarge(address: number): boolean;
  /** A byte view of native memory (a view of the arena, or a fresh one for large blocks). */
  view(address: number, length: number): Uint8Array;
  /** Changes the protection of whole pages. */
  protect(address: number, length: number, prot: number): void;
}

const LEAD = 32;
const MIN_TRAIL = 16;
export const CANARY = 0xfe;
export const JUNK = 0xaa;
export const POISON = 0xdd;
const GRAVEYARD_LIMIT = 16384;

interface DebugBlock {
  address: number;
  core: number;
  size: number;
  lead: number;
  trail: number;
  guard: boolean;
  stack: string;
  freeStack: string;
}

/** The debug layer of one Heap. */
export class DebugLayer {
  readonly #core: CoreAccess;
  readonly #quarantineBytesLimit: number;
  readonly #quarantineBlocksLimit: number;
  readonly #stacks: boolean;
  readonly #live = new Map<number, DebugBlock>();
  /** Quarantined blocks in free order (a Map keeps insertion order). */
  readonly #quarantine = new Map<number, DebugBlock>();
  #quarantinedBytes = 0;
  /** Recently freed blocks that left quarantine, for double-free reports. */
  readonly #graveyard = new Map<number, DebugBlock>();
  readonly #retired: DebugBlock[] = [];

  constructor(core: CoreAccess, options: DebugOptions) {
    this.#core = core;
    this.#quarantineBytesLimit = nonNegative(
      options.quarantineBytes ?? 8 * 2 ** 20,
      "quarantineBytes",
    );
    this.#quarantineBlocksLimit = nonNegative(options.quarantineBlocks ?? 4096, "quarantineBlocks");
    this.#stacks = options.stacks ?? true;
  }

  /** Blocks currently held in quarantine. */
  get quarantinedBlocks(): number {
    return this.#quarantine.size;
  }

  /** Blocks retired after damage was found in them. */
  get retiredBlocks(): number {
    return this.#retired.length;
  }

  /** Allocates `size` user bytes at a multiple of `alignment`; zeroed or junk-filled. */
  allocate(size: number, alignment: number, zero: boolean): number {
    const lead = Math.max(LEAD, alignment);
    let total = lead + size + MIN_TRAIL;
    // Blocks that will get a mapping of their own also get a guard page.
    const large = total > MAX_CLASS_SIZE || alignment > MAX_CLASS_ALIGNMENT;
    if (large) total = Math.ceil(total / OS_PAGE_SIZE) * OS_PAGE_SIZE + OS_PAGE_SIZE;
    const core = this.#core.allocate(total, Math.max(alignment, 16));
    if (core === 0) return 0;
    const coreSize = this.#core.usableSize(core);
    const guard = large && this.#core.isLarge(core);
    const end = guard ? coreSize - OS_PAGE_SIZE : coreSize;
    if (guard) this.#core.protect(core + end, OS_PAGE_SIZE, PROT_NONE);
    const block: DebugBlock = {
      address: core + lead,
      core,
      size,
      lead,
      trail: end - lead - size,
      guard,
      stack: this.#stacks ? captureStack() : "",
      freeStack: "",
    };
    const bytes = this.#core.view(core, end);
    bytes.fill(CANARY, 0, lead);
    bytes.fill(zero ? 0 : JUNK, lead, lead + size);
    bytes.fill(CANARY, lead + size, end);
    this.#live.set(block.address, block);
    this.#graveyard.delete(block.address);
    return block.address;
  }

  /** Frees a user block: checks its red zones, poisons it, quarantines it. */
  free(address: number, op: string): void {
    const block = this.#liveBlock(address, op);
    this.#checkCanaries(block, op);
    this.#quarantineBlock(block);
    this.#drainQuarantine(op);
  }

  /** realloc in debug mode always moves, so stale pointers to the old block are caught. */
  realloc(address: number, size: number, op: string): number {
    const block = this.#liveBlock(address, op);
    this.#checkCanaries(block, op);
    // Make room for this block in quarantine first, so that a problem found
    // in another block is reported before anything happens to this one.
    this.#drainQuarantine(op, block.size);
    const moved = this.allocate(size, 16, false);
    if (moved === 0) return 0;
    const keep = Math.min(size, block.size);
    this.#core.view(moved, keep).set(this.#core.view(address, keep));
    this.#quarantineBlock(block); // drained by the next free or realloc

    return moved;
  }

  /** The size the block was allocated with (debug mode's usable size). */
  usableSize(address: number, op: string): number {
    return this.#liveBlock(address, op).size;
  }

  /** A view of exactly the user bytes of a live block. */
  bytes(address: number, length: number | undefined, op: string): Uint8Array {
    const block = this.#liveBlock(address, op);
    const n = length ?? block.size;
    if (!Number.isSafeInteger(n) || n < 0 || n > block.size) {
      throw new RangeError(
        `${op}: length must be an integer from 0 to ${block.size}, got ${length}`,
      );
    }
    return this.#core.view(address, n);
  }

  /** Throws unless `address` is a live user block. */
  assertLive(address: number, op: string): void {
    this.#liveBlock(address, op);
  }

  /** Checks every live block's red zones and every quarantined block's poison. */
  check(): void {
    for (const block of this.#live.values()) this.#checkCanaries(block, "check");
    for (const block of this.#quarantine.values()) {
      if (!this.#poisonIntact(block)) {
        this.#quarantine.delete(block.address);
        this.#quarantinedBytes -= block.size;
        this.#retire(block);
        throw this.#error(
          "use-after-free",
          block,
          "check: a freed block was written while in quarantine",
        );
      }
    }
  }

  /** Releases every quarantined block to the core (close, trim). */
  flushQuarantine(): void {
    let problem: HeapError | undefined;
    for (const block of [...this.#quarantine.values()]) {
      try {
        this.#evict(block);
      } catch (error) {
        problem ??= error as HeapError;
      }
    }
    if (problem) throw problem;
  }

  /** Every live block, in allocation order. */
  leaks(): LeakedBlock[] {
    return [...this.#live.values()].map((b) => ({
      address: b.address,
      size: b.size,
      stack: b.stack,
    }));
  }

  /** Live blocks grouped by allocation site, largest total first. */
  leakReport(): string {
    const sites = new Map<string, { count: number; bytes: number }>();
    for (const b of this.#live.values()) {
      const site = sites.get(b.stack) ?? { count: 0, bytes: 0 };
      site.count++;
      site.bytes += b.size;
      sites.set(b.stack, site);
    }
    if (sites.size === 0) return "no leaks: every block was freed";
    const rows = [...sites.entries()].sort((a, b) => b[1].bytes - a[1].bytes);
    const total = rows.reduce((sum, [, s]) => sum + s.bytes, 0);
    const lines = [`${this.#live.size} live blocks, ${total} bytes, from ${rows.length} sites:`];
    for (const [stack, site] of rows) {
      lines.push(`${site.bytes} bytes in ${site.count} blocks allocated at:`);
      lines.push(
        stack ? stack.split("\n").map((l) => "    " + l.trim()).join("\n") : "    (stacks off)",
      );
    }
    return lines.join("\n");
  }

  // ---- internals ------------------------------------------------------------

  /** Poisons a live block (canaries already checked) and puts it in quarantine. */
  #quarantineBlock(block: DebugBlock): void {
    this.#live.delete(block.address);
    block.freeStack = this.#stacks ? captureStack() : "";
    this.#core.view(block.address, block.size).fill(POISON);
    this.#quarantine.set(block.address, block);
    this.#quarantinedBytes += block.size;
  }

  #liveBlock(address: number, op: string): DebugBlock {
    if (typeof address !== "number") {
      throw new TypeError(`${op}: address must be a number, got ${typeof address}`);
    }
    const block = this.#live.get(address);
    if (block !== undefined) return block;
    const freed = this.#quarantine.get(address) ?? this.#graveyard.get(address);
    if (freed !== undefined) {
      throw new HeapError("double-free", address, `${op}: the block was already freed`, {
        size: freed.size,
        stack: freed.stack,
        freeStack: freed.freeStack,
      });
    }
    throw new HeapError(
      "invalid-free",
      address,
      `${op}: not the address of a live block of this heap`,
    );
  }

  #checkCanaries(block: DebugBlock, op: string): void {
    const bytes = this.#core.view(block.core, block.lead + block.size + block.trail);
    for (let i = 0; i < block.lead; i++) {
      if (bytes[i] !== CANARY) {
        this.#live.delete(block.address);
        this.#retire(block);
        throw this.#error(
          "underflow",
          block,
          `${op}: the red zone before the block was overwritten`,
        );
      }
    }
    for (let i = block.lead + block.size; i < bytes.length; i++) {
      if (bytes[i] !== CANARY) {
        this.#live.delete(block.address);
        this.#retire(block);
        throw this.#error(
          "overflow",
          block,
          `${op}: the red zone after the block was overwritten ${
            i - block.lead - block.size
          } bytes past its end`,
        );
      }
    }
  }

  #poisonIntact(block: DebugBlock): boolean {
    const bytes = this.#core.view(block.address, block.size);
    for (let i = 0; i < bytes.length; i++) if (bytes[i] !== POISON) return false;
    return true;
  }

  /**
   * Releases the oldest quarantined blocks beyond the limits, checking their
   * poison; with `incomingBytes`, leaves room for one more block of that size.
   */
  #drainQuarantine(op: string, incomingBytes = -1): void {
    const incomingBlocks = incomingBytes < 0 ? 0 : 1;
    let problem: HeapError | undefined;
    while (
      this.#quarantine.size > 0 && (
        this.#quarantine.size + incomingBlocks > this.#quarantineBlocksLimit ||
        this.#quarantinedBytes + Math.max(incomingBytes, 0) > this.#quarantineBytesLimit
      )
    ) {
      const oldest = this.#quarantine.values().next().value!;
      try {
        this.#evict(oldest);
      } catch (error) {
        problem ??= error as HeapError;
      }
    }
    if (problem) {
      throw new HeapError(problem.code, problem.address, `${op}: ${problem.message}`, {
        size: problem.size,
        stack: problem.allocationStack,
        freeStack: problem.freeStack,
      });
    }
  }

  #evict(block: DebugBlock): void {
    this.#quarantine.delete(block.address);
    this.#quarantinedBytes -= block.size;
    if (!this.#poisonIntact(block)) {
      this.#retire(block);
      throw this.#error("use-after-free", block, "a freed block was written while in quarantine");
    }
    this.#core.release(block.core); // munmap takes the guard page with it
    this.#graveyard.set(block.address, block);
    if (this.#graveyard.size > GRAVEYARD_LIMIT) {
      this.#graveyard.delete(this.#graveyard.keys().next().value!);
    }
  }

  /** A damaged block never goes back to the core allocator. */
  #retire(block: DebugBlock): void {
    this.#retired.push(block);
    this.#graveyard.set(block.address, block);
  }

  #error(code: HeapErrorCode, block: DebugBlock, message: string): HeapError {
    return new HeapError(code, block.address, message, {
      size: block.size,
      stack: block.stack,
      freeStack: block.freeStack || undefined,
    });
  }
}

/** The caller's JS stack, without this library's own frames. */
function captureStack(): string {
  const lines = (new Error().stack ?? "").split("\n").slice(1);
  const own = /\/src\/(debug|heap)\.ts:|\/mod\.ts:/;
  return lines.filter((line) => !own.test(line)).map((line) => line.trim()).join("\n");
}

function nonNegative(n: number, name: string): number {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`debug.${name} must be a non-negative integer, got ${n}`);
  }
  return n;
}
