import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Heap } from "../mod.ts";
import { CBlocks } from "../native/blocks.ts";

const TWO_32 = 2 ** 32;

/**
 * A stand-in heap that hands out the addresses it is given, in order, and
 * tracks which are live: enough to drive CBlocks' rules for wide blocks.
 */
class ScriptedHeap {
  readonly live = new Map<number, number>();
  readonly buffer = new Uint8Array(64);
  constructor(readonly next: number[]) {}
  malloc(size: number): number {
    const address = this.next.shift() ?? 0;
    if (address !== 0) this.live.set(address, size);
    return address;
  }
  free(address: number): void {
    if (!this.live.delete(address)) throw new Error(`free of ${address}: not live`);
  }
  usableSize(address: number): number {
    const size = this.live.get(address);
    if (size === undefined) throw new Error(`${address} is not a block`);
    return Math.max(size, 16);
  }
  bytes(address: number): Uint8Array {
    return this.buffer.subarray(address % 16, address % 16 + 1);
  }
}

function blocksOver(addresses: number[]): { blocks: CBlocks; heap: ScriptedHeap } {
  const heap = new ScriptedHeap([0x1000_0000, ...addresses]); // the probe: an arena below 2^32
  return { blocks: new CBlocks(heap as unknown as Heap), heap };
}

describe("C blocks passed back as 32-bit addresses", () => {
  it("a block above 2^32 is found again from its low 32 bits, and forgotten when freed", () => {
    const wide = 0x7f12_3456_7000;
    const { blocks, heap } = blocksOver([wide]);
    assert.ok(blocks.narrow);
    assert.equal(blocks.malloc(200_000), wide);
    assert.equal(blocks.resolve(wide % TWO_32), wide);
    blocks.free(blocks.resolve(wide % TWO_32));
    assert.equal(heap.live.size, 0);
    assert.equal(blocks.resolve(wide % TWO_32), wide % TWO_32, "no longer wide");
  });

  it("a wide block whose low 32 bits are a live block's start is set aside for another", () => {
    const arenaBlock = 0x2000_0000;
    const clash = 0x7f00_0000_0000 + arenaBlock;
    const other = 0x7f00_0000_0000 + 0x3456_0000;
    const { blocks, heap } = blocksOver([arenaBlock, clash, other]);
    assert.equal(blocks.malloc(64), arenaBlock);
    assert.equal(blocks.malloc(300_000), other, "the clashing block is not handed out");
    assert.deepEqual([...heap.live.keys()].sort(), [arenaBlock, other].sort(), "and was freed");
    assert.equal(blocks.resolve(arenaBlock), arenaBlock);
    assert.equal(blocks.resolve(other % TWO_32), other);
  });

  it("an arena block at a wide block's low 32 bits is set aside; so is a wide block whose low bits are 0", () => {
    const wide = 0x7f00_0000_0000 + 0x2000_0000;
    const { blocks, heap } = blocksOver([0x7f01_0000_0000, wide, 0x2000_0000, 0x2000_0040]);
    assert.equal(blocks.malloc(300_000), wide, "low 32 bits 0 would read as NULL");
    assert.equal(blocks.malloc(64), 0x2000_0040);
    assert.deepEqual([...heap.live.keys()].sort(), [wide, 0x2000_0040].sort());
  });

  it("malloc gives up (NULL) after setting aside too many blocks, freeing them all", () => {
    const arenaBlock = 0x2000_0000;
    const clashes = Array.from({ length: 40 }, (_, i) => (0x7f00 + i) * TWO_32 + arenaBlock);
    const { blocks, heap } = blocksOver([arenaBlock, ...clashes]);
    blocks.malloc(64);
    assert.equal(blocks.malloc(300_000), 0);
    assert.deepEqual([...heap.live.keys()], [arenaBlock]);
    assert.equal(blocks.live, 1);
  });

  it("realloc that cannot move keeps the old block", () => {
    const { blocks, heap } = blocksOver([0x2000_0000]);
    const p = blocks.malloc(16);
    assert.equal(blocks.realloc(p, 1000), 0, "no memory left");
    assert.ok(heap.live.has(p));
  });

  it("with a real heap whose arena is above 2^32, addresses are taken whole", () => {
    using heap = new Heap({ lowAddresses: false });
    const blocks = new CBlocks(heap);
    assert.equal(blocks.narrow, false);
    const p = blocks.malloc(100);
    const q = blocks.realloc(p, 5000);
    assert.ok(q > TWO_32);
    blocks.free(q);
    assert.equal(blocks.live, 0);
    heap.check();
  });
});
