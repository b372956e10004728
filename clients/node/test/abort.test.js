// AbortSignal: aborting cancels the attempt (TERM to the supervisor, which
// escalates), and the kernel has freed the lock once the result is in.

import { test } from "node:test";
import assert from "node:assert/strict";
import { lockIsFree, next, sandbox, SOON, stderrMatches, within } from "./support.js";

test("abort() cancels a running attempt and the lock is free afterwards", async (t) => {
  const sb = sandbox(t);
  const ac = new AbortController();
  const h = sb.attempt({ session: sb.path("s.jsonl"), timeout: 0, signal: ac.signal }, "sleep", ["30"]);
  await next(h, "started");
  assert.equal(lockIsFree(h.lockFile), false, "held while the command runs");
  ac.abort();
  const r = await within(h.result, SOON, "the aborted attempt");
  assert.equal(r.outcome, "cancelled");
  assert.equal(r.code, 143);
  assert.equal(r.signal, "SIGTERM");
  const sig = h.events.find((e) => e.event === "signal");
  assert.equal(sig.reason, "supervisor-signal");
  assert.ok(h.events.some((e) => e.event === "released"));
  assert.equal(lockIsFree(h.lockFile), true, "free after the abort");
});

test("abort() escalates to the final signal after the grace period", async (t) => {
  const sb = sandbox(t);
  const ac = new AbortController();
  const h = sb.attempt(
    { session: sb.path("s.jsonl"), timeout: 0, grace: "300ms", signal: ac.signal },
    "sh",
    ["-c", "trap '' TERM; echo ignoring >&2; sleep 30"],
  );
  await stderrMatches(h, /ignoring/);
  const t0 = Date.now();
  ac.abort();
  const r = await within(h.result, SOON, "the aborted attempt");
  assert.equal(r.outcome, "cancelled");
  assert.equal(r.code, 137);
  assert.equal(r.signal, "SIGKILL");
  assert.ok(Date.now() - t0 >= 250, "the grace period was waited");
  assert.equal(lockIsFree(h.lockFile), true);
});

test("AbortSignal.timeout() ends an attempt; an already aborted signal never lets it hold the lock", async (t) => {
  const sb = sandbox(t);
  let h = sb.attempt(
    { session: sb.path("a.jsonl"), timeout: 0, signal: AbortSignal.timeout(300) },
    "sleep",
    ["30"],
  );
  let r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "cancelled");
  assert.ok(r.heldMs >= 200 && r.heldMs < SOON, `heldMs ${r.heldMs}`);
  assert.equal(lockIsFree(h.lockFile), true);

  h = sb.attempt({ session: sb.path("b.jsonl"), timeout: 0, signal: AbortSignal.abort() }, "sleep", ["30"]);
  r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "cancelled");
  assert.ok(!h.events.some((e) => e.event === "exited" && e.status === 0));
  assert.equal(lockIsFree(h.lockFile), true);
});

test("aborting after the end changes nothing", async (t) => {
  const sb = sandbox(t);
  const ac = new AbortController();
  const h = sb.attempt({ session: sb.path("s.jsonl"), signal: ac.signal }, "true");
  const r = await within(h.result, SOON, "the attempt");
  ac.abort();
  assert.equal(r.outcome, "exited");
  assert.equal((await h.result).outcome, "exited");
  assert.equal(h.cancel(), false);
});

test("the AbortSignal option is not the kill signal", async (t) => {
  const sb = sandbox(t);
  assert.throws(
    () => sb.attempt({ session: sb.path("s.jsonl"), signal: "SIGINT" }, "true"),
    /options\.signal must be an AbortSignal \(the kill signal on timeout is options\.killSignal\)/,
  );
  const h = sb.attempt({ session: sb.path("s.jsonl"), timeout: "300ms", killSignal: "INT" }, "sleep", ["30"]);
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "timeout");
  assert.equal(r.signal, "SIGINT");
  assert.equal(h.events.find((e) => e.event === "signal").signal, "SIGINT");
});
