/**
 * The two ways class pages (class_pages.ts) vary by mode, each chosen once
 * when a heap is made, so that no mode is tested where it does not apply:
 *  - a free-list codec: how a free block stores the link to the next one.
 *    Plain here; secure mode's keyed codec (modes/secure.ts) encodes links,
 *    checks a checksum of each page's fixed words, and shuffles fresh pages.
 *  - a page ownership: who may change a page's live bits. Private here (the
 *    heap's own thread); shared heaps' (modes/shared.ts) lets other Workers
 *    free blocks of a page while its owner takes them back.
 * The fast paths (page_layout.ts) know neither: heaps in these modes keep
 * their allocation lists empty and send every free to the slow path.
 */

import { liveBit, liveWord } from "./page_layout.ts";

export interface FreeListCodec {
  /** Whether pages are committed and linked whole when formatted (their empty heads then stay). */
  readonly formatsWholePages: boolean;
  /** The word free block `block` stores to link to `next` (0 = none). */
  encode(block: number, next: number): number;
  /**
   * The free block after `block` on page `d`'s free list; -1 when `verify`
   * and the link does not lead to a free block of the page (overwritten).
   */
  decode(d: number, block: number, verify: boolean): number;
  /** Page `d` was just formatted for use with an empty free list. */
  formatted(d: number): void;
  /** Whether page `d`'s fixed descriptor words are as they were formatted. */
  intact(d: number): boolean;
}

/** Links stored as they are: the default. */
export class PlainCodec implements FreeListCodec {
  readonly formatsWholePages = false;
  private readonly u32: Uint32Array;

  constructor(u32: Uint32Array) {
    this.u32 = u32;
  }

  encode(_block: number, next: number): number {
    return next;
  }

  decode(_d: number, block: number): number {
    return this.u32[block >>> 2];
  }

  formatted(): void {}

  intact(): boolean {
    return true;
  }
}

/** What the page ownership may ask of the class pages when blocks come back. */
export interface PageTransitions {
  /** Whether page `d` is full and off its class list (the state a full page's next free changes). */
  isFullOffList(d: number): boolean;
  /** Page `d`, full and off its list, got blocks back: it goes back on its class list. */
  readmit(d: number): void;
  /** Page `d`, on its class list, emptied: it retires unless it stays as its class's head. */
  emptied(d: number): void;
  /** Page `d`, empty and on no list, retires. */
  retire(d: number): void;
}

export interface PageOwnership {
  /** Marks block `offset` of page `d` live, handed out by this heap (or owner). */
  handOut(d: number, offset: number): void;
  /**
   * This heap (owner) frees its own block `offset` of page `d`, proven live:
   * clears its live bit, or throws double-free if another Worker did first.
   */
  takeBack(d: number, offset: number): void;
  /** Whether free block `offset` of page `d` awaits its owner's collection (freed by another Worker). */
  awaitsCollection(d: number, offset: number): boolean;
  /**
   * The class list at u32 index `slot` has no page: blocks other Workers
   * freed, and pages of Workers that are gone, come back to it first.
   */
  replenish(pages: PageTransitions, slot: number): void;
  /** trim(): every block other Workers freed comes back. */
  collectAll(pages: PageTransitions): void;
}

/** Every page is the heap's own, and only its thread writes it. */
export class PrivateOwnership implements PageOwnership {
  private readonly u32: Uint32Array;

  constructor(u32: Uint32Array) {
    this.u32 = u32;
  }

  handOut(d: number, offset: number): void {
    this.flipLiveBit(d, offset);
  }

  takeBack(d: number, offset: number): void {
    this.flipLiveBit(d, offset);
  }

  awaitsCollection(): boolean {
    return false;
  }

  replenish(): void {}

  collectAll(): void {}

  private flipLiveBit(d: number, offset: number): void {
    const u32 = this.u32;
    u32[liveWord(u32, d, offset)] ^= liveBit(u32, d, offset);
  }
}
