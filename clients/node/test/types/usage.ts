// Compiled with `tsc --noEmit --strict` by test/package.test.js: typical
// uses of the client must type-check, and each line after an
// expect-error directive must not (tsc fails on an unused directive).
import {
  run, status, heartbeat, extendDeadline, setStatus, currentAttempt, parseDuration, locate,
  LocksupError, MIN_VERSION,
  type Attempt, type AttemptResult, type LocksupEvent, type Outcome, type RunOptions,
  type StatusDocument, type DatagramSender,
} from "locksup";

async function gateway(): Promise<Outcome> {
  const ac = new AbortController();
  const options: RunOptions = {
    session: "/srv/sessions/abc.jsonl",
    timeout: "10m",
    grace: 5000,
    wait: "30s",
    watchdog: 30_000,
    killSignal: "SIGINT",
    sessionKey: "abc",
    attemptId: "a-1",
    dieWithParent: true,
    signal: ac.signal,
    env: { ...process.env, MODEL: "x" },
    cwd: "/srv",
    stdio: ["ignore", "pipe", "inherit"],
    locksup: "/usr/bin/locksup",
  };
  const a: Attempt = run(options, "agent-run", ["abc"]);
  const pid: number | undefined = a.pid;
  const id: string = a.attemptId;
  void pid, id;
  a.on("started", (e) => {
    const p: number = e.pid; // narrowed to the started event
    void p;
  });
  a.on("conflict", (e) => {
    const why: "busy" | "wait-expired" = e.reason;
    void why;
  });
  a.once("end", (r) => void r.outcome);
  // locksup's own `end` event comes through "event": "end" is the typed result.
  a.on("end", (r) => {
    // @ts-expect-error the result has no exit_code (that is the end event's)
    void r.exit_code;
  });
  for await (const e of a) {
    if (e.event === "exited") {
      const held: number = e.held_ms;
      void held;
    }
    if (e.event === "end") {
      const exitCode: number = e.exit_code;
      const why: string | null = e.error;
      void exitCode, why;
    }
    if (e.event === "acquired" && e.previous) {
      const before: string = e.previous.outcome;
      void before;
    }
    const ev: LocksupEvent = e;
    void ev;
  }
  a.cancel();
  a.cancel("SIGQUIT");
  // @ts-expect-error KILL does not cancel an attempt through its supervisor
  a.cancel("SIGKILL");
  const r: AttemptResult = await a.result;
  const code: number | null = r.code;
  const fence: number | string | null = r.fence;
  const prev: string | null = r.previousOutcome;
  const waited: number | null = r.waitedMs;
  const message: string | null = r.message;
  void code, fence, prev, waited, message;
  switch (r.outcome) {
    case "exited": case "timeout": case "ready-timeout": case "killed": case "busy": case "wait-expired":
    case "cancelled": case "watchdog": case "lease-lost": case "not-found": case "cannot-execute": case "failed":
      return r.outcome;
  }
}

// @ts-expect-error `signal` is the AbortSignal; the kill signal is killSignal
run({ session: "s", signal: "SIGTERM" }, "true");
// @ts-expect-error session and lock are exclusive
run({ session: "s", lock: "l" }, "true");
// @ts-expect-error one of them is required
run({ timeout: 5 }, "true");
// @ts-expect-error durations are numbers or strings
run({ lock: "l", timeout: true }, "true");
// @ts-expect-error not an outcome
const bad: Outcome = "succeeded";
void bad;

async function inside(send: DatagramSender): Promise<void> {
  const how: "notify" | "touch" = await heartbeat();
  void how;
  await heartbeat({ send });
  await extendDeadline("5m", { send });
  await extendDeadline(60_000, { send, env: process.env });
  await setStatus("step 2/5", { send });
  const cur = currentAttempt();
  if (cur) {
    const lock: string = cur.lockFile;
    const deadline: Date | null = cur.deadline;
    void lock, deadline;
  }
}

async function look(): Promise<void> {
  const doc: StatusDocument = await status(["/srv/sessions"], { state: ["held", "orphan"] });
  for (const l of doc.locks) {
    const left: number | null = l.left_ms;
    const st: "free" | "held" | "overdue" | "orphan" = l.state;
    void left, st;
  }
  // @ts-expect-error not a state
  await status("/srv", { state: "busy" });
  try {
    locate();
  } catch (e) {
    if (e instanceof LocksupError && e.code === "ERR_LOCKSUP_TOO_OLD") console.error(e.message, MIN_VERSION);
  }
  const ms: number = parseDuration("5min 20s");
  void ms;
}

void gateway, inside, look;
