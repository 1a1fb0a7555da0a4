/**
 * Worker for tests/snapshot.test.ts: attaches to a shared heap, allocates
 * `sizes`, frees the `remote` blocks (allocated by the main thread: remote
 * frees its owner has not taken back), and answers, detached, with a
 * snapshot taken here and the stats around it.
 */

import { Heap, type SharedHeapHandle } from "../../mod.ts";
import { scope, threadId } from "./common.ts";

export interface SnapshotStart {
  handle: SharedHeapHandle;
  sizes: number[];
  remote: number[];
}

scope.onmessage = (event) => {
  const { handle, sizes, remote } = event.data as SnapshotStart;
  try {
    const heap = Heap.attach(handle);
    const mine = sizes.map((size) => heap.malloc(size));
    for (const p of remote) heap.free(p);
    const before = heap.stats();
    const snapshot = heap.snapshot({ blocks: true });
    heap.check();
    const after = heap.stats();
    // Detach before answering: once the main thread has the answer it may
    // close (unmap) the heap. The blocks stay, for the main thread's snapshot.
    heap.close();
    scope.postMessage({ ok: true, snapshot, before, after, mine, tid: threadId() });
  } catch (error) {
    scope.postMessage({
      ok: false,
      error: String((error as Error)?.stack ?? error),
      tid: threadId(),
    });
  }
};
