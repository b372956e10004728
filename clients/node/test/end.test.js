// The result comes from locksup's own last event, `end`, first: its
// outcome passes through as the binary names it. Without one (locksup was
// SIGKILLed before it could write it), from the other events and the exit
// status. Synthetic events for every mapping, then real attempts.

import { test } from "node:test";
import assert from "node:assert/strict";
import { OUTCOMES, resultOf } from "../lib/run.js";
import { alive, groupMembers, lockIsFree, next, parentOf, sandbox, SOON, until, within } from "./support.js";

const LOCK = "/tmp/s.jsonl.lock";
let clock = Date.parse("2026-11-29T10:00:00.000Z");
/** A lifecycle event as locksup writes it. */
function ev(event, fields = {}) {
  clock += 10;
  return { ts: new Date(clock).toISOString(), event, attempt_id: "a-1", lock: LOCK, ...fields };
}
const acquired = (fields = {}) => ev("acquired", { wait_ms: 1.5, ...fields });
const started = () => ev("started", { pid: 100, pgid: 100 });
const end = (outcome, exit_code, error = null) => ev("end", { exit_code, outcome, error });
const exitedWith = (code) => ({ code, signal: null });

test("the end event's outcome passes through, whatever the other events suggest", () => {
  // Every declared outcome, after events that alone would read as a plain exit.
  for (const outcome of OUTCOMES) {
    const events = [acquired(), started(), ev("exited", { status: 0, held_ms: 20 }), end(outcome, 0)];
    const r = resultOf(events, exitedWith(0), false, null);
    assert.equal(r.outcome, outcome);
    assert.equal(r.code, 0);
    assert.equal(r.heldMs, 20);
    assert.equal(r.waitedMs, 1.5);
  }
  // The names the binary's `end` sends, and lease-lost (the etcd backend).
  assert.deepEqual(
    [...OUTCOMES].sort(),
    [
      "busy", "cancelled", "cannot-execute", "exited", "failed", "killed", "lease-lost",
      "not-found", "ready-timeout", "timeout", "wait-expired", "watchdog",
    ],
  );
  // lease-lost, with the signal the supervisor sent for it.
  const events = [
    acquired(),
    started(),
    ev("signal", { signal: "SIGTERM", reason: "lease-lost", targets: [100] }),
    ev("exited", { signal: "SIGTERM", held_ms: 900 }),
    end("lease-lost", 143),
  ];
  const r = resultOf(events, exitedWith(143), false, null);
  assert.equal(r.outcome, "lease-lost");
  assert.equal(r.signal, "SIGTERM");
  assert.equal(r.message, null);
});

test("the end event's error is the result's message", () => {
  const r = resultOf([end("not-found", 127, "cannot run 'x': No such file or directory")], exitedWith(127), false, null);
  assert.equal(r.outcome, "not-found");
  assert.equal(r.message, "cannot run 'x': No such file or directory");
  assert.equal(r.error, null);
  assert.equal(r.heldMs, null);
});

test("an outcome this client does not know is read from the other events instead", () => {
  const events = [
    acquired(),
    started(),
    ev("signal", { signal: "SIGTERM", reason: "timeout", targets: [100] }),
    ev("exited", { signal: "SIGTERM", held_ms: 300 }),
    end("some-future-outcome", 124),
  ];
  assert.equal(resultOf(events, exitedWith(124), false, null).outcome, "timeout");
  const plain = [acquired(), started(), ev("exited", { status: 4, held_ms: 5 }), end("", 4)];
  assert.equal(resultOf(plain, exitedWith(4), false, null).outcome, "exited");
});

test("without an end event (locksup SIGKILLed), the other events and the exit status decide", () => {
  const running = [acquired(), started()];
  const killed = { code: null, signal: "SIGKILL" };
  let r = resultOf(running, killed, false, null);
  assert.deepEqual(
    { outcome: r.outcome, code: r.code, signal: r.signal, heldMs: r.heldMs, waitedMs: r.waitedMs, message: r.message },
    { outcome: "killed", code: null, signal: "SIGKILL", heldMs: null, waitedMs: 1.5, message: null },
  );
  // After a cancel() the client asked for, it is what was wanted.
  assert.equal(resultOf(running, killed, true, null).outcome, "cancelled");
  // Killed while it was ending the attempt: the reason it was ending it.
  for (const [reason, outcome] of [
    ["timeout", "timeout"],
    ["ready-timeout", "ready-timeout"],
    ["watchdog", "watchdog"],
    ["lease-lost", "lease-lost"],
    ["supervisor-signal", "cancelled"],
    ["guardian-died", "cancelled"],
    ["parent-died", "cancelled"],
    ["lock-removed", "cancelled"],
  ]) {
    const events = [...running, ev("signal", { signal: "SIGTERM", reason, targets: [100] })];
    assert.equal(resultOf(events, killed, false, null).outcome, outcome, reason);
  }
  // No events at all: the exit status.
  assert.equal(resultOf([], exitedWith(127), false, null).outcome, "not-found");
  assert.equal(resultOf([], exitedWith(126), false, null).outcome, "cannot-execute");
  assert.equal(resultOf([], exitedWith(125), false, null).outcome, "failed");
  assert.equal(resultOf([ev("waiting", { holders: [7] })], exitedWith(143), false, null).outcome, "cancelled");
  // A client failure (locksup could not be started) wins over everything.
  const error = new Error("spawn ENOENT");
  r = resultOf([], { code: null, signal: null }, false, error);
  assert.equal(r.outcome, "failed");
  assert.equal(r.error, error);
});

test("the exit code is locksup's status; the end event's only when the process gave none", () => {
  assert.equal(resultOf([end("exited", 3)], exitedWith(3), false, null).code, 3);
  assert.equal(resultOf([end("exited", 3)], { code: null, signal: null }, false, null).code, 3);
  // Killed after it wrote its end: the process status (none) stands.
  assert.equal(resultOf([end("exited", 3)], { code: null, signal: "SIGKILL" }, false, null).code, null);
});

test("fence and previousOutcome come from the acquired event when it has them", () => {
  const previous = { outcome: "lease-lost", attempt_id: "a-0", fence: 41 };
  let r = resultOf([acquired({ fence: 42, previous }), end("exited", 0)], exitedWith(0), false, null);
  assert.equal(r.fence, 42);
  assert.equal(r.previousOutcome, "lease-lost");
  // The first holder: no previous one.
  r = resultOf([acquired({ fence: 1, previous: null }), end("exited", 0)], exitedWith(0), false, null);
  assert.equal(r.fence, 1);
  assert.equal(r.previousOutcome, null);
  // This binary: neither.
  r = resultOf([acquired(), end("exited", 0)], exitedWith(0), false, null);
  assert.equal(r.fence, null);
  assert.equal(r.previousOutcome, null);
  // Malformed fields are not passed on.
  r = resultOf([acquired({ fence: true, previous: "exited" }), end("exited", 0)], exitedWith(0), false, null);
  assert.equal(r.fence, null);
  assert.equal(r.previousOutcome, null);
});

// Real attempts.

test("real attempts: the result's outcome is the end event's, which comes last", async (t) => {
  const sb = sandbox(t);
  const cases = [
    [{ timeout: "10s" }, "sh", ["-c", "exit 3"], "exited", 3],
    [{ timeout: 200, grace: "5s" }, "sleep", ["30"], "timeout", 124],
    [{}, "locksup-test-no-such-command", [], "not-found", 127],
    [{}, "/dev/null", [], "cannot-execute", 126],
  ];
  for (const [i, [options, command, args, outcome, code]] of cases.entries()) {
    const h = sb.attempt({ session: sb.path(`s${i}.jsonl`), ...options }, command, args);
    const r = await within(h.result, SOON, `attempt ${command}`);
    const last = h.events.at(-1);
    assert.equal(last.event, "end", command);
    assert.equal(last.outcome, outcome);
    assert.equal(r.outcome, outcome);
    assert.equal(r.code, code);
    assert.equal(last.exit_code, code);
    assert.equal(r.message, last.error);
    assert.ok(lockIsFree(h.lockFile));
  }
});

/**
 * A running attempt, its `started` event, and its supervisor: the
 * command's parent, a child of the `locksup run` the client started (the
 * guardian).
 */
async function running(t) {
  const sb = sandbox(t);
  const h = sb.attempt({ session: sb.path("s.jsonl"), timeout: 0, grace: "2s" }, "sleep", ["30"]);
  const st = await next(h, "started");
  const supervisor = parentOf(st.pid);
  assert.ok(supervisor && supervisor !== h.pid, "the command's parent is the supervisor, not the guardian");
  assert.equal(parentOf(supervisor), h.pid);
  return { h, st, supervisor };
}

test("the supervisor SIGKILLed: the guardian ends the attempt and says so in its end event", async (t) => {
  const { h, st, supervisor } = await running(t);
  process.kill(supervisor, "SIGKILL");
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(h.events.at(-1).event, "end");
  assert.equal(r.outcome, "failed");
  assert.equal(r.code, 137);
  assert.match(r.message, /supervisor \(pid \d+\) was killed by SIGKILL/);
  assert.ok(!alive(st.pid));
  assert.ok(lockIsFree(h.lockFile));
});

test("locksup SIGKILLed before it could write an end: a result from the fallback", async (t) => {
  const { h, st, supervisor } = await running(t);
  // Stopped first, so that neither can write another event; then killed.
  for (const pid of [h.pid, supervisor]) process.kill(pid, "SIGSTOP");
  for (const pid of [supervisor, h.pid]) process.kill(pid, "SIGKILL");
  const r = await within(h.result, SOON, "the attempt");
  assert.ok(!h.events.some((e) => e.event === "end"), "no end event");
  assert.equal(r.outcome, "killed");
  assert.equal(r.code, null);
  assert.equal(r.signal, "SIGKILL");
  assert.equal(r.heldMs, null);
  assert.ok(r.waitedMs >= 0 && r.waitedMs < SOON, `waitedMs ${r.waitedMs}`);
  assert.equal(r.message, null);
  assert.equal(r.error, null);
  // The command got the kernel's parent-death SIGKILL: the lock is free.
  await until(() => !alive(st.pid) && groupMembers(st.pgid).length === 0, SOON, "the command's end");
  await until(() => lockIsFree(h.lockFile), SOON, "the lock to be free");
});
