/**
 * A native function's address, for a C function pointer that needs no
 * callback: `dlsym(RTLD_DEFAULT, name)` from the C library.
 */

const IS_DARWIN = Deno.build.os === "darwin";
const LIBC = IS_DARWIN ? "libSystem.B.dylib" : "libc.so.6";
/** RTLD_DEFAULT: search every object loaded in the process. */
const RTLD_DEFAULT = IS_DARWIN ? Deno.UnsafePointer.create(-2n) : null;

let dl: { dlsym(handle: Deno.PointerValue, name: BufferSource): Deno.PointerValue } | undefined;

/** The address of the C function `name` loaded in this process; throws if there is none. */
export function nativeFunction(name: string): Deno.PointerObject {
  dl ??= Deno.dlopen(LIBC, {
    dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  }).symbols;
  const address = dl.dlsym(RTLD_DEFAULT, new TextEncoder().encode(name + "\0"));
  if (address === null) throw new Error(`dlsym: no function ${name} in this process`);
  return address;
}
