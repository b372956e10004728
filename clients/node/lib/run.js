// run(): one attempt under `locksup run`, its lifecycle events and its
// typed result.
//
// The events come from `--events PATH` with PATH a fresh file in a private
// temporary directory, followed as it grows (inotify through fs.watch, and a
// last read once locksup has exited), never from stderr text. Not a pipe on
// fd 3: Node gives a child's extra stdio "pipe" as a socketpair, and locksup
// opens its --events path with open(2), which cannot open a socket through
// /dev/fd/N (ENXIO). A file opened by locksup itself is also close-on-exec,
// so the command never inherits it.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { closeSync, mkdtempSync, openSync, read, rmSync, watch, writeFileSync } from "node:fs";
import { constants as osConstants, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { durationArg } from "./duration.js";
import { locate } from "./locate.js";

/** Signals that make a supervisor cancel its attempt (locksup(1) SIGNALS). */
const CANCEL_SIGNALS = new Set(["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"]);

/** A fresh attempt id in locksup's own style: hex milliseconds, random tag. */
function newAttemptId() {
  return `${Date.now().toString(16)}-${randomBytes(4).toString("hex")}`;
}

function signalArg(value, what) {
  if (typeof value === "number") {
    if (Number.isInteger(value) && Object.values(osConstants.signals).includes(value)) return String(value);
    throw new RangeError(`${what}: ${value} is not a signal number`);
  }
  if (typeof value === "string") {
    const upper = value.trim().toUpperCase();
    const full = upper.startsWith("SIG") ? upper : `SIG${upper}`;
    if (full in osConstants.signals) return full;
  }
  throw new RangeError(`${what}: unknown signal ${JSON.stringify(value)} (e.g. 'SIGTERM', 'INT', 15)`);
}

function stringOption(options, key) {
  const v = options[key];
  if (v !== undefined && (typeof v !== "string" || v === "")) {
    throw new TypeError(`options.${key} must be a non-empty string`);
  }
  return v;
}

/**
 * The command line for `locksup run`.
 * @returns {{ argv: string[], lockFile: string }}
 */
function buildArgs(options, attemptId, eventsPath, command, args) {
  const session = stringOption(options, "session");
  const lock = stringOption(options, "lock");
  if ((session === undefined) === (lock === undefined)) {
    throw new TypeError("run(): give exactly one of options.session and options.lock");
  }
  if (typeof command !== "string" || command === "") {
    throw new TypeError("run(): command must be a non-empty string");
  }
  if (!Array.isArray(args) || args.some((a) => typeof a !== "string")) {
    throw new TypeError("run(): args must be an array of strings");
  }
  const cwd = options.cwd === undefined ? process.cwd() : resolve(String(options.cwd));
  const argv = ["run"];
  let lockFile;
  if (session !== undefined) {
    argv.push("--session", session);
    lockFile = `${resolve(cwd, session)}.lock`;
  } else {
    argv.push("--lock", lock);
    lockFile = resolve(cwd, lock);
  }
  for (const [key, flag] of [
    ["timeout", "--timeout"],
    ["grace", "--grace"],
    ["wait", "--wait"],
    ["watchdog", "--watchdog"],
    ["maxTimeout", "--max-timeout"],
    ["etcdTtl", "--etcd-ttl"],
  ]) {
    if (options[key] !== undefined) argv.push(flag, durationArg(options[key], `options.${key}`));
  }
  if (options.killSignal !== undefined) argv.push("--signal", signalArg(options.killSignal, "options.killSignal"));
  if (options.finalSignal !== undefined) {
    argv.push("--final-signal", signalArg(options.finalSignal, "options.finalSignal"));
  }
  if (options.shared) argv.push("--shared");
  for (const [key, flag, allowed] of [
    ["order", "--order", ["fifo", "any"]],
    ["backend", "--backend", ["flock", "etcd"]],
  ]) {
    const v = options[key];
    if (v === undefined) continue;
    if (!allowed.includes(v)) throw new RangeError(`options.${key} must be one of ${allowed.join(", ")}`);
    argv.push(flag, v);
  }
  if (options.etcdEndpoints !== undefined) {
    const e = options.etcdEndpoints;
    const list = Array.isArray(e) ? e : [e];
    if (list.length === 0 || list.some((x) => typeof x !== "string" || x === "" || x.includes(","))) {
      throw new TypeError("options.etcdEndpoints must be a URL or a non-empty array of URLs");
    }
    argv.push("--etcd-endpoints", list.join(","));
  }
  if (options.etcdKey !== undefined) argv.push("--etcd-key", stringOption(options, "etcdKey"));
  if (options.sessionKey !== undefined) argv.push("--session-key", stringOption(options, "sessionKey"));
  if (options.config !== undefined) argv.push("--config", stringOption(options, "config"));
  // A flag of newer binaries: passed only when asked for.
  if (options.dieWithParent) argv.push("--die-with-parent");
  if (options.verbose) argv.push("--verbose");
  argv.push("--attempt-id", attemptId, "--events", eventsPath, "--", command, ...args);
  return { argv, lockFile };
}

/**
 * The outcomes of the result (index.d.ts `Outcome`): every name locksup's
 * `end` event sends (`Outcome::as_str` in src/attempt/state.rs), and
 * `lease-lost`, which a distributed lock backend's `end` sends. A name
 * outside this list (from a newer binary) is not passed through: the
 * result then comes from the other events, as without an `end`.
 */
export const OUTCOMES = Object.freeze([
  "exited",
  "killed",
  "timeout",
  "watchdog",
  "ready-timeout",
  "lease-lost",
  "cancelled",
  "busy",
  "wait-expired",
  "not-found",
  "cannot-execute",
  "failed",
]);
const KNOWN = new Set(OUTCOMES);

/** The outcome a `signal` event's reason leads to (src/attempt/state.rs `State::end`). */
const BY_REASON = {
  timeout: "timeout",
  "ready-timeout": "ready-timeout",
  watchdog: "watchdog",
  "lease-lost": "lease-lost",
  "supervisor-signal": "cancelled",
  "guardian-died": "cancelled",
  "parent-died": "cancelled",
  "lock-removed": "cancelled",
};

/**
 * The outcome without an `end` event (locksup was SIGKILLed, or could not
 * write it), or with one this client does not know: from the other events
 * first, the exit status second.
 */
function fallbackOutcome(find, exit, cancelRequested, events) {
  const { code, signal: ownSignal } = exit;
  const conflict = find("conflict");
  const exited = find("exited");
  const escalation = events.find((e) => e.event === "signal" && e.reason !== "cleanup");
  if (conflict) {
    return conflict.reason === "busy" ? "busy" : conflict.reason === "wait-expired" ? "wait-expired" : "failed";
  }
  if (escalation) return BY_REASON[escalation.reason] ?? "failed";
  // locksup itself died of a signal (before it could handle it, or KILL).
  if (ownSignal) return cancelRequested ? "cancelled" : "killed";
  if (exited) return exited.signal ? "killed" : "exited";
  if (!find("started") && code === 127) return "not-found";
  if (!find("started") && code === 126) return "cannot-execute";
  // A cancel while waiting for the lock exits 128+N.
  if (!find("acquired") && code > 128 && code < 128 + 65) return "cancelled";
  return "failed";
}

/**
 * The typed result of an attempt: the outcome from locksup's own last
 * event, `end`, when it came with a known outcome; else from the other
 * events and the exit status (see fallbackOutcome).
 */
export function resultOf(events, exit, cancelRequested, error) {
  const find = (name) => events.find((e) => e.event === name);
  const end = events.findLast((e) => e.event === "end");
  const acquired = find("acquired");
  const exited = find("exited");
  const conflict = find("conflict");
  const { code, signal: ownSignal } = exit;

  let outcome;
  if (error) outcome = "failed";
  else if (end && KNOWN.has(end.outcome)) outcome = end.outcome;
  else outcome = fallbackOutcome(find, exit, cancelRequested, events);

  let waitedMs = null;
  if (acquired && typeof acquired.wait_ms === "number") waitedMs = acquired.wait_ms;
  else if (conflict && conflict.reason === "busy") waitedMs = 0;
  else {
    const waiting = find("waiting");
    const last = conflict ?? events.at(-1);
    if (waiting && last) waitedMs = Math.max(0, Date.parse(last.ts) - Date.parse(waiting.ts));
  }

  // The exit status as the process ended; the `end` event's when the
  // process status is unknown (never for a process that exited).
  let exitCode = code ?? null;
  if (exitCode === null && !ownSignal && Number.isInteger(end?.exit_code)) exitCode = end.exit_code;

  const previous = acquired?.previous;
  const isFence = (v) => (typeof v === "number" && Number.isFinite(v)) || (typeof v === "string" && v !== "");
  return {
    outcome,
    code: exitCode,
    signal: exited?.signal ?? ownSignal ?? null,
    waitedMs,
    heldMs: typeof exited?.held_ms === "number" ? exited.held_ms : null,
    fence: isFence(acquired?.fence) ? acquired.fence : null,
    previousOutcome:
      previous && typeof previous === "object" && typeof previous.outcome === "string" ? previous.outcome : null,
    message: typeof end?.error === "string" ? end.error : null,
    error: error ?? null,
  };
}

/** One attempt under `locksup run`. Create it with {@link run}. */
export class Attempt extends EventEmitter {
  #child;
  #events = [];
  #waiters = [];
  #finished = false;
  #exited = false;
  #cancelRequested = false;
  #eventsPath;
  #dir;
  #fd;
  #offset = 0;
  #partial = Buffer.alloc(0);
  #reading = null;
  #again = false;
  #watcher = null;
  #abort = null;
  #result;

  /** @internal */
  constructor({ bin, argv, spawnOptions, attemptId, lockFile, dir, eventsPath, signal }) {
    super();
    this.attemptId = attemptId;
    this.lockFile = lockFile;
    this.#dir = dir;
    this.#eventsPath = eventsPath;
    this.#fd = openSync(eventsPath, "r");
    let resolveResult;
    this.#result = new Promise((r) => (resolveResult = r));
    try {
      this.#child = spawn(bin, argv, spawnOptions);
    } catch (e) {
      closeSync(this.#fd);
      throw e;
    }
    this.pid = this.#child.pid;
    try {
      this.#watcher = watch(eventsPath, { persistent: false }, () => this.#pump());
      this.#watcher.on("error", () => {});
    } catch {
      this.#watcher = null; // no inotify: events arrive at the end only
    }
    let settled = false;
    const finish = async (exit, error) => {
      if (settled) return;
      settled = true;
      this.#exited = true;
      signal?.removeEventListener("abort", this.#abort);
      let readError = null;
      try {
        await this.#pump();
      } catch (e) {
        readError = e;
      }
      this.#watcher?.close();
      try {
        closeSync(this.#fd);
      } catch {}
      this.#fd = null;
      rmSync(this.#dir, { recursive: true, force: true });
      const result = resultOf(this.#events, exit, this.#cancelRequested, error ?? readError);
      this.#finished = true;
      for (const w of this.#waiters.splice(0)) w();
      resolveResult(result);
      this.emit("end", result);
    };
    this.#child.once("exit", (code, sig) => finish({ code, signal: sig }));
    this.#child.on("error", (err) => {
      // Only a failure to spawn comes without an exit.
      if (this.#child.pid === undefined) finish({ code: null, signal: null }, err);
    });
    if (signal) {
      this.#abort = () => this.cancel();
      if (signal.aborted) this.cancel();
      else signal.addEventListener("abort", this.#abort, { once: true });
    }
    this.#pump();
  }

  /** The `locksup run` child process (the supervisor). */
  get child() {
    return this.#child;
  }
  get stdin() {
    return this.#child.stdin;
  }
  get stdout() {
    return this.#child.stdout;
  }
  get stderr() {
    return this.#child.stderr;
  }
  /** The events received so far, in order. */
  get events() {
    return this.#events.slice();
  }
  /** Resolves once locksup has exited and every event has been read. */
  get result() {
    return this.#result;
  }

  /**
   * Cancel the attempt: send `signal` (TERM, INT, HUP or QUIT) to the
   * supervisor, which forwards it to the whole attempt and sends the final
   * signal after the grace period; a second call escalates at once.
   * Returns false when locksup has already exited.
   */
  cancel(signal = "SIGTERM") {
    const sig = signalArg(signal, "cancel()");
    if (!CANCEL_SIGNALS.has(sig)) {
      throw new RangeError(`cancel(): ${sig} does not cancel an attempt; use SIGTERM, SIGINT, SIGHUP or SIGQUIT`);
    }
    if (this.#exited || this.#child.pid === undefined || this.#child.exitCode !== null || this.#child.signalCode !== null) {
      return false;
    }
    this.#cancelRequested = true;
    return this.#child.kill(sig);
  }

  [Symbol.asyncIterator]() {
    let i = 0;
    const self = this;
    return {
      async next() {
        for (;;) {
          if (i < self.#events.length) return { value: self.#events[i++], done: false };
          if (self.#finished) return { value: undefined, done: true };
          await new Promise((r) => self.#waiters.push(r));
        }
      },
      async return() {
        i = Infinity;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  /** Read whatever was appended to the events file; one reader at a time. */
  #pump() {
    if (this.#fd === null) return Promise.resolve();
    if (this.#reading) {
      this.#again = true;
      return this.#reading;
    }
    this.#reading = (async () => {
      try {
        do {
          this.#again = false;
          await this.#drain();
        } while (this.#again);
      } finally {
        this.#reading = null;
      }
    })();
    this.#reading.catch(() => {});
    return this.#reading;
  }

  async #drain() {
    const buf = Buffer.alloc(64 * 1024);
    for (;;) {
      const n = await new Promise((res, rej) =>
        read(this.#fd, buf, 0, buf.length, this.#offset, (err, bytes) => (err ? rej(err) : res(bytes))),
      );
      if (n === 0) return;
      this.#offset += n;
      let data = Buffer.concat([this.#partial, buf.subarray(0, n)]);
      let nl;
      while ((nl = data.indexOf(0x0a)) !== -1) {
        const line = data.subarray(0, nl).toString("utf8");
        data = data.subarray(nl + 1);
        this.#deliver(line);
      }
      this.#partial = Buffer.from(data);
    }
  }

  #deliver(line) {
    if (line.trim() === "") return;
    let ev;
    try {
      ev = JSON.parse(line);
    } catch {
      return; // not an event line: locksup writes whole lines, so this is not ours
    }
    if (ev === null || typeof ev !== "object" || typeof ev.event !== "string") return;
    this.#events.push(ev);
    for (const w of this.#waiters.splice(0)) w();
    // A listener that throws must not cost the events after this one: its
    // exception surfaces as an uncaught one, as from any emitter.
    // locksup's own last event, `end`, comes through "event" and the
    // iterator only: the handle's "end" is the typed result.
    for (const name of ev.event === "end" ? ["event"] : ["event", ev.event]) {
      try {
        this.emit(name, ev);
      } catch (e) {
        process.nextTick(() => {
          throw e;
        });
      }
    }
  }
}

/**
 * Run `command args` as an attempt under `locksup run`.
 * @param {import("../index.js").RunOptions} options
 * @param {string} command
 * @param {string[]} [args]
 * @returns {Attempt}
 */
export function run(options, command, args = []) {
  if (options === null || typeof options !== "object") {
    throw new TypeError("run(): options must be an object with session or lock");
  }
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError(
      "options.signal must be an AbortSignal (the kill signal on timeout is options.killSignal)",
    );
  }
  const env = options.env ?? process.env;
  const cwd = options.cwd === undefined ? undefined : String(options.cwd);
  const bin = locate(options.locksup, env, cwd ?? process.cwd());
  const attemptId = stringOption(options, "attemptId") ?? newAttemptId();
  const dir = mkdtempSync(join(tmpdir(), "locksup-node-"));
  const eventsPath = join(dir, "events.jsonl");
  try {
    writeFileSync(eventsPath, "", { mode: 0o600, flag: "wx" });
    const { argv, lockFile } = buildArgs(options, attemptId, eventsPath, command, args);
    return new Attempt({
      bin,
      argv,
      spawnOptions: { env, cwd, stdio: options.stdio ?? "pipe" },
      attemptId,
      lockFile,
      dir,
      eventsPath,
      signal,
    });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
