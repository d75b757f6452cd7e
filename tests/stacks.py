"""The real local stacks the integration and fault suites share: the `Stack` handle and two session stacks.

- `platform`: read-mostly tests (serving, monitoring, the checklist, the remote target, notebooks). Tests may
  deploy, restart or stop a service, but leave it as they found it; the fixture repairs it with `up` if not.
- `scratch`: destructive tests (down, purge, crash, the fault modules). Every test gets it running again and
  with the reference model registered, whatever the test before did to it.

Both carry `fraud-detector` (the reference model, 8 float features): version 1 on both, version 2 on `platform`.
Under `pytest -n 2` (`make stacks`) each stack's tests run on one worker, the two side by side.

Commands under test go through the CLI (`Stack.cli`, a fresh interpreter, as a user runs them); state is read
in-process (`Stack.status`, what `sandbox status --json` prints), since reading it is not what these tests test.
Their conftests import the fixtures from here; no test file imports another's.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from sandbox.config import fallback_config, load_config
from sandbox.endpoints import Endpoints, log_in_to_mlflow
from sandbox.errors import ConfigError
from sandbox.profiles import get_profile

REFERENCE_MODEL = "fraud-detector"


# Every port a stack of this process held (before and after each command: a purge and an `up` choose new ones):
# the fault suite ties what is left in /tmp to its stacks by them (tests/faults/leftovers.py).
STACK_PORTS: set[int] = set()


def _record_ports(sandbox_dir: Path) -> None:
    try:
        STACK_PORTS.update(int(port) for port in json.loads((sandbox_dir / "ports.json").read_text()).values())
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # no sandbox (yet, or purged) or a damaged port map: nothing to add


@dataclass
class Stack:
    dir: Path
    env: dict[str, str] = field(default_factory=dict)  # SANDBOX_* settings every command of this stack gets

    def cli(
        self, *args: str, check: bool = True, env: dict | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        _record_ports(self.dir)
        try:
            return self._cli(*args, check=check, env=env, timeout=timeout)
        finally:
            _record_ports(self.dir)

    def _cli(self, *args: str, check: bool, env: dict | None, timeout: float) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "sandbox", *args, "--dir", str(self.dir)],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env, **(env or {})},
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"sandbox {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def status(self) -> dict:
        """What `sandbox status --json` prints, read in this process (a broken configuration read leniently, as
        `status` does)."""
        try:
            config = load_config(None, profile="local", dir=self.dir)
        except ConfigError:
            config = fallback_config(None, profile="local", dir=self.dir)
        return get_profile(config).status().as_dict()

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
            status = self.status()
        # This process's MLflow clients log in to this stack (as `eval "$(sandbox env)"` would).
        log_in_to_mlflow(Endpoints(**status["endpoints"]).mlflow_auth_env())
        return self

    def with_reference_model(self, versions: int) -> Stack:
        """`fraud-detector` registered with at least ``versions`` versions (seeds 0, 1, ...): a purge loses them."""
        from mlflow.exceptions import MlflowException

        from sandbox.serving.reference_model import register_reference_model

        endpoints = self.endpoints()
        uri = endpoints.mlflow_tracking_uri
        try:
            have = len(endpoints.mlflow_client().search_model_versions(f"name='{REFERENCE_MODEL}'"))
        except MlflowException:
            have = 0
        for seed in range(have, versions):
            register_reference_model(uri, REFERENCE_MODEL, n_estimators=20, seed=seed)
        return self


def local_pid(entry: dict) -> int:
    """The process id in a service's or deployment's `status --json` entry (the local profile says "pid N")."""
    kind, _, number = entry["instance"].partition(" ")
    assert kind == "pid", entry
    return int(number)


def _session_stack(tmp_path_factory, name: str, versions: int, env: dict | None = None) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp(name) / "sandbox", env=env or {})
    try:
        yield stack.running().with_reference_model(versions)
    finally:
        stack.cli("down", "--purge", check=False)


@pytest.fixture(scope="session")
def _platform(tmp_path_factory) -> Iterator[Stack]:
    yield from _session_stack(tmp_path_factory, "platform", versions=2)


@pytest.fixture(scope="session")
def _scratch(tmp_path_factory) -> Iterator[Stack]:
    # JupyterLab started by `up`, as every other service: the fault suite crashes, damages and counts each one.
    # The platform stack keeps the default (started on first use), which tests/integration/test_notebooks.py covers.
    yield from _session_stack(tmp_path_factory, "scratch", versions=1, env={"SANDBOX_NOTEBOOKS__START": "up"})


@pytest.fixture
def platform(_platform) -> Stack:
    """The read-mostly session stack, running, `fraud-detector` versions 1 and 2 registered."""
    return _platform.running().with_reference_model(2)


@pytest.fixture
def stack(_scratch) -> Stack:
    """The destructive session stack, running: tests may stop, crash or purge it; the next one gets it back up."""
    return _scratch.running().with_reference_model(1)


@pytest.fixture
def mlflow_env(stack, monkeypatch):
    """Point mlflow/boto3 in this process at the sandbox, as `eval "$(sandbox env)"` does."""
    for key, value in stack.endpoints().env().items():
        monkeypatch.setenv(key, value)
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return stack


# ---------------------------------------------------------------------------- one xdist worker per stack

# The modules of each session stack. Under `pytest -n 2` (`make stacks`) each stack's modules run on one worker, in
# order, so each worker starts one stack; modules of neither go to whichever worker is free.
PLATFORM_MODULES = tuple(
    f"tests/integration/test_{name}.py"
    for name in ("serving", "model_matrix", "monitoring", "scenarios", "remote", "notebooks", "mlflow_front_door")
)
SCRATCH_MODULES = ("tests/integration/test_local_stack.py", "tests/faults/")


def stack_of(nodeid: str) -> str | None:
    module = nodeid.split("::", 1)[0]
    if module in PLATFORM_MODULES:
        return "platform"
    return "scratch" if module.startswith(SCRATCH_MODULES) else None


def make_scheduler(config, log):
    """xdist's `loadscope` with a stack as one scope (its `xdist_group` marks are lost on pytest 9: it renames
    `item._nodeid`, which pytest 9 no longer reads)."""
    from xdist.scheduler import LoadScopeScheduling

    class StackScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return stack_of(nodeid) or super()._split_scope(nodeid)

    return StackScheduling(config, log)
