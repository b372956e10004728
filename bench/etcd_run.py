#!/usr/bin/env python3
"""`locksup run --backend etcd` beside `etcdctl lock`, same run, same etcd.

Starts a single etcd (bench/etcd.py's start_etcd: 127.0.0.1, free ports,
temporary data dir, --unsafe-no-fsync), then measures:

* one uncontended attempt of `true` (connect, lock, run, release, exit):
  `locksup run --backend etcd -- true` vs `etcdctl lock KEY true`;
* hand-off between two waiters: the holder's `exited` event to the next
  holder's `acquired` event (two supervisors, two lock files, one key);
* peak RSS (VmHWM) of a supervisor holding an etcd lock (--foreground, so
  the process started is the supervisor).

Usage: bench/etcd_run.py [--n N] [--bin PATH]   (default: target/release/locksup)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from etcd import ROOT, start_etcd, stats  # noqa: E402


def ts(event):
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def events(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "locksup"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="locksup-etcd-run-bench") as tmp:
        proc, url = start_etcd(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        env["ETCDCTL_API"] = "3"
        env["LOCKSUP_CONFIG"] = os.path.join(tmp, "empty.toml")
        open(env["LOCKSUP_CONFIG"], "w").close()
        base = [args.bin, "run", "--backend", "etcd", "--etcd-endpoints", url,
                "--grace", "1s"]
        rows = []
        try:
            ctl, sup = [], []
            for i in range(args.n):
                t = time.perf_counter()
                subprocess.run(["etcdctl", f"--endpoints={url}", "lock", "/locksup/bench/ctl",
                                "true"], check=True, capture_output=True, env=env)
                ctl.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                subprocess.run(base + ["--etcd-key", "bench/sup", "--lock",
                                       os.path.join(tmp, "u.lock"), "--", "true"],
                               check=True, capture_output=True, env=env)
                sup.append((time.perf_counter() - t) * 1000)
            rows.append(stats("etcdctl lock KEY true (process)", ctl))
            rows.append(stats("locksup run --backend etcd -- true (process)", sup))
            hand = []
            for i in range(max(5, args.n // 3)):
                e0, e1 = os.path.join(tmp, f"h{i}-0"), os.path.join(tmp, f"h{i}-1")
                a = subprocess.Popen(base + ["--etcd-key", f"bench/h{i}", "--lock",
                                             os.path.join(tmp, "ha.lock"), "--events", e0,
                                             "--", "sleep", "0.3"], env=env)
                while not (os.path.exists(e0)
                           and any(e["event"] == "started" for e in events(e0))):
                    time.sleep(0.005)
                b = subprocess.Popen(base + ["--etcd-key", f"bench/h{i}", "--lock",
                                             os.path.join(tmp, "hb.lock"), "--events", e1,
                                             "--wait", "30s", "--", "true"], env=env)
                a.wait()
                b.wait()
                exited = next(e for e in events(e0) if e["event"] == "exited")
                acquired = next(e for e in events(e1) if e["event"] == "acquired")
                hand.append((ts(acquired) - ts(exited)) * 1000)
            rows.append(stats("hand-off: holder exited -> next holder acquired (events, ms "
                              "resolution)", hand))
            rss = []
            # /usr/bin/time's %M: the largest RSS of locksup (the supervisor,
            # with --foreground) and of what it reaped (sleep).
            for i in range(5):
                r = subprocess.run(["/usr/bin/time", "-f", "%M"] + base +
                                   ["--foreground", "--etcd-key", "bench/rss", "--lock",
                                    os.path.join(tmp, "r.lock"), "--", "sleep", "0.5"],
                                   capture_output=True, text=True, env=env)
                rss.append(int(r.stderr.strip().splitlines()[-1]) / 1024)
            rss_row = {"measure": "peak RSS, supervisor holding an etcd lock (MiB, "
                       "/usr/bin/time %M, --foreground)", "n": len(rss),
                       "median_ms": statistics.median(rss), "mean_ms": statistics.fmean(rss),
                       "p95_ms": max(rss), "min_ms": min(rss)}
        finally:
            proc.kill()
            proc.wait()
    anchor = rows[0]["median_ms"]
    print("| measure | n | median ms | mean ms | p95 ms | × etcdctl lock (median) |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        ratio = f"{r['median_ms'] / anchor:.2f}" if i < 2 else ""
        print(f"| {r['measure']} | {r['n']} | {r['median_ms']:.2f} | {r['mean_ms']:.2f} | "
              f"{r['p95_ms']:.2f} | {ratio} |")
    print(f"| {rss_row['measure']} | {rss_row['n']} | {rss_row['median_ms']:.1f} MiB | "
          f"{rss_row['mean_ms']:.1f} MiB | max {rss_row['p95_ms']:.1f} MiB | |")


if __name__ == "__main__":
    main()
