// Shared by the tests: the binary under test, an isolated sandbox per test
// (temp dir, empty config), attempts that are ended by PID when a test
// ends, and kernel-side lock probes through flock(1).

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { run } from "../index.js";

export const PKG = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const FIXTURES = join(PKG, "test", "fixtures");

/** The binary under test: $LOCKSUP_BIN, else the workspace's debug build, else locksup on PATH. */
export const BIN = (() => {
  if (process.env.LOCKSUP_BIN) return resolve(process.env.LOCKSUP_BIN);
  const built = resolve(PKG, "../../target/debug/locksup");
  return existsSync(built) ? built : undefined;
})();

/** A generous bound for anything that should take milliseconds. */
export const SOON = 10_000;

/** Resolve `p`, or fail the test after `ms` saying what was awaited. */
export async function within(p, ms, what) {
  let timer;
  const t = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** The next event `name` of an attempt (or one already received), bounded in time. */
export function next(h, name, ms = SOON) {
  const seen = h.events.find((e) => e.event === name);
  if (seen) return Promise.resolve(seen);
  return within(
    new Promise((res) => h.once(name, res)),
    ms,
    `the '${name}' event of ${h.attemptId}`,
  );
}

/** Until the attempt's stderr (collected by `attempt()`) matches `re`, bounded in time. */
export function stderrMatches(h, re, ms = SOON) {
  if (re.test(h.stderrText)) return Promise.resolve();
  return within(
    new Promise((res) => {
      const check = () => {
        if (re.test(h.stderrText)) {
          h.stderr.off("data", check);
          res();
        }
      };
      h.stderr.on("data", check);
    }),
    ms,
    `${re} on the stderr of ${h.attemptId}`,
  );
}

/** Poll `check` every 50 ms until it is true, or fail after `ms` saying what was awaited. */
export async function until(check, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms}ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A process's /proc/PID/stat fields after the command: [state, ppid, pgrp, ...]; null when gone. */
function stat(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    return text.slice(text.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** Whether `pid` runs (a zombie, ended but not reaped yet, does not). */
export function alive(pid) {
  const f = stat(pid);
  return f !== null && f[0] !== "Z" && f[0] !== "X";
}

/** The parent of a running process; null when it is gone. */
export function parentOf(pid) {
  const f = stat(pid);
  return f === null ? null : Number(f[1]);
}

/** The live processes of process group `pgid`. */
export function groupMembers(pgid) {
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      const f = stat(d);
      return f !== null && f[0] !== "Z" && f[0] !== "X" && Number(f[2]) === pgid;
    })
    .map(Number);
}

/** Whether the lock is free, as the kernel sees it: `flock -n` gets it. */
export function lockIsFree(lockFile) {
  const r = spawnSync("flock", ["-n", lockFile, "true"]);
  if (r.error) throw r.error;
  if (r.status !== 0 && r.status !== 1) throw new Error(`flock -n ${lockFile}: status ${r.status}`);
  return r.status === 0;
}

/**
 * A sandbox: a temp dir with an empty config (so no test sees the user's or
 * the system's), and `attempt()` which runs through the binary under test
 * and ends what it started, by PID, when the test ends.
 */
export function sandbox(t) {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), "locksup-node-test-")));
  const config = join(dir, "empty-config.toml");
  writeFileSync(config, "");
  const env = { ...process.env, LOCKSUP_CONFIG: config, XDG_CONFIG_HOME: dir, HOME: dir };
  const handles = [];
  const others = [];
  t.after(async () => {
    for (const h of handles) {
      if (h.settled) continue;
      h.cancel();
      h.cancel(); // a second cancel sends the final signal at once
      try {
        await within(h.result, SOON, "a cancelled attempt");
      } catch {
        const started = h.events.find((e) => e.event === "started");
        for (const target of [h.pid, started && -started.pgid]) {
          try {
            if (target) process.kill(target, "SIGKILL");
          } catch {}
        }
      }
    }
    for (const p of others) {
      try {
        if (p.exitCode === null && p.signalCode === null) process.kill(p.pid, "SIGKILL");
      } catch {}
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    env,
    config,
    path: (name) => join(dir, name),
    /** run() with the binary under test and this sandbox's environment. */
    attempt(options, command, args = []) {
      const h = run(
        { locksup: BIN, env, cwd: dir, stdio: ["ignore", "ignore", "pipe"], ...options },
        command,
        args,
      );
      h.stderrText = "";
      h.stderr?.setEncoding("utf8").on("data", (d) => (h.stderrText += d));
      h.settled = false;
      h.result.then(() => (h.settled = true));
      handles.push(h);
      return h;
    },
    /** spawn() a helper process that is killed by PID when the test ends. */
    spawn(command, args, options = {}) {
      const p = spawn(command, args, { env, cwd: dir, stdio: "ignore", ...options });
      others.push(p);
      return p;
    },
  };
}
