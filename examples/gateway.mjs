#!/usr/bin/env node
// A tiny agent gateway that runs every attempt through `locksup run`.
//
// Gateway mode (the default) starts N attempts on one session at once,
// each as `locksup run --session FILE ... -- node gateway.mjs --worker`,
// and maps each exit status to an outcome:
//   0 -> done, 124/137 -> timed out, 75 -> session busy, anything else -> failed.
// It prints one JSON summary line on stdout.
//
// Worker mode (`--worker`) is one attempt: it holds the session's lock
// (locksup took it before starting us), appends its records to the JSONL
// session file, and proves it is alive by touching the lock file
// ($LOCKSUP_LOCK_FILE), which locksup counts as a heartbeat under
// --watchdog. Standard library only.
//
//   node examples/gateway.mjs --session /tmp/s.jsonl --attempts 8 --wait 30s
import { spawn } from "node:child_process";
import { appendFileSync, utimesSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

function options(argv) {
  const o = {
    session: null, attempts: 4, steps: 5, stepMs: 20, timeout: "10s",
    wait: "30s", watchdog: "2s", locksup: process.env.LOCKSUP || "locksup",
    worker: false, id: "0",
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
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.session) throw new Error("--session FILE is required");
  return o;
}

async function worker(o) {
  const lock = process.env.LOCKSUP_LOCK_FILE;
  const record = (r) => appendFileSync(o.session, JSON.stringify({ attempt: o.id, ...r }) + "\n");
  record({ seq: 0, phase: "start", pid: process.pid });
  for (let step = 1; step <= o.steps; step++) {
    await sleep(o.stepMs); // the model call
    const now = new Date();
    utimesSync(lock, now, now); // heartbeat: locksup watches the lock file's times
    record({ seq: step, phase: "step" });
  }
  record({ seq: o.steps + 1, phase: "end" });
}

function outcome(code) {
  if (code === 0) return "done";
  if (code === 124 || code === 137) return "timed_out";
  if (code === 75) return "busy";
  return "failed";
}

function attempt(o, id) {
  const self = fileURLToPath(import.meta.url);
  const args = [
    "run", "--session", o.session, "--timeout", o.timeout, "--wait", o.wait,
    "--watchdog", o.watchdog, "--attempt-id", `gw-${id}`, "--",
    process.execPath, self, "--worker", "--session", o.session, "--id", String(id),
    "--steps", String(o.steps), "--step-ms", String(o.stepMs),
  ];
  return new Promise((resolve) => {
    const child = spawn(o.locksup, args, { stdio: ["ignore", "inherit", "inherit"] });
    child.on("error", () => resolve({ id, code: 127, outcome: "failed" }));
    child.on("exit", (code, signal) => {
      const c = code ?? 128;
      resolve({ id, code: c, signal, outcome: outcome(c) });
    });
  });
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
