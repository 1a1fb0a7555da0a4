/**
 * Shared heaps' page ownership (see PageOwnership in alloc/policies.ts).
 *
 * A page belongs to one Worker, its owner (owner slots: arena/owners.ts),
 * and only the owner allocates from it, links its free list and changes its
 * USED. Any Worker may free a block of it: it clears the block's live bit
 * alone (an atomic and: of two Workers freeing the same block at once, one
 * finds the bit clear and reports a double free), and flags the page
 * REMOTE_FREED, pushing it on its owner's stack of such pages if the flag
 * was clear. The freer never touches the block itself nor the page's free
 * list. The owner keeps a second bitmap, the handed-out bitmap (see "Shared
 * heaps" in alloc/page_layout.ts): the blocks it handed out and has not seen
 * freed. In its slow path (a class list with no page, trim()) it takes back
 * every block handed out but no longer live. Pages of Workers that detached
 * or exited without closing their heap are adopted by the next Worker that
 * needs a page.
 */

import { type Arena, HeaderU32 } from "../arena/arena.ts";
import {
  claimOrphans,
  OwnerState,
  readOwnerCounters,
  Slot,
  slotOf,
  TOTAL_STORE_ORDER,
} from "../arena/owners.ts";
import type { ClassLists } from "../alloc/class_lists.ts";
import {
  BitmapWords,
  blockAtGranule,
  classPagesIn,
  Desc,
  Granule,
  liveBit,
  liveWord,
  PageState,
} from "../alloc/page_layout.ts";
import type { PageSource } from "../alloc/page_source.ts";
import type { FreeListCodec, PageOwnership, PageTransitions } from "../alloc/policies.ts";
import { CLASS_COUNT } from "../alloc/size_classes.ts";
import { type Fail, HeapError } from "../errors.ts";

export class SharedOwnership implements PageOwnership {
  private readonly arena: Arena;
  private readonly u32: Uint32Array;
  /** This Worker's owner slot. */
  private readonly owner: number;
  private readonly source: PageSource;
  private readonly lists: ClassLists;
  private readonly codec: FreeListCodec;
  /** Words from a live bitmap to the same unit's handed-out bitmap. */
  private readonly handedOutDelta: number;
  /** See TOTAL_STORE_ORDER (owners.ts). */
  private readonly totalStoreOrder = TOTAL_STORE_ORDER;
  /**
   * The owner slots of debug-mode Workers whose pages this owner adopted,
   * for the Heap to give back the blocks their quarantines held (see
   * modes/debug.ts); the Heap empties it.
   */
  readonly adoptedDebugOwners: number[] = [];

  constructor(
    arena: Arena,
    owner: number,
    source: PageSource,
    lists: ClassLists,
    codec: FreeListCodec,
  ) {
    this.arena = arena;
    this.u32 = arena.u32;
    this.owner = owner;
    this.source = source;
    this.lists = lists;
    this.codec = codec;
    this.handedOutDelta = arena.handedOutU32 - arena.bitmapU32;
  }

  /**
   * Sets a block's live and handed-out bits. Other Workers
   * clear live bits of this owner's pages (see freeRemote), so the owner
   * changes its live bitmap words with atomic operations only: a plain
   * read-modify-write would undo a remote free.
   */
  handOut(d: number, offset: number): void {
    const u32 = this.u32;
    const word = liveWord(u32, d, offset);
    const bit = liveBit(u32, d, offset);
    Atomics.or(u32, word, bit);
    u32[word + this.handedOutDelta] |= bit;
  }

  /** The owner frees a block of its own page (live and handed-out bits). */
  takeBack(d: number, offset: number): void {
    const u32 = this.u32;
    const word = liveWord(u32, d, offset);
    const bit = liveBit(u32, d, offset);
    this.clearLiveBit(word, bit, offset);
    u32[word + this.handedOutDelta] &= ~bit;
  }

  /**
   * Clears a live bit and throws "double-free", changing
   * nothing, if it was clear already: whoever clears the bit first owns the
   * free, so a block two Workers free at once is freed exactly once.
   */
  private clearLiveBit(word: number, bit: number, offset: number): void {
    if ((Atomics.and(this.u32, word, ~bit) & bit) === 0) {
      throw new HeapError(
        "double-free",
        this.arena.base + offset,
        "free: the block was already freed",
      );
    }
  }

  awaitsCollection(d: number, offset: number): boolean {
    const u32 = this.u32;
    return (u32[liveWord(u32, d, offset) + this.handedOutDelta] & liveBit(u32, d, offset)) !== 0;
  }

  replenish(pages: PageTransitions, slot: number): void {
    // Blocks other Workers freed come first, then pages of Workers that are
    // gone: looking for those costs two system calls per attached Worker
    // (see claimOrphans), so only when a page would be acquired otherwise.
    this.collectRemoteFrees(pages);
    if (this.u32[slot] === 0) this.adoptOrphans(pages);
  }

  collectAll(pages: PageTransitions): void {
    this.collectRemoteFrees(pages);
    this.adoptOrphans(pages);
    this.collectStranded(pages);
  }

  /**
   * Frees a live block of a page that another Worker owns: clears its live
   * bit, and flags the page for its owner (see the top of this file).
   * Returns its size.
   */
  freeRemote(d: number, offset: number): number {
    const u32 = this.u32;
    // Read now: once the bit is clear, the owner may take the block back and retire the page.
    const blockSize = u32[d + Desc.BlockSize];
    this.clearLiveBit(liveWord(u32, d, offset), liveBit(u32, d, offset), offset);
    // A page already flagged is already on its owner's stack: a load, no write
    // (a plain one with total store order: the atomic and above orders it).
    const flagged = this.totalStoreOrder
      ? u32[d + Desc.RemoteFreed]
      : Atomics.load(u32, d + Desc.RemoteFreed);
    if (flagged === 0 && Atomics.exchange(u32, d + Desc.RemoteFreed, 1) === 0) {
      const stack = slotOf(this.arena, Atomics.load(u32, d + Desc.Owner)) + Slot.Pending;
      let top: number;
      do {
        top = Atomics.load(u32, stack);
        Atomics.store(u32, d + Desc.PendingNext, top);
      } while (Atomics.compareExchange(u32, stack, top, d) !== top);
    }
    return blockSize;
  }

  /** Takes back every block other Workers freed on this owner's pages (and on pages it adopted). */
  private collectRemoteFrees(pages: PageTransitions): void {
    const stack = slotOf(this.arena, this.owner) + Slot.Pending;
    if (Atomics.load(this.u32, stack) === 0) return;
    for (const d of this.drainPendingStack(stack)) {
      this.collectIfMine(pages, d);
    }
  }

  /**
   * Empties an owner's stack of pages with remote frees and returns them.
   * The whole stack is read before any page is touched: a page whose flag is
   * cleared may be pushed again at once, rewriting its link.
   */
  private drainPendingStack(stack: number): number[] {
    const u32 = this.u32;
    const pages = new Set<number>();
    // A stale entry (a page that changed hands) may link into another stack;
    // stop at the first page seen twice rather than follow a merged chain round.
    for (
      let d = Atomics.exchange(u32, stack, 0);
      d !== 0 && !pages.has(d);
      d = Atomics.load(u32, d + Desc.PendingNext)
    ) {
      pages.add(d);
    }
    return [...pages];
  }

  /**
   * Collects a page with remote frees if this owner owns it. A page listed
   * here that another owner holds now (it changed hands after the freer
   * looked) is left alone: touching another owner's page is never safe, and
   * its blocks wait for that owner's collectStranded (trim, adoption).
   */
  private collectIfMine(pages: PageTransitions, d: number): void {
    if (Atomics.load(this.u32, d + Desc.Owner) === this.owner) this.collectPage(pages, d);
  }

  /** Collects every page of this owner flagged REMOTE_FREED (trim, adoption). */
  private collectStranded(pages: PageTransitions): void {
    const u32 = this.u32;
    for (const d of classPagesIn(u32, u32[HeaderU32.TopUnit])) {
      if (
        Atomics.load(u32, d + Desc.Owner) === this.owner &&
        Atomics.load(u32, d + Desc.RemoteFreed) !== 0
      ) {
        this.collectPage(pages, d);
      }
    }
  }

  /** Takes back a page's remotely freed blocks (owner only), with the page transition that follows. */
  private collectPage(pages: PageTransitions, d: number): void {
    const offList = pages.isFullOffList(d);
    if (!this.collectBlocks(d)) return;
    const used = this.u32[d + Desc.Used];
    if (offList) {
      if (used === 0) pages.retire(d);
      else pages.readmit(d);
    } else if (used === 0) {
      pages.emptied(d);
    }
  }

  /**
   * Puts the blocks of page `d` that other Workers freed (handed out, no
   * longer live) on its free list; false if there were none. The flag is
   * cleared before the bitmaps are read: a free that clears a live bit after
   * that read finds the flag clear and flags the page again. A flag may also
   * come late, after the owner took the block back on an earlier flag and
   * even retired the page: then there is nothing to take, and the page is
   * left as it is.
   */
  private collectBlocks(d: number): boolean {
    const u32 = this.u32;
    if (Atomics.exchange(u32, d + Desc.RemoteFreed, 0) === 0) return false;
    const start = u32[d + Desc.PageStart];
    const shift = u32[d + Desc.Shift];
    const bitmap = u32[d + Desc.Bitmap];
    const words = (((u32[d + Desc.Bump] - start) >>> shift) + 31) >>> 5;
    const small = shift === Granule.SmallShift;
    let used = u32[d + Desc.Used];
    let free = u32[d + Desc.Free];
    for (let w = 0; w < words; w++) {
      const handedOut = u32[bitmap + this.handedOutDelta + w];
      if (handedOut === 0) continue;
      // A plain load: the exchange above orders it (and an Atomics call costs more than the rest).
      const freed = handedOut & ~u32[bitmap + w];
      if (freed === 0) continue;
      u32[bitmap + this.handedOutDelta + w] = handedOut ^ freed;
      for (let bits = freed; bits !== 0; bits &= bits - 1) {
        const granule = (w << 5) + (31 - Math.clz32(bits & -bits));
        const block = small
          ? start + (granule << Granule.SmallShift)
          : blockAtGranule(u32, d, granule);
        u32[block >>> 2] = this.codec.encode(block, free);
        free = block;
        used--;
      }
    }
    if (used === u32[d + Desc.Used]) return false;
    u32[d + Desc.Free] = free;
    u32[d + Desc.Used] = used;
    return true;
  }

  /**
   * Takes over the pages of Workers that detached or exited without closing
   * their heap: their blocks stay valid and their free space is reused.
   */
  private adoptOrphans(pages: PageTransitions): void {
    const orphans = claimOrphans(this.arena, this.owner);
    if (orphans.length === 0) return;
    const u32 = this.u32;
    // Take the orphans' stacks of pages with remote frees first, while their
    // links are stable (a page is pushed again only after it is collected).
    const pending = orphans.flatMap((orphan) =>
      this.drainPendingStack(slotOf(this.arena, orphan) + Slot.Pending)
    );
    for (const orphan of orphans) {
      // The orphan's class lists are rebuilt here as this owner's: forget them.
      const slot = slotOf(this.arena, orphan);
      u32.fill(0, slot + Slot.Heads, slot + Slot.Heads + CLASS_COUNT);
    }
    this.source.lock();
    const adopted = classPagesIn(u32, u32[HeaderU32.TopUnit]).filter((d) =>
      orphans.includes(u32[d + Desc.Owner])
    );
    for (const d of adopted) Atomics.store(u32, d + Desc.Owner, this.owner);
    this.source.unlock();
    for (const d of adopted) {
      u32[d + Desc.Next] = 0;
      u32[d + Desc.Prev] = 0;
      this.collectBlocks(d);
      const used = u32[d + Desc.Used];
      if (used === 0) pages.retire(d);
      else if (used < u32[d + Desc.Capacity]) pages.readmit(d);
    }
    for (const d of pending) this.collectIfMine(pages, d);
    // The orphans' counters join this owner's and their slots go back for reuse.
    for (const orphan of orphans) {
      this.lists.addCounters(readOwnerCounters(this.arena, orphan));
      if (this.u32[slotOf(this.arena, orphan) + Slot.Debug] === 1) {
        this.adoptedDebugOwners.push(orphan);
      }
      Atomics.store(this.arena.i32, slotOf(this.arena, orphan) + Slot.State, OwnerState.Free);
    }
    this.collectStranded(pages);
  }
}

/**
 * check(): validates page `d`'s handed-out bitmap against its live bitmap
 * (every live block was handed out; a block handed out and no longer live,
 * freed by another Worker, is on a flagged page) and returns the blocks
 * other Workers freed that the owner has not taken back. Empty for a heap
 * that is not shared.
 */
export function validateHandedOut(
  arena: Arena,
  d: number,
  fail: Fail,
): Set<number> {
  const u32 = arena.u32;
  const freed = new Set<number>();
  if (u32[HeaderU32.Shared] !== 1) return freed;
  const bitmap = u32[d + Desc.Bitmap];
  const handedOut = bitmap + (arena.handedOutU32 - arena.bitmapU32);
  const words = u32[d + Desc.State] === PageState.Medium ? BitmapWords.Medium : BitmapWords.Small;
  for (let w = 0; w < words; w++) {
    const live = u32[bitmap + w];
    const handed = u32[handedOut + w];
    if ((live & ~handed) !== 0) {
      fail(arena.base + u32[d + Desc.PageStart], "a live block was not handed out by its owner");
    }
    for (let bits = handed & ~live; bits !== 0; bits &= bits - 1) {
      freed.add(blockAtGranule(u32, d, w * 32 + 31 - Math.clz32(bits & -bits)));
    }
  }
  if (freed.size > 0 && u32[d + Desc.RemoteFreed] === 0) {
    fail(
      arena.base + u32[d + Desc.PageStart],
      "blocks other Workers freed wait on an unflagged page",
    );
  }
  return freed;
}
