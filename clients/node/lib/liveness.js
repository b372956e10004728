// For code running inside an attempt: heartbeats, deadline extensions and a
// status line, as locksup(1) LIVENESS describes them.
//
// locksup reads these from the attempt's sd_notify socket ($NOTIFY_SOCKET,
// an AF_UNIX datagram socket), and heartbeats also from a touch of the lock
// file. Node's core has no AF_UNIX datagram sockets (node:dgram is UDP only,
// node:net is stream sockets only, and a stream socket cannot connect to a
// datagram one), and this package has no dependencies, so:
// - heartbeat() touches the lock file (no process to start, every beat);
// - extendDeadline() and setStatus(), which locksup reads only from the
//   notify socket, send their datagram through a `send` when given one, and
//   else through a short-lived `python3 -c` child (a process of the attempt,
//   as locksup requires: it ignores datagrams from anyone else).

import { execFile } from "node:child_process";
import { utimes } from "node:fs/promises";
import { LocksupError } from "./errors.js";
import { parseDuration } from "./duration.js";

// Socket address and message come hex-encoded, so that no locale or
// encoding of argv can change a byte. `@name` is the abstract namespace.
const PY_SEND = `
import socket, sys
addr = bytes.fromhex(sys.argv[1])
if addr[:1] == b"@":
    addr = b"\\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    s.connect(addr)
    s.send(bytes.fromhex(sys.argv[2]))
except OSError as e:
    sys.stderr.write("%s\\n" % (e.strerror or e))
    sys.exit(1)
`;

/** Bound on the python3 child: it starts, sends one datagram and exits. */
const PY_TIMEOUT_MS = 10_000;

/**
 * The default sender: one datagram through `python3 -c`, found on the
 * PATH of `env`.
 */
function pythonSender(env, what) {
  return (socket, message) =>
    new Promise((resolve, reject) => {
      const args = ["-I", "-S", "-c", PY_SEND, Buffer.from(socket).toString("hex"), Buffer.from(message).toString("hex")];
      execFile("python3", args, { env, timeout: PY_TIMEOUT_MS, windowsHide: true }, (err, _stdout, stderr) => {
        if (!err) return resolve();
        if (err.code === "ENOENT") {
          return reject(
            new LocksupError(
              "ERR_LOCKSUP_NOTIFY_UNAVAILABLE",
              `${what} sends an sd_notify datagram through python3, which is not on PATH: install it or pass { send } (see README)`,
            ),
          );
        }
        const why = err.killed
          ? `python3 did not finish within ${PY_TIMEOUT_MS} ms`
          : String(stderr).trim().split("\n").at(-1) || err.message;
        reject(new LocksupError("ERR_LOCKSUP_NOTIFY_FAILED", `${what}: cannot send to NOTIFY_SOCKET ${socket}: ${why}`));
      });
    });
}

/**
 * The attempt this process runs in, from the environment locksup gives its
 * command; null outside an attempt.
 * @param {NodeJS.ProcessEnv} [env]
 */
export function currentAttempt(env = process.env) {
  const lockFile = env.LOCKSUP_LOCK_FILE;
  if (!lockFile) return null;
  const fd = Number.parseInt(env.LOCKSUP_LOCK_FD ?? "", 10);
  return {
    lockFile,
    lockFd: Number.isInteger(fd) ? fd : null,
    attemptId: env.LOCKSUP_ATTEMPT_ID ?? null,
    session: env.LOCKSUP_SESSION ?? null,
    deadline: env.LOCKSUP_DEADLINE ? new Date(env.LOCKSUP_DEADLINE) : null,
    notifySocket: env.NOTIFY_SOCKET || null,
  };
}

function inside(env, what) {
  const a = currentAttempt(env);
  if (!a) {
    throw new LocksupError(
      "ERR_LOCKSUP_NOT_IN_ATTEMPT",
      `${what}: not running inside a locksup attempt (LOCKSUP_LOCK_FILE is not set)`,
    );
  }
  return a;
}

async function notify(env, send, message, what) {
  const a = inside(env, what);
  if (!a.notifySocket) {
    throw new LocksupError("ERR_LOCKSUP_NOTIFY_UNAVAILABLE", `${what}: NOTIFY_SOCKET is not set in this attempt`);
  }
  if (send !== undefined && typeof send !== "function") {
    throw new TypeError(`${what}: options.send must be a function (socket, message)`);
  }
  await (send ?? pythonSender(env, what))(a.notifySocket, message);
}

/**
 * A heartbeat for `--watchdog`: `WATCHDOG=1` on the notify socket when a
 * `send` is given, else a touch of the lock file (its times set to now),
 * which locksup watches with inotify. Resolves to how it was sent.
 * @returns {Promise<"notify"|"touch">}
 */
export async function heartbeat({ env = process.env, send } = {}) {
  const a = inside(env, "heartbeat()");
  if (typeof send === "function" && a.notifySocket) {
    await send(a.notifySocket, "WATCHDOG=1");
    return "notify";
  }
  const now = new Date();
  await utimes(a.lockFile, now, now);
  return "touch";
}

/**
 * Ask for more time: the deadline becomes now + `duration` if that is
 * later (never past `--max-timeout`). `EXTEND_TIMEOUT_USEC` on the notify
 * socket, through `send` or else python3.
 * @param {number|string} duration milliseconds or a locksup duration string
 */
export async function extendDeadline(duration, { env = process.env, send } = {}) {
  const ms = parseDuration(duration, "extendDeadline()");
  if (!Number.isFinite(ms)) throw new RangeError("extendDeadline(): the extension must be finite");
  const usec = Math.round(ms * 1000);
  await notify(env, send, `EXTEND_TIMEOUT_USEC=${usec}`, "extendDeadline()");
}

/**
 * The attempt's status line, shown in the `status` event, the lock's
 * metadata and `locksup status`. `STATUS=` on the notify socket, through
 * `send` or else python3.
 * @param {string} text one line
 */
export async function setStatus(text, { env = process.env, send } = {}) {
  if (typeof text !== "string") throw new TypeError("setStatus(): text must be a string");
  if (/[\n\0]/.test(text)) throw new RangeError("setStatus(): text must be one line (no newline or NUL)");
  await notify(env, send, `STATUS=${text}`, "setStatus()");
}
