// Type declarations for the locksup Node client.

import { EventEmitter } from "node:events";
import type { ChildProcess, StdioOptions } from "node:child_process";
import type { Readable, Writable } from "node:stream";

/** Milliseconds, or a locksup duration string: `"5s"`, `"200ms"`, `"5min 20s"`, `"infinity"`. */
export type Duration = number | string;

/** A signal by name (`"SIGTERM"`, `"TERM"`) or number. */
export type SignalSpec = NodeJS.Signals | string | number;

/** The signals that make a supervisor cancel its attempt. */
export type CancelSignal = "SIGTERM" | "SIGINT" | "SIGHUP" | "SIGQUIT";

interface RunOptionsBase {
  /** How long the attempt may hold the lock; `0` or `"infinity"`: no limit. locksup's default: 10m. */
  timeout?: Duration;
  /** Between the first and the final signal; `0`: the final signal at once. Default 10s. */
  grace?: Duration;
  /** How long to wait for a busy lock; `0`: don't wait. Default 60s. */
  wait?: Duration;
  /** End the attempt when no heartbeat came for this long. */
  watchdog?: Duration;
  /** Hard cap on the deadline however the attempt extends it (`--max-timeout`). */
  maxTimeout?: Duration;
  /** The first signal sent on timeout (`--signal`). Default SIGTERM. Not `signal`, which is the AbortSignal. */
  killSignal?: SignalSpec;
  /** The final signal after the grace period (`--final-signal`). Default SIGKILL. */
  finalSignal?: SignalSpec;
  /** A shared lock instead of an exclusive one. */
  shared?: boolean;
  /** In which order waiting attempts get the lock (`--order`): the order
   * they started waiting (`"fifo"`, locksup's default) or the kernel's. */
  order?: "fifo" | "any";
  /** Where the lock lives (`--backend`): this host's lock file, or etcd
   * (several hosts; the attempt ends with `lease-lost` if the lease could lapse). */
  backend?: "flock" | "etcd";
  /** etcd endpoints (`--etcd-endpoints`), with `backend: "etcd"`. */
  etcdEndpoints?: string | string[];
  /** The lock's name in etcd (`--etcd-key`); default: the lock file's path. */
  etcdKey?: string;
  /** The etcd lease's TTL (`--etcd-ttl`). */
  etcdTtl?: Duration;
  /** Caller's key for the session, recorded in metadata and events. */
  sessionKey?: string;
  /** The attempt id; generated (locksup's format) when absent. */
  attemptId?: string;
  /** Pass `--die-with-parent` (needs a locksup that has it). */
  dieWithParent?: boolean;
  /** Aborting it cancels the attempt, as `handle.cancel()` does. */
  signal?: AbortSignal;
  /** The environment of locksup and so of the command (which gains LOCKSUP_*). Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Working directory of locksup and the command. */
  cwd?: string;
  /** stdio of locksup, inherited by the command, as for `child_process.spawn`. Default `"pipe"`. */
  stdio?: StdioOptions;
  /** The locksup binary: a path, or a name looked up on PATH. Default: `locksup` on PATH. */
  locksup?: string;
  /** A locksup configuration file (`--config`). */
  config?: string;
  /** Lifecycle lines on stderr (`--verbose`). */
  verbose?: boolean;
}

/** Options of {@link run}: exactly one of `session` and `lock`. */
export type RunOptions =
  | (RunOptionsBase & {
      /** Session file; the lock file is `FILE.lock` beside it. */
      session: string;
      lock?: undefined;
    })
  | (RunOptionsBase & {
      /** The lock file itself. */
      lock: string;
      session?: undefined;
    });

/** Fields every lifecycle event has. */
export interface EventBase {
  /** RFC 3339 with milliseconds. */
  ts: string;
  attempt_id: string;
  /** The lock file. */
  lock: string;
}

export interface WaitingEvent extends EventBase {
  event: "waiting";
  holders: number[];
}
/** The attempt is waiting in the lock's fair queue (`--order fifo`). */
export interface QueuedEvent extends EventBase {
  event: "queued";
  /** 1 for the head of the queue. */
  position: number;
  ticket: number;
  /** The attempt just before this one, if it could be read. */
  behind: string | null;
  behind_ticket: number;
}
/** The attempt that held the lock before this one, as `acquired` names it. */
export interface PreviousHolder {
  /** An end outcome, or "none" (no earlier holder), "supervisor-died",
   * "orphan-reaped", "unknown". */
  outcome: Outcome | "none" | "supervisor-died" | "orphan-reaped" | "unknown" | (string & {});
  attempt_id: string | null;
  fence: number | string | null;
  exit_code?: number | null;
}
export interface AcquiredEvent extends EventBase {
  event: "acquired";
  wait_ms: number;
  /** The lock's fencing token, from binaries that report one; else absent. */
  fence?: number | string;
  /** How the previous holder ended, from binaries that report it; else absent. */
  previous?: PreviousHolder | null;
}
export interface StartedEvent extends EventBase {
  event: "started";
  pid: number;
  pgid: number;
}
export interface SignalEvent extends EventBase {
  event: "signal";
  signal: string;
  reason:
    | "timeout"
    | "watchdog"
    | "ready-timeout"
    | "supervisor-signal"
    | "guardian-died"
    | "parent-died"
    | "lock-removed"
    | "supervisor-died"
    | "cleanup"
    | (string & {});
  targets: number[];
}
export interface ExitedEvent extends EventBase {
  event: "exited";
  status?: number;
  signal?: string;
  held_ms: number;
}
export interface ReleasedEvent extends EventBase {
  event: "released";
  ms_after_exit: number;
}
export interface LeakEvent extends EventBase {
  event: "leak";
  pids: number[];
  commands: string[];
}
export interface ConflictEvent extends EventBase {
  event: "conflict";
  reason: "busy" | "wait-expired";
  holders: number[];
}
export interface HeartbeatEvent extends EventBase {
  event: "heartbeat";
  source: "notify" | "touch";
}
export interface ExtendedEvent extends EventBase {
  event: "extended";
  deadline: string;
  by_ms: number;
}
export interface StatusEvent extends EventBase {
  event: "status";
  text: string;
}
export interface ReadyEvent extends EventBase {
  event: "ready";
}
/** locksup's last event of every attempt: how it ended. */
export interface EndEvent extends EventBase {
  event: "end";
  /** The exit status locksup ends with. */
  exit_code: number;
  /** One of {@link Outcome}, or a name of a newer binary. */
  outcome: Outcome | (string & {});
  /** locksup's own explanation (a command it could not run, a failure), else null. */
  error: string | null;
}

/** A line of `locksup run --events`. */
export type LocksupEvent =
  | WaitingEvent
  | QueuedEvent
  | AcquiredEvent
  | StartedEvent
  | SignalEvent
  | ExitedEvent
  | ReleasedEvent
  | LeakEvent
  | ConflictEvent
  | HeartbeatEvent
  | ExtendedEvent
  | StatusEvent
  | ReadyEvent
  | EndEvent;

export type EventName = LocksupEvent["event"];
export type EventOf<N extends EventName> = Extract<LocksupEvent, { event: N }>;

/** How an attempt ended: the `outcome` of locksup's `end` event. */
export type Outcome =
  /** The command exited by itself (`code` is its status). */
  | "exited"
  /** Its deadline passed and it was ended (124, or 128 + the final signal). */
  | "timeout"
  /** It did not become ready (sd_notify `READY=1`) in time, and was ended. */
  | "ready-timeout"
  /** The command died of a signal nobody asked locksup to send (or locksup itself was killed). */
  | "killed"
  /** The lock was busy and `wait` was 0. */
  | "busy"
  /** The lock stayed busy for all of `wait`. */
  | "wait-expired"
  /** Cancelled: `cancel()`, the AbortSignal, or a cancel signal to the supervisor from elsewhere. */
  | "cancelled"
  /** No heartbeat within `watchdog`. */
  | "watchdog"
  /** The lock's lease was lost (a distributed lock backend, such as etcd). */
  | "lease-lost"
  /** The command was not found (127, before it ran). */
  | "not-found"
  /** The command could not be executed (126: not executable, a bad interpreter). */
  | "cannot-execute"
  /** locksup failed (125: usage, configuration, lock file unusable; its supervisor was killed), or the client could not start it. */
  | "failed";

export interface AttemptResult {
  outcome: Outcome;
  /** locksup's exit status; null when it died of a signal. */
  code: number | null;
  /** The signal the command died of (`"SIGTERM"`), else the one locksup died of, else null. */
  signal: string | null;
  /** How long it waited for the lock, in ms; null when unknown. */
  waitedMs: number | null;
  /** How long the command held the lock, in ms; null when it did not run. */
  heldMs: number | null;
  /** The `fence` of the `acquired` event, when the binary reports one. */
  fence: number | string | null;
  /** The previous holder's outcome (`previous.outcome` of the `acquired` event), when the binary reports it. */
  previousOutcome: Outcome | (string & {}) | null;
  /** locksup's own explanation, the `error` of its `end` event (e.g. why a command could not run); else null. */
  message: string | null;
  /** A failure of the client itself (spawning locksup, reading its events); null normally. */
  error: Error | null;
}

interface AttemptEvents {
  event: [LocksupEvent];
  /** The typed result (locksup's own `end` event comes through "event" and the iterator only). */
  end: [AttemptResult];
}
type AttemptEventMap = AttemptEvents & { [N in Exclude<EventName, "end">]: [EventOf<N>] };

/** One attempt under `locksup run`: an EventEmitter and an async iterable of its events. */
export declare class Attempt extends EventEmitter implements AsyncIterable<LocksupEvent> {
  private constructor();
  /** PID of the supervising `locksup run`. */
  readonly pid: number | undefined;
  readonly attemptId: string;
  /** Absolute path of the lock file. */
  readonly lockFile: string;
  readonly child: ChildProcess;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  /** The events received so far. */
  readonly events: LocksupEvent[];
  /** Resolves (never rejects) once locksup has exited and every event was read. */
  readonly result: Promise<AttemptResult>;
  /** Send a cancel signal to the supervisor; a second call escalates. False once it has exited. */
  cancel(signal?: CancelSignal): boolean;
  [Symbol.asyncIterator](): AsyncIterableIterator<LocksupEvent>;

  on<K extends keyof AttemptEventMap>(name: K, listener: (...args: AttemptEventMap[K]) => void): this;
  once<K extends keyof AttemptEventMap>(name: K, listener: (...args: AttemptEventMap[K]) => void): this;
  off<K extends keyof AttemptEventMap>(name: K, listener: (...args: AttemptEventMap[K]) => void): this;
  addListener<K extends keyof AttemptEventMap>(name: K, listener: (...args: AttemptEventMap[K]) => void): this;
  removeListener<K extends keyof AttemptEventMap>(
    name: K,
    listener: (...args: AttemptEventMap[K]) => void,
  ): this;
}

/** Run `command args` as an attempt holding the session's lock. Throws at once on bad options or a missing/too old locksup. */
export function run(options: RunOptions, command: string, args?: readonly string[]): Attempt;

/** A status lock object (`locksup status --json`). */
export interface LockStatus {
  path: string;
  state: "free" | "held" | "overdue" | "orphan";
  mode: "exclusive" | "shared" | null;
  kind: "flock" | "posix" | "ofd" | "other" | null;
  pid: number | null;
  holders: { pid: number; command: string | null }[];
  taker_pids: number[];
  waiters: number;
  waiter_pids: number[];
  session: string | null;
  session_key: string | null;
  attempt_id: string | null;
  command: string[] | null;
  supervisor_pid: number | null;
  supervisor_alive: boolean | null;
  acquired_at: string | null;
  deadline: string | null;
  held_ms: number | null;
  left_ms: number | null;
  status_text: string | null;
  last_heartbeat: string | null;
  heartbeat_age_ms: number | null;
  metadata: Record<string, unknown> | null;
}

export interface StatusDocument {
  v: number;
  ts: string;
  locks: LockStatus[];
}

export interface StatusOptions {
  locksup?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  config?: string;
  state?: LockStatus["state"] | LockStatus["state"][];
  sessionKey?: string;
  signal?: AbortSignal;
}

/** `locksup status --json` for these lock files and directories (default: the configured roots). */
export function status(paths?: string | readonly string[], options?: StatusOptions): Promise<StatusDocument>;

/** Sends one sd_notify datagram (`message`) to `socket` (a NOTIFY_SOCKET value: a path, or `@name`). */
export type DatagramSender = (socket: string, message: string) => void | Promise<void>;

export interface LivenessOptions {
  /** Where to read LOCKSUP_* and NOTIFY_SOCKET from, and the PATH to find python3 on. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /**
   * How to send sd_notify datagrams (Node's core cannot). Default for extendDeadline() and setStatus():
   * a `python3 -c` child process. Without it, heartbeat() touches the lock file.
   */
  send?: DatagramSender;
}

/** The attempt this process runs in (from LOCKSUP_* variables), or null. */
export interface CurrentAttempt {
  lockFile: string;
  lockFd: number | null;
  attemptId: string | null;
  session: string | null;
  deadline: Date | null;
  notifySocket: string | null;
}
export function currentAttempt(env?: NodeJS.ProcessEnv): CurrentAttempt | null;

/** A heartbeat for `--watchdog`: `WATCHDOG=1` when `send` is given, else a touch of the lock file. */
export function heartbeat(options?: LivenessOptions): Promise<"notify" | "touch">;
/** `EXTEND_TIMEOUT_USEC`: the deadline becomes now + duration if later (never past `maxTimeout`). Sends through `send`, else python3. */
export function extendDeadline(duration: Duration, options?: LivenessOptions): Promise<void>;
/** `STATUS=`: the attempt's one-line status (the `status` event, `locksup status`). Sends through `send`, else python3. */
export function setStatus(text: string, options?: LivenessOptions): Promise<void>;

/** Milliseconds of a duration (`Infinity` for "infinity"); throws on a malformed one. */
export function parseDuration(value: Duration, what?: string): number;

/** The path of a usable locksup (PATH lookup, version check); throws a LocksupError otherwise. */
export function locate(locksup?: string, env?: NodeJS.ProcessEnv, cwd?: string): string;
/** The oldest locksup version this client drives. */
export const MIN_VERSION: string;

export type LocksupErrorCode =
  | "ERR_LOCKSUP_NOT_FOUND"
  | "ERR_LOCKSUP_NOT_LOCKSUP"
  | "ERR_LOCKSUP_TOO_OLD"
  | "ERR_LOCKSUP_STATUS"
  | "ERR_LOCKSUP_NOT_IN_ATTEMPT"
  | "ERR_LOCKSUP_NOTIFY_UNAVAILABLE"
  | "ERR_LOCKSUP_NOTIFY_FAILED";

export declare class LocksupError extends Error {
  readonly code: LocksupErrorCode;
  /** For ERR_LOCKSUP_STATUS: locksup's exit status. */
  readonly exitCode?: number;
  /** The binary concerned. */
  readonly path?: string;
  /** For ERR_LOCKSUP_TOO_OLD. */
  readonly version?: string;
}
