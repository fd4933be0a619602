"""supervisord event listener: when a program goes FATAL, stop supervisord and say so.

A program is FATAL once it kept crashing through all its start retries. Rather than leave a
half-working plugin pair behind, the listener writes a marker file and SIGTERMs its parent
(supervisord), which stops everything in order and exits 0. deploy/run-supervisord.sh then
sees the marker and exits 1, so `make run`, systemd (Restart=on-failure) and
`docker run --restart` all see a failure. Standard library only (runs from any python3).

Marker: $ROUTED_FATAL_MARKER, default /run/routed-supervisord.fatal (the wrapper sets it).
Protocol: http://supervisord.org/events.html (READY / header line / payload / RESULT).
"""

from __future__ import annotations

import os
import signal
import sys
import time

DEFAULT_MARKER = "/run/routed-supervisord.fatal"


def parse_tokens(line: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


def main() -> int:
    marker = os.environ.get("ROUTED_FATAL_MARKER", DEFAULT_MARKER)
    while True:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            return 0  # supervisord went away
        header = parse_tokens(line)
        payload = sys.stdin.read(int(header.get("len", "0")))
        sys.stdout.write("RESULT 2\nOK")
        sys.stdout.flush()
        if header.get("eventname") != "PROCESS_STATE_FATAL":
            continue
        body = parse_tokens(payload.splitlines()[0] if payload else "")
        name = body.get("processname", "?")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        message = f"{stamp} program {name} went FATAL (from {body.get('from_state', '?')})"
        print(f"fatal_listener: {message}; stopping supervisord", file=sys.stderr, flush=True)
        try:
            with open(marker, "a", encoding="utf-8") as out:
                out.write(message + "\n")
        except OSError as err:
            print(f"fatal_listener: cannot write {marker}: {err}", file=sys.stderr, flush=True)
        os.kill(os.getppid(), signal.SIGTERM)  # the parent is supervisord


if __name__ == "__main__":
    sys.exit(main())
