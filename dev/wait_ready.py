#!/usr/bin/env python3
"""Wait until every readiness condition holds, then (optionally) exec a command.

    wait_ready.py [--timeout S] COND... [-- COMMAND ARGS...]

A condition is an HTTP(S) URL that must answer 2xx, `tcp:HOST:PORT` that must accept a
connection, or `file:PATH` that must exist. Used by the supervisor to start each component only
once what it depends on is ready, and by `make up` / `make test` to know the stack is up.
Prints what it is still waiting for every few seconds; exits 1 naming the conditions that never
held. Standard library only: it runs before anything else is installed.
"""
import os
import socket
import sys
import time
import urllib.error
import urllib.request


def holds(cond: str) -> bool:
    if cond.startswith("file:"):
        return os.path.exists(cond[5:])
    if cond.startswith("tcp:"):
        host, port = cond[4:].rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return True
        except OSError:
            return False
    try:
        with urllib.request.urlopen(cond, timeout=3) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    timeout = 300.0
    if argv[:1] == ["--timeout"]:
        timeout = float(argv[1])
        argv = argv[2:]
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    if not argv and not command:
        print(__doc__, file=sys.stderr)
        return 2
    deadline = time.monotonic() + timeout
    last_report = 0.0
    pending = list(argv)
    while pending:
        pending = [c for c in pending if not holds(c)]
        if not pending:
            break
        now = time.monotonic()
        if now > deadline:
            print(f"wait_ready: still not ready after {timeout:.0f}s: {' '.join(pending)}", file=sys.stderr)
            return 1
        if now - last_report > 10:
            print(f"wait_ready: waiting for {' '.join(pending)}", file=sys.stderr, flush=True)
            last_report = now
        time.sleep(0.5)
    if command:
        os.execvp(command[0], command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
