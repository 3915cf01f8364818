"""Soak of the persistent session: many broker kills and daemon restarts while asks stream in.

Runs the two stream tests of tests/test_session.py with more cycles and prints their counts
per cycle (asks sent, replied, answered with an error code, unanswered; how many waited in
the broker for the daemon at each restart). Everything is real: mosquitto with persistence
killed with SIGKILL, `assistant run` stopped with SIGTERM and started again.

    .venv/bin/python bench/session_soak.py [--broker-cycles 40] [--daemon-cycles 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker-cycles", type=int, default=40)
    parser.add_argument("--daemon-cycles", type=int, default=10)
    args = parser.parse_args()
    env = {
        **os.environ,
        "SESSION_BROKER_CYCLES": str(args.broker_cycles),
        "SESSION_DAEMON_CYCLES": str(args.daemon_cycles),
    }
    tests = "tests/test_session.py::test_requests_sent_while_the_broker_restarts_are_all_answered"
    daemon = "tests/test_session.py::test_requests_sent_while_the_daemon_restarts_are_all_answered"
    command = [sys.executable, "-m", "pytest", tests, daemon, "-q", "-s", "-p", "no:cacheprovider"]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
