#!/usr/bin/env python3
"""Escalation lateness against the size of the attempt's tree.

For each size N: `locksup run --timeout infinity --grace G` on a command
that starts N processes ignoring SIGTERM (every other one in a session of
its own, so only the tree walk finds it), then ignores TERM itself. When
the tree is built, SIGTERM goes to locksup at wall time t0 (the first
signal is due then). From the `signal` events (RFC 3339, milliseconds):

  first  = first signal's event time - t0   (the whole tree signalled)
  final  = final signal's event time - (t0 + G)
  gone   = locksup's exit - (t0 + G)        (every process reaped)

Usage: bench/escalation.py BINARY [--sizes 100,1000,5000] [--grace-ms G]
Prints one JSON object: {"grace_ms": G, "rows": [{"n":..., ...}, ...]}.
"""
import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

TREE = r"""
import os, signal, sys, time
n, ready = int(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for i in range(n):
    os.posix_spawnp("sleep", ["sleep", "600"], os.environ, setsid=bool(i % 2))
open(ready, "w").close()
while True:
    signal.pause()
"""


def ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def one(binary, n, grace_ms):
    with tempfile.TemporaryDirectory() as d:
        lock, ready = os.path.join(d, "e.lock"), os.path.join(d, "ready")
        r, w = os.pipe()
        env = dict(os.environ, LOCKSUP_CONFIG="/dev/null")
        proc = subprocess.Popen(
            [binary, "run", "--lock", lock, "--timeout", "infinity",
             "--grace", f"{grace_ms}ms", "--events", f"/dev/fd/{w}", "--",
             sys.executable, "-c", TREE, str(n), ready],
            pass_fds=(w,), env=env)
        os.close(w)
        while not os.path.exists(ready):
            if proc.poll() is not None:
                raise SystemExit(f"locksup exited early: {proc.returncode}")
            time.sleep(0.01)
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        events = [json.loads(line) for line in os.fdopen(r)]
        proc.wait()
        t_gone = time.time()
        sigs = [e for e in events if e["event"] == "signal"]
        g = grace_ms / 1000
        return {
            "n": n,
            "first_ms": (ts(sigs[0]["ts"]) - t0) * 1000,
            "final_ms": (ts(sigs[1]["ts"]) - t0 - g) * 1000 if len(sigs) > 1 else None,
            "gone_ms": (t_gone - t0 - g) * 1000,
            "targets": len(sigs[-1]["targets"]),
        }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--grace-ms", type=int, default=500)
    a = ap.parse_args()
    rows = [one(a.binary, int(n), a.grace_ms) for n in a.sizes.split(",")]
    print(json.dumps({"grace_ms": a.grace_ms, "rows": rows}))


if __name__ == "__main__":
    main()
