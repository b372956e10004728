#!/usr/bin/env python3
"""An attempt that reports its liveness to locksup with the sd_notify
protocol, using only Python's standard library (a library such as
`sdnotify` or `systemd.daemon` works the same way).

    locksup run --session /tmp/s.jsonl --timeout 5s --watchdog 1s \
        --max-timeout 1m -- python3 examples/heartbeat.py 10

Each step: one unit of "work", a heartbeat (WATCHDOG=1), a status line
(STATUS=...), and a request for more time (EXTEND_TIMEOUT_USEC) so a long
run is not cut off by its first timeout -- but never past --max-timeout.
"""
import os
import socket
import sys
import time


def notify(message: str) -> None:
    """Send one datagram to $NOTIFY_SOCKET; a no-op outside locksup/systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), addr)


def main() -> int:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    step_s = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    notify("READY=1")
    for i in range(1, steps + 1):
        time.sleep(step_s)  # the work
        notify(f"WATCHDOG=1\nSTATUS=step {i}/{steps}\nEXTEND_TIMEOUT_USEC={int(5e6)}")
    notify("STATUS=done")
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
