/**
 * The README's first example is examples/quick_start.ts, and it runs.
 */

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { needs } from "./helpers.ts";

const ROOT = new URL("..", import.meta.url);
const EXAMPLE = new URL("examples/quick_start.ts", ROOT);

describe("the README's example", () => {
  it("is examples/quick_start.ts, but for the import", { skip: needs("read") }, async () => {
    const readme = await Deno.readTextFile(new URL("README.md", ROOT));
    const first = readme.match(/```ts\n([\s\S]*?)```/)![1];
    const example = await Deno.readTextFile(EXAMPLE);
    const body = example.slice(example.indexOf("import {"));
    assert.equal(
      first.replace('"@tsmalloc/tsmalloc"', '"../mod.ts"'),
      body,
    );
  });

  it("runs with --allow-ffi alone and prints what its comments say", {
    skip: needs("run"),
  }, async () => {
    let deno = "deno";
    try {
      deno = Deno.execPath();
    } catch {
      // no read permission: the deno on PATH
    }
    const output = await new Deno.Command(deno, {
      args: ["run", "--allow-ffi", EXAMPLE.pathname],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    assert.match(stdout, /strlen: 20n/);
    assert.match(stdout, /read back: héllo, native world/);
    assert.match(stdout, /sorted by qsort: \[ -1, 0, 2, 3\.5, 10 \]/);
    assert.match(stdout, /live blocks: 0/);
  });
});
