// Finding the locksup binary and checking that it is one this client can
// drive: on PATH (the PATH of the environment the attempt gets, as
// child_process.spawn looks commands up) or where the `locksup` option says.

import { accessSync, constants, statSync } from "node:fs";
import { delimiter, isAbsolute, join, resolve } from "node:path";
import { execFileSync } from "node:child_process";
import { LocksupError } from "./errors.js";

/** The oldest locksup this client works with (`--events`, `status --json`, `--watchdog`). */
export const MIN_VERSION = "0.1.0";

/** @type {Map<string, string>} resolved path -> version, checked once per process */
const checked = new Map();

function executable(p) {
  try {
    accessSync(p, constants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function compare(a, b) {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    if (pa[i] !== pb[i]) return pa[i] < pb[i] ? -1 : 1;
  }
  return 0;
}

/**
 * The path of a usable locksup binary; throws a LocksupError
 * (`ERR_LOCKSUP_NOT_FOUND`, `ERR_LOCKSUP_NOT_LOCKSUP`, `ERR_LOCKSUP_TOO_OLD`)
 * with a one-line message otherwise. The version check runs
 * `locksup --version` once per path and process (synchronously).
 * @param {string} [explicit] the `locksup` option
 * @param {NodeJS.ProcessEnv} [env] whose PATH to search
 * @param {string} [cwd] to resolve a relative `explicit` path
 */
export function locate(explicit, env = process.env, cwd = process.cwd()) {
  let path;
  if (explicit !== undefined && explicit !== null) {
    if (typeof explicit !== "string" || explicit === "") {
      throw new TypeError("options.locksup must be a non-empty string (the path of the locksup binary)");
    }
    if (explicit.includes("/")) {
      path = isAbsolute(explicit) ? explicit : resolve(cwd, explicit);
      if (!executable(path)) {
        throw new LocksupError("ERR_LOCKSUP_NOT_FOUND", `locksup not found: ${path} is not an executable file`, { path });
      }
    }
  }
  if (path === undefined) {
    const name = explicit ?? "locksup";
    const dirs = (env.PATH ?? "").split(delimiter).filter(Boolean);
    path = dirs.map((d) => resolve(cwd, join(d, name))).find(executable);
    if (path === undefined) {
      throw new LocksupError(
        "ERR_LOCKSUP_NOT_FOUND",
        `${name} not found on PATH; install locksup or pass { locksup: '/path/to/locksup' }`,
        { path: name },
      );
    }
  }
  if (!checked.has(path)) checked.set(path, checkVersion(path));
  return path;
}

function checkVersion(path) {
  let out;
  try {
    out = execFileSync(path, ["--version"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 10_000,
    });
  } catch (e) {
    const why = e.code === "ETIMEDOUT" ? "timed out" : (e.stderr?.toString().trim().split("\n")[0] || e.message);
    throw new LocksupError("ERR_LOCKSUP_NOT_LOCKSUP", `${path} --version failed: ${why}`, { path });
  }
  const m = /^locksup (\d+\.\d+\.\d+)\b/.exec(out.trim());
  if (!m) {
    const first = out.trim().split("\n")[0].slice(0, 80);
    throw new LocksupError("ERR_LOCKSUP_NOT_LOCKSUP", `${path} is not locksup (--version printed "${first}")`, { path });
  }
  if (compare(m[1], MIN_VERSION) < 0) {
    throw new LocksupError(
      "ERR_LOCKSUP_TOO_OLD",
      `${path} is locksup ${m[1]}; this client needs locksup ${MIN_VERSION} or later`,
      { path, version: m[1] },
    );
  }
  return m[1];
}

/** The version of a binary `locate` has checked. */
export function checkedVersion(path) {
  return checked.get(path);
}
