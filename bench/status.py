#!/usr/bin/env python3
"""`locksup status --json` against `lslocks --json` on the same lock set,
same run: N lock files in a temp tree, M of them held (flock, exclusive)
by one helper process that opens and locks them and then waits.

  bench/status.py                      10,000 files, 1,000 held, 20 runs each
  bench/status.py --files 2000 --held 200 --runs 5
  bench/status.py --inherited          the taker exits and a child holds the
                                       locks: status must find the holders
                                       through fdinfo (one pass)

Needs hyperfine (Debian package `hyperfine`) and lslocks (util-linux).
Builds the release binary first. Prints hyperfine's summary and one line
per command: mean, median, min, max in milliseconds.
"""
import argparse
import fcntl
import json
import os
import resource
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "locksup")

# Paths come on stdin (one per line, then an empty line), so the holder's
# command line stays short, as a real holder's would.
HOLDER = r"""
import fcntl, os, sys
paths = []
for line in sys.stdin:
    if not line.strip():
        break
    paths.append(line.rstrip("\n"))
fds = []
for p in paths:
    fd = os.open(p, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fds.append(fd)
if os.environ.get("INHERIT") and os.fork() != 0:
    # The taker exits; its child holds every lock by inheritance, and
    # /proc/locks keeps naming the dead taker.
    os._exit(0)
print("held", len(fds), flush=True)
sys.stdin.read()
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--held", type=int, default=1_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--dirs", type=int, default=100, help="spread files over this many directories")
    ap.add_argument("--inherited", action="store_true",
                    help="locks held by the child of a taker that has exited")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON object with the medians instead of the text summary")
    a = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.held + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    with tempfile.TemporaryDirectory(prefix="locksup-bench-") as tmp:
        root = os.path.join(tmp, "sessions")
        paths = []
        for i in range(a.files):
            d = os.path.join(root, f"d{i % a.dirs:03}")
            os.makedirs(d, exist_ok=True)
            p = os.path.join(d, f"s{i:05}.jsonl.lock")
            open(p, "w").close()
            paths.append(p)
        step = max(1, a.files // a.held)
        held = paths[::step][: a.held]
        env = dict(os.environ, INHERIT="1") if a.inherited else None
        holder = subprocess.Popen([sys.executable, "-c", HOLDER], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            holder.stdin.write("".join(p + "\n" for p in held) + "\n")
            holder.stdin.flush()
            line = holder.stdout.readline()
            assert line.strip() == f"held {len(held)}", line
            config = os.path.join(tmp, "config.toml")
            open(config, "w").close()
            # Sanity: both see the held locks.
            out = json.loads(subprocess.run([BIN, "--config", config, "status", "--json", root],
                                            check=True, capture_output=True, text=True).stdout)
            n_held = sum(1 for l in out["locks"] if l["state"] == "held")
            assert len(out["locks"]) == a.files and n_held == len(held), (len(out["locks"]), n_held)
            if a.inherited:
                pids = {l["pid"] for l in out["locks"] if l["state"] == "held"}
                takers = {p for l in out["locks"] for p in l["taker_pids"]}
                assert len(pids) == 1 and not pids & takers, (pids, takers)
            ls = json.loads(subprocess.run(["lslocks", "--json"], check=True,
                                           capture_output=True, text=True).stdout)
            n_ls = sum(1 for l in ls["locks"] if (l.get("path") or "").startswith(root))
            # With the taker gone lslocks cannot resolve the paths (it looks
            # them up through the taker's descriptors): count every lock.
            if a.inherited:
                n_ls = len(ls["locks"])
            assert n_ls >= len(held), n_ls
            export = os.path.join(tmp, "hf.json")
            subprocess.run(["hyperfine", "-N", "--warmup", "2", "--runs", str(a.runs),
                            "--export-json", export,
                            f"{BIN} --config {config} status --json {root}",
                            "lslocks --json"], check=True,
                           stdout=subprocess.DEVNULL if a.json else None)
            res = json.load(open(export))["results"]
            if a.json:
                print(json.dumps({"files": a.files, "held": len(held), "runs": a.runs,
                                  "locksup_median_ms": round(res[0]["median"] * 1000, 1),
                                  "lslocks_median_ms": round(res[1]["median"] * 1000, 1)}))
                return
            how = "inherited by the child of an exited taker" if a.inherited else "by one process"
            print(f"\n{a.files} lock files, {len(held)} held {how} "
                  f"(lslocks saw {n_ls} of them), {a.runs} runs each:")
            for r in res:
                print(f"  {r['command'].split(' --config')[0].replace(BIN, 'locksup')} ...: "
                      f"mean {r['mean'] * 1000:.1f} ms, median {r['median'] * 1000:.1f} ms, "
                      f"min {r['min'] * 1000:.1f} ms, max {r['max'] * 1000:.1f} ms")
        finally:
            holder.stdin.close()  # the holder (or its child) reads EOF and exits
            holder.wait(timeout=10)


if __name__ == "__main__":
    main()
