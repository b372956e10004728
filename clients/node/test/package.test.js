// The package as published: its declarations compile under --strict
// against a usage file, declare every runtime export, and `npm pack`
// ships exactly the intended files.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import * as client from "../index.js";
import { PKG } from "./support.js";

const exec = promisify(execFile);

test("the TypeScript declarations compile with tsc --noEmit --strict against a usage file", async () => {
  const tsc = join(PKG, "node_modules", ".bin", "tsc");
  const args = [
    "--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext",
    "--target", "es2022", "--types", "node", join("test", "types", "usage.ts"),
  ];
  try {
    await exec(tsc, args, { cwd: PKG });
  } catch (e) {
    assert.fail(`tsc failed (${e.code}):\n${e.stdout}${e.stderr}`);
  }
});

test("every runtime export is declared in index.d.ts, and nothing more", () => {
  const dts = readFileSync(join(PKG, "index.d.ts"), "utf8");
  const declared = new Set(
    [...dts.matchAll(/^export (?:declare )?(?:function|class|const) (\w+)/gm)].map((m) => m[1]),
  );
  assert.deepEqual([...declared].sort(), Object.keys(client).sort());
});

test("package.json: ESM, exports with types, no runtime dependencies, Node >= 20", () => {
  const pkg = JSON.parse(readFileSync(join(PKG, "package.json"), "utf8"));
  assert.equal(pkg.name, "locksup");
  assert.equal(pkg.type, "module");
  assert.deepEqual(pkg.exports["."], { types: "./index.d.ts", default: "./index.js" });
  assert.equal(pkg.types, "./index.d.ts");
  assert.equal(pkg.dependencies, undefined);
  assert.deepEqual(Object.keys(pkg.devDependencies).sort(), ["@types/node", "typescript"]);
  assert.equal(pkg.engines.node, ">=20");
});

test("npm pack ships exactly the intended files", async () => {
  const { stdout } = await exec("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
    cwd: PKG,
    env: { ...process.env, npm_config_loglevel: "silent" },
  });
  const [pack] = JSON.parse(stdout);
  assert.deepEqual(pack.files.map((f) => f.path).sort(), [
    "LICENSE",
    "README.md",
    "index.d.ts",
    "index.js",
    "lib/duration.js",
    "lib/errors.js",
    "lib/liveness.js",
    "lib/locate.js",
    "lib/run.js",
    "lib/status.js",
    "package.json",
  ]);
});
