// Lifecycle events: read from --events (not stderr), live, in order, the
// same through the async iterator and the EventEmitter.

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { lockIsFree, next, sandbox, SOON, within } from "./support.js";

function assertOrdered(events) {
  for (let i = 1; i < events.length; i++) {
    assert.ok(Date.parse(events[i].ts) >= Date.parse(events[i - 1].ts), `ts out of order at ${i}`);
  }
}

test("events arrive in order, the same through the iterator and the emitter", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt(
    { session: sb.path("s.jsonl"), timeout: "300ms", grace: "5s", attemptId: "order-1", sessionKey: "k1" },
    "sleep",
    ["30"],
  );
  const emitted = [];
  h.on("event", (e) => emitted.push(e.event));
  const named = [];
  for (const name of ["acquired", "started", "signal", "exited", "released"]) {
    h.on(name, (e) => named.push(e.event));
  }
  const iterated = [];
  for await (const e of h) iterated.push(e);
  const names = iterated.map((e) => e.event);
  assert.deepEqual(names, ["acquired", "started", "signal", "exited", "released", "end"]);
  assert.deepEqual(emitted, names);
  // locksup's `end` event is not emitted under its own name: the handle's
  // "end" is the typed result.
  assert.deepEqual(named, names.slice(0, -1));
  assertOrdered(iterated);
  for (const e of iterated) {
    assert.equal(e.attempt_id, "order-1");
    assert.equal(e.lock, h.lockFile);
  }
  assert.equal(h.lockFile, sb.path("s.jsonl.lock"));
  assert.equal(iterated[2].reason, "timeout");
  assert.equal(iterated[1].pid, iterated[1].pgid);
  // A second iterator, after the end, replays every event.
  const again = [];
  for await (const e of h) again.push(e.event);
  assert.deepEqual(again, names);
  const r = await h.result;
  assert.equal(r.outcome, "timeout");
  assert.equal(r.heldMs, iterated[3].held_ms);
  assert.equal(r.waitedMs, iterated[0].wait_ms);
});

test("events arrive while the attempt runs, not at its end", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("s.jsonl"), timeout: 0 }, "sleep", ["30"]);
  let settled = false;
  h.result.then(() => (settled = true));
  const started = await next(h, "started");
  assert.equal(settled, false, "the attempt is still running");
  assert.ok(!lockIsFree(h.lockFile), "the lock is held while the command runs");
  assert.equal(typeof started.pid, "number");
  // The iterator yields what came so far, then waits for more.
  const it = h[Symbol.asyncIterator]();
  assert.equal((await it.next()).value.event, "acquired");
  assert.equal((await it.next()).value.event, "started");
  const pending = it.next();
  h.cancel();
  assert.equal((await within(pending, SOON, "the next event")).value.event, "signal");
  await within(h.result, SOON, "the attempt");
  assert.ok(lockIsFree(h.lockFile));
});

test("a waiter sees waiting, then acquired once the holder is gone", async (t) => {
  const sb = sandbox(t);
  const session = sb.path("s.jsonl");
  const holder = sb.attempt({ session, timeout: 0 }, "sleep", ["30"]);
  const held = await next(holder, "started");
  const waiter = sb.attempt({ session, wait: "60s" }, "true");
  const waiting = await next(waiter, "waiting");
  assert.deepEqual(waiting.holders, [held.pid]);
  holder.cancel();
  const r = await within(waiter.result, SOON, "the waiter");
  assert.equal(r.outcome, "exited");
  assert.equal(r.code, 0);
  assert.deepEqual(
    waiter.events.map((e) => e.event),
    ["waiting", "acquired", "started", "exited", "released", "end"],
  );
  assert.ok(r.waitedMs > 0, `waitedMs ${r.waitedMs}`);
});

test("the command's stderr is its own: events never go there", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("s.jsonl") }, "sh", ["-c", "echo from-the-command >&2"]);
  await within(h.result, SOON, "the attempt");
  assert.equal(h.stderrText, "from-the-command\n");
  assert.equal(h.events.length, 5);
});

test("the events file is private and removed at the end", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("s.jsonl") }, "sh", [
    "-c",
    'for f in /proc/$$/fd/*; do readlink "$f"; done >&2',
  ]);
  const argv = h.child.spawnargs;
  const path = argv[argv.indexOf("--events") + 1];
  assert.ok(existsSync(path));
  await within(h.result, SOON, "the attempt");
  assert.equal(existsSync(dirname(path)), false, "temp dir removed");
  // The command's descriptors: the lock file, never the events file.
  const targets = h.stderrText.trim().split("\n");
  assert.ok(targets.includes(h.lockFile), h.stderrText);
  assert.ok(!targets.some((p) => p.includes("events.jsonl")), h.stderrText);
});
