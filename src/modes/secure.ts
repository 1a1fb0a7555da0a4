/**
 * Secure mode's free-list codec (see FreeListCodec in alloc/policies.ts).
 *
 * A free block's link is stored encoded with the heap's random key and the
 * block's own offset, so that a write into a freed block (or a leak of one
 * link) does not let an attacker steer malloc: a link that does not decode
 * to a free block of the same page is reported before it is followed. Each
 * page's fixed descriptor words carry a keyed checksum, checked whenever a
 * slow path uses the page. Fresh pages are committed whole and their blocks
 * linked in random order, so that allocation order does not predict
 * addresses. (Secure mode's guard pages are the page source's and
 * large.ts's; its per-block views, user_buffers.ts's.)
 */

import { type Arena, HeaderU32 } from "../arena/arena.ts";
import type { IdleMemory } from "../alloc/idle.ts";
import { Desc, isLive } from "../alloc/page_layout.ts";
import type { FreeListCodec } from "../alloc/policies.ts";

/** The descriptor words a page's checksum covers: those fixed while it is in use. */
const CHECKED_WORDS = [
  Desc.BlockSize,
  Desc.Class,
  Desc.PageStart,
  Desc.Capacity,
  Desc.Bitmap,
  Desc.Shift,
];

/** Gives a freshly created arena its random key (never 0: 0 means secure mode is off). */
export function writeSecureKey(arena: Arena): void {
  const key = new Uint32Array(1);
  while (key[0] === 0) crypto.getRandomValues(key);
  arena.u32[HeaderU32.SecureKey] = key[0];
}

export class KeyedCodec implements FreeListCodec {
  readonly formatsWholePages = true;
  private readonly u32: Uint32Array;
  private readonly idle: IdleMemory;
  private readonly key: number;
  /** xorshift32 state for shuffling fresh pages. */
  private shuffleState: number;

  constructor(arena: Arena, idle: IdleMemory) {
    this.u32 = arena.u32;
    this.idle = idle;
    this.key = arena.u32[HeaderU32.SecureKey];
    this.shuffleState = this.key | 1;
  }

  encode(block: number, next: number): number {
    return (next ^ this.key ^ Math.imul(block, 0x9e3779b1)) >>> 0;
  }

  decode(d: number, block: number, verify: boolean): number {
    const u32 = this.u32;
    const next = this.encode(block, u32[block >>> 2]); // the encoding is its own inverse
    if (verify && next !== 0) {
      const start = u32[d + Desc.PageStart];
      if (
        next < start || next >= u32[d + Desc.BumpEnd] ||
        (next - start) % u32[d + Desc.BlockSize] !== 0 || isLive(u32, d, next)
      ) {
        return -1;
      }
    }
    return next;
  }

  formatted(d: number): void {
    this.u32[d + Desc.Checksum] = this.checksum(d);
    this.shuffle(d);
  }

  intact(d: number): boolean {
    return this.u32[d + Desc.Checksum] === this.checksum(d);
  }

  /** A keyed hash of the descriptor words that stay fixed while a page is in use. */
  private checksum(d: number): number {
    const u32 = this.u32;
    let h = this.key;
    for (const word of CHECKED_WORDS) {
      h = Math.imul(h ^ u32[d + word], 0x01000193) ^ (h >>> 15);
    }
    return h >>> 0;
  }

  /** Commits the whole of fresh page `d` and links all its blocks into its free list in random order. */
  private shuffle(d: number): void {
    const u32 = this.u32;
    const start = u32[d + Desc.PageStart];
    const blockSize = u32[d + Desc.BlockSize];
    const capacity = u32[d + Desc.Capacity];
    const order = new Uint32Array(capacity);
    for (let i = 0; i < capacity; i++) order[i] = i;
    let x = this.shuffleState;
    for (let i = capacity - 1; i > 0; i--) {
      x ^= x << 13, x ^= x >>> 17, x ^= x << 5;
      const j = (x >>> 0) % (i + 1);
      const t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    this.shuffleState = x;
    const end = u32[d + Desc.BumpEnd];
    if (end > u32[d + Desc.CommitEnd]) this.idle.extendCommit(d, end);
    let next = 0;
    for (let i = capacity - 1; i >= 0; i--) {
      const block = start + order[i] * blockSize;
      u32[block >>> 2] = this.encode(block, next);
      next = block;
    }
    u32[d + Desc.Free] = next;
    u32[d + Desc.Bump] = end;
  }
}
