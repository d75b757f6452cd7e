"""FAKE kind, kubectl, helm and docker executables (`bin/`) for the Kubernetes profiles' unit tests.

`FakeTools` puts them first on PATH for a test and reads back what they recorded: every call, and
the fake cluster state the calls left. Nothing here talks to Docker or Kubernetes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import warnings
from pathlib import Path

import psutil

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


class FakeTools:
    def __init__(self, folder: Path, monkeypatch):
        self.log = folder / "fake-calls.jsonl"
        self.state_file = folder / "fake-state.json"
        self.monkeypatch = monkeypatch
        # The fakes' `#!/usr/bin/env python3` must find this interpreter (it has PyYAML).
        path = os.pathsep.join([str(BIN), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        monkeypatch.setenv("PATH", path)
        monkeypatch.setenv("FAKE_TOOLS_LOG", str(self.log))
        monkeypatch.setenv("FAKE_TOOLS_STATE", str(self.state_file))
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
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

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
        self.log.unlink(missing_ok=True)

    def state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def seed(self, data: dict) -> None:
        self.state_file.write_text(json.dumps(data))

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
            pids += [int(pid_file.read_text()) for pid_file in forwards.glob("*.pid")]
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
