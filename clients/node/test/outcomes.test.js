// Every outcome the current binary can produce, from a real attempt, and
// how it is mapped: outcome, exit status, signal, wait and hold times.

import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, writeFileSync } from "node:fs";
import { lockIsFree, next, sandbox, SOON, stderrMatches, within } from "./support.js";

// Ignores TERM (sleep inherits that), and says so once it does.
const IGNORE_TERM = ["-c", "trap '' TERM; echo ignoring >&2; sleep 30"];

function noFutureFields(r) {
  // The first attempt on a fresh lock: a fencing token, no previous holder.
  assert.ok(Number.isSafeInteger(r.fence) && r.fence > 0, `fence ${r.fence}`);
  assert.equal(r.previousOutcome, "none");
  assert.equal(r.error, null);
  assert.equal(r.message, null);
}

test("fence and previousOutcome: the next holder hears how the last one ended", async (t) => {
  const sb = sandbox(t);
  const session = sb.path("s.jsonl");
  const first = sb.attempt({ session, timeout: 300, grace: "5s" }, "sleep", ["30"]);
  const r1 = await within(first.result, SOON, "the first attempt");
  assert.equal(r1.outcome, "timeout");
  const second = sb.attempt({ session }, "sh", ["-c", "exit 0"]);
  const r2 = await within(second.result, SOON, "the second attempt");
  assert.equal(r2.previousOutcome, "timeout");
  assert.ok(r2.fence > r1.fence, `${r2.fence} > ${r1.fence}`);
});

test("exited: the command's own status", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("s.jsonl"), timeout: "10s" }, "sh", ["-c", "exit 3"]);
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "exited");
  assert.equal(r.code, 3);
  assert.equal(r.signal, null);
  assert.ok(r.waitedMs >= 0 && r.waitedMs < SOON, `waitedMs ${r.waitedMs}`);
  assert.ok(r.heldMs >= 0 && r.heldMs < SOON, `heldMs ${r.heldMs}`);
  noFutureFields(r);
  assert.ok(lockIsFree(h.lockFile));
});

test("exited: status 127 from a command that ran is not 'not-found'", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("s.jsonl") }, "sh", ["-c", "exit 127"]);
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "exited");
  assert.equal(r.code, 127);
});

test("timeout: ended by the first signal (124)", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("s.jsonl"), timeout: 300, grace: "5s" }, "sleep", ["30"]);
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "timeout");
  assert.equal(r.code, 124);
  assert.equal(r.signal, "SIGTERM");
  assert.ok(r.heldMs >= 250 && r.heldMs < SOON, `heldMs ${r.heldMs}`);
  noFutureFields(r);
  assert.ok(lockIsFree(h.lockFile));
});

test("timeout: the final signal was needed (137)", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("s.jsonl"), timeout: "500ms", grace: "300ms" }, "sh", IGNORE_TERM);
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "timeout");
  assert.equal(r.code, 137);
  assert.equal(r.signal, "SIGKILL");
  assert.ok(r.heldMs >= 750, `heldMs ${r.heldMs}`);
  assert.ok(lockIsFree(h.lockFile));
});

test("killed: the command died of a signal nobody asked locksup for", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("s.jsonl"), timeout: 0 }, "sleep", ["30"]);
  const started = await next(h, "started");
  process.kill(started.pid, "SIGKILL"); // an operator's kill -9
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "killed");
  assert.equal(r.code, 137);
  assert.equal(r.signal, "SIGKILL");
  assert.ok(!h.events.some((e) => e.event === "signal"), "locksup sent no signal");
  assert.ok(lockIsFree(h.lockFile));
});

test("busy and wait-expired: the lock is held by another attempt", async (t) => {
  const sb = sandbox(t);
  const session = sb.path("s.jsonl");
  const holder = sb.attempt({ session, timeout: 0 }, "sleep", ["30"]);
  await next(holder, "started");

  const busy = sb.attempt({ session, wait: 0 }, "true");
  let r = await within(busy.result, SOON, "the busy attempt");
  assert.equal(r.outcome, "busy");
  assert.equal(r.code, 75);
  assert.equal(r.waitedMs, 0);
  assert.equal(r.heldMs, null);
  const conflict = busy.events.find((e) => e.event === "conflict");
  assert.deepEqual(conflict.holders, [holder.events.find((e) => e.event === "started").pid]);

  const expired = sb.attempt({ session, wait: "400ms" }, "true");
  r = await within(expired.result, SOON, "the waiting attempt");
  assert.equal(r.outcome, "wait-expired");
  assert.equal(r.code, 75);
  assert.ok(r.waitedMs >= 350 && r.waitedMs < SOON, `waitedMs ${r.waitedMs}`);
  assert.equal(r.heldMs, null);

  assert.ok(!lockIsFree(holder.lockFile), "the holder still holds the lock");
  holder.cancel();
  assert.equal((await within(holder.result, SOON, "the holder")).outcome, "cancelled");
  assert.ok(lockIsFree(holder.lockFile));
});

test("busy comes from the event, whatever conflict exit code the configuration sets", async (t) => {
  const sb = sandbox(t);
  writeFileSync(sb.config, "[run]\nconflict_exit_code = 9\n");
  const session = sb.path("s.jsonl");
  const holder = sb.attempt({ session, timeout: 0 }, "sleep", ["30"]);
  await next(holder, "started");
  const busy = sb.attempt({ session, wait: 0 }, "true");
  const r = await within(busy.result, SOON, "the busy attempt");
  assert.equal(r.code, 9);
  assert.equal(r.outcome, "busy");
});

test("cancelled: cancel() while the command runs; a second cancel() escalates", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("a.jsonl"), timeout: 0 }, "sleep", ["30"]);
  await next(h, "started");
  assert.equal(h.cancel(), true);
  let r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "cancelled");
  assert.equal(r.code, 143);
  assert.equal(r.signal, "SIGTERM");
  assert.equal(h.cancel(), false, "nothing left to cancel");
  assert.ok(lockIsFree(h.lockFile));

  // A command that ignores TERM, a grace of a minute: the second cancel
  // sends KILL at once.
  const stubborn = sb.attempt({ session: sb.path("b.jsonl"), timeout: 0, grace: "60s" }, "sh", IGNORE_TERM);
  await stderrMatches(stubborn, /ignoring/);
  stubborn.cancel();
  await next(stubborn, "signal");
  stubborn.cancel("SIGINT");
  r = await within(stubborn.result, SOON, "the escalated attempt");
  assert.equal(r.outcome, "cancelled");
  assert.equal(r.code, 137);
  assert.equal(r.signal, "SIGKILL");
  const signals = stubborn.events.filter((e) => e.event === "signal").map((e) => [e.signal, e.reason]);
  assert.deepEqual(signals, [
    ["SIGTERM", "supervisor-signal"],
    ["SIGKILL", "supervisor-signal"],
  ]);
  assert.ok(lockIsFree(stubborn.lockFile));
  assert.throws(() => stubborn.cancel("SIGKILL"), /does not cancel/);
});

test("cancelled: cancel() while waiting for the lock", async (t) => {
  const sb = sandbox(t);
  const session = sb.path("s.jsonl");
  const holder = sb.attempt({ session, timeout: 0 }, "sleep", ["30"]);
  await next(holder, "started");
  const waiter = sb.attempt({ session, wait: "60s" }, "true");
  await next(waiter, "waiting");
  waiter.cancel();
  const r = await within(waiter.result, SOON, "the waiter");
  assert.equal(r.outcome, "cancelled");
  assert.equal(r.code, 143);
  assert.equal(r.heldMs, null);
  assert.ok(!waiter.events.some((e) => e.event === "acquired"));
  assert.ok(!lockIsFree(holder.lockFile), "the holder was not disturbed");
});

test("watchdog: no heartbeat within the interval", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("s.jsonl"), timeout: 0, watchdog: "300ms" }, "sleep", ["30"]);
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "watchdog");
  assert.equal(r.code, 124);
  assert.equal(r.signal, "SIGTERM");
  assert.ok(r.heldMs >= 250 && r.heldMs < SOON, `heldMs ${r.heldMs}`);
  assert.ok(lockIsFree(h.lockFile));
});

test("ready-timeout: no READY=1 within the configured ready_timeout", async (t) => {
  const sb = sandbox(t);
  writeFileSync(sb.config, '[run]\nready_timeout = "300ms"\n');
  const h = sb.attempt({ session: sb.path("s.jsonl"), timeout: 0, grace: "5s" }, "sleep", ["30"]);
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "ready-timeout");
  assert.equal(r.code, 124);
  assert.equal(r.signal, "SIGTERM");
  assert.deepEqual(
    h.events.filter((e) => e.event === "signal").map((e) => e.reason),
    ["ready-timeout"],
  );
  assert.ok(lockIsFree(h.lockFile));
});

test("not-found: the command does not exist", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("s.jsonl") }, "locksup-test-no-such-command");
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "not-found");
  assert.equal(r.code, 127);
  assert.equal(r.heldMs, null);
  assert.match(h.stderrText, /cannot run 'locksup-test-no-such-command'/);
  assert.match(r.message, /cannot run 'locksup-test-no-such-command'/);
  assert.ok(lockIsFree(h.lockFile));
});

test("failed: locksup cannot use the lock file (125); cannot-execute: it cannot run the command (126)", async (t) => {
  const sb = sandbox(t);
  let h = sb.attempt({ session: sb.path("no/such/dir/s.jsonl") }, "true");
  let r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "failed");
  assert.equal(r.code, 125);
  assert.equal(r.heldMs, null);
  assert.equal(h.events.length, 0, "locksup failed before it opened --events: no end event");
  assert.equal(r.message, null);
  assert.match(h.stderrText, /does not exist/);

  const script = sb.path("not-executable.sh");
  writeFileSync(script, "#!/bin/sh\nexit 0\n");
  chmodSync(script, 0o644);
  h = sb.attempt({ session: sb.path("s.jsonl") }, script);
  r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "cannot-execute");
  assert.equal(r.code, 126);
  assert.match(r.message, /cannot run .*not-executable\.sh.*Permission denied/);
});
