"""What the fault tests wait on and do: a stack settled (everything running, the supervisor idle), the pids in a
status, a poll that fails with the supervisor's log, a kill -9 that waits for the process to go."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psutil

from tests.stacks import Stack, local_pid

DEADLINE_S = 300  # generous: MLflow takes 10-20 s to start on a busy 2-core machine


def settled(status: dict) -> bool:
    states = {s["name"]: s["state"] for s in status["services"]} | {
        d["name"]: d["state"] for d in status["deployments"]
    }
    detail = entry(status, "supervisor")["detail"]  # e.g. "2 restarts (mlflow 1, healer 1)"
    return set(states.values()) == {"running"} and not any(word in detail for word in ("restarting", "pending"))


def entry(status: dict, name: str) -> dict:
    return next(e for e in status["services"] + status["deployments"] if e["name"] == name)


def pids(status: dict) -> dict[str, int]:
    return {e["name"]: local_pid(e) for e in status["services"] + status["deployments"] if e["instance"]}


def wait_for(check: Callable[[], object], what: str, stack: Stack, deadline_s: float = DEADLINE_S):
    """Poll ``check`` until it returns something true (exceptions count as not yet); fail with the supervisor's log."""
    deadline = time.monotonic() + deadline_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except Exception as exc:  # noqa: BLE001 - not there yet
            last = exc
        time.sleep(0.5)
    log = stack.cli("logs", "supervisor", "-n", "40", check=False).stdout
    raise AssertionError(f"not within {deadline_s}s: {what} (last: {last!r})\nsupervisor log:\n{log}")


def kill(pid: int) -> None:
    proc = psutil.Process(pid)
    os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
