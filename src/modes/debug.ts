/**
 * Debug mode: red zones, junk and poison fills, a quarantine, and the JS
 * stack of every allocation, layered over the core allocator.
 *
 * Every user block sits inside a larger core block, which starts with a
 * header that any Worker of a shared heap can read:
 *
 *   core block
 *   +--------+------------------+----------------------+---------------------+-------+
 *   | header | leading canary   | user bytes           | trailing canary     | guard |
 *   | 32 B   | >= 32 B of 0xFE  | exactly `size`       | >= 16 B of 0xFE, to | page  |
 *   |        | (up to the       | 0xAA when allocated, | the block's end     | large |
 *   |        | alignment)       | 0xDD when freed      | (large: page's end) | only  |
 *   +--------+------------------+----------------------+---------------------+-------+
 *                               ^ the address malloc returns; usableSize = size
 *
 *   header  0 state u32   LIVE, FREED (in a quarantine) or RETIRED (damaged)
 *           4 check u32   hash of the fields below and the address: an
 *                         underflow that reaches the header is caught like
 *                         one that hits the canary (the state is not hashed:
 *                         it changes by compare-and-swap alone)
 *           8 size  f64
 *          16 site  u32   allocation number; its JS stack lives with the
 *                         Worker that allocated it
 *          20 lead  u32   bytes from the core block to the user bytes (bit 31: guard page)
 *          24 trail u32   bytes of trailing canary
 *          28 freer u32   shared heaps: owner slot of the Worker whose quarantine
 *                         holds the block (not hashed: written as it is freed)
 *
 * The leading canary fills at most the OS page before the user bytes: with a
 * large alignment the lead is as long as the alignment (the header sits at
 * the core block's start, a multiple of it), and the rest of it is left
 * untouched, so that it costs address space but no memory.
 *
 * A large block's last page is made inaccessible (PROT_NONE), so a write
 * that runs past the canary faults at once instead of corrupting a neighbour.
 * Freeing changes the state LIVE -> FREED with a compare-and-swap, so a
 * second free is caught even when another Worker makes it. A freed block is
 * poisoned and held in the freeing Worker's FIFO quarantine (bounded in bytes
 * and in blocks) before its core block is really freed; its poison is checked
 * when it leaves and by check(). A block found damaged is retired: it stays
 * out of circulation for the life of the heap.
 */

import {
  freedBlock,
  HeapError,
  type HeapErrorCode,
  type HeapErrorDetails,
  notABlock,
  plural,
} from "../errors.ts";
import { OS_PAGE_SIZE, PROT_NONE } from "../os/libc.ts";
import type { HeapStats } from "../stats.ts";
import { MAX_CLASS_ALIGNMENT, MAX_CLASS_SIZE } from "../alloc/size_classes.ts";

/** Knobs of `new Heap({ debug: { ... } })`. */
export interface DebugOptions {
  /**
   * Bytes of freed blocks held back from reuse, counted as the memory each
   * holds (its header, red zones and alignment padding too). Default 8 MiB.
   */
  quarantineBytes?: number;
  /** Freed blocks held back from reuse. Default 4096. */
  quarantineBlocks?: number;
  /** Record the JS stack of every allocation. Default true. */
  stacks?: boolean;
}

/** A live block as `heap.leaks()` reports it. */
export interface LeakedBlock {
  /** The block's address. */
  address: number;
  /** Its size: as requested in debug mode, the usable size otherwise. */
  size: number;
  /** JS stack at allocation ("" when stacks are off or unknown). */
  stack: string;
}

/** What the debug layer needs from the core allocator, bypassing debug mode. */
export interface CoreAccess {
  /** Allocates a core block (alignment a power of two >= 16); 0 when out of memory. */
  allocate(size: number, alignment: number): number;
  /** Frees a core block. */
  release(address: number): void;
  /** Usable size of a live core block starting at `address`, or 0 if there is none. */
  liveSize(address: number): number;
  /** True if the core block has a mapping of its own. */
  isLarge(address: number): boolean;
  /** Calls `visit` with the address of every live core block. */
  forEachLive(visit: (address: number) => void): void;
  /** 32-bit words over `length` bytes at `address` (a view of the arena where possible). */
  words(address: number, length: number): { u32: Uint32Array; index: number };
  /** A byte view of native memory (a view of the arena, or a fresh one for large blocks). */
  view(address: number, length: number): Uint8Array;
  /** Changes the protection of whole pages; false when the OS refuses (out of map entries). */
  protect(address: number, length: number, prot: number): boolean;
  /** True if a core block started at `address` and was freed (so a user block there was, too). */
  wasFreed(address: number): boolean;
  /**
   * Runs `body` with the heap's blocks to itself (a shared heap's global
   * lock): a header read there cannot meet a block another Worker unmaps.
   */
  serialized<T>(body: () => T): T;
  /** A tag (< 64) that tells this Worker's allocations apart from other Workers'. */
  readonly owner: number;
}

const HEADER = 32;
const MIN_LEAD = HEADER + 32;
const MIN_TRAIL = 16;
/** The leading canary ends at the user bytes and reaches back at most this far. */
const MAX_LEAD_CANARY = OS_PAGE_SIZE;
export const CANARY = 0xfe;
export const JUNK = 0xaa;
export const POISON = 0xdd;
const GRAVEYARD_LIMIT = 16384;

const enum State {
  Live = 0x11fe_b10c,
  Freed = 0xf4ee_d0d0,
  Retired = 0xdead_b10c,
}

const GUARD_BIT = 0x8000_0000;

/** What a header says (read into JS for one operation). */
interface DebugBlock {
  address: number;
  core: number;
  size: number;
  lead: number;
  trail: number;
  guard: boolean;
  site: number;
  state: number;
}

/** The debug layer of one Heap object (one per Worker of a shared heap). */
export class DebugLayer {
  readonly #core: CoreAccess;
  readonly #quarantineBytesLimit: number;
  readonly #quarantineBlocksLimit: number;
  readonly #stacks: boolean;
  /** This Worker's freed blocks, oldest first: address -> block. */
  readonly #quarantine = new Map<number, DebugBlock>();
  #quarantinedBytes = 0;
  /** Allocation stacks by site number, captured as Error objects (formatted only when shown). */
  readonly #sites = new Map<number, Error>();
  /** First-free stacks of blocks this Worker freed, kept for double-free reports. */
  readonly #freeSites = new Map<number, Error>();
  /** Recently freed (or retired) blocks, for reports about them after they leave quarantine. */
  readonly #graveyard = new Map<number, { block: DebugBlock; damage?: HeapErrorCode }>();
  #nextSite = 0;
  /** The user's blocks as stats() reports them in debug mode (this Worker's calls). */
  #allocs = 0;
  #frees = 0;
  #liveBytes = 0;
  #peakBytes = 0;

  constructor(core: CoreAccess, options: DebugOptions) {
    this.#core = core;
    this.#quarantineBytesLimit = nonNegative(
      options.quarantineBytes ?? 8 * 2 ** 20,
      "quarantineBytes",
    );
    this.#quarantineBlocksLimit = nonNegative(options.quarantineBlocks ?? 4096, "quarantineBlocks");
    this.#stacks = options.stacks ?? true;
  }

  /** Allocates `size` user bytes at a multiple of `alignment`; zeroed or junk-filled. */
  allocate(size: number, alignment: number, zero: boolean): number {
    return this.#core.serialized(() => this.#allocate(size, alignment, zero));
  }

  #allocate(size: number, alignment: number, zero: boolean): number {
    const lead = Math.ceil(MIN_LEAD / alignment) * alignment;
    let total = lead + size + MIN_TRAIL;
    // Blocks that will get a mapping of their own also get a guard page.
    const large = total > MAX_CLASS_SIZE || alignment > MAX_CLASS_ALIGNMENT;
    if (large) total = Math.ceil(total / OS_PAGE_SIZE) * OS_PAGE_SIZE + OS_PAGE_SIZE;
    const core = this.#core.allocate(total, Math.max(alignment, 16));
    if (core === 0) return 0;
    const coreSize = this.#core.liveSize(core);
    const guard = large && this.#core.isLarge(core);
    const end = guard ? coreSize - OS_PAGE_SIZE : coreSize;
    if (guard && !this.#core.protect(core + end, OS_PAGE_SIZE, PROT_NONE)) {
      // The OS is out of map entries: no block without its guard page.
      this.#core.release(core);
      return 0;
    }
    const site = ((this.#core.owner << 26) | (this.#nextSite++ & 0x3ff_ffff)) >>> 0;
    const block: DebugBlock = {
      address: core + lead,
      core,
      size,
      lead,
      trail: end - lead - size,
      guard,
      site,
      state: State.Live,
    };
    const bytes = this.#core.view(core, end);
    bytes.fill(CANARY, leadCanaryStart(lead), lead);
    bytes.fill(zero ? 0 : JUNK, lead, lead + size);
    bytes.fill(CANARY, lead + size, end);
    this.#writeHeader(block);
    if (this.#stacks) this.#sites.set(site, new Error("allocated here"));
    this.#graveyard.delete(block.address);
    this.#allocs++;
    this.#liveBytes += size;
    if (this.#liveBytes > this.#peakBytes) this.#peakBytes = this.#liveBytes;
    return block.address;
  }

  /** Frees a user block: checks its red zones, poisons it, quarantines it. */
  free(address: number, op: string): void {
    this.#core.serialized(() => {
      const block = this.#liveBlock(address, op);
      this.#checkCanaries(block, op);
      this.#quarantineBlock(block, op);
      this.#drainQuarantine(op);
    });
  }

  /** realloc in debug mode always moves, so stale pointers to the old block are caught. */
  realloc(address: number, size: number, op: string): number {
    return this.#core.serialized(() => this.#realloc(address, size, op));
  }

  #realloc(address: number, size: number, op: string): number {
    const block = this.#liveBlock(address, op);
    this.#checkCanaries(block, op);
    // Make room for this block in quarantine first, so that a problem found
    // in another block is reported before anything happens to this one.
    this.#drainQuarantine(op, heldBytes(block));
    const moved = this.#allocate(size, 16, false);
    if (moved === 0) return 0;
    const keep = Math.min(size, block.size);
    this.#core.view(moved, keep).set(this.#core.view(address, keep));
    try {
      this.#quarantineBlock(block, op);
    } catch (error) {
      // Freed meanwhile (another Worker): the call fails as a whole.
      this.#core.release(this.#blockAt(moved)!.core);
      throw error;
    }
    this.#drainQuarantine(op); // can only release the block just poisoned
    return moved;
  }

  /** The size the block was allocated with (debug mode's usable size). */
  usableSize(address: number, op: string): number {
    return this.#core.serialized(() => this.#liveBlock(address, op).size);
  }

  /**
   * Where a view of a live block's first `length` bytes (default: exactly
   * its size) lies: the core block it is in and the length, checked.
   */
  viewSpan(
    address: number,
    length: number | undefined,
    op: string,
  ): { core: number; size: number; length: number } {
    const block = this.#core.serialized(() => this.#liveBlock(address, op));
    const n = length ?? block.size;
    if (!Number.isSafeInteger(n) || n < 0 || n > block.size) {
      throw new RangeError(
        `${op}: length must be an integer from 0 to ${block.size}, got ${length}`,
      );
    }
    return { core: block.core, size: block.size, length: n };
  }

  /** The live user block in core block `core` whose bytes include `address`, or 0. */
  userBlockIn(core: number, address: number): number {
    const block = this.#readHeader(core);
    if (block === null || block.state !== State.Live) return 0;
    const inside = address >= block.address &&
      address < block.address + Math.max(block.size, 1);
    return inside ? block.address : 0;
  }

  /** Throws unless `address` is a live user block. */
  assertLive(address: number, op: string): void {
    this.#core.serialized(() => this.#liveBlock(address, op));
  }

  /** Checks every live block's red zones and every quarantined block's poison. */
  check(): void {
    for (const block of this.#liveBlocks()) this.#checkCanaries(block, "check");
    for (const block of this.#quarantine.values()) {
      if (!this.#poisonIntact(block)) {
        this.#quarantine.delete(block.address);
        this.#quarantinedBytes -= heldBytes(block);
        this.#retire(block, "use-after-free");
        throw this.#error(
          "use-after-free",
          block,
          "check: a freed block was written while in quarantine",
        );
      }
    }
  }

  /** Releases every block of this Worker's quarantine to the core (trim, close). */
  flushQuarantine(op: string): void {
    let problem: HeapError | undefined;
    for (const block of [...this.#quarantine.values()]) {
      try {
        this.#evict(block, op);
      } catch (error) {
        problem ??= error as HeapError;
      }
    }
    if (problem) throw problem;
  }

  /** Every live block, in allocation order of each Worker. */
  leaks(): LeakedBlock[] {
    return this.#core.serialized(() => this.#liveBlocks())
      .sort((a, b) => a.site - b.site)
      .map((b) => ({ address: b.address, size: b.size, stack: this.#stackOf(b) }));
  }

  /** Every live block with its allocation number and stack (for heap snapshots). */
  liveSites(): { address: number; size: number; site: number; stack: string }[] {
    return this.#liveBlocks().map((b) => ({
      address: b.address,
      size: b.size,
      site: b.site,
      stack: this.#stackOf(b),
    }));
  }

  /** Live blocks grouped by allocation site, largest total first. */
  leakReport(): string {
    const sites = new Map<string, { count: number; bytes: number }>();
    const live = this.leaks();
    for (const b of live) {
      const site = sites.get(b.stack) ?? { count: 0, bytes: 0 };
      site.count++;
      site.bytes += b.size;
      sites.set(b.stack, site);
    }
    if (sites.size === 0) return "no leaks: every block was freed";
    const rows = [...sites.entries()].sort((a, b) => b[1].bytes - a[1].bytes);
    const total = rows.reduce((sum, [, s]) => sum + s.bytes, 0);
    const lines = [
      `${plural(live.length, "live block")}, ${plural(total, "byte")}, from ${
        plural(rows.length, "site")
      }:`,
    ];
    for (const [stack, site] of rows) {
      lines.push(`${plural(site.bytes, "byte")} in ${plural(site.count, "block")} allocated at:`);
      lines.push(
        stack ? stack.split("\n").map((l) => "    " + l.trim()).join("\n") : "    (stacks off)",
      );
    }
    return lines.join("\n");
  }

  /**
   * Puts the user's blocks in place of the core blocks behind them in
   * `stats`: their count, their sizes as asked, and the calls made. A shared
   * heap's blocks come and go in every Worker (`shared`): live blocks and
   * bytes are then counted by walking the heap, and the calls are the core's
   * (one core block per user block), a block in this Worker's quarantine
   * counting as freed.
   */
  userStats(stats: HeapStats, shared: boolean): void {
    if (shared) {
      const blocks = this.#liveBlocks();
      const bytes = blocks.reduce((sum, b) => sum + b.size, 0);
      stats.allocatedBytes = bytes;
      stats.peakAllocatedBytes = Math.max(this.#peakBytes, bytes);
      stats.liveBlocks = blocks.length;
      stats.freeCount += this.#quarantine.size;
    } else {
      stats.allocatedBytes = this.#liveBytes;
      stats.peakAllocatedBytes = this.#peakBytes;
      stats.liveBlocks = this.#allocs - this.#frees;
      stats.allocCount = this.#allocs;
      stats.freeCount = this.#frees;
    }
    const committed = stats.committedBytes;
    stats.utilization = committed > 0 ? stats.allocatedBytes / committed : 0;
  }

  #countFree(block: DebugBlock): void {
    this.#frees++;
    this.#liveBytes -= block.size;
  }

  // ---- headers ---------------------------------------------------------------

  #writeHeader(block: DebugBlock): void {
    const { u32, index } = this.#core.words(block.core, HEADER);
    const f64 = new Float64Array(u32.buffer, u32.byteOffset + index * 4, 2);
    f64[1] = block.size;
    u32[index + 4] = block.site;
    u32[index + 5] = block.lead | (block.guard ? GUARD_BIT : 0);
    u32[index + 6] = block.trail;
    u32[index + 7] = 0;
    u32[index + 1] = checksum(block);
    Atomics.store(u32, index, block.state);
  }

  /** True if the core block at `core` is live but its header fails its check: an underflow reached it. */
  #headerDamaged(core: number): boolean {
    if (this.#core.liveSize(core) < MIN_LEAD) return false;
    const { u32, index } = this.#core.words(core, HEADER);
    const state = Atomics.load(u32, index);
    return this.#readHeader(core) === null ||
      state !== State.Live && state !== State.Freed && state !== State.Retired;
  }

  /** The block whose core starts at `core`, if its header is intact; else null. */
  #readHeader(core: number): DebugBlock | null {
    const { u32, index } = this.#core.words(core, HEADER);
    const f64 = new Float64Array(u32.buffer, u32.byteOffset + index * 4, 2);
    const leadWord = u32[index + 5];
    const block: DebugBlock = {
      address: core + (leadWord & ~GUARD_BIT),
      core,
      size: f64[1],
      lead: leadWord & ~GUARD_BIT,
      trail: u32[index + 6],
      guard: (leadWord & GUARD_BIT) !== 0,
      site: u32[index + 4],
      state: Atomics.load(u32, index),
    };
    return u32[index + 1] === checksum(block) ? block : null;
  }

  /** Moves the header's state from `from` to `to` atomically; false if it was not `from`. */
  #swapState(block: DebugBlock, from: State, to: State): boolean {
    const { u32, index } = this.#core.words(block.core, HEADER);
    if (Atomics.compareExchange(u32, index, from, to) !== from) return false;
    block.state = to;
    return true;
  }

  /**
   * Finds the core block under user address `address`: its header sits
   * `lead` bytes before it, and lead is MIN_LEAD rounded up to the block's
   * alignment, so only a few distances are possible.
   */
  #blockAt(address: number): DebugBlock | null {
    if (!Number.isSafeInteger(address) || address % 16 !== 0) return null;
    for (let alignment = 16; alignment <= 2 ** 40; alignment *= 2) {
      if (address % alignment !== 0) break;
      const lead = Math.ceil(MIN_LEAD / alignment) * alignment;
      const core = address - lead;
      if (core > 0 && this.#core.liveSize(core) >= lead) {
        const block = this.#readHeader(core);
        if (block !== null && block.lead === lead) return block;
      }
    }
    return null;
  }

  /** Whether a core block that held a user block at `address` was freed (see #blockAt). */
  #coreFreedUnder(address: number): boolean {
    if (!Number.isSafeInteger(address) || address % 16 !== 0) return false;
    for (let alignment = 16; alignment <= 2 ** 40 && address % alignment === 0; alignment *= 2) {
      const core = address - Math.ceil(MIN_LEAD / alignment) * alignment;
      if (core > 0 && this.#core.wasFreed(core)) return true;
    }
    return false;
  }

  #liveBlocks(): DebugBlock[] {
    const blocks: DebugBlock[] = [];
    this.#core.forEachLive((core) => {
      const block = this.#readHeader(core);
      if (block !== null && block.state === State.Live) blocks.push(block);
    });
    return blocks;
  }

  // ---- internals ------------------------------------------------------------

  /** Marks a live block freed (atomically), poisons it and puts it in quarantine. */
  #quarantineBlock(block: DebugBlock, op: string): void {
    if (!this.#swapState(block, State.Live, State.Freed)) throw freedBlock(op, block.address);
    const { u32, index } = this.#core.words(block.core, HEADER);
    u32[index + 7] = this.#core.owner;
    if (this.#stacks) this.#freeSites.set(block.address, new Error("freed here"));
    this.#countFree(block);
    this.#core.view(block.address, block.size).fill(POISON);
    this.#quarantine.set(block.address, block);
    this.#quarantinedBytes += heldBytes(block);
  }

  #liveBlock(address: number, op: string): DebugBlock {
    if (typeof address !== "number") {
      throw new TypeError(`${op}: address must be a number, got ${typeof address}`);
    }
    const block = this.#blockAt(address);
    if (block !== null && block.state === State.Live) return block;
    if (
      block === null && !this.#graveyard.has(address) && this.#headerDamaged(address - MIN_LEAD)
    ) {
      const damaged: DebugBlock = {
        address,
        core: address - MIN_LEAD,
        size: 0,
        lead: MIN_LEAD,
        trail: 0,
        guard: false,
        site: 0,
        state: State.Retired,
      };
      this.#graveyard.set(address, { block: damaged, damage: "underflow" });
      throw new HeapError(
        "underflow",
        address,
        `${op}: the block's header before its red zone was overwritten`,
      );
    }
    const known = this.#quarantine.get(address) ?? this.#graveyard.get(address)?.block ??
      (block?.state === State.Freed ? block : undefined);
    const damage = this.#graveyard.get(address)?.damage ??
      (block?.state === State.Retired ? "corrupt" : undefined);
    if (damage !== undefined) {
      throw this.#error(
        damage,
        block ?? known!,
        `${op}: the block was retired when damage was found in it; it stays out of use`,
      );
    }
    if (known !== undefined) throw freedBlock(op, known.address, this.#details(known));
    if (block === null && this.#coreFreedUnder(address)) {
      // Freed by another Worker, whose quarantine gave it back already.
      throw freedBlock(op, address);
    }
    throw notABlock(op, address, "not the address of a live block of this heap");
  }

  #checkCanaries(block: DebugBlock, op: string): void {
    const bytes = this.#core.view(block.core, block.lead + block.size + block.trail);
    for (let i = leadCanaryStart(block.lead); i < block.lead; i++) {
      if (bytes[i] !== CANARY) {
        this.#retire(block, "underflow");
        throw this.#error(
          "underflow",
          block,
          `${op}: the red zone before the block was overwritten`,
        );
      }
    }
    const end = block.lead + block.size;
    for (let i = end; i < bytes.length; i++) {
      if (bytes[i] !== CANARY) {
        let last = bytes.length - 1;
        while (bytes[last] === CANARY) last--;
        this.#retire(block, "overflow");
        throw this.#error(
          "overflow",
          block,
          `${op}: the red zone after the block was overwritten, up to ${
            plural(last - end + 1, "byte")
          } past its end`,
        );
      }
    }
  }

  #poisonIntact(block: DebugBlock): boolean {
    // Blocks are 16-byte aligned: compare four bytes at a time.
    const { u32, index } = this.#core.words(block.address, block.size);
    const words = Math.floor(block.size / 4);
    for (let i = 0; i < words; i++) if (u32[index + i] !== 0xdddd_dddd) return false;
    const bytes = this.#core.view(block.address + words * 4, block.size - words * 4);
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
        this.#evict(oldest, op);
      } catch (error) {
        problem ??= error as HeapError;
      }
    }
    if (problem) throw problem;
  }

  #evict(block: DebugBlock, op: string): void {
    this.#quarantine.delete(block.address);
    this.#quarantinedBytes -= heldBytes(block);
    if (!this.#poisonIntact(block)) {
      this.#retire(block, "use-after-free");
      throw this.#error(
        "use-after-free",
        block,
        `${op}: a freed block was written while in quarantine (found as it left quarantine)`,
      );
    }
    this.#graveyard.set(block.address, { block });
    if (this.#graveyard.size > GRAVEYARD_LIMIT) {
      const [oldest, entry] = this.#graveyard.entries().next().value!;
      this.#graveyard.delete(oldest);
      this.#freeSites.delete(oldest);
      this.#sites.delete(entry.block.site);
    }
    this.#core.release(block.core); // munmap takes the guard page with it
  }

  /** A damaged block never goes back to the core allocator. */
  #retire(block: DebugBlock, damage: HeapErrorCode): void {
    if (block.state === State.Live) this.#countFree(block); // damaged while live: out of use now
    const { u32, index } = this.#core.words(block.core, HEADER);
    block.state = State.Retired;
    Atomics.store(u32, index, State.Retired);
    this.#graveyard.set(block.address, { block, damage });
  }

  #stackOf(block: DebugBlock): string {
    const site = this.#sites.get(block.site);
    if (site !== undefined) return cleanStack(site);
    if (!this.#stacks) return "";
    return block.site >>> 26 === this.#core.owner ? "" : "(allocated in another Worker)";
  }

  #error(code: HeapErrorCode, block: DebugBlock, message: string): HeapError {
    return new HeapError(code, block.address, message, this.#details(block));
  }

  #details(block: DebugBlock): HeapErrorDetails {
    const freeSite = this.#freeSites.get(block.address);
    return {
      size: block.size,
      stack: this.#stackOf(block) || undefined,
      freeStack: freeSite ? cleanStack(freeSite) : undefined,
    };
  }
}

/** Where a block's leading canary starts (bytes from the core block's start). */
function leadCanaryStart(lead: number): number {
  return Math.max(HEADER, lead - MAX_LEAD_CANARY);
}

/** What a block holds while quarantined: its whole core block, not just the user bytes. */
function heldBytes(block: DebugBlock): number {
  return block.lead + block.size + block.trail + (block.guard ? OS_PAGE_SIZE : 0);
}

/**
 * Shared heaps: gives back to the heap the core blocks that the quarantines
 * of Workers gone without close() (`orphans`, just adopted by the caller)
 * still hold. Their headers name the freeing Worker; a block whose poison
 * was overwritten stays out of use (retired). Returns the blocks released.
 */
export function releaseOrphanQuarantines(core: CoreAccess, orphans: readonly number[]): number {
  const found: number[] = [];
  core.forEachLive((address) => {
    if (core.liveSize(address) < MIN_LEAD + MIN_TRAIL) return;
    const { u32, index } = core.words(address, HEADER);
    if (Atomics.load(u32, index) === State.Freed && orphans.includes(u32[index + 7])) {
      found.push(address);
    }
  });
  let released = 0;
  for (const address of found) {
    const { u32, index } = core.words(address, HEADER);
    const f64 = new Float64Array(u32.buffer, u32.byteOffset + index * 4, 2);
    const leadWord = u32[index + 5];
    const block: DebugBlock = {
      address: address + (leadWord & ~GUARD_BIT),
      core: address,
      size: f64[1],
      lead: leadWord & ~GUARD_BIT,
      trail: u32[index + 6],
      guard: (leadWord & GUARD_BIT) !== 0,
      site: u32[index + 4],
      state: State.Freed,
    };
    if (u32[index + 1] !== checksum(block)) continue; // not a debug header after all
    if (core.view(block.address, block.size).every((byte) => byte === POISON)) {
      core.release(address);
      released++;
    } else {
      Atomics.store(u32, index, State.Retired);
    }
  }
  return released;
}

/** A header's check word: a hash of its fields but the state, and the block's address. */
function checksum(block: DebugBlock): number {
  let h = 0x811c_9dc5;
  for (
    const v of [
      block.size,
      block.size / 2 ** 32,
      block.site,
      block.lead | (block.guard ? GUARD_BIT : 0),
      block.trail,
      block.core,
      block.core / 2 ** 32,
    ]
  ) {
    h = Math.imul(h ^ (v >>> 0), 0x0100_0193);
  }
  return h >>> 0;
}

/** A captured stack without the Error line and this library's own frames. */
function cleanStack(site: Error): string {
  const lines = (site.stack ?? "").split("\n").slice(1);
  // This library's frames, and the layer under the native adapters (their
  // callbacks' frames, which name the C library, stay).
  const own = /\/src\/(modes\/debug|heap)\.ts:|\/mod\.ts:|\/native\/blocks\.ts:/;
  return lines.filter((line) => !own.test(line)).map((line) => line.trim()).join("\n");
}

function nonNegative(n: number, name: string): number {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`debug.${name} must be a non-negative integer, got ${n}`);
  }
  return n;
}
