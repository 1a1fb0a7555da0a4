/**
 * A page in headless Chromium, driven over the DevTools protocol on a local
 * websocket: used by the heap map's browser tests and to take the
 * screenshots in docs/ (the same code path). Needs --allow-run,
 * --allow-net (127.0.0.1), --allow-read and --allow-write (a profile
 * directory), and Debian's `chromium` (or CHROMIUM naming another binary).
 */

/** A page opened by openPage(). */
export interface BrowserPage {
  /** Console errors, uncaught exceptions and failed loads seen so far. */
  readonly errors: string[];
  /** Evaluates `expression` in the page and returns its (JSON) value; awaits promises. */
  evaluate<T = unknown>(expression: string): Promise<T>;
  /** A PNG of the whole page. */
  screenshot(): Promise<Uint8Array>;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const WAIT_MS = 30_000;

/** The Chromium binary: $CHROMIUM, else `chromium` on the PATH; null if there is none. */
export function chromiumPath(): string | null {
  const named = Deno.env.get("CHROMIUM");
  const candidates = named ? [named] : ["/usr/bin/chromium", "/usr/bin/chromium-browser"];
  for (const path of candidates) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not there
    }
  }
  return null;
}

/** Opens `url` (http: or file:) in a fresh headless Chromium and waits for its load event. */
export async function openPage(
  url: string,
  viewport = { width: 1200, height: 900 },
): Promise<BrowserPage> {
  const binary = chromiumPath();
  if (binary === null) throw new Error("chromium is not installed (apt-get install chromium)");
  const profile = await Deno.makeTempDir({ prefix: "tsmalloc-chromium-" });
  const child = new Deno.Command(binary, {
    args: [
      "--headless=new",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-extensions",
      "--remote-debugging-address=127.0.0.1",
      "--remote-debugging-port=0",
      `--user-data-dir=${profile}`,
      `--window-size=${viewport.width},${viewport.height}`,
      "about:blank",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const cleanup = async () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  };
  try {
    const browserWs = await withTimeout(devtoolsAddress(child.stderr), "chromium did not start");
    const port = new URL(browserWs).port;
    const targets = await withTimeout(
      fetch(`http://127.0.0.1:${port}/json/list`).then((r) => r.json()),
      "chromium listed no targets",
    ) as { type: string; webSocketDebuggerUrl: string }[];
    const target = targets.find((t) => t.type === "page");
    if (!target) throw new Error("chromium has no page target");
    const cdp = await Cdp.connect(target.webSocketDebuggerUrl);
    const errors: string[] = [];
    cdp.on("Runtime.exceptionThrown", (p) => {
      const d = (p as { exceptionDetails: { text: string; exception?: { description?: string } } })
        .exceptionDetails;
      errors.push(`exception: ${d.exception?.description ?? d.text}`);
    });
    cdp.on("Runtime.consoleAPICalled", (p) => {
      const e = p as { type: string; args: { value?: unknown; description?: string }[] };
      if (e.type === "error" || e.type === "assert") {
        errors.push(`console.${e.type}: ${e.args.map((a) => a.value ?? a.description).join(" ")}`);
      }
    });
    cdp.on("Log.entryAdded", (p) => {
      const e = (p as { entry: { level: string; text: string; url?: string } }).entry;
      if (e.level === "error") errors.push(`log: ${e.text} ${e.url ?? ""}`);
    });
    await cdp.send("Runtime.enable");
    await cdp.send("Log.enable");
    await cdp.send("Page.enable");
    await cdp.send("Emulation.setDeviceMetricsOverride", {
      ...viewport,
      deviceScaleFactor: 1,
      mobile: false,
    });
    const loaded = cdp.once("Page.loadEventFired");
    await cdp.send("Page.navigate", { url });
    await withTimeout(loaded, `${url} did not load`);
    const page: BrowserPage = {
      errors,
      async evaluate<T>(expression: string): Promise<T> {
        const r = await cdp.send("Runtime.evaluate", {
          expression,
          returnByValue: true,
          awaitPromise: true,
        }) as { result: { value: T }; exceptionDetails?: { text: string } };
        if (r.exceptionDetails) {
          throw new Error(`evaluate(${expression}): ${JSON.stringify(r.exceptionDetails)}`);
        }
        return r.result.value;
      },
      async screenshot(): Promise<Uint8Array> {
        const { contentSize } = await cdp.send("Page.getLayoutMetrics") as {
          contentSize: { width: number; height: number };
        };
        const r = await cdp.send("Page.captureScreenshot", {
          format: "png",
          captureBeyondViewport: true,
          clip: {
            x: 0,
            y: 0,
            width: Math.ceil(contentSize.width),
            height: Math.ceil(contentSize.height),
            scale: 1,
          },
        }) as { data: string };
        return Uint8Array.from(atob(r.data), (c) => c.charCodeAt(0));
      },
      async close() {
        cdp.close();
        await cleanup();
      },
      [Symbol.asyncDispose]() {
        return page.close();
      },
    };
    return page;
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/** Reads chromium's stderr until it names its DevTools websocket; keeps draining it after. */
async function devtoolsAddress(stderr: ReadableStream<Uint8Array>): Promise<string> {
  const lines = stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (true) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`chromium exited: ${text.slice(-2000)}`);
    text += value;
    const match = text.match(/DevTools listening on (ws:\/\/\S+)/);
    if (match) {
      (async () => {
        while (!(await lines.read()).done) { /* drain */ }
      })().catch(() => {});
      return match[1];
    }
  }
}

async function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} within ${WAIT_MS} ms`)), WAIT_MS);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A minimal DevTools protocol client: commands with ids, and event listeners. */
class Cdp {
  #ws: WebSocket;
  #next = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #listeners = new Map<string, ((params: unknown) => void)[]>();

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data as string);
      if (msg.id !== undefined) {
        const p = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        if (msg.error) p?.reject(new Error(`${msg.error.message} (${msg.error.code})`));
        else p?.resolve(msg.result);
      } else {
        for (const listener of this.#listeners.get(msg.method) ?? []) listener(msg.params);
      }
    };
    ws.onclose = () => {
      for (const p of this.#pending.values()) p.reject(new Error("chromium closed the connection"));
      this.#pending.clear();
    };
  }

  static connect(url: string): Promise<Cdp> {
    const ws = new WebSocket(url);
    return withTimeout(
      new Promise<Cdp>((resolve, reject) => {
        ws.onopen = () => resolve(new Cdp(ws));
        ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
      }),
      "the DevTools websocket did not open",
    );
  }

  send(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.#next++;
    this.#ws.send(JSON.stringify({ id, method, params }));
    return withTimeout(
      new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject })),
      `${method} got no answer`,
    );
  }

  on(method: string, listener: (params: unknown) => void): void {
    this.#listeners.set(method, [...(this.#listeners.get(method) ?? []), listener]);
  }

  once(method: string): Promise<unknown> {
    return new Promise((resolve) => {
      let done = false;
      this.on(method, (params) => {
        if (!done) done = true, resolve(params);
      });
    });
  }

  close(): void {
    this.#ws.close();
  }
}
