"""Real local stacks driven through the CLI as a user would: the `Stack` handle and the session stack fixtures the
integration and fault suites share (their conftests import them; no test file imports another's)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from sandbox.endpoints import Endpoints


@dataclass
class Stack:
    dir: Path

    def cli(
        self, *args: str, check: bool = True, env: dict | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "sandbox", *args, "--dir", str(self.dir)],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"sandbox {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def endpoints(self) -> Endpoints:
        return Endpoints(**self.status()["endpoints"])

    def pids(self) -> dict[str, int]:
        return {s["name"]: local_pid(s) for s in self.status()["services"] if s["instance"]}

    @contextlib.contextmanager
    def supervisor_paused(self) -> Iterator[None]:
        """For a test that needs a component to stay down: the supervisor stopped, and back (by `up`) after."""
        supervisor = next(s for s in self.status()["services"] if s["name"] == "supervisor")
        if supervisor["instance"]:
            proc = psutil.Process(local_pid(supervisor))
            proc.terminate()
            proc.wait(30)
        try:
            yield
        finally:
            self.cli("up")

    def running(self) -> Stack:
        """Bring the stack up unless it and its deployments run (a test before may have stopped or purged them)."""
        status = self.status()
        if status["state"] != "running" or any(d["state"] != "running" for d in status["deployments"]):
            self.cli("up")
        return self


def local_pid(entry: dict) -> int:
    """The process id in a service's or deployment's `status --json` entry (the local profile says "pid N")."""
    kind, _, number = entry["instance"].partition(" ")
    assert kind == "pid", entry
    return int(number)


@pytest.fixture(scope="session")
def _session_stack(tmp_path_factory) -> Stack:
    stack = Stack(tmp_path_factory.mktemp("stack") / "sandbox")
    yield stack
    stack.cli("down", "--purge", check=False)


@pytest.fixture
def stack(_session_stack) -> Stack:
    """The session's stack, running: tests may stop, crash or purge it; the next one gets it back up."""
    return _session_stack.running()


@pytest.fixture
def mlflow_env(stack, monkeypatch):
    """Point mlflow/boto3 in this process at the sandbox, as `eval "$(sandbox env)"` does."""
    for key, value in stack.endpoints().env().items():
        monkeypatch.setenv(key, value)
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return stack
