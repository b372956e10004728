// locksup: a Node client for the locksup lock supervisor.
// See README.md; the types are in index.d.ts.
export { run, Attempt } from "./lib/run.js";
export { status } from "./lib/status.js";
export { heartbeat, extendDeadline, setStatus, currentAttempt } from "./lib/liveness.js";
export { parseDuration } from "./lib/duration.js";
export { locate, MIN_VERSION } from "./lib/locate.js";
export { LocksupError } from "./lib/errors.js";
