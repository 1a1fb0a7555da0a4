/**
 * The buffers behind the views that `heap.bytes()` hands to users.
 *
 * The heap reaches its own memory through one ArrayBuffer over the whole
 * arena (arena.ts), metadata included. Users never get that buffer: a
 * `new Float64Array(view.buffer, 0, n)` that forgets the byteOffset would
 * overwrite the header, and a user who transfers the buffer would detach the
 * heap's own views. Users get views over these buffers instead, which
 * the heap detaches (`transfer(0)` on an external ArrayBuffer: its views then
 * have length 0 and read `undefined`) before the memory under them goes away:
 *
 *   arena     | header, descriptors, bitmaps | data: pages of blocks ...   | not yet usable |
 *             ^ the heap's own buffer covers all of it (never handed out)
 *                                            ^ data buffer: from the data start to the
 *                                              top made read-write when it was made
 *
 *   large     | block (a mapping of its own) |     one buffer per block, made on the first
 *             ^ block buffer                       bytes() and detached when the block is
 *                                                  freed, shrunk or moved
 *
 * - Blocks in the arena, outside secure mode: one data buffer, from the data
 *   start to the read-write top at the time it was made. A block beyond it
 *   (the arena grew) or a user who detached it makes the heap make another;
 *   the memory of the arena stays mapped until close(), so older buffers stay
 *   valid and are detached by close().
 * - Large blocks, and blocks in secure mode's arena (whose pages end in
 *   inaccessible guard pages that a data buffer would reach): a buffer per
 *   block, kept by the address of the block as the core allocator knows it
 *   (debug mode's user block sits inside a larger core block). It is detached
 *   when that block is freed, shrunk or moved, and by close().
 *
 * Measured with `deno bench --allow-ffi bench/views.bench.ts` (see
 * docs/performance.md): bytes(p) of a small block costs the same as a view of
 * the heap's own buffer.
 */

import { type Arena, HeaderU32 } from "./arena/arena.ts";
import { viewMemory } from "./os/libc.ts";

/** A buffer over one block: `[start, start + length)`. */
interface BlockBuffer {
  start: number;
  length: number;
  buffer: ArrayBuffer;
}

export class UserBuffers {
  readonly #arena: Arena;
  /** Addresses of the data start and end. */
  readonly #dataStart: number;
  readonly #dataEnd: number;
  /** Blocks in the arena get a buffer each (secure mode). */
  readonly #perBlockInArena: boolean;
  /** The current data buffer and the address where it ends (0: none yet). */
  #data: ArrayBuffer = new ArrayBuffer(0);
  #dataBufferEnd = 0;
  /** Every data buffer made, for close(). */
  readonly #dataBuffers: ArrayBuffer[] = [];
  /** Block buffers by the core block's address. */
  readonly #blocks = new Map<number, BlockBuffer>();

  constructor(arena: Arena, perBlockInArena: boolean) {
    this.#arena = arena;
    this.#dataStart = arena.base + arena.dataStart;
    this.#dataEnd = arena.base + arena.dataEnd;
    this.#perBlockInArena = perBlockInArena;
  }

  /**
   * A view of `length` bytes at `address`, in the block that spans
   * `[start, start + usable)` and that the core allocator knows as `key`.
   */
  view(key: number, start: number, usable: number, address: number, length: number): Uint8Array {
    if (address >= this.#dataStart && address < this.#dataEnd && !this.#perBlockInArena) {
      return this.#dataView(address, length);
    }
    let entry = this.#blocks.get(key);
    if (
      entry === undefined || entry.start !== start || entry.length !== usable ||
      entry.buffer.detached
    ) {
      // None yet, detached by the user, or stale (a shared heap's block freed by another Worker).
      if (entry !== undefined) detach(entry.buffer);
      entry = { start, length: usable, buffer: viewMemory(start, usable) };
      this.#blocks.set(key, entry);
    }
    return new Uint8Array(entry.buffer, address - start, length);
  }

  #dataView(address: number, length: number): Uint8Array {
    const data = this.#data;
    if (address + length <= this.#dataBufferEnd && !data.detached) {
      return new Uint8Array(data, address - this.#dataStart, length);
    }
    return this.#newDataView(address, length);
  }

  #newDataView(address: number, length: number): Uint8Array {
    const end = this.#arena.base + this.#arena.u32[HeaderU32.CommitTop];
    this.#data = viewMemory(this.#dataStart, end - this.#dataStart);
    this.#dataBufferEnd = end;
    // Buffers the user detached are dropped; the rest wait for close().
    let kept = 0;
    for (const buffer of this.#dataBuffers) {
      if (!buffer.detached) this.#dataBuffers[kept++] = buffer;
    }
    this.#dataBuffers.length = kept;
    this.#dataBuffers.push(this.#data);
    return new Uint8Array(this.#data, address - this.#dataStart, length);
  }

  /** True when some block has a buffer of its own (free then calls release). */
  get hasBlockBuffers(): boolean {
    return this.#blocks.size !== 0;
  }

  /** The core block `key` is freed, shrunk or moved: its buffer (if any) is detached. */
  release(key: number): void {
    const entry = this.#blocks.get(key);
    if (entry === undefined) return;
    this.#blocks.delete(key);
    detach(entry.buffer);
  }

  /** close(): every buffer handed out is detached. */
  releaseAll(): void {
    for (const entry of this.#blocks.values()) detach(entry.buffer);
    this.#blocks.clear();
    for (const buffer of this.#dataBuffers) detach(buffer);
    this.#dataBuffers.length = 0;
    this.#data = new ArrayBuffer(0);
    this.#dataBufferEnd = 0;
  }
}

/** Detaches an external buffer (its views get length 0), unless the user already did. */
function detach(buffer: ArrayBuffer): void {
  if (!buffer.detached) buffer.transfer(0);
}
