"""FAKE kind, kubectl, helm and docker for the Kubernetes profiles' unit tests (tests/fakes/fakecluster.py).

`FakeTools` hands them to the code under test and reads back what they recorded: every call, and the
fake cluster state the calls left. By default the FAKE tools run in the test's own process
(`InProcessRunner`, swapped in as `tools.DEFAULT_RUNNER`): a kind `up` is some fifty calls, and an
interpreter for each made these tests slow. With ``executables=True`` every call runs the FAKE
executables in `bin/` as subprocesses through the real `SubprocessRunner`, so that path stays tested
(tests/unit/test_kind_profile.py's smoke test). Either way the executables are first on PATH: preflight
looks the tools up there, and a `kubectl port-forward` runs until it is stopped, so it is always the
FAKE executable's own process. Nothing here talks to Docker or Kubernetes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import psutil

from sandbox.files import read_pid_record
from sandbox.profiles.kube import tools
from sandbox.profiles.kube.tools import Command, SubprocessRunner
from tests.fakes import fakecluster
from tests.fakes.fake_state import FileState, MemoryState

BIN = Path(__file__).parent / "bin"
# Calls that change something (a dry-run, a read or a wait never does).
MUTATING = re.compile(
    r"^(kind (create|delete|load)|helm (upgrade|uninstall)|docker (build|exec \S+ bash)"
    r"|kubectl (apply(?!.*--dry-run=server)|delete|patch|rollout restart|exec|-n \S+ exec))"
)


# The stack's own actions, shared by both profiles' plans: (title starts with, a call that makes it
# fail, the call that undoes it). A real apply, not its server-side dry-run, is the one made to fail.
STACK_ACTIONS = [
    ("Secrets", r"apply .*(?<!--dry-run=server) <<Secret/postgres", r"delete secret/postgres-credentials"),
    ("PostgreSQL", r"rollout status statefulset/postgres", r"delete configmap/postgres-init"),
    ("S3 store", r"wait job/create-buckets", r"delete persistentvolumeclaim/s3-data"),
    ("MLflow", r"rollout status deployment/mlflow", r"delete deployment/mlflow"),
    ("JupyterLab", r"rollout status deployment/jupyterlab", r"delete persistentvolumeclaim/notebooks-workspace"),
]


class InProcessRunner:
    """A `tools.Runner` that answers the FAKE tools' calls in this process (`fakecluster.call`): the same
    answers, calls log and state semantics as the executables, without an interpreter per call.

    Only a tool that PATH resolves to `bin/` is answered here: any other runs as it is (a subprocess), and
    one PATH lacks is not found, as with the real runner."""

    def __init__(self, saved: MemoryState):
        self.saved = saved
        self.subprocess = SubprocessRunner()

    def _fake(self, command: Command) -> bool:
        found = shutil.which(command.argv[0])
        if found is None:
            raise FileNotFoundError(command.argv[0])
        return Path(found).parent == BIN

    def run(self, command: Command) -> subprocess.CompletedProcess[str]:
        if not self._fake(command):
            return self.subprocess.run(command)
        code, out, err = fakecluster.call(self.saved, command.argv[0], list(command.argv[1:]), command.stdin)
        return subprocess.CompletedProcess(list(command.argv), code, out, err)

    def stream(self, command: Command) -> Iterator[str]:
        if not self._fake(command):
            yield from self.subprocess.stream(command)
            return
        result = self.run(command)  # the FAKE `kubectl logs -f` ends after its lines
        yield from (result.stdout + result.stderr).splitlines(keepends=True)

    def start(self, command: Command, log: Path) -> int:
        # A port-forward runs until it is stopped, and the code checks and signals its pid: the FAKE executable.
        return self.subprocess.start(command, log)


class FakeTools:
    """The FAKE tools for one test, their files in ``folder``; ``executables``: see the module docstring."""

    def __init__(self, folder: Path, monkeypatch, *, executables: bool = False):
        self.log = folder / "fake-calls.jsonl"
        self.state_file = folder / "fake-state.json"
        self.monkeypatch = monkeypatch
        # The fakes' `#!/usr/bin/env python3` must find this interpreter (it has PyYAML).
        path = os.pathsep.join([str(BIN), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        monkeypatch.setenv("PATH", path)
        # Names this test's FAKE processes too (servers, port-forwards): `stop_servers` finds strays by it.
        monkeypatch.setenv("FAKE_TOOLS_STATE", str(self.state_file))
        self.saved: FileState | MemoryState
        if executables:
            self.saved = FileState(self.state_file, self.log)
            monkeypatch.setenv("FAKE_TOOLS_LOG", str(self.log))
        else:
            self.saved = MemoryState()
            monkeypatch.setattr(tools, "DEFAULT_RUNNER", InProcessRunner(self.saved))
            # No log for the executables: one run by a child process (not through the runner) fails loudly
            # rather than recording where no test reads.
            monkeypatch.delenv("FAKE_TOOLS_LOG", raising=False)
        monkeypatch.delenv("FAKE_TOOLS_FAIL", raising=False)
        monkeypatch.delenv("FAKE_TOOLS_UNREADY", raising=False)
        monkeypatch.delenv("FAKE_DOCKER_RUNTIME", raising=False)

    def fail(self, pattern: str | None) -> None:
        """The next calls whose line matches ``pattern`` fail as the real tool would."""
        if pattern is None:
            self.monkeypatch.delenv("FAKE_TOOLS_FAIL", raising=False)
        else:
            self.monkeypatch.setenv("FAKE_TOOLS_FAIL", pattern)

    def docker_runtime(self, name: str) -> None:
        """What the FAKE `docker info --format {{.DefaultRuntime}}` answers (runc otherwise)."""
        self.monkeypatch.setenv("FAKE_DOCKER_RUNTIME", name)

    def unready(self, pattern: str) -> None:
        self.monkeypatch.setenv("FAKE_TOOLS_UNREADY", pattern)

    def calls(self) -> list[dict]:
        return self.saved.calls()

    def lines(self) -> list[str]:
        """Each call as `tool argv...`, with the context flags left out, plus ` <<Kind/name,...` for stdin."""
        out = []
        for call in self.calls():
            argv = list(call["argv"])
            if argv[:1] in (["--context"], ["--kube-context"]):
                argv = argv[2:]
            line = " ".join([call["tool"], *argv])
            out.append(line + (" <<" + ",".join(call["stdin_objects"]) if call["stdin_objects"] else ""))
        return out

    def mutating(self) -> list[str]:
        return [line for line in self.lines() if MUTATING.match(line)]

    def clear_log(self) -> None:
        self.saved.clear_calls()

    def state(self) -> dict:
        return self.saved.read()

    def seed(self, data: dict) -> None:
        self.saved.write(data)

    def objects(self, context: str) -> dict:
        return self.state().get("objects", {}).get(context, {})

    def assert_undone_last_first(self, actions: list[tuple[str, str | None, str | None]], failing: int) -> None:
        """After a failure injected into ``actions[failing]`` (rows: title, failing call, undoing call):
        the undo calls ran for the actions this run made, last first, after the failing action's own
        half-made work (when it left any: a failed apply does, a failed install does not)."""
        lines = self.lines()
        fail, own = actions[failing][1], actions[failing][2]
        failed_at = next(i for i, line in enumerate(lines) if re.search(fail, line))
        assert not self.calls()[failed_at]["ok"]
        expected = [undo for _, _, undo in reversed(actions[:failing]) if undo]
        markers = [u for line in lines[failed_at + 1 :] for u in [own, *expected] if u and re.search(u, line)]
        if own and markers[:1] == [own]:
            markers = markers[1:]
        assert markers == expected

    def stop_servers(self, forwards: Path | None = None) -> None:
        """End the fake /health servers: those a fake `kind create cluster` started, and the fake
        port-forwards whose pid files are in ``forwards`` (each by its own pid)."""
        pids = [cluster.get("health_pid") for cluster in self.state().get("clusters", {}).values()]
        if forwards is not None and forwards.exists():
            pids += [record.pid for record in map(read_pid_record, forwards.glob("*.pid")) if record is not None]
        signalled = []
        for pid in filter(None, pids):
            with contextlib.suppress(psutil.Error):
                signalled.append(psutil.Process(pid))
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        # Wait for them to go first: one still exiting is not a stray (the scan below used to count those).
        psutil.wait_procs(signalled, timeout=10)
        # Whatever else a fake of this test still runs (its environment names this test's state file): ended,
        # and said, since the code under test should have stopped it (a forward has outlived `down` at times).
        strays = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get("FAKE_TOOLS_STATE") == str(self.state_file):
                    strays.append(proc)
                    proc.terminate()
        psutil.wait_procs(strays, timeout=10)
        if strays:
            warnings.warn(f"fake processes outlived the test: {[p.pid for p in strays]}", stacklevel=2)
