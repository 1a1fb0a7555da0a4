/**
 * Large blocks: every request above 128 KiB gets a mapping of its own, which
 * is unmapped when the block is freed, so the process's resident memory drops
 * at once. Growing uses `mremap`, which moves page tables instead of bytes.
 *
 * The registry of live large blocks is an open-addressing hash table (linear
 * probing, backward-shift deletion, so no tombstones) in a mapping of its
 * own whose address lives in the arena header. It doubles when half full.
 *
 *   table  +-----------------------------+-----------------------------+--
 *          | slot 0                      | slot 1                      | ...
 *          | address | mapLength | requested | (spare)  |  ...         |
 *          +-----------------------------+-----------------------------+--
 *            f64       f64         f64        f64          address 0 = empty
 *
 * A block's address is its mapping's start (page-aligned, and aligned further
 * when asked: the mapping is made oversized and the slack is unmapped).
 *
 * A block that realloc grows is mapped to the next of eight lengths per
 * doubling (as size classes are), not just to the next page: a buffer
 * appended to a few bytes at a time then costs one mremap per 12.5% of
 * growth instead of one per 4 KiB.
 */

import {
  type Arena,
  HeaderU32,
  RECENT_LARGE_F64,
  RECENT_LARGE_SLOTS,
  roundUp,
  StatF64,
} from "../arena/arena.ts";
import { lockGlobal, unlockGlobal } from "../arena/owners.ts";
import { type Fail, HeapError } from "../errors.ts";
import {
  canRemap,
  mapMemory,
  moveMemory,
  OS_PAGE_SIZE,
  populatePages,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  protectMemory,
  remapMemory,
  unmapMemory,
  viewMemory,
} from "../os/libc.ts";

const SLOT_WORDS = 4;
const L_ADDRESS = 0;
const L_MAP_LENGTH = 1;
const L_REQUESTED = 2;
const INITIAL_CAPACITY = 256;
/** Beyond this no mapping is attempted (x86_64 user space is 2^47 bytes). */
const MAX_LARGE_SIZE = 2 ** 46;

/** The large-block registry and the mappings it tracks. */
export class LargeBlocks {
  private readonly arena: Arena;
  /** Secure mode: an inaccessible page before and after every block. */
  private readonly guard: number;
  /** View of the table mapping; remade only when the table grows. */
  private table: Float64Array = new Float64Array(0);
  private tableAddress = 0;

  /** Shared heaps: this Worker's owner id (the global lock's tag); 0 = not shared. */
  private readonly owner: number;

  constructor(arena: Arena, guarded: boolean, owner: number) {
    this.arena = arena;
    this.guard = guarded ? OS_PAGE_SIZE : 0;
    this.owner = owner;
    this.syncView();
  }

  /**
   * Runs `body` with the table to itself: in a shared heap under the global
   * lock, with the view remade if another Worker moved the table.
   */
  private locked<T>(body: () => T): T {
    if (this.owner === 0) return body();
    lockGlobal(this.arena, this.owner);
    try {
      this.syncView();
      return body();
    } finally {
      unlockGlobal(this.arena);
    }
  }

  /** Remakes the table view when the header names another mapping than the one viewed. */
  private syncView(): void {
    const address = this.arena.f64[StatF64.LargeTable];
    if (address === this.tableAddress) return;
    const bytes = this.arena.u32[HeaderU32.LargeCapacity] * SLOT_WORDS * 8;
    this.table = address === 0 ? new Float64Array(0) : new Float64Array(viewMemory(address, bytes));
    this.tableAddress = address;
  }

  /** True when blocks can grow with mremap (Linux, and no guard pages to carry along). */
  get canGrowInPlace(): boolean {
    return this.guard === 0 && canRemap();
  }

  /**
   * Maps a block of at least `size` bytes whose address is a multiple of
   * `alignment`. Returns the address, or 0 when the OS refuses.
   */
  allocate(size: number, alignment: number): number {
    return this.locked(() => this.allocateLocked(size, alignment));
  }

  /** True if `address` is a live large block. */
  has(address: number): boolean {
    return this.locked(() => this.find(address) >= 0);
  }

  /** Usable bytes of the live block at `address` (-1 if there is none). */
  usableSize(address: number): number {
    return this.locked(() => {
      const slot = this.find(address);
      return slot < 0 ? -1 : this.table[slot + L_MAP_LENGTH];
    });
  }

  /**
   * Unmaps the live block at `address`; returns its usable size. The lookup
   * and the unmapping are one step under the table's lock: of two Workers
   * that free a block at once, the second finds no block and gets
   * "double-free", whatever its own earlier lookup saw.
   */
  free(address: number): number {
    return this.locked(() => this.freeSlot(this.liveSlot(address, "free")));
  }

  /**
   * Resizes the live block at `address` to hold `size` bytes: shrinking
   * unmaps the tail in place; growing tries in place, then lets the kernel
   * move the mapping. Returns the (possibly new) address, or 0 with the
   * block intact.
   */
  resize(address: number, size: number): number {
    return this.locked(() => this.resizeSlot(this.liveSlot(address, "realloc"), size));
  }

  /**
   * Moves the live block at `address` to a new mapping of at least `size`
   * bytes, copying its contents, and unmaps it (growth where mremap cannot
   * serve: guard pages, or no mremap). Returns the new address, or 0 with the
   * block intact. One step under the table's lock, as free() is.
   */
  move(address: number, size: number): number {
    return this.locked(() => {
      const slot = this.liveSlot(address, "realloc");
      const length = this.table[slot + L_MAP_LENGTH];
      const moved = this.allocateLocked(size, 0);
      if (moved === 0) return 0;
      moveMemory(moved, address, Math.min(length, size));
      // The table may have grown (and moved) under allocateLocked: look the old block up again.
      this.lengthBefore = length;
      this.lengthAfter = this.table[this.find(moved) + L_MAP_LENGTH];
      this.freeSlot(this.find(address));
      return moved;
    });
  }

  /**
   * A private heap's realloc of a large block that stays where it is (it
   * fits, and would not shrink by an eighth): records the size asked for
   * and returns true; false, changing nothing, for anything else.
   */
  resizesInPlace(address: number, size: number): boolean {
    if (this.owner !== 0) return false;
    const slot = this.find(address);
    if (slot < 0) return false;
    const table = this.table;
    if (!keepsMapping(table[slot + L_MAP_LENGTH], size)) return false;
    table[slot + L_REQUESTED] = size;
    return true;
  }

  /** The block's usable length before and after the last resize() (its result's length). */
  lengthBefore = 0;
  lengthAfter = 0;

  private allocateLocked(size: number, alignment: number): number {
    if (size > MAX_LARGE_SIZE || !this.ensureRoom()) return 0;
    const length = roundUp(size, OS_PAGE_SIZE);
    if (!this.arena.withinLimit(length)) return 0;
    const f64 = this.arena.f64;
    const guard = this.guard;
    const step = Math.max(alignment, OS_PAGE_SIZE);
    const oversized = length + 2 * guard + step - OS_PAGE_SIZE;
    const raw = mapMemory(oversized, PROT_READ | PROT_WRITE);
    f64[StatF64.MmapCalls]++;
    if (raw === 0) return 0;
    // Trim the alignment slack so that the block and its guards are the whole mapping.
    const address = roundUp(raw + guard, step);
    const head = address - guard - raw;
    const tail = oversized - head - length - 2 * guard;
    if (head > 0) unmapMemory(raw, head), f64[StatF64.MunmapCalls]++;
    if (tail > 0) unmapMemory(address + length + guard, tail), f64[StatF64.MunmapCalls]++;
    if (guard > 0) {
      f64[StatF64.MprotectCalls] += 2;
      // Each guard splits the mapping: at the OS's map-count limit that fails,
      // and a block without its guards is not handed out.
      if (
        !protectMemory(address - guard, guard, PROT_NONE) ||
        !protectMemory(address + length, guard, PROT_NONE)
      ) {
        unmapMemory(address - guard, length + 2 * guard);
        f64[StatF64.MunmapCalls]++;
        return 0;
      }
    }
    this.forgetFreed(address);
    this.insert(address, length, size);
    this.account(length);
    return address;
  }

  /** The slot of the live block at `address`; throws "double-free" if there is none (any more). */
  private liveSlot(address: number, op: string): number {
    const slot = this.find(address);
    if (slot < 0) {
      throw new HeapError("double-free", address, `${op}: the large block was already freed`);
    }
    return slot;
  }

  /** The slot (f64 index) of the live block at `address`, or -1. */
  private find(address: number): number {
    const table = this.table;
    // realloc looks a block up twice in a row, and appends hit the same block again and again.
    const last = this.lastSlot;
    if (last < table.length && table[last + L_ADDRESS] === address && address !== 0) return last;
    if (table.length === 0 || address <= 0 || address % OS_PAGE_SIZE !== 0) return -1;
    const mask = this.arena.u32[HeaderU32.LargeCapacity] - 1;
    for (let i = hash(address) & mask;; i = (i + 1) & mask) {
      const a = table[i * SLOT_WORDS + L_ADDRESS];
      if (a === address) return this.lastSlot = i * SLOT_WORDS;
      if (a === 0) return -1;
    }
  }

  /** The slot find() returned last (checked against the table before it is trusted). */
  private lastSlot = 0;

  private freeSlot(slot: number): number {
    const address = this.table[slot + L_ADDRESS];
    const length = this.table[slot + L_MAP_LENGTH];
    unmapMemory(address - this.guard, length + 2 * this.guard);
    this.arena.f64[StatF64.MunmapCalls]++;
    this.remove(slot);
    this.account(-length);
    this.rememberFreed(address);
    return length;
  }

  /** True if `address` is one of the last 64 large blocks freed (and not mapped again since). */
  wasFreed(address: number): boolean {
    const f64 = this.arena.f64; // a hint for error messages: read without the lock
    for (let i = 0; i < RECENT_LARGE_SLOTS; i++) {
      if (f64[RECENT_LARGE_F64 + i] === address) return true;
    }
    return false;
  }

  private rememberFreed(address: number): void {
    const u32 = this.arena.u32;
    const next = u32[HeaderU32.RecentLargeNext];
    this.arena.f64[RECENT_LARGE_F64 + next] = address;
    u32[HeaderU32.RecentLargeNext] = (next + 1) % RECENT_LARGE_SLOTS;
  }

  private forgetFreed(address: number): void {
    const f64 = this.arena.f64;
    for (let i = 0; i < RECENT_LARGE_SLOTS; i++) {
      if (f64[RECENT_LARGE_F64 + i] === address) f64[RECENT_LARGE_F64 + i] = 0;
    }
  }

  private resizeSlot(slot: number, size: number): number {
    const table = this.table;
    const address = table[slot + L_ADDRESS];
    const oldLength = table[slot + L_MAP_LENGTH];
    let length = roundUp(size, OS_PAGE_SIZE);
    this.lengthBefore = oldLength;
    this.lengthAfter = oldLength;
    const f64 = this.arena.f64;
    if (keepsMapping(oldLength, size)) {
      table[slot + L_REQUESTED] = size;
      return address;
    }
    if (length < oldLength) {
      // The guard page (if any) moves down to the new end: unmap the rest.
      if (this.guard > 0) {
        f64[StatF64.MprotectCalls]++;
        if (!protectMemory(address + length, this.guard, PROT_NONE)) {
          // Out of map entries: the block keeps its mapping and its guard.
          table[slot + L_REQUESTED] = size;
          return address;
        }
      }
      unmapMemory(address + length + this.guard, oldLength - length);
      f64[StatF64.MunmapCalls]++;
      table[slot + L_MAP_LENGTH] = length;
      table[slot + L_REQUESTED] = size;
      this.account(length - oldLength);
      this.lengthAfter = length;
      return address;
    }
    if (size > MAX_LARGE_SIZE || !this.canGrowInPlace) return 0;
    length = Math.min(growthLength(size), MAX_LARGE_SIZE);
    if (!this.arena.withinLimit(length - oldLength)) {
      length = roundUp(size, OS_PAGE_SIZE); // without growthLength's headroom
      if (!this.arena.withinLimit(length - oldLength)) return 0;
    }
    f64[StatF64.MmapCalls]++;
    const moved = remapMemory(address, oldLength, length, true);
    if (moved === 0) return 0;
    if (moved !== address) this.forgetFreed(moved), this.rememberFreed(address);
    this.remove(slot);
    this.insert(moved, length, size);
    this.account(length - oldLength);
    this.lengthAfter = length;
    this.populate(moved + oldLength, roundUp(size, OS_PAGE_SIZE) - oldLength);
    return moved;
  }

  /**
   * Faults in `[address, address + length)` of a block that realloc grew,
   * up to the size asked for (not the growth headroom): a program grows a
   * buffer to write it, and the OS pages of a fresh mapping faulted in one
   * call cost a fraction of their first touches one by one
   * (docs/performance.md).
   */
  populate(address: number, length: number): void {
    if (length > 0 && populatePages(address, length)) this.arena.f64[StatF64.MadviseCalls]++;
  }

  /** Calls `visit` for every live block; `mapLength` is the usable length (guards excluded). */
  forEach(visit: (address: number, mapLength: number, requested: number) => void): void {
    const blocks: number[] = [];
    this.locked(() => {
      const table = this.table;
      for (let s = 0; s < table.length; s += SLOT_WORDS) {
        if (table[s + L_ADDRESS] !== 0) {
          blocks.push(table[s + L_ADDRESS], table[s + L_MAP_LENGTH], table[s + L_REQUESTED]);
        }
      }
    });
    for (let i = 0; i < blocks.length; i += 3) visit(blocks[i], blocks[i + 1], blocks[i + 2]);
  }

  /** Unmaps every block and the table (heap close). */
  unmapAll(): void {
    this.syncView();
    this.forEach((address, length) => unmapMemory(address - this.guard, length + 2 * this.guard));
    if (this.tableAddress !== 0) {
      unmapMemory(this.tableAddress, this.table.length * 8);
    }
    this.table = new Float64Array(0);
    this.tableAddress = 0;
  }

  /** Bytes of the table mapping (counted as metadata), as the header says: the same in every Worker. */
  get tableBytes(): number {
    return this.arena.u32[HeaderU32.LargeCapacity] * SLOT_WORDS * 8;
  }

  // ---- table ----------------------------------------------------------------

  private account(delta: number): void {
    const f64 = this.arena.f64;
    f64[StatF64.LargeBytes] += delta;
    f64[StatF64.Reserved] += delta;
    this.arena.addCommitted(delta);
  }

  /** Makes sure one more entry fits at load factor 1/2, growing the table if needed. */
  private ensureRoom(): boolean {
    const u32 = this.arena.u32;
    const capacity = u32[HeaderU32.LargeCapacity];
    if ((u32[HeaderU32.LargeCount] + 1) * 2 <= capacity) return true;
    const newCapacity = capacity === 0 ? INITIAL_CAPACITY : capacity * 2;
    const bytes = newCapacity * SLOT_WORDS * 8;
    if (!this.arena.withinLimit(bytes - capacity * SLOT_WORDS * 8)) return false;
    const address = mapMemory(bytes, PROT_READ | PROT_WRITE);
    const f64 = this.arena.f64;
    f64[StatF64.MmapCalls]++;
    if (address === 0) return false;
    const old = this.table;
    const oldAddress = this.tableAddress;
    this.table = new Float64Array(viewMemory(address, bytes));
    this.tableAddress = address;
    f64[StatF64.LargeTable] = address; // other Workers remake their view from this
    u32[HeaderU32.LargeCapacity] = newCapacity;
    u32[HeaderU32.LargeCount] = 0;
    for (let s = 0; s < old.length; s += SLOT_WORDS) {
      if (old[s + L_ADDRESS] !== 0) {
        this.insert(old[s + L_ADDRESS], old[s + L_MAP_LENGTH], old[s + L_REQUESTED]);
      }
    }
    this.arena.addCommitted(bytes - old.length * 8);
    f64[StatF64.Reserved] += bytes - old.length * 8;
    if (oldAddress !== 0) {
      unmapMemory(oldAddress, old.length * 8);
      f64[StatF64.MunmapCalls]++;
    }
    return true;
  }

  private insert(address: number, length: number, requested: number): void {
    const table = this.table;
    const u32 = this.arena.u32;
    const mask = u32[HeaderU32.LargeCapacity] - 1;
    let i = hash(address) & mask;
    while (table[i * SLOT_WORDS + L_ADDRESS] !== 0) i = (i + 1) & mask;
    const s = i * SLOT_WORDS;
    table[s + L_ADDRESS] = address;
    table[s + L_MAP_LENGTH] = length;
    table[s + L_REQUESTED] = requested;
    u32[HeaderU32.LargeCount]++;
  }

  /** Backward-shift deletion keeps every probe chain unbroken. */
  private remove(slot: number): void {
    const table = this.table;
    const u32 = this.arena.u32;
    const mask = u32[HeaderU32.LargeCapacity] - 1;
    let hole = slot / SLOT_WORDS;
    for (let i = (hole + 1) & mask;; i = (i + 1) & mask) {
      const a = table[i * SLOT_WORDS + L_ADDRESS];
      if (a === 0) break;
      const home = hash(a) & mask;
      // Move entry i into the hole unless its home lies cyclically in (hole, i].
      const between = hole <= i ? home > hole && home <= i : home > hole || home <= i;
      if (!between) {
        table.copyWithin(hole * SLOT_WORDS, i * SLOT_WORDS, i * SLOT_WORDS + SLOT_WORDS);
        hole = i;
      }
    }
    table.fill(0, hole * SLOT_WORDS, hole * SLOT_WORDS + SLOT_WORDS);
    u32[HeaderU32.LargeCount]--;
  }

  /** check(): validates the table's entries and counts; returns the live large blocks and their bytes. */
  validate(fail: Fail): { count: number; bytes: number } {
    const arena = this.arena;
    const u32 = arena.u32;
    const f64 = arena.f64;
    let largeCount = 0;
    let largeBytes = 0;
    this.forEach((address, length, requested) => {
      largeCount++;
      largeBytes += length;
      if (address % OS_PAGE_SIZE !== 0 || length % OS_PAGE_SIZE !== 0 || requested > length) {
        fail(
          address,
          `large block entry is inconsistent (length ${length}, requested ${requested})`,
        );
      }
      if (!this.has(address)) fail(address, "large block cannot be found by its address");
    });
    if (largeCount !== u32[HeaderU32.LargeCount]) {
      fail(
        arena.base,
        `large table counts ${u32[HeaderU32.LargeCount]} blocks but holds ${largeCount}`,
      );
    }
    if (largeBytes !== f64[StatF64.LargeBytes]) fail(arena.base, "large block bytes do not add up");
    return { count: largeCount, bytes: largeBytes };
  }
}

/** Fibonacci hash of the page number (an address / 4096 fits in 36 bits). */
function hash(address: number): number {
  const page = address / OS_PAGE_SIZE;
  return Math.imul((page >>> 0) ^ Math.floor(page / 2 ** 32), 0x9e3779b1) >>> 8;
}

/**
 * Whether a block mapped with `mapLength` bytes keeps its mapping as it is
 * for `size` bytes: they fit, and shrinking would give back less than an
 * eighth (a growth step, see growthLength).
 */
function keepsMapping(mapLength: number, size: number): boolean {
  const length = roundUp(size, OS_PAGE_SIZE);
  return length <= mapLength && mapLength - length < mapLength / 8;
}

/** The mapping length for a block that grows to `size`: the next of 8 steps per doubling, page-rounded. */
function growthLength(size: number): number {
  const doubling = 2 ** Math.floor(Math.log2(size - 1));
  const step = doubling / 8;
  return roundUp(Math.ceil(size / step) * step, OS_PAGE_SIZE);
}
