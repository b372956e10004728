// Finding locksup (PATH, option, version check), option checking and
// durations, and status().

import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { locate, LocksupError, MIN_VERSION, parseDuration, run, status } from "../index.js";
import { BIN, lockIsFree, next, sandbox, SOON, within } from "./support.js";

function fakeLocksup(dir, name, versionLine) {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\necho '${versionLine}'\n`);
  chmodSync(p, 0o755);
  return p;
}

const code = (c) => (e) => {
  assert.ok(e instanceof LocksupError, `${e}`);
  assert.equal(e.code, c);
  assert.ok(!e.message.includes("\n"), "one line");
  return true;
};

test("a missing binary is a clear error, by path and on PATH", (t) => {
  const sb = sandbox(t);
  assert.throws(
    () => run({ session: sb.path("s"), locksup: sb.path("nope/locksup") }, "true"),
    (e) => code("ERR_LOCKSUP_NOT_FOUND")(e) && /nope\/locksup is not an executable file/.test(e.message),
  );
  mkdirSync(sb.path("empty-bin"));
  assert.throws(
    () => run({ session: sb.path("s"), env: { ...sb.env, PATH: sb.path("empty-bin") } }, "true"),
    (e) => code("ERR_LOCKSUP_NOT_FOUND")(e) && /locksup not found on PATH.*locksup: '\/path\/to\/locksup'/.test(e.message),
  );
});

test("a binary that is too old, or not locksup, is refused", async (t) => {
  const sb = sandbox(t);
  const old = fakeLocksup(sb.dir, "old-locksup", "locksup 0.0.9");
  assert.throws(
    () => run({ session: sb.path("s"), locksup: old }, "true"),
    (e) =>
      code("ERR_LOCKSUP_TOO_OLD")(e) &&
      e.message === `${old} is locksup 0.0.9; this client needs locksup ${MIN_VERSION} or later`,
  );
  const other = fakeLocksup(sb.dir, "other", "flock from util-linux 2.38.1");
  assert.throws(() => locate(other), (e) => code("ERR_LOCKSUP_NOT_LOCKSUP")(e) && /is not locksup/.test(e.message));
  await assert.rejects(status([sb.dir], { locksup: old }), code("ERR_LOCKSUP_TOO_OLD"));
});

test("locksup is found on the PATH of the attempt's environment", async (t) => {
  const sb = sandbox(t);
  mkdirSync(sb.path("bin"));
  symlinkSync(BIN ?? locate(), sb.path("bin/locksup"));
  const env = { ...sb.env, PATH: `${sb.path("bin")}:/usr/bin:/bin` };
  assert.equal(locate(undefined, env), sb.path("bin/locksup"));
  const h = run({ session: sb.path("s.jsonl"), env, stdio: "ignore" }, "true");
  assert.equal(h.child.spawnfile, sb.path("bin/locksup"));
  assert.equal((await within(h.result, SOON, "the attempt")).outcome, "exited");
});

test("options are checked before anything runs", (t) => {
  const sb = sandbox(t);
  const base = { locksup: BIN, env: sb.env };
  assert.throws(() => run({ ...base }, "true"), /exactly one of options\.session and options\.lock/);
  assert.throws(() => run({ ...base, session: "a", lock: "b" }, "true"), /exactly one of/);
  assert.throws(() => run({ ...base, session: "a" }, ""), /command must be a non-empty string/);
  assert.throws(() => run({ ...base, session: "a" }, "echo", ["ok", 1]), /args must be an array of strings/);
  assert.throws(() => run({ ...base, session: "a", timeout: "five seconds" }, "true"), /options\.timeout: invalid duration/);
  assert.throws(() => run({ ...base, session: "a", grace: -1 }, "true"), /options\.grace: -1 is not a duration/);
  assert.throws(() => run({ ...base, session: "a", wait: "5 parsecs" }, "true"), /unknown unit 'parsecs'/);
  assert.throws(() => run({ ...base, session: "a", killSignal: "SIGNOPE" }, "true"), /options\.killSignal: unknown signal/);
});

test("durations: milliseconds or locksup strings", () => {
  assert.equal(parseDuration(250), 250);
  assert.equal(parseDuration("250ms"), 250);
  assert.equal(parseDuration("1.5"), 1500);
  assert.equal(parseDuration("5min 20s"), 320_000);
  assert.equal(parseDuration("2h"), 7_200_000);
  assert.equal(parseDuration("infinity"), Infinity);
  assert.throws(() => parseDuration("5 20"), /number without a unit/);
  assert.throws(() => parseDuration(""), /empty duration/);
  assert.throws(() => parseDuration("200 years"), /unknown unit/);
  assert.throws(() => parseDuration("36500d 1d"), /too large/);
});

test("durations reach locksup as given: numbers as milliseconds, strings as written", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt(
    { session: sb.path("s.jsonl"), timeout: 400, grace: "0.2", wait: "infinity", watchdog: 0 },
    "sleep",
    ["30"],
  );
  const argv = h.child.spawnargs;
  const arg = (flag) => argv[argv.indexOf(flag) + 1];
  assert.deepEqual([arg("--timeout"), arg("--grace"), arg("--wait"), arg("--watchdog")], ["400ms", "0.2", "infinity", "0ms"]);
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "timeout");
  assert.ok(r.heldMs >= 350 && r.heldMs < 5000, `heldMs ${r.heldMs}`);
});

test("status(): the held lock with its attempt, then free; errors are LocksupErrors", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt(
    { session: sb.path("s.jsonl"), timeout: "1m", attemptId: "st-1", sessionKey: "key-1" },
    "sleep",
    ["30"],
  );
  const started = await next(h, "started");
  const opts = { locksup: BIN, env: sb.env };
  let doc = await status(sb.dir, opts);
  assert.equal(doc.v, 1);
  assert.equal(doc.locks.length, 1);
  const [lock] = doc.locks;
  assert.equal(lock.path, h.lockFile);
  assert.equal(lock.state, "held");
  assert.equal(lock.attempt_id, "st-1");
  assert.equal(lock.session_key, "key-1");
  assert.equal(lock.pid, started.pid);
  // h.pid is the locksup started: the guardian of the supervisor.
  assert.equal(lock.metadata.guardian_pid, h.pid);
  assert.notEqual(lock.supervisor_pid, h.pid);
  assert.equal(lock.session, sb.path("s.jsonl"));
  assert.deepEqual((await status([h.lockFile], { ...opts, state: "free" })).locks, []);
  assert.equal((await status([sb.dir], { ...opts, sessionKey: "key-1" })).locks.length, 1);
  assert.equal((await status([sb.dir], { ...opts, sessionKey: "other" })).locks.length, 0);
  h.cancel();
  await within(h.result, SOON, "the attempt");
  doc = await status([h.lockFile], opts);
  assert.equal(doc.locks[0].state, "free");
  assert.equal(doc.locks[0].attempt_id, null);
  await assert.rejects(status([sb.path("missing")], opts), (e) => {
    code("ERR_LOCKSUP_STATUS")(e);
    assert.equal(e.exitCode, 1);
    assert.match(e.message, /missing/);
    return true;
  });
  await assert.rejects(status([sb.dir], { ...opts, state: "stuck" }), /unknown state 'stuck'/);
});

test("a relative session is resolved against cwd", async (t) => {
  const sb = sandbox(t);
  mkdirSync(sb.path("sub"));
  const h = sb.attempt({ session: "rel.jsonl", cwd: sb.path("sub") }, "true");
  assert.equal(h.lockFile, sb.path("sub/rel.jsonl.lock"));
  await within(h.result, SOON, "the attempt");
  assert.equal(h.events[0].lock, h.lockFile);
  assert.ok(lockIsFree(h.lockFile));
});

test("--lock instead of --session", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt({ lock: sb.path("explicit.lock"), shared: true }, "true");
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "exited");
  assert.equal(h.lockFile, sb.path("explicit.lock"));
  assert.ok(h.child.spawnargs.includes("--shared"));
  assert.ok(!h.child.spawnargs.includes("--die-with-parent"), "passed only when asked for");
});
