/**
 * Checks of the options object of `new Heap()` and `Heap.attach()`: an
 * unknown key (a typo such as `idleratio`) or a value of the wrong type
 * throws a TypeError that names the option; a number out of range throws a
 * RangeError (heap.ts checks the ranges that depend on the arena).
 */

type Kind = "boolean" | "count" | "ratio" | "limit" | "debug";

/** Every option and the kind of value it takes. */
const HEAP_OPTIONS: Record<string, Kind> = {
  arenaBytes: "count",
  retainBytes: "count",
  idleRatio: "ratio",
  idleFloorBytes: "count",
  limitBytes: "limit",
  debug: "debug",
  secure: "boolean",
  shared: "boolean",
  lowAddresses: "boolean",
};

const DEBUG_OPTIONS: Record<string, Kind> = {
  quarantineBytes: "count",
  quarantineBlocks: "count",
  stacks: "boolean",
};

/** Throws unless `options` is an object of Heap.attach's options (debug), each of its kind. */
export function validateAttachOptions(options: unknown): void {
  checkObject(options, "Heap.attach options", { debug: "debug" }, "");
  const debug = (options as { debug?: unknown }).debug;
  if (typeof debug === "object" && debug !== null) {
    checkObject(debug, "debug", DEBUG_OPTIONS, "debug.");
  }
}

/** Throws unless `options` is an object of known options, each undefined or of its kind. */
export function validateHeapOptions(options: unknown, what = "Heap options"): void {
  checkObject(options, what, HEAP_OPTIONS, "");
  const debug = (options as { debug?: unknown }).debug;
  if (typeof debug === "object" && debug !== null) {
    checkObject(debug, "debug", DEBUG_OPTIONS, "debug.");
  }
}

function checkObject(
  options: unknown,
  what: string,
  known: Record<string, Kind>,
  prefix: string,
): void {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(`${what} must be an object, got ${describe(options)}`);
  }
  for (const key of Object.keys(options)) {
    const kind = Object.hasOwn(known, key) ? known[key] : undefined;
    if (kind === undefined) {
      throw new TypeError(
        `unknown option ${prefix}${key} (known: ${Object.keys(known).join(", ")})`,
      );
    }
    const value = (options as Record<string, unknown>)[key];
    if (value !== undefined) checkValue(`${prefix}${key}`, kind, value);
  }
}

function checkValue(name: string, kind: Kind, value: unknown): void {
  switch (kind) {
    case "boolean":
      if (typeof value !== "boolean") {
        throw new TypeError(`option ${name} must be a boolean, got ${describe(value)}`);
      }
      return;
    case "debug":
      if (typeof value !== "boolean" && (typeof value !== "object" || value === null)) {
        throw new TypeError(
          `option ${name} must be a boolean or an object of debug options, got ${describe(value)}`,
        );
      }
      return;
    case "count":
      if (typeof value !== "number") {
        throw new TypeError(`option ${name} must be a number, got ${describe(value)}`);
      }
      if (!Number.isSafeInteger(value) || value < 0) {
        throw new RangeError(`option ${name} must be a non-negative integer, got ${value}`);
      }
      return;
    case "limit":
      if (typeof value !== "number") {
        throw new TypeError(`option ${name} must be a number, got ${describe(value)}`);
      }
      if (value !== Infinity && (!Number.isSafeInteger(value) || value < 0)) {
        throw new RangeError(
          `option ${name} must be a non-negative integer or Infinity, got ${value}`,
        );
      }
      return;
    case "ratio":
      if (typeof value !== "number") {
        throw new TypeError(`option ${name} must be a number, got ${describe(value)}`);
      }
      if (!(value >= 0)) {
        throw new RangeError(`option ${name} must be a number >= 0 or Infinity, got ${value}`);
      }
  }
}

/** A value as a message shows it: its type, and the value itself when short. */
function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  switch (typeof value) {
    case "string":
      return `the string ${JSON.stringify(value.length > 20 ? value.slice(0, 20) + "..." : value)}`;
    case "number":
    case "boolean":
    case "bigint":
      return `${typeof value} ${String(value)}${typeof value === "bigint" ? "n" : ""}`;
    default:
      return typeof value;
  }
}
