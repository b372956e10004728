// Code inside an attempt: heartbeat() keeps a --watchdog attempt alive;
// extendDeadline() and setStatus() reach locksup through a `send` for
// sd_notify datagrams, and say clearly that they need one.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { currentAttempt, extendDeadline, heartbeat, LocksupError, setStatus, status } from "../index.js";
import { BIN, FIXTURES, lockIsFree, next, sandbox, SOON, within } from "./support.js";

const HEARTBEAT_WORKER = join(FIXTURES, "heartbeat-worker.mjs");
const NOTIFY_WORKER = join(FIXTURES, "notify-worker.mjs");

test("heartbeats keep a --watchdog attempt alive past its interval", async (t) => {
  const sb = sandbox(t);
  // Runs 3.5 s, heartbeats every 200 ms, watchdog 1.5 s.
  const h = sb.attempt(
    { session: sb.path("s.jsonl"), timeout: 0, watchdog: "1500ms" },
    process.execPath,
    [HEARTBEAT_WORKER, "beat", "3500", "200"],
  );
  const r = await within(h.result, 20_000, "the attempt");
  assert.equal(r.outcome, "exited", h.stderrText);
  assert.equal(r.code, 0);
  assert.ok(r.heldMs >= 3500, `heldMs ${r.heldMs}`);
  assert.equal(h.stderrText.trim(), "touch");
  const beats = h.events.filter((e) => e.event === "heartbeat");
  assert.ok(beats.length >= 2, `${beats.length} heartbeat events`);
  assert.ok(beats.every((e) => e.source === "touch"));
  assert.ok(!h.events.some((e) => e.event === "signal"));
  assert.ok(lockIsFree(h.lockFile));
});

test("the same attempt without heartbeats is ended by the watchdog", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt(
    { session: sb.path("s.jsonl"), timeout: 0, watchdog: "1500ms" },
    process.execPath,
    [HEARTBEAT_WORKER, "silent", "3500", "200"],
  );
  const r = await within(h.result, 20_000, "the attempt");
  assert.equal(r.outcome, "watchdog");
  assert.equal(r.code, 124);
  assert.ok(r.heldMs >= 1400 && r.heldMs < 3500, `heldMs ${r.heldMs}`);
  assert.ok(!h.events.some((e) => e.event === "heartbeat"));
});

test("outside an attempt, and without a datagram sender, the errors say why", async () => {
  await assert.rejects(heartbeat({ env: {} }), (e) => {
    assert.ok(e instanceof LocksupError);
    assert.equal(e.code, "ERR_LOCKSUP_NOT_IN_ATTEMPT");
    assert.match(e.message, /LOCKSUP_LOCK_FILE is not set/);
    return true;
  });
  assert.equal(currentAttempt({}), null);
  const env = { LOCKSUP_LOCK_FILE: "/nonexistent/x.lock", NOTIFY_SOCKET: "@locksup/none" };
  for (const call of [() => extendDeadline(1000, { env }), () => setStatus("x", { env })]) {
    await assert.rejects(call(), (e) => {
      assert.equal(e.code, "ERR_LOCKSUP_NOTIFY_UNAVAILABLE");
      assert.match(e.message, /Node cannot send without a module: pass \{ send \}/);
      return true;
    });
  }
  await assert.rejects(setStatus("two\nlines", { env, send: () => {} }), /one line/);
  await assert.rejects(extendDeadline("soon", { env, send: () => {} }), /invalid duration 'soon'/);
  // What would be sent, through a recording sender.
  const sent = [];
  const send = (socket, message) => void sent.push([socket, message]);
  await extendDeadline("2.5s", { env, send });
  await setStatus("indexing 3/10", { env, send });
  assert.equal(await heartbeat({ env, send }), "notify");
  assert.deepEqual(sent, [
    ["@locksup/none", "EXTEND_TIMEOUT_USEC=2500000"],
    ["@locksup/none", "STATUS=indexing 3/10"],
    ["@locksup/none", "WATCHDOG=1"],
  ]);
});

test("inside an attempt: currentAttempt() describes it", async (t) => {
  const sb = sandbox(t);
  const h = sb.attempt(
    { session: sb.path("s.jsonl"), timeout: "1m", attemptId: "cur-1", stdio: ["ignore", "pipe", "pipe"] },
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import { currentAttempt } from ${JSON.stringify(join(FIXTURES, "../../index.js"))};
       console.log(JSON.stringify(currentAttempt()));`,
    ],
  );
  let out = "";
  h.stdout.setEncoding("utf8").on("data", (d) => (out += d));
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "exited", h.stderrText);
  const a = JSON.parse(out);
  assert.equal(a.lockFile, h.lockFile);
  assert.equal(a.attemptId, "cur-1");
  assert.equal(a.session, sb.path("s.jsonl"));
  assert.ok(Number.isInteger(a.lockFd));
  assert.match(a.notifySocket, /^@/);
  const left = Date.parse(a.deadline) - Date.now();
  assert.ok(left > 30_000 && left <= 60_000, `deadline in ${left}ms`);
});

const python = spawnSync("python3", ["--version"]).status === 0;

test("with a datagram sender, setStatus and extendDeadline reach locksup", { skip: !python && "python3 not installed" }, async (t) => {
  const sb = sandbox(t);
  // A 2 s timeout, a 3.5 s run: only the extension (to 6 s) lets it finish.
  const h = sb.attempt(
    { session: sb.path("s.jsonl"), timeout: "2s", sessionKey: "notify-test" },
    process.execPath,
    [NOTIFY_WORKER, "6000", "3500"],
  );
  const st = await next(h, "status");
  assert.equal(st.text, "step 1/2");
  // The metadata line is rewritten at most every 250 ms and no event says
  // when: poll `locksup status` for it, within a bound.
  let lock;
  const until = Date.now() + SOON;
  do {
    const doc = await status(sb.dir, { locksup: BIN, env: sb.env });
    lock = doc.locks.find((l) => l.path === h.lockFile);
    if (lock?.status_text) break;
    await new Promise((r) => setTimeout(r, 50));
  } while (Date.now() < until);
  assert.equal(lock.status_text, "step 1/2");
  assert.equal(lock.session_key, "notify-test");
  const ext = await next(h, "extended");
  assert.equal(ext.by_ms, 6000);
  const r = await within(h.result, 20_000, "the attempt");
  assert.equal(r.outcome, "exited", h.stderrText);
  assert.equal(r.code, 0);
  assert.ok(r.heldMs >= 3500, `heldMs ${r.heldMs}`);
  assert.equal(h.stderrText.trim(), "notify");
  assert.ok(h.events.some((e) => e.event === "heartbeat" && e.source === "notify"));
});
