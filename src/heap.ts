/**
 * The heap: public API, argument checks, counters, and dispatch between
 * size-class pages (class_pages.ts), fit pages (fit.ts) and large blocks (large.ts).
 *
 * malloc of up to 1 KiB is a class lookup and takeBlockFast (a pop from the
 * class's allocation list); free is a range check and freeBlockFast (a push
 * onto the page's free list, USED lowered). Neither tests a mode: a secure,
 * shared, debug or closed heap has empty allocation lists and a fast-free
 * range of 0, so its calls take the slow paths, where the modes are. Both
 * stay small enough for V8 to inline them, with what they call, into the
 * caller's loop: a call costs as much as the allocation, and an address
 * above 2^31 (see lowAddresses) that crosses one is boxed as a heap number.
 * Everything else leaves through a call.
 */

import {
  Arena,
  HeaderU32,
  MAX_ARENA_BYTES,
  MAX_OWNERS,
  MIN_ARENA_BYTES,
  StatF64,
  UNIT_SIZE,
} from "./arena/arena.ts";
import { ClassPages } from "./alloc/class_pages.ts";
import { ClassLists, formatClassTable } from "./alloc/class_lists.ts";
import { IdleMemory } from "./alloc/idle.ts";
import { PageSource } from "./alloc/page_source.ts";
import { type FreeListCodec, PlainCodec, PrivateOwnership } from "./alloc/policies.ts";
import { KeyedCodec, writeSecureKey } from "./modes/secure.ts";
import { SharedOwnership } from "./modes/shared.ts";
import {
  Desc,
  descriptorOf,
  freeBlockFast,
  isLive,
  liveSmallPage,
  pageDescriptorOf,
  PageState,
  Tables,
  takeBlockFast,
} from "./alloc/page_layout.ts";
import { LargeBlocks } from "./alloc/large.ts";
import {
  classForAlignment,
  classOfSize,
  LOOKUP_ENTRIES,
  LOOKUP_MAX_SIZE,
  MAX_CLASS_ALIGNMENT,
  MAX_CLASS_SIZE,
} from "./alloc/size_classes.ts";
import { isReadWrite, moveMemory, OS_PAGE_SIZE, protectMemory, viewMemory } from "./os/libc.ts";
import {
  type CoreAccess,
  DebugLayer,
  type LeakedBlock,
  releaseOrphanQuarantines,
} from "./modes/debug.ts";
import { FitPages } from "./alloc/fit.ts";
import { FIT_MIN_REQUEST, FIT_PAGE_BYTES } from "./alloc/fit_chunks.ts";
import { freedBlock, HeapError, notABlock, plural } from "./errors.ts";
import { type HeapStats, publishCounters, readStats, sumOwnerCounters } from "./stats.ts";
import {
  detachOwner,
  lockGlobal,
  lockOwner,
  ownerCountersF64,
  ownerLockIndex,
  registerOwner,
  Slot,
  slotOf,
  stopTheWorld,
  TOTAL_STORE_ORDER,
  unlockGlobal,
  unlockOwner,
} from "./arena/owners.ts";
import { checkHeap, containDamage } from "./check.ts";
import { type HeapSnapshot, type SnapshotOptions, takeSnapshot } from "./snapshot.ts";
import { formatSummary } from "./summary.ts";
import { UserBuffers } from "./user_buffers.ts";
import {
  type AttachOptions,
  type HeapOptions,
  resolveHeapOptions,
  type SharedHeapHandle,
  validateAttachOptions,
} from "./options.ts";

/** Constructor input of Heap.attach (not part of HeapOptions' public surface). */
const attachKey = Symbol("attach");

/**
 * LOOKUP_MAX_SIZE as a literal for malloc's fast path: V8 reads an imported
 * constant from its module cell (a load and a hole check) on every call.
 */
const enum Lookup {
  MaxSize = 1024,
}
if (LOOKUP_MAX_SIZE !== Lookup.MaxSize) throw new Error("size-class lookup mismatch");

/**
 * A heap of native memory. Addresses are plain numbers holding the real
 * virtual address, 16-byte aligned, usable by native code through
 * `heap.pointer(address)`.
 */
export class Heap {
  #arena: Arena;
  #source: PageSource;
  #lists: ClassLists;
  #idle: IdleMemory;
  #pages: ClassPages;
  /** Shared heaps: this Worker's page ownership (null for a heap that is not shared). */
  #shared: SharedOwnership | null = null;
  /** Blocks above 1 KiB of a private, non-secure heap (null otherwise): see fit.ts. */
  #fit: FitPages | null = null;
  #large: LargeBlocks;
  // What the fast paths read: assigned once, in the constructor, with no
  // field initializer (declare): V8 then tracks each as a constant of its
  // final type (a field that starts as undefined is generalised, and costs
  // a map check after every load). Closing changes their contents, never them.
  declare private readonly u8: Uint8Array;
  declare private readonly u32: Uint32Array;
  /** Size -> class for sizes up to 1 KiB (a copy of the arena's lookup, readable after close). */
  declare private readonly sizeToClass: Uint8Array;
  /** The allocation lists (see class_lists.ts). */
  declare private readonly allocLists: Uint32Array;
  /** u32 index that, plus an arena offset >>> 9, is the word of the offset's live bit. */
  declare private readonly bitmapBias: number;
  declare private readonly base: number;
  declare private readonly dataStart: number;
  declare private readonly dataEnd: number;
  /**
   * [0]: 64 KiB units from the data start whose blocks may take free's fast
   * path: all of them for a private heap in no special mode, 0 otherwise
   * and once closed. A unit count is an int32, where a byte offset of a
   * 4 GiB arena is not: V8 would compare it as a double.
   */
  declare private readonly fastFreeUnits: Int32Array;
  /** The buffers behind the views bytes() hands out (never the arena's own). */
  #buffers: UserBuffers;
  #closed = false;
  #debug: DebugLayer | null = null;
  /** True when closed, in debug, secure or shared mode: the slow paths dispatch on it. */
  #special = false;
  /** Shared heaps: this Worker's owner slot (0 = not shared), and whether this object made the arena. */
  #owner = 0;
  #creator = true;
  #lockDepth = 0;
  /** Shared heaps: i32 index of this Worker's owner lock, and f64 index of its published counters. */
  #lockIndex = 0;
  #countersF64 = 0;
  #plainStoreReleases = TOTAL_STORE_ORDER;

  /** Reserves an arena and formats an empty heap (see HeapOptions). */
  constructor(options: HeapOptions = {}) {
    const {
      arenaBytes,
      retainBytes,
      idleRatio,
      idleFloorBytes,
      limitBytes,
      lowAddresses,
    } = resolveHeapOptions(options);
    const attach = (options as { [attachKey]?: SharedHeapHandle })[attachKey];
    const shared = options.shared === true || attach !== undefined;
    let secure = options.secure === true;
    let arena: Arena | null;
    if (attach !== undefined) {
      arena = Arena.attach(attach.base, attach.size);
      secure = arena !== null && arena.u32[HeaderU32.SecureKey] !== 0;
      if (arena === null || secure !== attach.secure) {
        throw new TypeError("Heap.attach: the handle does not name a shared heap");
      }
      this.#creator = false;
    } else {
      arena = Arena.create({
        arenaBytes,
        retainBytes,
        shared,
        lowAddresses,
        limitBytes,
      });
      if (arena === null) {
        throw new RangeError(`the OS refused to reserve ${arenaBytes} bytes of address space`);
      }
      // Secure mode keeps the last OS page of every page inaccessible.
      formatClassTable(arena, secure ? OS_PAGE_SIZE : 0);
      if (secure) writeSecureKey(arena);
    }
    if (shared) {
      this.#owner = registerOwner(arena);
      if (this.#owner === 0) {
        if (this.#creator) arena.unmap();
        throw new RangeError(`a shared heap serves at most ${MAX_OWNERS - 1} Workers at once`);
      }
    }
    this.#arena = arena;
    const split = !shared && !secure && !options.debug;
    this.#large = new LargeBlocks(arena, secure, this.#owner);
    this.#source = new PageSource(arena, this.#owner);
    this.#lists = new ClassLists(arena, this.#owner, split);
    const idle = new IdleMemory(arena, this.#source, this.#lists, this.#large, !shared && !secure);
    if (!shared && !secure) {
      idle.idleRatio = idleRatio;
      idle.idleFloor = idleFloorBytes;
      this.#fit = new FitPages(arena, this.#source, idle);
    }
    this.#idle = idle;
    const codec: FreeListCodec = secure ? new KeyedCodec(arena, idle) : new PlainCodec(arena.u32);
    if (shared) {
      this.#shared = new SharedOwnership(arena, this.#owner, this.#source, this.#lists, codec);
    }
    this.#pages = new ClassPages(
      arena,
      this.#source,
      this.#lists,
      idle,
      codec,
      this.#shared ?? new PrivateOwnership(arena.u32),
      this.#owner,
    );
    this.#buffers = new UserBuffers(arena, secure);
    this.u8 = arena.u8;
    this.u32 = arena.u32;
    this.sizeToClass = arena.u8.slice(Tables.LookupU8, Tables.LookupU8 + LOOKUP_ENTRIES);
    this.allocLists = this.#lists.allocLists;
    this.bitmapBias = arena.u32[HeaderU32.BitmapBias];
    this.base = arena.base;
    this.dataStart = arena.dataStart;
    this.dataEnd = arena.dataEnd;
    this.fastFreeUnits = new Int32Array([
      split ? (arena.dataEnd - arena.dataStart) / UNIT_SIZE : 0,
    ]);
    if (options.debug) {
      this.#debug = new DebugLayer(this.#coreAccess(), options.debug === true ? {} : options.debug);
    }
    this.#special = this.#debug !== null || secure || shared;
    if (shared) {
      // A slot taken over from a Worker that detached may say debug: it is this Worker's now.
      arena.u32[slotOf(arena, this.#owner) + Slot.Debug] = this.#debug === null ? 0 : 1;
      this.#lockIndex = ownerLockIndex(arena, this.#owner);
      this.#countersF64 = ownerCountersF64(arena, this.#owner);
    }
  }

  /**
   * Attaches this Worker to a shared heap that another Worker created with
   * `new Heap({ shared: true })` and passed on as `heap.share()`. Every
   * address from any attached Worker is valid here. close() detaches.
   */
  static attach(handle: SharedHeapHandle, options: AttachOptions = {}): Heap {
    validateAttachOptions(options);
    // The base is where mmap put the arena: page-aligned, not 64 KiB-aligned
    // unless it got LOW_ARENA_ADDRESS (the data start is aligned, see arena.ts).
    const valid = handle?.tsmalloc === "shared-heap" &&
      Number.isSafeInteger(handle.base) && handle.base > 0 && handle.base % OS_PAGE_SIZE === 0 &&
      Number.isSafeInteger(handle.size) && handle.size >= MIN_ARENA_BYTES &&
      handle.size <= MAX_ARENA_BYTES && handle.size % UNIT_SIZE === 0 &&
      // Read and written below: a forged base must give a TypeError, not a fault.
      isReadWrite(handle.base, Arena.metadataBytes(handle.base, handle.size));
    if (!valid) {
      throw new TypeError("Heap.attach: expected the object returned by heap.share()");
    }
    return new Heap({ debug: options.debug, [attachKey]: handle } as HeapOptions);
  }

  /** A structured-clonable handle that other Workers pass to Heap.attach. */
  share(): SharedHeapHandle {
    if (this.#closed) throw closedError("share");
    if (this.#owner === 0) {
      throw new TypeError("share: only a heap made with { shared: true } can be shared");
    }
    return {
      tsmalloc: "shared-heap",
      base: this.#arena.base,
      size: this.#arena.size,
      secure: this.#arena.u32[HeaderU32.SecureKey] !== 0,
    };
  }

  // ---- allocation -------------------------------------------------------------

  /** Allocates `size` bytes; returns the block's address, or 0 when out of memory. */
  malloc(size: number): number {
    // The fast path only: V8 inlines malloc, free and their fast paths into
    // the caller's loop while their bytecode fits its budget (920 bytes in
    // all), so everything else is one call away.
    // typeof first: anything but a number (a BigInt, a Symbol, on a closed
    // heap too) goes to #mallocSlow, which says what is wrong, before `>>>`
    // could throw a TypeError of V8's own.
    if (typeof size === "number" && (size >>> 0) === size && size <= Lookup.MaxSize) {
      const block = takeBlockFast(
        this.u32,
        this.allocLists,
        this.bitmapBias,
        this.sizeToClass[(size + 15) >>> 4],
      );
      if (block !== 0) return this.base + block;
    }
    // "+ 0" makes this result a plain number like the fast path's: otherwise,
    // with addresses above 2^31 (see lowAddresses), V8 merges the two as a
    // tagged value and boxes every fast-path address (a 16-byte heap number
    // per malloc, measured with --trace-gc).
    return this.#mallocSlow(size) + 0;
  }

  /** malloc() past its fast path: a new or full page, any other size, or a special mode. */
  #mallocSlow(size: number): number {
    if (this.#special) {
      if (this.#lockDepth === 0 && this.#owner !== 0) return this.#mallocLocked(size);
      return this.#mallocSpecial(size);
    }
    if (typeof size === "number" && (size >>> 0) === size && size <= LOOKUP_MAX_SIZE) {
      return this.#allocFromClass(this.sizeToClass[(size + 15) >>> 4]);
    }
    return this.#allocAny(checkSize(size, "malloc"));
  }

  /** Allocates `count * size` zeroed bytes; 0 when the product overflows or memory runs out. */
  calloc(count: number, size: number): number {
    if (this.#needsLock()) return this.#locked(() => this.calloc(count, size));
    checkSize(count, "calloc");
    checkSize(size, "calloc");
    const total = count * size;
    const debug = this.#special ? this.#specialMode("calloc") : null;
    if (debug) return Number.isSafeInteger(total) ? debug.allocate(total, 16, true) : 0;
    if (!Number.isSafeInteger(total)) return 0;
    if (total > MAX_CLASS_SIZE) return this.#allocLarge(total, 0); // fresh mappings are zero
    if (total > FIT_MIN_REQUEST && this.#fit !== null) {
      const address = this.#allocFit(total);
      if (address !== 0) {
        if (!this.#fit.lastWasZero) {
          const offset = address - this.base;
          this.u8.fill(0, offset, offset + this.#fit.usable(offset));
        }
        return address;
      }
      // Else a class page, as in #allocAny.
    }
    const cls = total <= LOOKUP_MAX_SIZE
      ? this.sizeToClass[(total + 15) >>> 4]
      : classOfSize(total);
    if (this.#lists.splitLists && total <= LOOKUP_MAX_SIZE) {
      // Blocks on allocation lists hold a link: zero them (1 KiB at most).
      const address = this.#allocFromClass(cls);
      if (address !== 0) {
        const offset = address - this.base;
        zeroBlock(
          this.u8,
          this.u32,
          offset,
          this.u32[descriptorOf(this.dataStart, offset) + Desc.BlockSize],
        );
      }
      return address;
    }
    const u32 = this.u32;
    let d = u32[this.#lists.headSlot(cls)];
    if (d === 0) {
      d = this.#pages.acquire(cls);
      if (d === 0) return 0;
    }
    // The block will come from this page: free list first, then the bump area,
    // which is still zero from the OS above ZERO_FROM.
    const bump = u32[d + Desc.Bump];
    const blockSize = u32[d + Desc.BlockSize];
    const fresh = u32[d + Desc.Free] === 0 && bump >= u32[d + Desc.ZeroFrom] &&
      bump + blockSize <= u32[d + Desc.BumpEnd]; // else an unlisted block
    const address = this.#allocFromClass(cls);
    if (address === 0) return 0;
    if (!fresh) zeroBlock(this.u8, u32, address - this.base, blockSize);
    return address;
  }

  /**
   * Allocates `size` bytes at an address that is a multiple of `alignment`
   * (a power of two; any size up to what the OS can map).
   */
  alignedAlloc(alignment: number, size: number): number {
    if (this.#needsLock()) return this.#locked(() => this.alignedAlloc(alignment, size));
    checkSize(size, "alignedAlloc");
    if (typeof alignment !== "number") {
      throw new TypeError(`alignedAlloc: alignment must be a number, got ${typeof alignment}`);
    }
    if (
      !Number.isSafeInteger(alignment) || alignment < 1 ||
      2 ** Math.round(Math.log2(alignment)) !== alignment
    ) {
      throw new RangeError(`alignedAlloc: alignment must be a power of two, got ${alignment}`);
    }
    const debug = this.#special ? this.#specialMode("alignedAlloc") : null;
    if (debug) return debug.allocate(size, Math.max(alignment, 16), false);
    return this.#allocAligned(alignment, size);
  }

  /** Core aligned allocation (no checks, no debug layer). */
  #allocAligned(alignment: number, size: number): number {
    if (alignment <= 16) return this.#allocAny(size);
    if (alignment <= MAX_CLASS_ALIGNMENT && size <= MAX_CLASS_SIZE) {
      const cls = classForAlignment(size, alignment);
      if (cls >= 0) return this.#allocFromClass(cls);
    }
    return this.#allocLarge(Math.max(size, 1), alignment);
  }

  /**
   * C `realloc`: `realloc(0, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and
   * returns 0. Contents are kept up to the smaller size. Shrinking and growth
   * within the block's size class happen in place; large blocks grow with
   * `mremap`. On failure returns 0 and the old block is intact.
   */
  realloc(address: number, size: number): number {
    if (this.#needsLock()) return this.#locked(() => this.realloc(address, size));
    checkSize(size, "realloc");
    const debug = this.#special ? this.#specialMode("realloc") : null;
    if (debug) {
      if (address === 0) return debug.allocate(size, 16, false);
      if (size === 0) return debug.free(address, "realloc"), 0;
      return debug.realloc(address, size, "realloc");
    }
    if (address === 0) return this.#allocAny(size);
    // A growing buffer in a large block that still fits: no lookup beyond the table's.
    if (
      size > MAX_CLASS_SIZE && typeof address === "number" &&
      this.#large.resizesInPlace(address, size)
    ) {
      return address;
    }
    const where = this.#locate(address, "realloc");
    if (size === 0) {
      this.#freeLocated(address, where);
      return 0;
    }
    if (where > 0) {
      const usable = this.#usableAt(where, address);
      if (size <= usable) return address;
      if (this.u32[where + Desc.State] === PageState.Fit && size <= MAX_CLASS_SIZE) {
        const grown = this.#fit!.growInPlace(where, address - this.base, size);
        if (grown !== 0) {
          this.#lists.countOther(0, grown - usable);
          return address;
        }
      }
      const moved = this.#allocAny(size);
      if (moved === 0) return 0;
      if (size > MAX_CLASS_SIZE) this.#large.populate(moved, size); // a buffer grows into a mapping
      this.#copy(moved, address, usable);
      try {
        this.#freeLocated(address, where);
      } catch (error) {
        // Another Worker freed the block meanwhile: the call fails as a whole,
        // and the counters forget the block it allocated for the move.
        this.#freeLocated(moved, this.#locate(moved, "realloc"));
        this.#lists.countHanded(-1, 0);
        this.#lists.countFreed(-1, 0);
        throw error;
      }
      return moved;
    }
    const large = this.#large;
    this.#source.makeRoomUnderLimit(size - large.usableSize(address));
    let result = large.resize(address, size);
    const usable = large.lengthBefore;
    if (result === 0 && size > usable && !large.canGrowInPlace) {
      // No mremap (another platform, or guard pages in secure mode): map, copy, unmap.
      this.#idle.giveBackIdle(size);
      result = large.move(address, size);
      if (result === 0) return 0;
      this.#buffers.release(address);
      this.#lists.countOther(0, large.lengthAfter - usable);
      // Moved: one allocation and one free, as when it is copied.
      this.#lists.countHanded(1, 0), this.#lists.countFreed(1, 0);
      return result;
    }
    if (result !== 0) {
      // Shrunk or moved: its views are detached before anyone can read unmapped memory.
      if (result !== address || large.lengthAfter !== usable) this.#buffers.release(address);
      this.#lists.countOther(0, large.lengthAfter - usable);
      // A block that moved counts as one allocation and one free, as when it is copied.
      if (result !== address) this.#lists.countHanded(1, 0), this.#lists.countFreed(1, 0);
    }
    return result;
  }

  // ---- freeing ----------------------------------------------------------------

  /** Frees a block; `free(0)` does nothing. Throws HeapError on an address that is not a live block. */
  free(address: number): void {
    // typeof first: a BigInt or Symbol would throw in the subtraction. Then
    // an integer offset from the data start, a multiple of 16, in a 64 KiB
    // unit of the fast-free range (none in special modes and once closed):
    // in int32 arithmetic, without a division.
    if (typeof address === "number") {
      const offset = address - this.base;
      const unitOffset = offset - this.dataStart;
      if (
        (unitOffset >>> 0) === unitOffset && (unitOffset >>> 16) < this.fastFreeUnits[0] &&
        (unitOffset & 15) === 0 &&
        freeBlockFast(this.u32, this.bitmapBias, offset, unitOffset)
      ) {
        return;
      }
    }
    this.#freeSlow(address);
  }

  /** free() past its fast path: a page that fills or empties, a large block, an error, a special mode. */
  #freeSlow(address: number): void {
    if (this.#special) {
      if (this.#lockDepth === 0 && this.#owner !== 0) return this.#freeLocked(address);
      return this.#freeSpecial(address);
    }
    if (address === 0) return;
    // A live block of a small page whose page fills back up or empties (the
    // fast path declined it): freed without locating it again.
    if (typeof address === "number") {
      const offset = address - this.base;
      const unitOffset = offset - this.dataStart;
      if (
        (unitOffset >>> 0) === unitOffset && (unitOffset >>> 16) < this.fastFreeUnits[0] &&
        (unitOffset & 15) === 0
      ) {
        const d = liveSmallPage(this.u32, offset, unitOffset);
        if (d !== 0) return void this.#pages.freeLive(d, offset); // no block buffers (not secure)
      }
    }
    this.#freeLocated(address, this.#locate(address, "free"));
  }

  // ---- inspection -------------------------------------------------------------

  /** Bytes the caller may use at `address` (at least the size asked for). */
  usableSize(address: number): number {
    if (this.#needsLock()) return this.#locked(() => this.usableSize(address));
    const debug = this.#special ? this.#specialMode("usableSize") : null;
    if (debug) return debug.usableSize(address, "usableSize");
    const where = this.#locate(address, "usableSize");
    return where > 0 ? this.#usableAt(where, address) : this.#large.usableSize(address);
  }

  /**
   * A Uint8Array over exactly the block's first `length` bytes (default: its
   * usable size). Its buffer is not the heap's own and starts at the heap's
   * data, never at its metadata. A large block's views are detached (length
   * 0) when it is freed, shrunk or moved, every view by close().
   */
  bytes(address: number, length?: number): Uint8Array {
    if (this.#needsLock()) return this.#locked(() => this.bytes(address, length));
    const debug = this.#special ? this.#specialMode("bytes") : null;
    if (debug) {
      const span = debug.viewSpan(address, length, "bytes");
      return this.#buffers.view(span.core, address, span.size, address, span.length);
    }
    const where = this.#locate(address, "bytes");
    const usable = where > 0 ? this.#usableAt(where, address) : this.#large.usableSize(address);
    const n = length ?? usable;
    if (!Number.isSafeInteger(n) || n < 0 || n > usable) {
      throw new RangeError(`bytes: length must be an integer from 0 to ${usable}, got ${length}`);
    }
    return this.#buffers.view(address, address, usable, address, n);
  }

  /**
   * The start of the live block whose bytes include `address`, or 0 when
   * no live block of this heap does: for addresses C returns into a block
   * (`strchr`, `memchr`, a field of a struct). Debug mode answers with the
   * user's block; its red zones belong to no block.
   */
  blockOf(address: number): number {
    if (this.#needsLock()) return this.#locked(() => this.blockOf(address));
    if (this.#closed) throw closedError("blockOf");
    if (typeof address !== "number") {
      throw new TypeError(`blockOf: address must be a number, got ${typeof address}`);
    }
    if (!Number.isSafeInteger(address) || address <= 0) return 0;
    const core = this.#coreBlockOf(address);
    if (core === 0 || this.#debug === null) return core;
    return this.#debug.userBlockIn(core, address);
  }

  /** The live core block whose bytes include `address`, or 0. */
  #coreBlockOf(address: number): number {
    const offset = address - this.base;
    if (offset < this.dataStart || offset >= this.dataEnd) {
      let found = 0;
      this.#large.forEach((start, length) => {
        if (address >= start && address < start + length) found = start;
      });
      return found;
    }
    const u32 = this.u32;
    const d = pageDescriptorOf(u32, this.dataStart, offset);
    const state = u32[d + Desc.State];
    if (state === PageState.Fit) {
      const block = this.#fit!.blockContaining(d, offset);
      return block === 0 ? 0 : this.base + block;
    }
    const blockSize = u32[d + Desc.BlockSize];
    if ((state !== PageState.Small && state !== PageState.Medium) || blockSize === 0) return 0;
    const pageStart = u32[d + Desc.PageStart];
    const block = offset - (offset - pageStart) % blockSize;
    return isLive(this.u32, d, block) ? this.base + block : 0;
  }

  /** A pointer object for the live block at `address`, for FFI "pointer" parameters. */
  pointer(address: number): Deno.PointerObject {
    if (this.#needsLock()) return this.#locked(() => this.pointer(address));
    const debug = this.#special ? this.#specialMode("pointer") : null;
    if (debug) debug.assertLive(address, "pointer");
    else this.#locate(address, "pointer");
    return Deno.UnsafePointer.create(BigInt(address))!;
  }

  /** A snapshot of the heap's counters. */
  stats(): HeapStats {
    if (this.#closed) throw closedError("stats");
    this.#publish();
    if (this.#owner !== 0) sumOwnerCounters(this.#arena);
    const stats = readStats(this.#arena, this.#large.tableBytes);
    this.#debug?.userStats(stats, this.#owner !== 0);
    return stats;
  }

  /** Walks every structure; throws HeapError("corrupt") on the first inconsistency. */
  check(): void {
    if (this.#closed) throw closedError("check");
    this.#publish();
    if (this.#owner === 0) {
      this.#checkAndContain();
    } else {
      // Stop the world: every Worker's owner lock, then the global lock.
      stopTheWorld(this.#arena, this.#owner, () => {
        sumOwnerCounters(this.#arena);
        this.#checkAndContain();
        this.#debug?.check();
      });
      return;
    }
    this.#debug?.check();
  }

  /**
   * A plain, JSON-serialisable description of the heap now: totals, every
   * page of the arena in address order, large blocks, per-class figures and
   * fragmentation figures (see HeapSnapshot). Reads the heap's structures
   * without changing them, in time proportional to its pages (`{ blocks:
   * true }` adds every block's state). A shared heap is read with every
   * Worker held out of heap calls, as check() does.
   */
  snapshot(options: SnapshotOptions = {}): HeapSnapshot {
    if (this.#closed) throw closedError("snapshot");
    this.#publish();
    const take = () =>
      takeSnapshot({
        arena: this.#arena,
        large: this.#large,
        stats: readStats(this.#arena, this.#large.tableBytes),
        debug: this.#debug,
        secure: this.#arena.u32[HeaderU32.SecureKey] !== 0,
        waiting: this.#lists.waitingByPage(),
      }, options);
    if (this.#owner === 0) return take();
    let snapshot: HeapSnapshot | undefined;
    stopTheWorld(this.#arena, this.#owner, () => {
      sumOwnerCounters(this.#arena);
      snapshot = take();
    });
    return snapshot!;
  }

  /** A short text table of the heap now: per size class its pages, live blocks and a utilization bar. */
  summary(): string {
    return formatSummary(this.snapshot());
  }

  /** checkHeap; damage it finds is contained (see containDamage) before it is reported. */
  #checkAndContain(): void {
    try {
      checkHeap(this.#arena, this.#pages, this.#lists, this.#large, this.#fit);
    } catch (error) {
      if (error instanceof HeapError && error.code === "corrupt") {
        containDamage(this.#pages, this.#fit);
      }
      throw error;
    }
  }

  /**
   * Gives back to the OS (madvise DONTNEED) now, rather than when the idle
   * budget or retainBytes would: every empty page kept for reuse, the empty
   * current page of each size class, and the free OS pages inside pages
   * still in use. In debug mode the quarantine of freed blocks is released
   * first. Large blocks need nothing: they are unmapped when freed. The
   * address space stays reserved. Returns the bytes given back.
   */
  trim(): number {
    if (this.#needsLock()) return this.#locked(() => this.trim());
    if (this.#closed) throw closedError("trim");
    this.#debug?.flushQuarantine("trim");
    return this.#pages.trim();
  }

  /**
   * Unmaps all of the heap's memory (a shared heap: detaches this Worker).
   * Every view bytes() handed out is detached first (length 0, reads
   * `undefined`); every address is dead afterwards. Closing a closed heap
   * does nothing.
   */
  close(): void {
    if (this.#closed) return;
    if (this.#owner === 0) return this.#closeNow();
    // Detach, under this Worker's lock so that a check() elsewhere sees it whole:
    // the quarantine (debug mode) goes back, the counters are published, and the
    // pages this Worker owns wait for the next Worker that needs memory.
    lockOwner(this.#arena, this.#owner);
    try {
      if (!this.#creator) this.#debug?.flushQuarantine("close");
    } finally {
      this.#publish();
      detachOwner(this.#arena, this.#owner);
      unlockOwner(this.#arena, this.#owner);
      this.#closeNow();
    }
  }

  #closeNow(): void {
    this.#closed = true;
    this.#special = true;
    this.allocLists.fill(0);
    this.fastFreeUnits[0] = 0;
    this.#buffers.releaseAll();
    if (!this.#creator) return;
    this.#large.unmapAll();
    this.#arena.unmap();
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Every live block with the JS stack of its allocation (debug mode; the
   * stack is "" otherwise), in address order for the default mode and in
   * allocation order in debug mode.
   */
  leaks(): LeakedBlock[] {
    if (this.#needsLock()) return this.#locked(() => this.leaks());
    if (this.#closed) throw closedError("leaks");
    if (this.#debug) return this.#debug.leaks();
    const blocks: LeakedBlock[] = [];
    this.#pages.forEachLiveBlock((offset, size) =>
      blocks.push({ address: this.base + offset, size, stack: "" })
    );
    this.#fit?.forEachLive((offset, size) =>
      blocks.push({ address: this.base + offset, size, stack: "" })
    );
    blocks.sort((a, b) => a.address - b.address);
    this.#large.forEach((address, size) => blocks.push({ address, size, stack: "" }));
    return blocks;
  }

  /** Live blocks grouped by allocation site with counts and bytes, largest first. */
  leakReport(): string {
    if (this.#needsLock()) return this.#locked(() => this.leakReport());
    if (this.#closed) throw closedError("leakReport");
    if (this.#debug) return this.#debug.leakReport();
    const blocks = this.leaks();
    const bytes = blocks.reduce((sum, b) => sum + b.size, 0);
    return blocks.length === 0
      ? "no leaks: every block was freed"
      : `${plural(blocks.length, "live block")}, ${
        plural(bytes, "byte")
      } (allocation sites are recorded in debug mode)`;
  }

  // ---- internals ----------------------------------------------------------------

  /** Off the fast path: throws if the heap is closed, else returns the debug layer (or null). */
  #specialMode(op: string): DebugLayer | null {
    if (this.#closed) throw closedError(op);
    return this.#debug;
  }

  /** The core operations the debug layer builds on. */
  #coreAccess(): CoreAccess {
    return {
      allocate: (size, alignment) => this.#allocAligned(alignment, size),
      release: (address) => this.#freeLocated(address, this.#locate(address, "free")),
      liveSize: (address) => {
        try {
          const where = this.#locate(address, "debug");
          return where > 0 ? this.#usableAt(where, address) : this.#large.usableSize(address);
        } catch {
          return 0;
        }
      },
      isLarge: (address) => this.#locate(address, "debug") < 0,
      forEachLive: (visit) => {
        this.#pages.forEachLiveBlock((offset) => visit(this.base + offset));
        this.#fit?.forEachLive((offset) => visit(this.base + offset));
        this.#large.forEach((address) => visit(address));
      },
      words: (address, length) => {
        const offset = address - this.base;
        if (offset >= 0 && offset + length <= this.#arena.size) {
          return { u32: this.u32, index: offset / 4 };
        }
        return { u32: new Uint32Array(viewMemory(address, Math.ceil(length / 4) * 4)), index: 0 };
      },
      view: (address, length) => this.#view(address, length),
      protect: (address, length, prot) => {
        this.#arena.f64[StatF64.MprotectCalls]++;
        return protectMemory(address, length, prot);
      },
      wasFreed: (address) => {
        try {
          this.#locate(address, "debug");
          return false;
        } catch (error) {
          return error instanceof HeapError && error.code === "freed-block";
        }
      },
      serialized: <T>(body: () => T): T => {
        if (this.#owner === 0) return body();
        lockGlobal(this.#arena, this.#owner);
        try {
          return body();
        } finally {
          unlockGlobal(this.#arena);
        }
      },
      owner: this.#owner,
    };
  }

  /** A byte view of `length` bytes at `address`: a view of the arena, or a fresh one. */
  #view(address: number, length: number): Uint8Array {
    const offset = address - this.base;
    if (offset >= 0 && offset + length <= this.#arena.size) {
      return new Uint8Array(this.#arena.buffer, offset, length);
    }
    return length === 0 ? new Uint8Array(0) : new Uint8Array(viewMemory(address, length));
  }

  /** Takes a block of class `cls` (counted by the pages); 0 when out of memory. */
  #allocFromClass(cls: number): number {
    const block = this.#pages.take(cls);
    return block === 0 ? 0 : this.base + block;
  }

  /** Any valid size: a class block, a fit block or a large block. */
  #allocAny(size: number): number {
    if (size <= MAX_CLASS_SIZE) {
      if (size > FIT_MIN_REQUEST && this.#fit !== null) {
        // 0: no room in fit pages and no 16 free units in a row for one; a class page may fit.
        const block = this.#allocFit(size);
        if (block !== 0) return block;
      }
      return this.#allocFromClass(classOfSize(size));
    }
    return this.#allocLarge(size, 0);
  }

  /** A block of a fit page (above 1 KiB, private heaps); 0 when out of memory. */
  #allocFit(size: number): number {
    const fit = this.#fit!;
    const block = fit.alloc(size);
    if (block === 0) return 0;
    this.#lists.countOther(1, fit.usable(block));
    return this.base + block;
  }

  /** Usable bytes of the live block at `address`, on page `where` (> 0). */
  #usableAt(where: number, address: number): number {
    if (this.u32[where + Desc.State] !== PageState.Fit) return this.u32[where + Desc.BlockSize];
    const offset = address - this.base;
    const usable = this.#fit!.usable(offset);
    // The size lives in a header just below the block, where an underflow lands.
    if (usable > 0 && offset + usable <= this.u32[where + Desc.PageStart] + FIT_PAGE_BYTES) {
      return usable;
    }
    throw new HeapError(
      "corrupt",
      address,
      `the 16-byte header before this block is damaged (it says ${usable + 16} bytes)`,
    );
  }

  #allocLarge(size: number, alignment: number): number {
    this.#idle.giveBackIdle(size);
    this.#source.makeRoomUnderLimit(size);
    const address = this.#large.allocate(size, alignment);
    if (address === 0) return 0;
    this.#lists.countOther(1, this.#large.usableSize(address));
    return address;
  }

  #publish(): void {
    const counters = this.#lists.counters();
    if (this.#owner === 0) {
      publishCounters(this.#arena, counters);
      return;
    }
    // Shared heaps: into this Worker's owner slot, in Counter order (owners.ts),
    // where stats() in any Worker adds them up.
    const f64 = this.#arena.f64;
    const f = this.#countersF64;
    f64[f] = counters.allocated;
    f64[f + 1] = counters.peakAllocated;
    f64[f + 2] = counters.allocs;
    f64[f + 3] = counters.frees;
  }

  /** Frees a block already proven live by #locate. */
  #freeLocated(address: number, where: number): void {
    const offset = address - this.base;
    // A plain read of OWNER decides: only this Worker writes its own id there
    // (formatting or adopting a page), and a page of this Worker changes
    // hands only when this Worker retires it or is gone.
    if (
      where > 0 && this.#owner !== 0 && this.u32[where + Desc.Owner] !== this.#owner
    ) {
      // Shared heap: another Worker's page; its owner takes the block back (see modes/shared.ts).
      this.#lists.countFreed(1, this.#shared!.freeRemote(where, offset));
      if (this.#buffers.hasBlockBuffers) this.#buffers.release(address);
      return;
    }
    if (where > 0 && this.u32[where + Desc.State] !== PageState.Fit) {
      this.#pages.freeLive(where, offset); // counted by the pages
    } else {
      this.#lists.countOther(
        -1,
        -(where <= 0 ? this.#large.free(address) : this.#fit!.free(where, offset)),
      );
    }
    // Views of a large block (or of any block in secure mode) die with it.
    if (this.#buffers.hasBlockBuffers) this.#buffers.release(address);
  }

  /**
   * Shared heaps: whether a public call must take this Worker's owner lock
   * (the outermost call of a shared heap; calls nest: leakReport calls
   * leaks). Every public method but malloc and free, which take the lock on
   * their slow paths, begins by asking.
   */
  #needsLock(): boolean {
    return this.#owner !== 0 && this.#lockDepth === 0;
  }

  /** Shared heaps: runs `call` (the public method again) under this Worker's owner lock. */
  #locked<T>(call: () => T): T {
    this.#enter();
    try {
      return call();
    } finally {
      this.#leave();
    }
  }

  /** Shared heaps: malloc under this Worker's owner lock. */
  #mallocLocked(size: number): number {
    return this.#locked(() => this.#mallocSpecial(size));
  }

  /** malloc() when closed, in debug, secure or shared mode. */
  #mallocSpecial(size: number): number {
    const debug = this.#specialMode("malloc");
    checkSize(size, "malloc");
    return debug ? debug.allocate(size, 16, false) : this.#allocAny(size);
  }

  /** Shared heaps: free under this Worker's owner lock. */
  #freeLocked(address: number): void {
    this.#locked(() => this.#freeSpecial(address));
  }

  /** free() when closed, in debug, secure or shared mode. */
  #freeSpecial(address: number): void {
    const debug = this.#specialMode("free");
    if (address === 0) return;
    if (debug) debug.free(address, "free");
    else this.#freeLocated(address, this.#locate(address, "free"));
  }

  /**
   * Shared heaps: a public call begins. The owner lock is taken by the
   * outermost call only (calls nest: leakReport calls leaks); an
   * uncontended lock is one compare-and-swap, tried here before lockOwner's
   * loop.
   */
  #enter(): void {
    if (this.#lockDepth++ !== 0 || this.#closed) return;
    if (Atomics.compareExchange(this.#arena.i32, this.#lockIndex, 0, this.#owner) !== 0) {
      lockOwner(this.#arena, this.#owner);
    }
  }

  /**
   * Shared heaps: a public call ends; the outermost publishes the counters
   * and unlocks. With total store order (x86-64, see owners.ts) a plain store
   * releases the lock (V8 emits typed array accesses in program order), so
   * whoever takes the lock next sees every write made under it. That halves
   * the lock's cost: Atomics.store is an xchg, as costly as the
   * compare-and-swap that took the lock.
   */
  #leave(): void {
    if (--this.#lockDepth !== 0 || this.#closed) return;
    if (this.#shared?.adoptedDebugOwners.length) this.#releaseAdoptedQuarantines();
    this.#publish();
    if (this.#plainStoreReleases) this.#arena.i32[this.#lockIndex] = 0;
    else Atomics.store(this.#arena.i32, this.#lockIndex, 0);
  }

  /**
   * Shared heaps, at the end of a call that adopted the pages of Workers gone
   * without close(): the blocks their debug-mode quarantines held (freed,
   * but live for the core) go back too. Still under this Worker's lock.
   */
  #releaseAdoptedQuarantines(): void {
    const orphans = this.#shared!.adoptedDebugOwners.splice(0);
    this.#lockDepth++;
    try {
      const core = this.#coreAccess();
      core.serialized(() => releaseOrphanQuarantines(core, orphans));
    } finally {
      this.#lockDepth--;
    }
  }

  /**
   * Proves `address` is a live block of this heap: returns its page
   * descriptor (> 0), or -1 for a large block. Otherwise throws, changing nothing.
   */
  #locate(address: number, op: string): number {
    if (typeof address !== "number") {
      throw new TypeError(`${op}: address must be a number, got ${typeof address}`);
    }
    if (address === 0) throw notABlock(op, 0, "");
    const offset = address - this.base;
    if (offset >= this.dataStart && offset < this.dataEnd && Number.isInteger(offset)) {
      const u32 = this.u32;
      const d = pageDescriptorOf(u32, this.dataStart, offset);
      const state = u32[d + Desc.State];
      const relative = offset - u32[d + Desc.PageStart];
      // The live bit alone proves a block: BUMP, which the page's owner keeps
      // writing, is read only to tell a freed block from a never-used one. A
      // small page has one bit per 16 bytes, set only where a block starts,
      // so a 16-byte-aligned offset needs no division by the block size.
      if (
        (state === PageState.Small || state === PageState.Fit
          ? (relative & 15) === 0
          : state === PageState.Medium && relative % u32[d + Desc.BlockSize] === 0) &&
        isLive(this.u32, d, offset)
      ) {
        return d;
      }
      if (state === PageState.Fit) {
        throw this.#fit!.isFreedBlock(d, offset)
          ? freedBlock(op, address)
          : notABlock(op, address, "not the start of a block of this heap");
      }
      const blockSize = u32[d + Desc.BlockSize];
      const onBoundary = blockSize !== 0 && relative % blockSize === 0;
      const blockStart = onBoundary && offset < u32[d + Desc.Bump];
      throw blockStart
        ? freedBlock(op, address)
        : notABlock(op, address, "not the start of a block of this heap");
    }
    if (this.#large.has(address)) return -1;
    if (this.#large.wasFreed(address)) throw freedBlock(op, address);
    throw notABlock(op, address, "not a block of this heap");
  }

  /** Copies `length` bytes between blocks, inside the arena when both are there. */
  #copy(dst: number, src: number, length: number): void {
    const base = this.base;
    const inArena = (a: number) => a - base >= this.dataStart && a - base < this.dataEnd;
    if (inArena(dst) && inArena(src)) {
      this.u8.copyWithin(dst - base, src - base, src - base + length);
    } else {
      moveMemory(dst, src, length);
    }
  }
}

/** Zeroes a block (16-byte aligned, a multiple of 16 long): small ones without a fill() call. */
function zeroBlock(u8: Uint8Array, u32: Uint32Array, offset: number, length: number): void {
  if (length > 256) {
    u8.fill(0, offset, offset + length);
    return;
  }
  for (let i = offset >>> 2, end = (offset + length) >>> 2; i < end; i += 4) {
    u32[i] = 0, u32[i + 1] = 0, u32[i + 2] = 0, u32[i + 3] = 0;
  }
}

/** Validates a size or count: a non-negative safe integer. */
function checkSize(size: number, op: string): number {
  if (typeof size !== "number") {
    throw new TypeError(`${op}: size must be a number, got ${typeof size}`);
  }
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new RangeError(`${op}: size must be a non-negative safe integer, got ${size}`);
  }
  return size;
}

function closedError(op: string): HeapError {
  return new HeapError("closed", 0, `${op}: the heap is closed`);
}
