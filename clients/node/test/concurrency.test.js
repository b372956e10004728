// 50 concurrent attempts on one session, each appending records to its
// JSONL file in pieces (half a line, a pause, the other half): with the
// lock, every line parses and each attempt's records form one block.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { lockIsFree, sandbox, within } from "./support.js";

const ATTEMPTS = 50;
const RECORDS = 3;

// Each record is written by two appends 10 ms apart: without mutual
// exclusion, the halves of concurrent attempts would interleave.
const WRITER = `
for seq in $(seq 0 ${RECORDS - 1}); do
  printf '{"attempt":"%s","seq":%d,' "$1" "$seq" >> "$LOCKSUP_SESSION"
  sleep 0.01
  printf '"pid":%d}\\n' "$$" >> "$LOCKSUP_SESSION"
done`;

/** Every line parses; each attempt's records are contiguous and in order. */
function checkSession(text) {
  const lines = text.split("\n");
  assert.equal(lines.pop(), "", "the file ends with a newline");
  const blocks = [];
  for (const [i, line] of lines.entries()) {
    let r;
    try {
      r = JSON.parse(line);
    } catch {
      assert.fail(`line ${i + 1} does not parse: ${line}`);
    }
    const last = blocks.at(-1);
    if (r.seq === 0) {
      assert.ok(!last || last.seq === RECORDS - 1, `block of ${last?.attempt} cut by ${r.attempt}`);
      blocks.push({ attempt: r.attempt, seq: 0, pid: r.pid });
    } else {
      assert.equal(r.attempt, last.attempt, `line ${i + 1}: ${r.attempt} interleaved with ${last.attempt}`);
      assert.equal(r.seq, last.seq + 1, `line ${i + 1}: out of order`);
      assert.equal(r.pid, last.pid);
      last.seq = r.seq;
    }
  }
  return blocks.map((b) => b.attempt);
}

test(`${ATTEMPTS} concurrent attempts on one session never interleave`, async (t) => {
  const sb = sandbox(t);
  const session = sb.path("session.jsonl");
  const handles = Array.from({ length: ATTEMPTS }, (_, i) =>
    sb.attempt(
      { session, timeout: "60s", wait: "120s", attemptId: `c-${i}` },
      "sh",
      ["-c", WRITER, "writer", `c-${i}`],
    ),
  );
  const results = await within(Promise.all(handles.map((h) => h.result)), 120_000, "all attempts");
  for (const [i, r] of results.entries()) {
    assert.equal(r.outcome, "exited", `attempt ${i}: ${handles[i].stderrText}`);
    assert.equal(r.code, 0);
  }
  const order = checkSession(readFileSync(session, "utf8"));
  assert.equal(order.length, ATTEMPTS);
  assert.deepEqual([...order].sort(), handles.map((h) => h.attemptId).sort());
  // They did contend: all but the first waited for the lock.
  assert.ok(results.filter((r) => r.waitedMs > 5).length >= ATTEMPTS / 2, "attempts waited for each other");
  for (const h of handles) {
    const names = h.events.map((e) => e.event).filter((n) => n !== "waiting" && n !== "queued");
    assert.deepEqual(names, ["acquired", "started", "exited", "released", "end"], h.attemptId);
  }
  assert.ok(lockIsFree(sb.path("session.jsonl.lock")));
});

test("the block check catches interleaved writers (no lock)", async (t) => {
  const sb = sandbox(t);
  const session = sb.path("unlocked.jsonl");
  const procs = Array.from({ length: 10 }, (_, i) =>
    sb.spawn("sh", ["-c", WRITER, "writer", `u-${i}`], { env: { ...sb.env, LOCKSUP_SESSION: session } }),
  );
  await within(
    Promise.all(procs.map((p) => new Promise((r) => p.once("exit", r)))),
    30_000,
    "the unlocked writers",
  );
  assert.throws(() => checkSession(readFileSync(session, "utf8")), assert.AssertionError);
});
