#!/usr/bin/env python3
"""B7: how soon `locksup watch --json` reports a lock acquired by
`locksup run`.

One `locksup watch DIR --json` runs throughout. For each sample the harness
starts `locksup run --lock DIR/s.lock --events <pipe> -- sleep 0.05` and
notes when the run's `acquired` event arrives (t0) and when watch's
`acquired` event for that path arrives (t1), both read by this process on
one monotonic clock; the figure is t1 - t0.

Usage: bench/watch.py BINARY [--runs N]   (prints one JSON object)
"""
import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--runs", type=int, default=200)
    a = ap.parse_args()
    env = dict(os.environ, LOCKSUP_CONFIG="/dev/null")
    lat = []
    with tempfile.TemporaryDirectory() as d:
        lock = os.path.join(d, "s.lock")
        watch = subprocess.Popen([a.binary, "watch", d, "--json"], stdout=subprocess.PIPE,
                                 text=True, env=env)
        events = queue.Queue()

        def reader():
            for line in watch.stdout:
                events.put((time.perf_counter(), json.loads(line)))

        threading.Thread(target=reader, daemon=True).start()
        try:
            _, first = events.get(timeout=10)
            assert first["event"] == "ready", first
            for _ in range(a.runs):
                r, w = os.pipe()
                run = subprocess.Popen(
                    [a.binary, "run", "--lock", lock, "--events", f"/dev/fd/{w}", "--", "sleep", "0.05"],
                    pass_fds=(w,), env=env)
                os.close(w)
                t0 = None
                with os.fdopen(r) as evs:
                    for line in evs:
                        if json.loads(line)["event"] == "acquired":
                            t0 = time.perf_counter()
                            break
                    t1 = None
                    while t1 is None:
                        t, ev = events.get(timeout=10)
                        if ev["event"] == "acquired" and ev.get("path") == lock:
                            t1 = t
                    for _ in evs:
                        pass
                run.wait()
                # Let watch report the release before the next sample.
                while True:
                    _, ev = events.get(timeout=10)
                    if ev["event"] == "released" and ev.get("path") == lock:
                        break
                lat.append((t1 - t0) * 1000.0)
        finally:
            watch.terminate()
            watch.wait(timeout=10)
    json.dump({"runs": a.runs, "p50_ms": round(statistics.median(lat), 3),
               "p99_ms": round(pct(lat, 99), 3), "max_ms": round(max(lat), 3)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
