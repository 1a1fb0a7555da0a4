/**
 * Reads and writes views whose memory is gone, one scenario per run:
 * `deno run --allow-ffi tests/subprocess/stale_views.ts <scenario>`. Each
 * prints one line, `survived <scenario>: <what the views read>`, and exits 0;
 * a view over unmapped memory would kill the process with SIGSEGV instead.
 * Run by tests/views.test.ts.
 */

import { Heap, type HeapOptions } from "../../mod.ts";

const MiB = 1024 * 1024;

/** Touches every view at its first, middle and last index, reading and writing. */
function poke(views: ArrayLike<number>[]): string {
  const seen: string[] = [];
  for (const view of views) {
    const w = view as Uint8Array;
    const at = [0, Math.floor(MiB / 2), MiB - 1, w.length - 1];
    for (const i of at) {
      w[i] = 7;
      seen.push(String(w[i]));
    }
    seen.push(`length ${w.length}`);
  }
  return seen.join(" ");
}

/** A view made inside a `using` scope and returned out of it. */
function escapedView(options: HeapOptions, size: number): Uint8Array {
  using heap = new Heap(options);
  const p = heap.malloc(size);
  return heap.bytes(p);
}

const scenarios: Record<string, () => string> = {
  "large-freed"() {
    using heap = new Heap();
    const p = heap.malloc(4 * MiB);
    const views = [heap.bytes(p), heap.bytes(p, 100), new Float64Array(heap.bytes(p).buffer)];
    heap.free(p);
    return poke(views);
  },
  "large-shrunk"() {
    using heap = new Heap();
    const p = heap.malloc(4 * MiB);
    const view = heap.bytes(p);
    const q = heap.realloc(p, 200 * 1024);
    if (q !== p) throw new Error("expected the block to shrink in place");
    return poke([view]);
  },
  "large-moved"() {
    using heap = new Heap();
    const p = heap.malloc(2 * MiB);
    const blocker = heap.malloc(2 * MiB); // often right after p: growth has to move
    const view = heap.bytes(p);
    const q = heap.realloc(p, 64 * MiB);
    if (q === 0) throw new Error("realloc failed");
    const seen = poke([view]); // before anything else is freed
    heap.free(blocker);
    heap.free(q);
    return seen;
  },
  "closed-small": () => poke([escapedView({}, 64)]),
  "closed-medium": () => poke([escapedView({}, 5000), escapedView({}, 100 * 1024)]),
  "closed-large": () => poke([escapedView({}, 3 * MiB)]),
  "closed-debug": () =>
    poke([escapedView({ debug: true }, 64), escapedView({ debug: true }, 3 * MiB)]),
  "closed-secure": () =>
    poke([escapedView({ secure: true }, 64), escapedView({ secure: true }, 3 * MiB)]),
  "closed-whole-buffer"() {
    // Views of the whole buffer behind a block's view, made before close().
    using heap = new Heap();
    const p = heap.malloc(64);
    const whole = new Uint8Array(heap.bytes(p).buffer);
    heap.close();
    return poke([whole]);
  },
  "debug-large-freed"() {
    using heap = new Heap({ debug: true });
    const p = heap.malloc(3 * MiB);
    const view = heap.bytes(p);
    heap.free(p); // quarantined: still mapped, poisoned
    heap.trim(); // the quarantine goes back to the core: unmapped
    return poke([view]);
  },
  "secure-small-freed"() {
    using heap = new Heap({ secure: true });
    const p = heap.malloc(64);
    const view = heap.bytes(p);
    heap.free(p);
    return poke([view]);
  },
};

const name = Deno.args[0];
const scenario = scenarios[name];
if (scenario === undefined) {
  console.error(`unknown scenario ${name}; one of ${Object.keys(scenarios).join(", ")}`);
  Deno.exit(2);
}
console.log(`survived ${name}: ${scenario()}`);
