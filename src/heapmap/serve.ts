/**
 * serveHeapMap: the heap map of a running program, on 127.0.0.1. The page
 * (GET /) polls GET /snapshot.json every second, which takes a fresh
 * snapshot of the heap, and adds it to its timeline.
 */

import type { Heap } from "../heap.ts";
import { packSnapshot, renderHeapMap } from "./render.ts";

/** Options of serveHeapMap. */
export interface ServeHeapMapOptions {
  /** TCP port on 127.0.0.1; 0 (the default) takes a free one. */
  port?: number;
  /** Milliseconds between the page's refreshes. Default 1000. */
  refreshMs?: number;
  /** Take snapshots with every block's state (costs time per block). Default false. */
  blocks?: boolean;
  /** The page's title. */
  title?: string;
}

/** A running heap map server. */
export interface HeapMapServer {
  /** The port it listens on (127.0.0.1). */
  readonly port: number;
  /** The page's address. */
  readonly url: string;
  /** Stops serving; resolves when the listener is closed. */
  close(): Promise<void>;
  /** Same as close(), for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Serves a live heap map of `heap` on http://127.0.0.1:port/ until close().
 * Needs --allow-net. Throws an Error naming the port when it is in use.
 */
export function serveHeapMap(heap: Heap, options: ServeHeapMapOptions = {}): HeapMapServer {
  const port = options.port ?? 0;
  const refreshMs = options.refreshMs ?? 1000;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`serveHeapMap: port must be an integer from 0 to 65535, got ${port}`);
  }
  if (!(refreshMs >= 50)) {
    throw new RangeError(`serveHeapMap: refreshMs must be at least 50, got ${refreshMs}`);
  }
  const take = () => heap.snapshot({ blocks: options.blocks === true, label: "live" });
  const handler = (request: Request): Response => {
    const path = new URL(request.url).pathname;
    if (request.method !== "GET") return new Response("method not allowed", { status: 405 });
    try {
      if (path === "/") {
        const html = renderHeapMap([take()], {
          title: options.title ?? "heap map (live)",
          live: refreshMs,
        });
        return new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } });
      }
      if (path === "/snapshot.json") {
        return new Response(JSON.stringify(packSnapshot(take())), {
          headers: { "content-type": "application/json", "cache-control": "no-store" },
        });
      }
    } catch (error) {
      // A closed heap: the program is done with it.
      return new Response(String((error as Error).message), { status: 410 });
    }
    if (path === "/favicon.ico") return new Response(null, { status: 204 });
    return new Response("not found", { status: 404 });
  };
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, handler);
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      throw new Error(`serveHeapMap: port ${port} on 127.0.0.1 is in use`, { cause: error });
    }
    throw error;
  }
  const bound = server.addr.port;
  let closed: Promise<void> | null = null;
  const close = () => closed ??= server.shutdown();
  return {
    port: bound,
    url: `http://127.0.0.1:${bound}/`,
    close,
    [Symbol.asyncDispose]: close,
  };
}
