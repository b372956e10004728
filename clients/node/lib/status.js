// status(): `locksup status --json`, parsed.

import { execFile } from "node:child_process";
import { LocksupError } from "./errors.js";
import { locate } from "./locate.js";

const STATES = new Set(["free", "held", "overdue", "orphan"]);

/**
 * The lock files under `paths` (files or directories, recursively) as
 * `locksup status --json` reports them; with no paths, the configuration's
 * `[status] roots`.
 * @param {string|string[]} [paths]
 * @param {import("../index.js").StatusOptions} [options]
 * @returns {Promise<import("../index.js").StatusDocument>}
 */
export async function status(paths = [], options = {}) {
  const list = typeof paths === "string" ? [paths] : paths;
  if (!Array.isArray(list) || list.some((p) => typeof p !== "string" || p === "")) {
    throw new TypeError("status(): paths must be a path or an array of paths");
  }
  const env = options.env ?? process.env;
  const bin = locate(options.locksup, env, options.cwd ?? process.cwd());
  const argv = ["status", "--json"];
  if (options.config !== undefined) argv.push("--config", String(options.config));
  if (options.state !== undefined) {
    const states = typeof options.state === "string" ? [options.state] : options.state;
    for (const s of states) {
      if (!STATES.has(s)) throw new RangeError(`status(): unknown state '${s}' (free, held, overdue, orphan)`);
    }
    if (states.length > 0) argv.push("--state", states.join(","));
  }
  if (options.sessionKey !== undefined) argv.push("--session-key", String(options.sessionKey));
  argv.push("--", ...list);
  const { stdout, stderr, code } = await new Promise((res, rej) => {
    execFile(
      bin,
      argv,
      { env, cwd: options.cwd, encoding: "utf8", maxBuffer: 256 * 1024 * 1024, signal: options.signal },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== "number") rej(err); // not an exit status: abort, spawn error
        else res({ stdout, stderr, code: err ? err.code : 0 });
      },
    );
  });
  if (code !== 0) {
    const line = stderr.trim().split("\n").at(-1)?.replace(/^locksup: /, "") || `exit status ${code}`;
    throw new LocksupError("ERR_LOCKSUP_STATUS", `locksup status: ${line}`, { exitCode: code });
  }
  try {
    return JSON.parse(stdout);
  } catch {
    throw new LocksupError("ERR_LOCKSUP_STATUS", "locksup status: output is not JSON", { exitCode: 0 });
  }
}
