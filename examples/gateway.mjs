#!/usr/bin/env node
// A tiny agent gateway that runs every attempt through locksup, with the
// Node client in clients/node (`import { run, heartbeat } from "locksup"`
// once installed from npm; here by relative path, so no install is needed).
//
// Gateway mode (the default) starts N attempts on one session at once,
// each running `node gateway.mjs --worker`, and sorts their typed results:
//   exited with 0 -> done; timeout/watchdog -> timed out;
//   busy/wait-expired -> session busy; anything else -> failed.
// It prints one JSON summary line on stdout.
//
// Worker mode (`--worker`) is one attempt: it holds the session's lock
// (locksup took it before starting us), appends its records to the JSONL
// session file, and proves it is alive with heartbeat(), which touches the
// lock file ($LOCKSUP_LOCK_FILE); locksup counts that under --watchdog.
// First it repairs what a killed predecessor may have left: when
// $LOCKSUP_PREVIOUS_OUTCOME says the previous holder did not end by itself,
// a torn last line (no newline at the end) is cut off and kept in
// SESSION.torn. Every record carries $LOCKSUP_FENCE, so a reader can tell
// the writers apart and reject a stale one. (`--tear` makes a worker write
// half a record and hang, to see the repair.)
//
//   node examples/gateway.mjs --session /tmp/s.jsonl --attempts 8 --wait 30s
//
// The locksup binary: --locksup PATH, else $LOCKSUP, else locksup on PATH.
import { appendFileSync, closeSync, existsSync, openSync, readSync, fstatSync, ftruncateSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { heartbeat, run } from "../clients/node/index.js";

function options(argv) {
  const o = {
    session: null, attempts: 4, steps: 5, stepMs: 20, timeout: "10s",
    wait: "30s", watchdog: "2s", locksup: process.env.LOCKSUP || undefined,
    worker: false, id: "0", tear: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => argv[++i];
    if (a === "--session") o.session = next();
    else if (a === "--attempts") o.attempts = Number(next());
    else if (a === "--steps") o.steps = Number(next());
    else if (a === "--step-ms") o.stepMs = Number(next());
    else if (a === "--timeout") o.timeout = next();
    else if (a === "--wait") o.wait = next();
    else if (a === "--watchdog") o.watchdog = next();
    else if (a === "--locksup") o.locksup = next();
    else if (a === "--worker") o.worker = true;
    else if (a === "--id") o.id = next();
    else if (a === "--tear") o.tear = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.session) throw new Error("--session FILE is required");
  return o;
}

// Endings after which the last record may be half-written.
const CLEAN = new Set(["exited", "none", "busy", "wait-expired", "not-found", "cannot-execute"]);

// Cut a torn last line off the session file, keeping it in SESSION.torn.
// Returns how many bytes were cut.
function repair(session) {
  if (!existsSync(session)) return 0;
  const fd = openSync(session, "r+");
  try {
    const size = fstatSync(fd).size;
    const chunk = Buffer.alloc(Math.min(size, 1 << 20));
    readSync(fd, chunk, 0, chunk.length, size - chunk.length);
    if (chunk.length === 0 || chunk[chunk.length - 1] === 0x0a) return 0;
    const nl = chunk.lastIndexOf(0x0a);
    const keep = size - chunk.length + nl + 1;
    appendFileSync(`${session}.torn`, chunk.subarray(nl + 1));
    ftruncateSync(fd, keep);
    return size - keep;
  } finally {
    closeSync(fd);
  }
}

async function worker(o) {
  const fence = Number(process.env.LOCKSUP_FENCE);
  const record = (r) =>
    appendFileSync(o.session, JSON.stringify({ attempt: o.id, fence, ...r }) + "\n");
  const previous = process.env.LOCKSUP_PREVIOUS_OUTCOME ?? "none";
  if (!CLEAN.has(previous)) {
    const cut = repair(o.session);
    if (cut > 0) {
      record({ phase: "repair", previous, previous_attempt: process.env.LOCKSUP_PREVIOUS_ATTEMPT_ID, torn_bytes: cut });
    }
  }
  record({ seq: 0, phase: "start", pid: process.pid });
  if (o.tear) {
    // Killed mid-write: half a record, no newline, then nothing.
    appendFileSync(o.session, `{"attempt":"${o.id}","seq":1,"pha`);
    await sleep(1e9);
  }
  for (let step = 1; step <= o.steps; step++) {
    await sleep(o.stepMs); // the model call
    await heartbeat(); // touches $LOCKSUP_LOCK_FILE: locksup watches its times
    record({ seq: step, phase: "step" });
  }
  record({ seq: o.steps + 1, phase: "end" });
}

const KIND = {
  timeout: "timed_out", watchdog: "timed_out", busy: "busy", "wait-expired": "busy",
};

async function attempt(o, id) {
  const self = fileURLToPath(import.meta.url);
  const a = run(
    {
      session: o.session, timeout: o.timeout, wait: o.wait, watchdog: o.watchdog,
      attemptId: `gw-${id}`, locksup: o.locksup, stdio: ["ignore", "inherit", "inherit"],
      // If this gateway crashes, its sessions are freed within the grace
      // period instead of at each attempt's deadline.
      dieWithParent: true,
    },
    process.execPath,
    [self, "--worker", "--session", o.session, "--id", String(id),
      "--steps", String(o.steps), "--step-ms", String(o.stepMs), ...(o.tear ? ["--tear"] : [])],
  );
  const r = await a.result;
  const outcome = r.outcome === "exited" && r.code === 0 ? "done" : (KIND[r.outcome] ?? "failed");
  return { id, code: r.code, signal: r.signal, result: r.outcome, outcome, waited_ms: r.waitedMs, held_ms: r.heldMs };
}

async function gateway(o) {
  const results = await Promise.all(
    Array.from({ length: o.attempts }, (_, i) => attempt(o, i + 1)),
  );
  const summary = { done: 0, timed_out: 0, busy: 0, failed: 0, results };
  for (const r of results) summary[r.outcome]++;
  console.log(JSON.stringify(summary));
}

const o = options(process.argv.slice(2));
await (o.worker ? worker(o) : gateway(o));
