#!/usr/bin/env python3
"""Deadline -> lock free, as a blocked waiter sees it.

For each run: start `locksup run --lock L --timeout T --events <pipe>` on a
command that obeys TERM (or ignores it), read the `acquired` event as it is
written (t0), then block in flock(2) on a separate open of L (not a LOCK_NB
busy-poll, which would slow the dying task down) and note when it returns
(t1). The lock was due free at t0 + T (+ grace G for a TERM-ignoring
command); the figure is t1 - t0 - T (- G).

t0 is taken when the event arrives, a few tens of microseconds after
locksup took its own acquisition time, so the figures lean low by that much.

Usage: bench/deadline.py BINARY [--runs N] [--timeout-ms T] [--grace-ms G]
Prints one JSON object with the medians and p99 for both kinds of command.
"""
import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def one(binary, lock, timeout_ms, grace_ms, ignore_term):
    r, w = os.pipe()
    cmd = ["sh", "-c", 'trap "" TERM; exec sleep 60'] if ignore_term else ["sleep", "60"]
    env = dict(os.environ, LOCKSUP_CONFIG="/dev/null")
    proc = subprocess.Popen(
        [binary, "run", "--lock", lock, "--timeout", f"{timeout_ms}ms",
         "--grace", f"{grace_ms}ms", "--events", f"/dev/fd/{w}", "--"] + cmd,
        pass_fds=(w,), env=env)
    os.close(w)
    t0 = None
    released_ms = None
    with os.fdopen(r, "r") as events:
        for line in events:
            ev = json.loads(line)
            if ev["event"] == "acquired":
                t0 = time.perf_counter()
                break
        fd = os.open(lock, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        t1 = time.perf_counter()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        for line in events:
            ev = json.loads(line)
            if ev["event"] == "released":
                released_ms = ev["ms_after_exit"]
    code = proc.wait()
    expect = (137 if ignore_term else 124)
    if code != expect:
        raise SystemExit(f"unexpected exit code {code}, wanted {expect}")
    due = (timeout_ms + (grace_ms if ignore_term else 0)) / 1000.0
    return (t1 - t0 - due) * 1000.0, released_ms


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--timeout-ms", type=int, default=50)
    ap.add_argument("--grace-ms", type=int, default=200)
    a = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as d:
        lock = os.path.join(d, "bench.lock")
        for name, ignore in (("term_obeying", False), ("term_ignoring", True)):
            lat, rel = [], []
            for _ in range(a.runs):
                l, r = one(a.binary, lock, a.timeout_ms, a.grace_ms, ignore)
                lat.append(l)
                if r is not None:
                    rel.append(r)
            out[name] = {
                "runs": a.runs,
                "deadline_to_free_ms_p50": round(statistics.median(lat), 3),
                "deadline_to_free_ms_p99": round(pct(lat, 99), 3),
                "deadline_to_free_ms_max": round(max(lat), 3),
                "released_ms_after_exit_p50": round(statistics.median(rel), 3) if rel else None,
            }
    out["timeout_ms"] = a.timeout_ms
    out["grace_ms"] = a.grace_ms
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
