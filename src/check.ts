/**
 * The heap checker: walks every structure in the arena and the large-block
 * table and throws HeapError("corrupt") at the first inconsistency. It
 * recomputes every counter it can from the structures themselves and
 * compares. It allocates JS temporaries freely: it is a debugging tool, not
 * a fast path.
 */

import {
  type Arena,
  HeaderU32,
  LAYOUT_VERSION,
  MAGIC,
  MAX_OWNERS,
  MEDIUM_UNITS,
  StatF64,
  UNIT_SIZE,
} from "./arena/arena.ts";
import type { ClassPages } from "./alloc/class_pages.ts";
import type { ClassLists } from "./alloc/class_lists.ts";
import { isPurged, touchesPurged } from "./alloc/page_memory.ts";
import {
  BitmapWords,
  blockAtGranule,
  ClassEntry,
  Desc,
  isLive,
  PageState,
  Tables,
} from "./alloc/page_layout.ts";
import { OwnerState, Slot, slotOf } from "./arena/owners.ts";
import type { LargeBlocks } from "./alloc/large.ts";
import type { FitPages } from "./alloc/fit.ts";
import { binOf, Chunk, CHUNK_HEADER, FIT_BINS, FIT_PAGE_BYTES } from "./alloc/fit_chunks.ts";
import { CLASS_COUNT } from "./alloc/size_classes.ts";
import { HeapError } from "./errors.ts";
import { OS_PAGE_SIZE } from "./os/libc.ts";

/** Throws HeapError("corrupt") describing the first inconsistency found (counters published first). */
export function checkHeap(
  arena: Arena,
  pages: ClassPages,
  lists: ClassLists,
  large: LargeBlocks,
  fit: FitPages | null,
): void {
  const { u32, f64 } = arena;
  const fail = (address: number, what: string): never => {
    throw new HeapError("corrupt", address, what);
  };
  if (u32[HeaderU32.Magic] !== MAGIC || u32[HeaderU32.Version] !== LAYOUT_VERSION) {
    fail(arena.base, "arena header magic or version is wrong");
  }
  if (u32[HeaderU32.BitmapBias] !== arena.bitmapU32 - arena.dataStart / 512) {
    fail(arena.base, "arena header's bitmap bias does not match the layout");
  }
  const top = u32[HeaderU32.TopUnit];
  if (top > arena.unitCount) fail(arena.base, `carved top ${top} beyond ${arena.unitCount} units`);
  const addressOf = (offset: number) => arena.base + offset;
  const isDescriptor = (d: number) => isCarvedDescriptor(arena, d);

  const waiting = checkAllocLists(arena, lists, fail);

  // Pass 1: every carved unit, page by page.
  let allocated = 0;
  let live = 0;
  let committed = 0;
  let purgedBytes = 0;
  let inUsePageBytes = 0;
  const inUseWithRoom = new Set<number>();
  const retained = new Set<number>();
  const released = new Set<number>();
  const fitPages = new Set<number>();
  /** Arena offsets of the free chunks the fit pages hold: the bins may link these only. */
  const fitFreeChunks = new Set<number>();
  for (let unit = 0; unit < top;) {
    const d = Tables.DescriptorsU32 + unit * Desc.Words;
    const start = arena.dataStart + unit * UNIT_SIZE;
    const state = u32[d + Desc.State];
    const units = u32[d + Desc.Units];
    const where = addressOf(start);
    if (units !== 1 && units !== MEDIUM_UNITS) fail(where, `unit ${unit}: bad unit count ${units}`);
    if (u32[d + Desc.PageStart] !== start) fail(where, `unit ${unit}: page start mismatch`);
    for (let i = 1; i < units; i++) {
      const c = d + i * Desc.Words;
      if (
        u32[c + Desc.State] !== PageState.Continuation || u32[c + Desc.PageStart] !== start ||
        u32[c + Desc.FastFree] !== 0
      ) {
        fail(where, `unit ${unit + i}: medium page continuation is broken`);
      }
    }
    const commitEnd = u32[d + Desc.CommitEnd];
    if (commitEnd < start || commitEnd > start + units * UNIT_SIZE || commitEnd % 4096 !== 0) {
      fail(where, `page commit end ${commitEnd} out of range`);
    }
    // Read before any bitmap is: a damaged index would send the reads anywhere.
    if (u32[d + Desc.Bitmap] !== arena.bitmapU32 + unit * (UNIT_SIZE >>> 4 >>> 5)) {
      fail(where, `unit ${unit}: the descriptor's bitmap index is wrong`);
    }
    // FAST_FREE: 1 on small pages, except a full one off its list (see pass 2).
    const fastFree = u32[d + Desc.FastFree];
    if (
      state === PageState.Small
        ? fastFree !== 1 && (fastFree !== 0 || u32[d + Desc.Used] !== u32[d + Desc.Capacity])
        : fastFree !== 0
    ) {
      fail(where, `unit ${unit}: the fast-free flag ${fastFree} does not match the page`);
    }
    const purgedPages = u32[d + Desc.PurgedPages];
    committed += commitEnd - start - purgedPages * OS_PAGE_SIZE;
    if (state === PageState.Small || state === PageState.Medium || state === PageState.Fit) {
      inUsePageBytes += units * UNIT_SIZE;
    }
    purgedBytes += purgedPages * OS_PAGE_SIZE;
    if (
      state !== PageState.Small && state !== PageState.Medium && state !== PageState.Fit &&
      purgedPages !== 0
    ) {
      fail(where, "an empty page has OS pages counted as purged");
    }
    if (state === PageState.Small || state === PageState.Medium) {
      // Blocks other Workers freed are freed (their live bits are clear), though
      // their owner has not taken them back: USED still counts them.
      const notLive = checkHandedOut(arena, d, fail);
      for (const block of waiting.get(d) ?? []) notLive.add(block);
      const used = checkPage(arena, pages, d, start, notLive, fail);
      allocated += used * u32[d + Desc.BlockSize];
      live += used;
      if (u32[d + Desc.Used] < u32[d + Desc.Capacity]) inUseWithRoom.add(d);
    } else if (state === PageState.Fit) {
      if (fit === null) fail(where, "a fit page in a heap that has none");
      // The empty page fit.ts keeps is on no list, and its one chunk on no bin.
      const kept = d === u32[HeaderU32.FitEmpty];
      const page = checkFitPage(arena, d, start, kept ? new Set() : fitFreeChunks, fail);
      allocated += page.allocated;
      live += page.live;
      if (!kept) fitPages.add(d);
      else if (page.live !== 0) fail(where, "the kept empty fit page holds live blocks");
    } else if (state === PageState.Retained) {
      checkBitmapEmpty(arena, d, where, fail);
      retained.add(d);
    } else if (state === PageState.Released) {
      if (commitEnd !== start) fail(where, "released page still counts committed memory");
      checkBitmapEmpty(arena, d, where, fail);
      released.add(d);
    } else {
      fail(where, `unit ${unit}: carved but in state ${state}`);
    }
    unit += units;
  }

  // Pass 2: lists. Each owner (0 for a heap that is not shared) has its own class lists.
  const owners = [0];
  for (let owner = 1; owner < MAX_OWNERS; owner++) {
    if (u32[slotOf(arena, owner) + Slot.State] !== OwnerState.Free) owners.push(owner);
  }
  for (const owner of owners) {
    for (let c = 0; c < CLASS_COUNT; c++) {
      const headSlot = owner === 0
        ? Tables.ClassU32 + c * ClassEntry.Words + ClassEntry.AvailHead
        : slotOf(arena, owner) + Slot.Heads + c;
      let prev = 0;
      let steps = 0;
      for (let d = u32[headSlot]; d !== 0; prev = d, d = u32[d + Desc.Next]) {
        if (!isDescriptor(d)) fail(arena.base, `class ${c}: list link ${d} is not a page`);
        const where = addressOf(u32[d + Desc.PageStart]);
        if (++steps > top) fail(where, `class ${c}: available list has a cycle`);
        const fullHead = prev === 0 && u32[d + Desc.Used] === u32[d + Desc.Capacity] &&
          (u32[d + Desc.State] === PageState.Small || u32[d + Desc.State] === PageState.Medium);
        if (!fullHead && !inUseWithRoom.delete(d)) {
          fail(where, `class ${c}: listed page is not an in-use page with room (or a full head)`);
        }
        if (u32[d + Desc.Class] !== c) {
          fail(where, `class ${c}: listed page belongs to class ${u32[d + Desc.Class]}`);
        }
        if (u32[d + Desc.Prev] !== prev) fail(where, `class ${c}: broken back link`);
        if (u32[d + Desc.Owner] !== owner) {
          fail(
            where,
            `class ${c}: a page of owner ${u32[d + Desc.Owner]} is on owner ${owner}'s list`,
          );
        }
        if (u32[d + Desc.Used] === 0 && prev !== 0) {
          fail(where, `class ${c}: empty page not at the head`);
        }
        if (u32[d + Desc.State] === PageState.Small && u32[d + Desc.FastFree] !== 1) {
          fail(where, `class ${c}: a listed small page is marked off its list`);
        }
      }
    }
  }
  if (inUseWithRoom.size > 0) {
    const d = inUseWithRoom.values().next().value!;
    fail(addressOf(u32[d + Desc.PageStart]), "page with room is missing from its class list");
  }
  let retainedBytes = 0;
  for (
    const [headSlot, tailSlot] of [[HeaderU32.RetainedSmallHead, HeaderU32.RetainedSmallTail], [
      HeaderU32.RetainedMediumHead,
      HeaderU32.RetainedMediumTail,
    ]]
  ) {
    let prev = 0;
    for (let d = u32[headSlot]; d !== 0; prev = d, d = u32[d + Desc.Next]) {
      if (!isDescriptor(d)) fail(arena.base, `retained list: link ${d} is not a page`);
      const where = addressOf(u32[d + Desc.PageStart]);
      if (!retained.delete(d)) {
        fail(where, "retained list holds a page that is not retained (or a cycle)");
      }
      if (u32[d + Desc.Prev] !== prev) fail(where, "retained list: broken back link");
      if ((u32[d + Desc.Units] === MEDIUM_UNITS) !== (headSlot === HeaderU32.RetainedMediumHead)) {
        fail(where, "retained page on the wrong kind's list");
      }
      retainedBytes += u32[d + Desc.CommitEnd] - u32[d + Desc.PageStart];
    }
    if (u32[tailSlot] !== prev) fail(arena.base, "retained list tail is wrong");
  }
  if (retained.size > 0) fail(arena.base, `${retained.size} retained pages are on no list`);
  if (inUsePageBytes !== f64[StatF64.InUsePageBytes]) {
    fail(
      arena.base,
      `pages in use hold ${inUsePageBytes} bytes, counted ${f64[StatF64.InUsePageBytes]}`,
    );
  }
  // A heap starts with its first metadata, whatever the cap.
  if (arena.footprint() > Math.max(f64[StatF64.Limit], arena.metaBytes(0))) {
    fail(arena.base, `footprint ${arena.footprint()} is past limitBytes ${f64[StatF64.Limit]}`);
  }
  if (retainedBytes !== f64[StatF64.RetainedBytes]) {
    fail(
      arena.base,
      `retained bytes ${f64[StatF64.RetainedBytes]} but the lists hold ${retainedBytes}`,
    );
  }
  for (const slot of [HeaderU32.ReleasedSmallHead, HeaderU32.ReleasedMediumHead]) {
    for (let d = u32[slot]; d !== 0; d = u32[d + Desc.Next]) {
      if (!isDescriptor(d)) fail(arena.base, `released list: link ${d} is not a page`);
      if (!released.delete(d)) {
        fail(
          addressOf(u32[d + Desc.PageStart]),
          "released list holds a page that is not released (or a cycle)",
        );
      }
    }
  }
  if (released.size > 0) fail(arena.base, `${released.size} released pages are on no list`);

  checkFitLists(arena, fitPages, fitFreeChunks, fail);

  // Pass 3: large blocks.
  let largeCount = 0;
  let largeBytes = 0;
  large.forEach((address, length, requested) => {
    largeCount++;
    largeBytes += length;
    if (address % 4096 !== 0 || length % 4096 !== 0 || requested > length) {
      fail(address, `large block entry is inconsistent (length ${length}, requested ${requested})`);
    }
    if (!large.has(address)) fail(address, "large block cannot be found by its address");
  });
  if (largeCount !== u32[HeaderU32.LargeCount]) {
    fail(
      arena.base,
      `large table counts ${u32[HeaderU32.LargeCount]} blocks but holds ${largeCount}`,
    );
  }
  if (largeBytes !== f64[StatF64.LargeBytes]) fail(arena.base, "large block bytes do not add up");

  // Pass 4: counters.
  allocated += largeBytes;
  live += largeCount;
  if (allocated !== f64[StatF64.Allocated]) {
    fail(
      arena.base,
      `allocatedBytes is ${f64[StatF64.Allocated]} but live blocks hold ${allocated}`,
    );
  }
  const counted = f64[StatF64.AllocCount] - f64[StatF64.FreeCount];
  if (live !== counted) fail(arena.base, `liveBlocks is ${counted} but ${live} blocks are live`);
  if (purgedBytes !== f64[StatF64.PurgedBytes]) {
    fail(
      arena.base,
      `purgedBytes is ${f64[StatF64.PurgedBytes]} but pages hold ${purgedBytes} purged`,
    );
  }
  committed += largeBytes + f64[StatF64.MetaCommitted] + large.tableBytes;
  if (committed !== f64[StatF64.Committed]) {
    fail(
      arena.base,
      `committedBytes is ${f64[StatF64.Committed]} but pages and mappings hold ${committed}`,
    );
  }
}

/** Whether `d` is the descriptor index of a carved unit: checked before a list link is followed. */
function isCarvedDescriptor(arena: Arena, d: number): boolean {
  return d >= Tables.DescriptorsU32 &&
    d < Tables.DescriptorsU32 + arena.u32[HeaderU32.TopUnit] * Desc.Words &&
    (d - Tables.DescriptorsU32) % Desc.Words === 0;
}

/**
 * Checks the allocation lists (see class_lists.ts): each holds blocks of its
 * class's head page, below the bump pointer, on block boundaries, not live,
 * touching no purged OS page, at most a page's capacity of them. Every link
 * is range-checked before it is followed. Returns them by page descriptor.
 */
function checkAllocLists(
  arena: Arena,
  lists: ClassLists,
  fail: (address: number, what: string) => never,
): Map<number, Set<number>> {
  const u32 = arena.u32;
  const byPage = new Map<number, Set<number>>();
  lists.allocLists.forEach((first, c) => {
    if (first === 0) return;
    const d = u32[Tables.ClassU32 + c * ClassEntry.Words + ClassEntry.AvailHead];
    if (!lists.splitLists || d === 0 || u32[d + Desc.Class] !== c) {
      fail(arena.base + first, `class ${c}: an allocation list without a head page`);
    }
    const start = u32[d + Desc.PageStart];
    const blockSize = u32[d + Desc.BlockSize];
    const blocks = new Set<number>();
    for (let b = first; b !== 0; b = u32[b >>> 2]) {
      if (
        b < start || b >= u32[d + Desc.Bump] || (b - start) % blockSize !== 0 ||
        blocks.has(b) || blocks.size >= u32[d + Desc.Capacity]
      ) {
        fail(arena.base + b, `class ${c}: allocation list link outside its page's free blocks`);
      }
      if (isLive(u32, d, b)) {
        fail(arena.base + b, `class ${c}: a live block is on the allocation list`);
      }
      if (touchesPurged(u32, d, b, u32[d + Desc.BlockSize])) {
        fail(arena.base + b, `class ${c}: a block on the allocation list touches a purged page`);
      }
      blocks.add(b);
    }
    byPage.set(d, blocks);
  });
  return byPage;
}

/**
 * Shared heaps: checks page `d`'s handed-out bitmap against its live bitmap
 * (every live block was handed out; a block handed out and no longer live,
 * freed by another Worker, is on a flagged page) and returns the blocks
 * other Workers freed that the owner has not taken back. Empty for a heap
 * that is not shared.
 */
function checkHandedOut(
  arena: Arena,
  d: number,
  fail: (address: number, what: string) => never,
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

/**
 * Checks one in-use page, whose `remotelyFreed` blocks (on its allocation
 * list, or freed by other Workers and waiting for their owner) are counted in
 * USED, neither live nor on the free list; returns its live block count.
 */
function checkPage(
  arena: Arena,
  pages: ClassPages,
  d: number,
  start: number,
  remotelyFreed: Set<number>,
  fail: (address: number, what: string) => never,
): number {
  const u32 = arena.u32;
  const where = arena.base + start;
  const cls = u32[d + Desc.Class];
  if (cls >= CLASS_COUNT) fail(where, `page has class ${cls}`);
  const ce = Tables.ClassU32 + cls * ClassEntry.Words;
  const blockSize = u32[d + Desc.BlockSize];
  const capacity = u32[d + Desc.Capacity];
  const medium = u32[d + Desc.State] === PageState.Medium;
  if (
    blockSize !== u32[ce + ClassEntry.BlockSize] || capacity !== u32[ce + ClassEntry.Capacity] ||
    u32[d + Desc.Units] !== u32[ce + ClassEntry.Units] ||
    medium !== (u32[d + Desc.Units] === MEDIUM_UNITS) ||
    u32[d + Desc.Shift] !== (medium ? 13 : 4)
  ) {
    fail(where, "page geometry does not match its size class");
  }
  if (
    u32[d + Desc.LocalPageStart] !== start ||
    u32[d + Desc.LocalCapacity] !== capacity || u32[d + Desc.LocalBlockSize] !== blockSize
  ) {
    fail(where, "the fast paths' copies of the page geometry differ from it");
  }
  const bump = u32[d + Desc.Bump];
  const bumpEnd = u32[d + Desc.BumpEnd];
  if (
    bumpEnd !== start + capacity * blockSize || bumpEnd > start + u32[d + Desc.Units] * UNIT_SIZE
  ) {
    fail(where, "page bump end is wrong");
  }
  if (bump < start || bump > bumpEnd || (bump - start) % blockSize !== 0) {
    fail(where, "page bump pointer is wrong");
  }
  if (u32[d + Desc.CommitEnd] < bump) {
    fail(where, "page hands out memory it has not counted as committed");
  }
  if (u32[d + Desc.ZeroFrom] < start) fail(where, "page zero mark is below the page");
  // Free list: inside the used area, on block boundaries, not live, no cycle.
  let free = 0;
  if (!pages.codec.intact(d)) {
    fail(where, "page metadata fails its checksum");
  }
  for (let f = u32[d + Desc.Free]; f !== 0; f = pages.nextFree(d, f, false)) {
    if (++free > capacity) fail(where, "page free list has a cycle or too many entries");
    if (f < start || f >= bump || (f - start) % blockSize !== 0) {
      fail(arena.base + f, "free list link points outside the page's blocks");
    }
    if (isLive(u32, d, f)) fail(arena.base + f, "a live block is on the free list");
    if (remotelyFreed.has(f)) {
      fail(
        arena.base + f,
        "a block counted as handed out (on an allocation list, or freed by another Worker) is on the free list",
      );
    }
    if (touchesPurged(u32, d, f, u32[d + Desc.BlockSize])) {
      fail(arena.base + f, "a listed free block touches a purged page");
    }
  }
  // Purged OS pages: counted, below the bump pointer, free of live blocks.
  let purged = 0;
  let unlisted = 0;
  for (let p = 0; p < (u32[d + Desc.Units] * UNIT_SIZE) / OS_PAGE_SIZE; p++) {
    if (!isPurged(u32, d, p)) continue;
    purged++;
    if (start + (p + 1) * OS_PAGE_SIZE > bump) {
      fail(where + p * OS_PAGE_SIZE, "a purged OS page above the bump pointer");
    }
  }
  if (purged !== u32[d + Desc.PurgedPages]) {
    fail(where, `page counts ${u32[d + Desc.PurgedPages]} purged OS pages but marks ${purged}`);
  }
  for (let block = start; block < bump; block += blockSize) {
    if (!touchesPurged(u32, d, block, u32[d + Desc.BlockSize])) continue;
    if (isLive(u32, d, block)) fail(arena.base + block, "a live block touches a purged OS page");
    unlisted++;
  }
  if (unlisted > u32[d + Desc.Unlisted]) {
    fail(
      where,
      `page has ${unlisted} free blocks on purged OS pages but counts ${
        u32[d + Desc.Unlisted]
      } unlisted`,
    );
  }
  // Live bitmap: set bits mark block starts below the bump pointer.
  let used = 0;
  const shift = u32[d + Desc.Shift];
  const words = medium ? BitmapWords.Medium : BitmapWords.Small;
  for (let w = 0; w < words; w++) {
    let bits = u32[u32[d + Desc.Bitmap] + w];
    while (bits !== 0) {
      const b = 31 - Math.clz32(bits);
      bits &= ~(1 << b);
      const offset = blockAtGranule(u32, d, w * 32 + b);
      if (offset < 0 || offset >= bump) {
        fail(
          arena.base + start + ((w * 32 + b) << shift),
          "live bit set where no block was handed out",
        );
      }
      used++;
    }
  }
  if (used + remotelyFreed.size !== u32[d + Desc.Used]) {
    fail(
      where,
      `page counts ${u32[d + Desc.Used]} used blocks but its bitmap has ${used} live ` +
        `and ${remotelyFreed.size} on its allocation list or freed by other Workers`,
    );
  }
  if (
    u32[d + Desc.Used] + free + u32[d + Desc.Unlisted] + (bumpEnd - bump) / blockSize !== capacity
  ) {
    fail(where, "live + free + never-used blocks do not add up to the page's capacity");
  }
  return used;
}

function checkBitmapEmpty(
  arena: Arena,
  d: number,
  where: number,
  fail: (address: number, what: string) => never,
): void {
  const bitmap = arena.u32[d + Desc.Bitmap];
  const handedOut = bitmap + (arena.handedOutU32 - arena.bitmapU32);
  const shared = arena.u32[HeaderU32.Shared] === 1;
  for (let w = 0; w < BitmapWords.Small; w++) {
    if (arena.u32[bitmap + w] !== 0) fail(where, "an empty page has live bits");
    if (shared && arena.u32[handedOut + w] !== 0) {
      fail(where, "an empty page has blocks handed out");
    }
  }
}

/**
 * Checks fit page `d` (see fit.ts): its chunks tile it, each header agrees
 * with its neighbours, no two free chunks touch, live bits are set exactly
 * at live blocks, and USED and COMMIT_END cover them. Returns its counts.
 */
function checkFitPage(
  arena: Arena,
  d: number,
  start: number,
  freeChunks: Set<number>,
  fail: (address: number, what: string) => never,
): { allocated: number; live: number } {
  const u32 = arena.u32;
  const where = arena.base + start;
  if (u32[d + Desc.Units] !== MEDIUM_UNITS || u32[d + Desc.Shift] !== 4) {
    fail(where, "fit page: bad unit count or bitmap granule");
  }
  const end = start + FIT_PAGE_BYTES;
  const commitEnd = u32[d + Desc.CommitEnd];
  const bias = u32[HeaderU32.BitmapBias];
  const isLive = (o: number) => (u32[bias + (o >>> 9)] & (1 << ((o >>> 4) & 31))) !== 0;
  let allocated = 0;
  let live = 0;
  let prevSize = 0;
  let prevFree = false;
  // OS pages that may be purged: whole pages of free chunks past their headers.
  const purgeable = new Uint8Array(FIT_PAGE_BYTES / OS_PAGE_SIZE);
  for (let chunk = start; chunk < end;) {
    const at = arena.base + chunk;
    if (chunk + CHUNK_HEADER > commitEnd) fail(at, "fit page: a chunk header is not committed");
    const word = u32[chunk >>> 2];
    const size = word & ~1;
    const isFree = (word & 1) !== 0;
    if (size < 32 || size % 16 !== 0 || chunk + size > end) {
      fail(at, `fit page: chunk of ${size} bytes does not fit the page`);
    }
    if (u32[(chunk >>> 2) + Chunk.PrevSize] !== prevSize) {
      fail(at, "fit page: PREV_SIZE disagrees");
    }
    if (isFree && prevFree) fail(at, "fit page: two free chunks side by side");
    if (isFree === isLive(chunk + CHUNK_HEADER)) {
      fail(at + CHUNK_HEADER, `fit page: a ${isFree ? "free" : "live"} chunk's live bit is wrong`);
    }
    if (isFree) {
      freeChunks.add(chunk);
      const first = Math.ceil((chunk + CHUNK_HEADER - start) / OS_PAGE_SIZE);
      for (let p = first; (p + 1) * OS_PAGE_SIZE <= chunk + size - start; p++) purgeable[p] = 1;
    } else {
      if (chunk + size > commitEnd) fail(at, "fit page: a live block is not committed");
      allocated += size - CHUNK_HEADER;
      live++;
    }
    prevSize = size;
    prevFree = isFree;
    chunk += size;
  }
  // No live bit anywhere else: as many set bits as live blocks.
  let bits = 0;
  const first = bias + (start >>> 9);
  for (let w = first; w < first + (FIT_PAGE_BYTES >>> 9); w++) {
    for (let b = u32[w]; b !== 0; b &= b - 1) bits++;
  }
  if (bits !== live) fail(where, `fit page: ${bits} live bits for ${live} live blocks`);
  let purged = 0;
  for (let p = 0; p < purgeable.length; p++) {
    if ((u32[d + (p >>> 4) * Desc.Words + Desc.PurgedMask] & (1 << (p & 15))) === 0) continue;
    purged++;
    if (!purgeable[p] || start + (p + 1) * OS_PAGE_SIZE > commitEnd) {
      fail(where + p * OS_PAGE_SIZE, "fit page: a purged OS page holds a header or a live block");
    }
  }
  if (purged !== u32[d + Desc.PurgedPages]) {
    fail(where, `fit page counts ${u32[d + Desc.PurgedPages]} purged OS pages but marks ${purged}`);
  }
  if (u32[d + Desc.Used] !== live) {
    fail(where, `fit page: USED ${u32[d + Desc.Used]}, ${live} live`);
  }
  return { allocated, live };
}

/** Checks the fit bins (every free chunk on the bin of its size, once) and the fit page list. */
function checkFitLists(
  arena: Arena,
  fitPages: Set<number>,
  freeChunks: Set<number>,
  fail: (address: number, what: string) => never,
): void {
  const u32 = arena.u32;
  let listed = 0;
  for (let bin = 0; bin < FIT_BINS; bin++) {
    const head = u32[HeaderU32.FitBinHeads + bin];
    if ((head !== 0) !== ((u32[HeaderU32.FitBinMap + (bin >>> 5)] & (1 << (bin & 31))) !== 0)) {
      fail(arena.base, `fit bin ${bin}: its bit in the bin map is wrong`);
    }
    let prev = 0;
    for (let chunk = head; chunk !== 0; prev = chunk, chunk = u32[(chunk >>> 2) + Chunk.NextFree]) {
      const at = arena.base + chunk;
      // A link is followed only to a free chunk the page walk found (a damaged
      // link may name memory that is not even mapped).
      if (!freeChunks.has(chunk)) fail(at, `fit bin ${bin}: links to what is not a free chunk`);
      if (++listed > freeChunks.size) {
        fail(at, "fit bins hold more chunks than the pages (or a cycle)");
      }
      const word = u32[chunk >>> 2];
      if ((word & 1) === 0) fail(at, `fit bin ${bin}: holds a live chunk`);
      if (binOf(word & ~1) !== bin) fail(at, `fit bin ${bin}: chunk of ${word & ~1} bytes`);
      if (u32[(chunk >>> 2) + Chunk.PrevFree] !== prev) {
        fail(at, `fit bin ${bin}: broken back link`);
      }
    }
  }
  if (listed !== freeChunks.size) {
    fail(arena.base, `fit pages have ${freeChunks.size} free chunks, the bins ${listed}`);
  }
  let count = 0;
  let prev = 0;
  for (let d = u32[HeaderU32.FitPages]; d !== 0; prev = d, d = u32[d + Desc.Next]) {
    if (!fitPages.has(d)) fail(arena.base, `fit page list: link ${d} is not a fit page`);
    const at = arena.base + u32[d + Desc.PageStart];
    if (++count > fitPages.size) fail(at, "fit page list: a cycle");
    if (u32[d + Desc.Prev] !== prev) fail(at, "fit page list: broken back link");
  }
  // A fit page that empties is kept (on no list) or retired: every listed one is in use.
  for (const d of fitPages) {
    if (u32[d + Desc.Used] === 0) {
      fail(arena.base + u32[d + Desc.PageStart], "fit page: empty but listed");
    }
  }
  const kept = u32[HeaderU32.FitEmpty];
  if (
    kept !== 0 && (!isCarvedDescriptor(arena, kept) || u32[kept + Desc.State] !== PageState.Fit)
  ) {
    fail(arena.base, "the kept empty fit page is not a fit page");
  }
  if (count !== fitPages.size) fail(arena.base, `${fitPages.size} fit pages, ${count} listed`);
}

/**
 * After check() found damage: no structure it found damaged is followed by
 * malloc again. A class page whose free list is damaged (a link out of the
 * page, onto a live block or a cycle: a write into a freed block) gets a new
 * list from its live bitmap; the fit bins are relinked from the fit pages'
 * chunks, leaving out every free chunk of a page whose headers are damaged.
 * Runs with the heap to itself (a shared heap's world stopped).
 */
export function containDamage(arena: Arena, pages: ClassPages, fit: FitPages | null): void {
  const u32 = arena.u32;
  pages.dropAllocLists();
  const top = Math.min(u32[HeaderU32.TopUnit], arena.unitCount);
  for (let unit = 0; unit < top; unit++) {
    const d = Tables.DescriptorsU32 + unit * Desc.Words;
    const state = u32[d + Desc.State];
    if (state !== PageState.Small && state !== PageState.Medium) continue;
    const start = arena.dataStart + unit * UNIT_SIZE;
    const blockSize = u32[d + Desc.BlockSize];
    const bump = u32[d + Desc.Bump];
    const pageEnd = start + u32[d + Desc.Units] * UNIT_SIZE;
    if (
      u32[d + Desc.PageStart] !== start || blockSize === 0 || bump < start || bump > pageEnd ||
      u32[d + Desc.Bitmap] !== arena.bitmapU32 + unit * (UNIT_SIZE >>> 4 >>> 5)
    ) {
      continue; // the page itself is damaged: nothing safe to rebuild from
    }
    let steps = 0;
    let intact = true;
    for (let f = u32[d + Desc.Free]; f !== 0; f = pages.nextFree(d, f, false)) {
      if (
        ++steps > u32[d + Desc.Capacity] || f < start || f >= bump ||
        (f - start) % blockSize !== 0 || isLive(u32, d, f)
      ) {
        intact = false;
        break;
      }
    }
    if (!intact) pages.rebuildFreeList(d);
  }
  fit?.rebuildBins();
}
