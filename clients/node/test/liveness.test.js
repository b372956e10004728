// Code inside an attempt: heartbeat() keeps a --watchdog attempt alive;
// extendDeadline() and setStatus() reach locksup through a `send` for
// sd_notify datagrams, or else through python3, and say clearly why when
// they cannot.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { currentAttempt, extendDeadline, heartbeat, LocksupError, setStatus, status } from "../index.js";
import { BIN, FIXTURES, lockIsFree, next, sandbox, SOON, until, within } from "./support.js";

const HEARTBEAT_WORKER = join(FIXTURES, "heartbeat-worker.mjs");
const NOTIFY_WORKER = join(FIXTURES, "notify-worker.mjs");
const DEFAULT_NOTIFY_WORKER = join(FIXTURES, "default-notify-worker.mjs");

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

test("outside an attempt, or without a way to send, the errors say why", async () => {
  await assert.rejects(heartbeat({ env: {} }), (e) => {
    assert.ok(e instanceof LocksupError);
    assert.equal(e.code, "ERR_LOCKSUP_NOT_IN_ATTEMPT");
    assert.match(e.message, /LOCKSUP_LOCK_FILE is not set/);
    return true;
  });
  assert.equal(currentAttempt({}), null);
  const noSocket = { LOCKSUP_LOCK_FILE: "/nonexistent/x.lock" };
  const noPython = { LOCKSUP_LOCK_FILE: "/nonexistent/x.lock", NOTIFY_SOCKET: "@locksup/none", PATH: "/nonexistent" };
  for (const [env, re] of [
    [noSocket, /NOTIFY_SOCKET is not set/],
    [noPython, /python3, which is not on PATH: install it or pass \{ send \}/],
  ]) {
    for (const call of [() => extendDeadline(1000, { env }), () => setStatus("x", { env })]) {
      await assert.rejects(call(), (e) => {
        assert.ok(e instanceof LocksupError);
        assert.equal(e.code, "ERR_LOCKSUP_NOTIFY_UNAVAILABLE");
        assert.match(e.message, re);
        return true;
      });
    }
  }
  const env = { LOCKSUP_LOCK_FILE: "/nonexistent/x.lock", NOTIFY_SOCKET: "@locksup/none" };
  await assert.rejects(setStatus("two\nlines", { env, send: () => {} }), /one line/);
  await assert.rejects(extendDeadline("soon", { env, send: () => {} }), /invalid duration 'soon'/);
  await assert.rejects(setStatus("x", { env, send: "python3" }), /options.send must be a function/);
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

const python = spawnSync("python3", ["--version"]).status === 0;

test("the default sender (python3) says why a datagram could not be sent", { skip: !python && "python3 not installed" }, async () => {
  const env = {
    ...process.env,
    LOCKSUP_LOCK_FILE: "/nonexistent/x.lock",
    NOTIFY_SOCKET: `@locksup-node-test-nobody-${process.pid}`,
  };
  await assert.rejects(setStatus("x", { env }), (e) => {
    assert.ok(e instanceof LocksupError);
    assert.equal(e.code, "ERR_LOCKSUP_NOTIFY_FAILED");
    assert.match(e.message, /^setStatus\(\): cannot send to NOTIFY_SOCKET @locksup-node-test-nobody-\d+: Connection refused$/);
    return true;
  });
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


/**
 * An attempt of a worker that must get its deadline extension to locksup
 * before its (short) timeout. A machine too loaded to start the worker in
 * time (the deadline's signal came before any `extended`) says nothing
 * about the client: that try is reported and made again, at most 3 times.
 * Any other failure is the test's.
 */
async function extendedInTime(t, sb, options, args) {
  for (let i = 1; ; i++) {
    const h = sb.attempt({ ...options, session: sb.path(`s${i}.jsonl`) }, process.execPath, args);
    const first = await within(
      new Promise((resolve) => {
        const on = (e) => {
          if (e.event === "extended" || e.event === "signal") {
            h.off("event", on);
            resolve(e);
          }
        };
        h.on("event", on);
      }),
      20_000,
      `the extension (or the deadline) of ${h.attemptId}`,
    );
    if (first.event === "extended" || i === 3) return h;
    t.diagnostic(`try ${i}: the deadline (${options.timeout}) passed before the worker could extend it; trying again`);
    await within(h.result, SOON, "the timed-out attempt");
  }
}

/** The lock's `locksup status --json` object once `ok(lock)`, within a bound. */
async function statusUntil(sb, lockFile, ok, what) {
  let lock;
  await until(
    async () => {
      const doc = await status(lockFile, { locksup: BIN, env: sb.env });
      lock = doc.locks.find((l) => l.path === lockFile);
      return lock !== undefined && ok(lock);
    },
    SOON,
    what,
  );
  return lock;
}

test("with a datagram sender, setStatus and extendDeadline reach locksup", { skip: !python && "python3 not installed" }, async (t) => {
  const sb = sandbox(t);
  // A 2 s timeout, a 3.5 s run: only the extension (to 6 s) lets it finish.
  const h = await extendedInTime(t, sb, { timeout: "2s", sessionKey: "notify-test" }, [NOTIFY_WORKER, "6000", "3500"]);
  const st = await next(h, "status");
  assert.equal(st.text, "step 1/2");
  // The metadata line is rewritten at most every 250 ms and no event says
  // when: poll `locksup status` for it, within a bound.
  const lock = await statusUntil(sb, h.lockFile, (l) => l.status_text !== null, "the status text");
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

test("without a sender, extendDeadline and setStatus reach locksup through python3", { skip: !python && "python3 not installed" }, async (t) => {
  const sb = sandbox(t);
  // A 1 s timeout: the worker extends it by 3 s first thing, sets its
  // status, and exits 2 s after it began extending (so 1 s before the new
  // deadline, however slow the sends): only the extension lets it live
  // past 1 s.
  const h = await extendedInTime(t, sb, { timeout: "1s", grace: "5s" }, [DEFAULT_NOTIFY_WORKER, "3000", "phase 2 of 3", "2000"]);
  const ext = await next(h, "extended");
  assert.equal(ext.by_ms, 3000);
  assert.equal((await next(h, "status")).text, "phase 2 of 3");
  const lock = await statusUntil(sb, h.lockFile, (l) => l.status_text === "phase 2 of 3", "the status text in locksup status --json");
  assert.equal(lock.state, "held");
  const r = await within(h.result, 20_000, "the attempt");
  assert.equal(r.outcome, "exited", h.stderrText);
  assert.equal(r.code, 0);
  assert.ok(r.heldMs >= 2000, `heldMs ${r.heldMs}: it lived past its 1 s timeout`);
  assert.ok(!h.events.some((e) => e.event === "signal"), "it was never signalled");
  assert.equal(h.stderrText, "", "the worker's sends all succeeded");
  assert.ok(lockIsFree(h.lockFile));
});
