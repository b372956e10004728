#!/usr/bin/env python3
"""Fairness figures for bench/run (B10): overtakes per second under a
holder that asks again at once.

A waiter asks for the lock while a holder runs its attempts back to back
on it, over and over for SECS seconds. The holder's attempts count
themselves in a shared counter when they get the lock. c0 is read once the
waiter is known to wait (for locksup: its `waiting` or `queued` event; for
flock(2): just before it blocks), c1 when the waiter gets the lock: in a
fair order c1 - c0 is at most 1 (the holder's attempt under way when the
waiter started waiting may count itself just after c0 was read); every
holder attempt beyond that one is an overtake.

  fairness.py BIN [--secs S]     prints one JSON object
"""
import argparse
import fcntl
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time


def flock_overtakes(secs):
    """A process that unlocks and at once locks again (one process, as the
    kernel sees it: the unfair case), against a flock(2) waiter."""
    with tempfile.TemporaryDirectory() as d:
        lock = os.path.join(d, "f.lock")
        open(lock, "w").close()
        count = multiprocessing.Value("q", 0, lock=False)
        stop = multiprocessing.Value("b", 0, lock=False)

        def holder():
            fd = os.open(lock, os.O_RDWR)
            while not stop.value:
                fcntl.flock(fd, fcntl.LOCK_EX)
                count.value += 1
                t = time.perf_counter()
                while time.perf_counter() - t < 0.0005:
                    pass
                fcntl.flock(fd, fcntl.LOCK_UN)

        p = multiprocessing.Process(target=holder)
        p.start()
        over = 0
        fd = os.open(lock, os.O_RDWR)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < secs:
            c0 = count.value
            fcntl.flock(fd, fcntl.LOCK_EX)
            c1 = count.value
            fcntl.flock(fd, fcntl.LOCK_UN)
            over += max(0, c1 - c0 - 1)
            time.sleep(0.001)
        stop.value = 1
        p.join()
        return over / (time.perf_counter() - t0)


def locksup_overtakes(bin_, order, secs):
    with tempfile.TemporaryDirectory() as d:
        lock = os.path.join(d, "l.lock")
        counter = os.path.join(d, "count")
        open(counter, "w").close()
        stop = threading.Event()
        bump = f"echo x >> '{counter}'"

        def holder():
            while not stop.is_set():
                subprocess.run([bin_, "run", "--order", order, "--lock", lock, "--wait", "60s",
                                "--", "sh", "-c", bump],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def lines():
            with open(counter) as f:
                return sum(1 for _ in f)

        t = threading.Thread(target=holder)
        t.start()
        over, contended = 0, 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < secs:
            p = subprocess.Popen([bin_, "run", "--order", order, "--events", "-", "--lock", lock,
                                  "--wait", "60s", "--", "sh", "-c", f"wc -l < '{counter}'"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            c0 = None
            for line in p.stderr:
                ev = json.loads(line).get("event") if line.startswith("{") else None
                if ev in ("waiting", "queued") and c0 is None:
                    c0 = lines()
                if ev == "acquired":
                    break
            out, _ = p.communicate()
            if c0 is not None:
                contended += 1
                over += max(0, int(out.strip() or 0) - c0 - 1)
        stop.set()
        t.join()
        return over / (time.perf_counter() - t0), contended


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--secs", type=float, default=5.0)
    a = ap.parse_args()
    env = dict(os.environ, LOCKSUP_CONFIG="/dev/null")
    os.environ.update(env)
    fifo, fifo_n = locksup_overtakes(a.bin, "fifo", a.secs)
    any_, any_n = locksup_overtakes(a.bin, "any", a.secs)
    print(json.dumps({
        "secs": a.secs,
        "flock_per_s": flock_overtakes(a.secs),
        "fifo_per_s": fifo, "fifo_contended": fifo_n,
        "any_per_s": any_, "any_contended": any_n,
    }))


if __name__ == "__main__":
    sys.exit(main())
