#!/usr/bin/env python3
"""The etcd lock backend's timings beside `etcdctl lock`, same run.

Starts a single etcd (127.0.0.1, free ports, temporary data dir,
--unsafe-no-fsync), then measures:

* locksup::etcd acquire + release of an uncontended lock (open connection,
  and with a new connection each time: examples/etcd_bench.rs);
* `etcdctl lock KEY true` (a process that connects, locks, runs `true`,
  unlocks): the anchor;
* hand-off latency between two waiters.

Usage: bench/etcd.py [--n N] [--debug]   (release build by default)
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_etcd(tmp):
    client, peer = free_port(), free_port()
    url, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    log = open(os.path.join(tmp, "etcd.log"), "w")
    proc = subprocess.Popen(
        ["etcd", "--name", "bench", "--data-dir", os.path.join(tmp, "data"),
         "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
         "--initial-cluster", f"bench={purl}", "--unsafe-no-fsync",
         "--logger", "zap", "--log-outputs", "stderr"],
        stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"etcd exited; see {log.name}")
        r = subprocess.run(["etcdctl", f"--endpoints={url}", "endpoint", "health"],
                           capture_output=True)
        if r.returncode == 0:
            return proc, url
        time.sleep(0.1)
    proc.kill()
    sys.exit("etcd did not become healthy")


def stats(name, samples_ms):
    samples_ms.sort()
    n = len(samples_ms)
    return {"measure": name, "n": n, "mean_ms": statistics.fmean(samples_ms),
            "median_ms": samples_ms[n // 2],
            "p95_ms": samples_ms[min(n - 1, n * 95 // 100)], "min_ms": samples_ms[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--debug", action="store_true", help="debug build (faster to build)")
    args = ap.parse_args()
    for tool in ("etcd", "etcdctl", "cargo"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (etcd: Debian etcd-server, etcdctl: etcd-client)")
    profile = [] if args.debug else ["--release"]
    subprocess.run(["cargo", "build", "--quiet", "--example", "etcd_bench", *profile],
                   cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target", "debug" if args.debug else "release",
                       "examples", "etcd_bench")
    with tempfile.TemporaryDirectory(prefix="locksup-etcd-bench") as tmp:
        proc, url = start_etcd(tmp)
        try:
            rows = []
            env = dict(os.environ, ETCDCTL_API="3")
            samples = []
            for _ in range(args.n):
                t = time.perf_counter()
                subprocess.run(["etcdctl", f"--endpoints={url}", "lock", "/locksup/bench/ctl",
                                "true"], check=True, capture_output=True, env=env)
                samples.append((time.perf_counter() - t) * 1000)
            rows.append(stats("etcdctl lock KEY true (process)", samples))
            out = subprocess.run([exe, url, str(args.n)], check=True, capture_output=True,
                                 text=True).stdout
            rows += [json.loads(line) for line in out.splitlines() if line.strip()]
        finally:
            proc.kill()
            proc.wait()
    anchor = rows[0]["median_ms"]
    print("| measure | n | median ms | mean ms | p95 ms | × etcdctl lock (median) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['measure']} | {r['n']} | {r['median_ms']:.2f} | {r['mean_ms']:.2f} | "
              f"{r['p95_ms']:.2f} | {r['median_ms'] / anchor:.2f} |")


if __name__ == "__main__":
    main()
