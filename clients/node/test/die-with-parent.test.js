// dieWithParent: when the Node process that started an attempt dies (here
// by SIGKILL, so it can do nothing about it), locksup ends the attempt:
// every process of it is gone and the lock is free.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { status } from "../index.js";
import { alive, BIN, FIXTURES, groupMembers, lockIsFree, parentOf, sandbox, SOON, until, within } from "./support.js";

/** The lines a process writes on stdout, as they come. */
function lines(child) {
  const queue = [];
  const waiters = [];
  let text = "";
  let ended = false;
  child.stdout.setEncoding("utf8").on("data", (d) => {
    text += d;
    let nl;
    while ((nl = text.indexOf("\n")) !== -1) {
      queue.push(text.slice(0, nl));
      text = text.slice(nl + 1);
      waiters.shift()?.();
    }
  });
  child.once("exit", () => {
    ended = true;
    for (const w of waiters.splice(0)) w();
  });
  /** The next line, within a bound. */
  return async (what) => {
    if (queue.length === 0 && !ended) {
      await within(new Promise((r) => waiters.push(r)), SOON, what);
    }
    if (queue.length === 0) throw new Error(`the parent exited before ${what}`);
    return queue.shift();
  };
}

/** Start the parent fixture; its attempt's events directory goes into the sandbox. */
async function startParent(sb, mode) {
  // The parent's temporary events directory is left behind (the parent
  // cannot remove it) and read at the end.
  const parent = sb.spawn(process.execPath, [join(FIXTURES, "parent.mjs"), mode, BIN, sb.path("s.jsonl")], {
    env: { ...sb.env, TMPDIR: sb.dir },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const next = lines(parent);
  const info = JSON.parse(await next("the parent's attempt to start"));
  info.supervisor = parentOf(info.pid);
  info.pids = [info.locksup, info.supervisor, info.pid];
  assert.ok(info.pids.every(alive), `all running: ${info.pids}`);
  await until(() => groupMembers(info.pgid).length >= 3, SOON, "sh and its two sleeps");
  assert.ok(!lockIsFree(info.lockFile), "the attempt holds the lock");
  return { parent, next, info };
}

/** Kill the parent; every process of the attempt ends, the lock is freed, for the parent's death. */
async function killParentAndCheck(sb, parent, info) {
  process.kill(parent.pid, "SIGKILL");
  await until(
    () => info.pids.every((p) => !alive(p)) && groupMembers(info.pgid).length === 0,
    20_000,
    `locksup (${info.locksup}), its supervisor (${info.supervisor}) and the attempt's processes (group ${info.pgid}) to be gone`,
  );
  await until(() => lockIsFree(info.lockFile), SOON, "the lock to be free");
  const doc = await status(info.lockFile, { locksup: BIN, env: sb.env });
  assert.equal(doc.locks.length, 1);
  assert.equal(doc.locks[0].state, "free");

  // What locksup wrote: the caller's death was the reason, and the end.
  const dirs = readdirSync(sb.dir).filter((d) => d.startsWith("locksup-node-"));
  assert.equal(dirs.length, 1, `the parent's events directory: ${dirs}`);
  const events = readFileSync(join(sb.dir, dirs[0], "events.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  const signals = events.filter((e) => e.event === "signal").map((e) => e.reason);
  assert.equal(signals[0], "parent-died", JSON.stringify(events));
  const end = events.at(-1);
  assert.equal(end.event, "end");
  assert.equal(end.outcome, "cancelled");
}

test("dieWithParent: the parent SIGKILLed, the attempt is ended and the lock freed", async (t) => {
  const sb = sandbox(t);
  const { parent, info } = await startParent(sb, "main");
  await killParentAndCheck(sb, parent, info);
});

test("dieWithParent: the worker thread that started it ending is not the parent dying", async (t) => {
  const sb = sandbox(t);
  const { parent, next, info } = await startParent(sb, "worker");
  assert.equal(await next("the worker's end"), "worker ended");
  // Nothing is to happen: watch for a while that the attempt lives on.
  const until = Date.now() + 1500;
  while (Date.now() < until) {
    assert.ok(info.pids.every(alive), "the attempt lives on while its caller does");
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(!lockIsFree(info.lockFile));
  await killParentAndCheck(sb, parent, info);
});
