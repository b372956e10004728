#!/bin/bash
# locksup serve at rest: the daemon's RSS and CPU while N attempts (default
# 1000) sleep under it, each holding its own lock; then how long SIGTERM
# takes to end them all. Builds the release binary if needed.
#
#   bench/serve-idle.sh            N=1000
#   N=200 bench/serve-idle.sh
#
# Needs a file descriptor limit above N (the daemon raises its soft limit
# to the hard one; the clients and supervisors need N processes each).
set -eu
N=${N:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B="$ROOT/target/release/locksup"
[ -x "$B" ] || (cd "$ROOT" && cargo build --release --quiet)
D=$(mktemp -d /tmp/locksup-bench.XXXXXX)
trap 'rm -rf "$D"' EXIT
printf '[serve]\nsocket = "%s/l.sock"\n' "$D" > "$D/cfg.toml"
LOCKSUP_CONFIG="$D/cfg.toml" RUST_LOG=warn "$B" serve 2>"$D/daemon.log" &
DP=$!
until [ -S "$D/l.sock" ]; do sleep 0.01; done
echo "daemon pid $DP; RSS with no attempt: $(ps -o rss= -p $DP | tr -d ' ') KiB"
held() { grep -c FLOCK /proc/locks || true; }
base=$(held)
t0=$(date +%s.%N)
for i in $(seq 1 "$N"); do
  "$B" run --daemon --socket "$D/l.sock" --lock "$D/$i.lock" -t 0 -- sleep 100000 \
    </dev/null >/dev/null 2>>"$D/clients.err" &
done
children() { cat /proc/$DP/task/*/children 2>/dev/null | wc -w; }
until [ "$(children)" -ge "$N" ] && [ "$(held)" -ge $((base + N)) ]; do sleep 0.05; done
t1=$(date +%s.%N)
echo "$N attempts submitted, each holding its lock, in $(echo "$t1 - $t0" | bc) s"
sleep 5
ticks() { awk '{print $14 + $15}' /proc/$DP/stat; }
oncpu() { awk '{print $1}' /proc/$DP/schedstat; }
a=$(ticks); an=$(oncpu); sleep 10; b=$(ticks); bn=$(oncpu)
echo "daemon RSS with $N attempts: $(ps -o rss= -p $DP | tr -d ' ') KiB" \
     "(VmHWM $(awk '/VmHWM/{print $2}' /proc/$DP/status) KiB), $(ls /proc/$DP/fd | wc -l) fds"
echo "daemon CPU over 10 s: $((b - a)) ticks of 1/$(getconf CLK_TCK) s (utime+stime)," \
     "$(((bn - an) / 1000)) us on CPU (schedstat)"
SUP=$(cat /proc/$DP/task/*/children | awk '{print $1}')
CMD=$(cat /proc/$SUP/task/*/children | awk '{print $1}')
echo "per attempt: supervisor RSS $(ps -o rss= -p $SUP | tr -d ' ') KiB," \
     "PSS $(awk '/^Pss:/{print $2}' /proc/$SUP/smaps_rollup) KiB; command (sleep) PSS" \
     "$(awk '/^Pss:/{print $2}' /proc/$CMD/smaps_rollup) KiB"
t2=$(date +%s.%N)
kill -TERM $DP
rc=0; wait $DP || rc=$?
t3=$(date +%s.%N)
echo "SIGTERM: daemon exited $rc after $(echo "$t3 - $t2" | bc) s; locks still held: $(($(held) - base))"
wait || true
if [ -s "$D/clients.err" ]; then echo "client errors:"; sort "$D/clients.err" | uniq -c | head; fi
