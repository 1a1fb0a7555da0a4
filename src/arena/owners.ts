/**
 * Shared heaps: the locks and the per-Worker owner slots.
 *
 * A shared heap is one arena used by several Workers at once, each through
 * its own Heap object (Heap.attach). Each of them registers an owner slot:
 *
 *   owner slot (1 KiB, u32 words from Arena.ownersU32 + owner * OWNER_WORDS)
 *     line 0, written by the owner on every call:
 *     0 STATE     FREE | ACTIVE | DETACHED | ABANDONED
 *     1 TID       OS thread id of the Worker, to notice when it has exited
 *     2 LOCK      i32 owner lock: held by the owner around each of its calls;
 *                 check() takes every owner's lock to stop the world
 *     3 DEBUG     1 if the Worker runs in debug mode: its adopter then looks
 *                 for the blocks its quarantine held (see debug.ts)
 *     4..13       f64 counters: allocated, peak allocated, allocs, frees
 *                 (published after each call; the fifth is spare)
 *     line 1, written by other Workers (a line of its own, so that their
 *     pushes do not take the owner's lock word away from it):
 *    16 PENDING   first page (descriptor index) whose blocks other Workers
 *                 freed; a lock-free stack linked through Desc.PendingNext
 *    32..119      heads of this owner's available-page lists, one per class
 *
 * Pages belong to the owner that formatted them (Desc.Owner). Only the owner
 * allocates from a page and changes its free list; another Worker frees a
 * block by clearing its live bit (an atomic and: of two Workers that free
 * the same block at once, one finds the bit clear and reports a double
 * free) and, unless the page is flagged REMOTE_FREED already, flags it and
 * pushes it on its owner's PENDING stack with a compare-and-swap. The owner
 * takes those blocks back in its slow path (see modes/shared.ts). Since others
 * clear bits in its live bitmaps, the owner of a shared heap's page changes
 * them with atomic operations too.
 *
 * Everything the Workers share beyond their pages (carving the arena, the
 * retained and released page lists, commit counters, large blocks) is done
 * under one global lock, which is off the fast path: it is taken once per
 * page acquired, per 4 KiB committed, per page retired and per large block.
 *
 * Locks spin 64 times on Atomics.compareExchange, then yield the thread with
 * sched_yield() and spin again (Atomics.wait needs a SharedArrayBuffer, which
 * FFI memory is not). A lock word holds its holder's owner id, so a Worker
 * that waits long for a lock whose holder's thread has exited takes it over.
 */

import { type Arena, HeaderU32, MAX_OWNERS, OWNER_WORDS } from "./arena.ts";
import { currentThreadId, threadAlive, yieldThread } from "../os/libc.ts";

export const enum Slot {
  State = 0,
  Tid = 1,
  Lock = 2,
  Debug = 3,
  /** f64 index (Slot.Counters / 2) from the slot's first word / 2. */
  Counters = 4,
  Pending = 16,
  Heads = 32,
}

export const enum OwnerState {
  Free = 0,
  Active = 1,
  Detached = 2,
  Abandoned = 3,
}

/** Counter order in a slot's f64 area. */
export const enum Counter {
  Allocated = 0,
  PeakAllocated = 1,
  Allocs = 2,
  Frees = 3,
}

/**
 * True where the CPU keeps total store order (x86-64): stores become visible
 * in program order and no load moves before an earlier locked instruction.
 * There a plain store releases a lock, and a plain load after an atomic
 * read-modify-write sees what a seq-cst load would. Each Atomics call is a
 * builtin call in V8, not inlined, so the shared hot paths use plain
 * accesses where this holds; elsewhere they keep the Atomics call.
 */
export const TOTAL_STORE_ORDER = Deno.build.arch === "x86_64";

/** Yields this many times waiting on a lock before checking whether its holder died. */
const YIELDS_BEFORE_HOLDER_CHECK = 1000;

/** u32 index of owner `owner`'s slot. */
export function slotOf(arena: Arena, owner: number): number {
  return arena.ownersU32 + owner * OWNER_WORDS;
}

/**
 * Claims an owner slot for the calling Worker and returns its id
 * (1..MAX_OWNERS-1), or 0 when MAX_OWNERS-1 Workers are attached. A free
 * slot comes first; failing that, the slot of a Worker that detached is
 * taken over whole, with its pages and counters (the caller reads them).
 */
export function registerOwner(arena: Arena): number {
  const i32 = arena.i32;
  // Not while check() stops the world: it must stop every owner there is.
  lock(arena, HeaderU32.CheckLock, REGISTERING);
  try {
    for (const from of [OwnerState.Free, OwnerState.Detached]) {
      for (let owner = 1; owner < MAX_OWNERS; owner++) {
        const slot = slotOf(arena, owner);
        if (Atomics.compareExchange(i32, slot + Slot.State, from, OwnerState.Active) === from) {
          if (from === OwnerState.Free) arena.u32.fill(0, slot + 1, slot + OWNER_WORDS);
          Atomics.store(i32, slot + Slot.Tid, currentThreadId());
          return owner;
        }
      }
    }
    return 0;
  } finally {
    unlock(arena, HeaderU32.CheckLock);
  }
}

/** The lock tag of a Worker that has no owner slot yet. */
const REGISTERING = MAX_OWNERS;

/** Takes the lock word at `index`, tagged with `owner`. */
export function lock(arena: Arena, index: number, owner: number): void {
  const i32 = arena.i32;
  let spins = 0;
  let yields = 0;
  for (;;) {
    const holder = Atomics.compareExchange(i32, index, 0, owner);
    if (holder === 0) return;
    if (++spins < 64) continue;
    spins = 0;
    yieldThread();
    if (++yields % YIELDS_BEFORE_HOLDER_CHECK === 0 && holderDied(arena, holder)) {
      // The holder's thread is gone (a terminated Worker): take the lock over.
      if (Atomics.compareExchange(i32, index, holder, owner) === holder) return;
    }
  }
}

/** Releases a lock taken with lock(). */
function unlock(arena: Arena, index: number): void {
  Atomics.store(arena.i32, index, 0);
}

/** Takes the global lock; re-entrant within one Worker (calls nest, e.g. check() in it). */
export function lockGlobal(arena: Arena, owner: number): void {
  if (arena.globalLockDepth++ === 0) lock(arena, HeaderU32.GlobalLock, owner);
}

export function unlockGlobal(arena: Arena): void {
  if (--arena.globalLockDepth === 0) unlock(arena, HeaderU32.GlobalLock);
}

/** i32 index of owner `owner`'s lock word. */
export function ownerLockIndex(arena: Arena, owner: number): number {
  return slotOf(arena, owner) + Slot.Lock;
}

/** f64 index of owner `owner`'s counters (Counter order). */
export function ownerCountersF64(arena: Arena, owner: number): number {
  return (slotOf(arena, owner) + Slot.Counters) / 2;
}

/** Takes owner `owner`'s lock (held around each call of that Worker). */
export function lockOwner(arena: Arena, owner: number): void {
  lock(arena, slotOf(arena, owner) + Slot.Lock, owner);
}

export function unlockOwner(arena: Arena, owner: number): void {
  unlock(arena, slotOf(arena, owner) + Slot.Lock);
}

/** A Worker leaves the heap; its pages wait for adoption. */
export function detachOwner(arena: Arena, owner: number): void {
  Atomics.store(arena.i32, slotOf(arena, owner) + Slot.State, OwnerState.Detached);
}

/**
 * Runs `body` while no other Worker is inside a heap call: takes the check
 * lock (one checker at a time), every owner's lock in ascending order, then
 * the global lock. Calls take at most their own owner lock and then the
 * global lock, so this order cannot deadlock with them.
 */
export function stopTheWorld(arena: Arena, owner: number, body: () => void): void {
  lock(arena, HeaderU32.CheckLock, owner);
  const held: number[] = [];
  try {
    for (let other = 1; other < MAX_OWNERS; other++) {
      const slot = slotOf(arena, other);
      if (Atomics.load(arena.i32, slot + Slot.State) === OwnerState.Free) continue;
      lock(arena, slot + Slot.Lock, owner);
      held.push(slot + Slot.Lock);
    }
    lockGlobal(arena, owner);
    try {
      body();
    } finally {
      unlockGlobal(arena);
    }
  } finally {
    for (const index of held) unlock(arena, index);
    unlock(arena, HeaderU32.CheckLock);
  }
}

function holderDied(arena: Arena, holder: number): boolean {
  if (holder <= 0 || holder >= MAX_OWNERS) return false;
  const slot = slotOf(arena, holder);
  return !threadAlive(Atomics.load(arena.i32, slot + Slot.Tid));
}

/**
 * Owners whose pages nobody serves any more: detached ones, and active ones
 * whose thread has exited (a Worker terminated without closing its heap).
 * Each is claimed for `adopter` (state ABANDONED) before it is returned.
 */
export function claimOrphans(arena: Arena, adopter: number): number[] {
  const i32 = arena.i32;
  const orphans: number[] = [];
  for (let owner = 1; owner < MAX_OWNERS; owner++) {
    if (owner === adopter) continue;
    const slot = slotOf(arena, owner);
    const state = Atomics.load(i32, slot + Slot.State);
    const orphaned = state === OwnerState.Detached ||
      state === OwnerState.Active && !threadAlive(Atomics.load(i32, slot + Slot.Tid));
    if (
      orphaned &&
      Atomics.compareExchange(i32, slot + Slot.State, state, OwnerState.Abandoned) === state
    ) {
      orphans.push(owner);
    }
  }
  return orphans;
}

/**
 * The allocation counters, derived from the pages' tally (see Tally in
 * alloc/page_layout.ts) and published into the arena header (StatF64.Allocated ...
 * StatF64.FreeCount) whenever stats() or check() runs.
 */
export interface HotCounters {
  allocated: number;
  peakAllocated: number;
  allocs: number;
  frees: number;
}

/** Shared heaps: the counters an owner slot holds (0 for a fresh slot). */
export function readOwnerCounters(arena: Arena, owner: number): HotCounters {
  const f = (slotOf(arena, owner) + Slot.Counters) / 2;
  const f64 = arena.f64;
  return {
    allocated: f64[f + Counter.Allocated],
    peakAllocated: f64[f + Counter.PeakAllocated],
    allocs: f64[f + Counter.Allocs],
    frees: f64[f + Counter.Frees],
  };
}
