"""FAKE kind, kubectl, helm and docker executables (`bin/`) for the Kubernetes profiles' unit tests.

`FakeTools` puts them first on PATH for a test and reads back what they recorded: every call, and
the fake cluster state the calls left. Nothing here talks to Docker or Kubernetes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

BIN = Path(__file__).parent / "bin"
# Calls that change something (a dry-run, a read or a wait never does).
MUTATING = re.compile(
    r"^(kind (create|delete|load)|helm (upgrade|uninstall)|docker build|kubectl (apply(?!.*--dry-run=server)"
    r"|delete|patch|rollout restart|exec|-n \S+ exec))"
)


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

    def fail(self, pattern: str | None) -> None:
        """The next calls whose line matches ``pattern`` fail as the real tool would."""
        if pattern is None:
            self.monkeypatch.delenv("FAKE_TOOLS_FAIL", raising=False)
        else:
            self.monkeypatch.setenv("FAKE_TOOLS_FAIL", pattern)

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

    def stop_servers(self) -> None:
        """End the fake /health servers a fake `kind create cluster` started (each by its own pid)."""
        for cluster in self.state().get("clusters", {}).values():
            pid = cluster.get("health_pid")
            if pid:
                try:
                    os.killpg(pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
