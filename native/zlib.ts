/**
 * zlib's memory on a heap: `zalloc` and `zfree` for a `z_stream`.
 *
 *   voidpf zalloc(voidpf opaque, uInt items, uInt size);   u8, u32, u32 -> u64
 *   void   zfree(voidpf opaque, voidpf address);           u8, u64 -> void
 *
 * zlib asks for a few large blocks per stream (deflate's window, hash
 * chains and pending buffer, inflate's state and window), so the callbacks
 * are rare and their cost disappears behind the compression work. `opaque`
 * is declared `u8` (this allocator takes none: pass NULL, the default) and
 * the address `u64` (a BigInt, whole, as the call is rare).
 *
 * The fields zalloc, zfree and opaque sit in `z_stream` at these offsets:
 *
 *   LP64 (Linux, macOS)   zalloc 64, zfree 72, opaque 80   (112 bytes)
 *   LLP64 (Windows)       zalloc 48, zfree 56, opaque 64   (88 bytes)
 */

import type { Heap } from "../mod.ts";
import { LibraryAllocator } from "./library_allocator.ts";

const LLP64 = Deno.build.os === "windows";
/** Byte offset of `zalloc` in a z_stream (zfree and opaque follow it). */
export const Z_STREAM_ZALLOC_OFFSET = LLP64 ? 48 : 64;
/** sizeof(z_stream), as deflateInit_ and inflateInit_ want it. */
export const Z_STREAM_SIZE = LLP64 ? 88 : 112;
const MAX_SIZE = Number.MAX_SAFE_INTEGER;

/**
 * `zalloc`/`zfree` that allocate from a heap, valid until close().
 *
 * ```ts
 * import { Heap } from "@tsmalloc/tsmalloc";
 * import { ZlibAllocator, Z_STREAM_SIZE } from "@tsmalloc/tsmalloc/native";
 * using heap = new Heap();
 * using zlib = new ZlibAllocator(heap);
 * const stream = heap.calloc(1, Z_STREAM_SIZE);
 * zlib.setStreamFields(heap.pointer(stream));
 * // deflateInit_(stream, ...), deflate, deflateEnd: zlib's memory is on the heap
 * ```
 */
export class ZlibAllocator extends LibraryAllocator {
  /** The `zalloc` to store in a z_stream. */
  readonly zalloc: Deno.PointerObject;
  /** The `zfree` to store in a z_stream. */
  readonly zfree: Deno.PointerObject;

  /** Makes zalloc and zfree; they allocate from `heap` until close(). */
  constructor(heap: Heap) {
    super(heap);
    const blocks = this.blocks;
    const callbacks = this.callbacks;
    this.zalloc = callbacks.make(
      "zlib zalloc",
      { parameters: ["u8", "u32", "u32"], result: "u64" },
      (_opaque, items, size) => {
        try {
          const bytes = items * size;
          return bytes > MAX_SIZE ? 0 : blocks.malloc(bytes);
        } catch (error) {
          return callbacks.fail(error);
        }
      },
    );
    this.zfree = callbacks.make(
      "zlib zfree",
      { parameters: ["u8", "u64"], result: "void" },
      (_opaque, address) => {
        try {
          if (address !== 0n) blocks.free(Number(address));
        } catch (error) {
          callbacks.fail(error);
        }
      },
    );
  }

  /** Writes zalloc, zfree and opaque (NULL) into the z_stream at `stream`, before its init call. */
  setStreamFields(stream: Deno.PointerObject): void {
    this.callbacks.assertOpen("setStreamFields");
    const fields = new BigUint64Array(
      Deno.UnsafePointerView.getArrayBuffer(stream, 24, Z_STREAM_ZALLOC_OFFSET),
    );
    fields[0] = BigInt(Deno.UnsafePointer.value(this.zalloc));
    fields[1] = BigInt(Deno.UnsafePointer.value(this.zfree));
    fields[2] = 0n;
  }

  /**
   * Releases the callbacks. Throws, changing nothing, while zlib still
   * holds blocks: a stream not ended would call a dead function pointer.
   */
  close(): void {
    this.releaseCallbacks("ZlibAllocator", "zlib", "end every stream first");
  }
}
