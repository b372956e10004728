// Durations as locksup(1) takes them: a number of milliseconds here, or a
// locksup duration string ("1.5" seconds, "250ms", "5min 20s", "infinity").
// Strings are checked against the grammar of locksup(1) DURATIONS so that a
// typo fails here, with the option's name, rather than as exit status 125.

const MS_PER_UNIT = new Map();
for (const [ms, names] of [
  [1e-6, ["ns", "nsec"]],
  [1e-3, ["us", "usec", "µs"]],
  [1, ["ms", "msec"]],
  [1000, ["", "s", "sec", "secs", "second", "seconds"]],
  [60e3, ["m", "min", "mins", "minute", "minutes"]],
  [3600e3, ["h", "hr", "hrs", "hour", "hours"]],
  [86400e3, ["d", "day", "days"]],
  [7 * 86400e3, ["w", "week", "weeks"]],
]) {
  for (const n of names) MS_PER_UNIT.set(n, ms);
}

/** The longest duration locksup accepts: 100 years. */
const MAX_MS = 100 * 365 * 86400e3;

/**
 * Milliseconds of a duration (a number of ms or a locksup string);
 * `Infinity` for "infinity". Throws a one-line error naming `what`.
 * @param {number|string} value
 * @param {string} [what]
 * @returns {number}
 */
export function parseDuration(value, what = "duration") {
  if (typeof value === "number") {
    if (Number.isNaN(value) || value < 0) {
      throw new RangeError(`${what}: ${value} is not a duration (milliseconds >= 0)`);
    }
    if (value !== Infinity && value > MAX_MS) {
      throw new RangeError(`${what}: ${value}ms is too large (at most 100 years)`);
    }
    return value;
  }
  if (typeof value !== "string") {
    throw new TypeError(`${what}: expected milliseconds or a duration string, got ${typeof value}`);
  }
  const t = value.trim();
  if (/^(infinity|inf)$/i.test(t)) return Infinity;
  if (t === "") throw new RangeError(`${what}: empty duration`);
  // Parts: a number, optional spaces, an optional unit; only a lone number
  // may go without a unit (seconds).
  const part = /\s*(\d*\.?\d*)\s*([^\d\s.]*)/y;
  let total = 0;
  let parts = 0;
  part.lastIndex = 0;
  while (part.lastIndex < t.length) {
    const start = part.lastIndex;
    const m = part.exec(t);
    if (!m || m[0].length === 0 || !/\d/.test(m[1])) {
      throw new RangeError(`${what}: invalid duration '${t}' (e.g. 250ms, 30s, 5m, infinity)`);
    }
    const unit = m[2].toLowerCase();
    const per = MS_PER_UNIT.get(unit);
    if (per === undefined) {
      throw new RangeError(`${what}: invalid duration '${t}': unknown unit '${m[2]}' (use ms, s, m, h, d)`);
    }
    if (unit === "" && (parts > 0 || part.lastIndex < t.length)) {
      throw new RangeError(`${what}: invalid duration '${t}': number without a unit`);
    }
    if (part.lastIndex === start) break;
    total += Number(m[1]) * per;
    parts++;
  }
  if (total > MAX_MS) {
    throw new RangeError(`${what}: duration '${t}' is too large (at most 100 years)`);
  }
  return total;
}

/**
 * The command-line form of a duration option: strings are checked and
 * passed as written; numbers are milliseconds.
 * @param {number|string} value
 * @param {string} what
 * @returns {string}
 */
export function durationArg(value, what) {
  const ms = parseDuration(value, what);
  if (typeof value === "string") return value.trim();
  if (ms === Infinity) return "infinity";
  if (Number.isInteger(ms)) return `${ms}ms`;
  return `${Math.round(ms * 1e6)}ns`;
}
