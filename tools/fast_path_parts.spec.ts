import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { missingEdits, VARIANTS } from "./fast_path_parts.ts";

describe("bench:parts (tools/fast_path_parts.ts)", () => {
  it("every part it removes is still in the sources exactly once, so its figures can be rerun", async () => {
    const root = new URL("..", import.meta.url).pathname;
    assert.deepEqual(await missingEdits(root), []);
    assert.ok(VARIANTS.length >= 5);
  });
});
