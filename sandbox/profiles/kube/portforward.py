"""`kubectl port-forward --address 127.0.0.1` processes the cluster profile starts, watches and stops.

The kind profile needs none (its NodePorts are mapped to 127.0.0.1 host ports by kind itself). On a
cluster the sandbox did not create, each service is forwarded to a kept loopback port; a forward
is one process with a pid file, trusted only while that pid runs `kubectl port-forward` for the same
target (a stale file is harmless). `ensure` restarts the dead ones: `up`, `status` and `endpoints`
call it, so a forward that died with a pod's restart comes back on the next command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from sandbox.net import LOOPBACK
from sandbox.profiles.kube.tools import Command, Tools


@dataclass(frozen=True)
class Forward:
    name: str  # the component: mlflow, s3, postgres, notebooks
    service: str  # the Service's name in the namespace
    remote_port: int
    local_port: int


class PortForwards:
    def __init__(self, tools: Tools, namespace: str, folder: Path):
        self.tools = tools
        self.namespace = namespace
        self.folder = folder

    def command(self, forward: Forward) -> Command:
        return self.tools.kubectl(
            "port-forward",
            "--address",
            LOOPBACK,
            "-n",
            self.namespace,
            f"svc/{forward.service}",
            f"{forward.local_port}:{forward.remote_port}",
            timeout_s=0,
        )

    def _pid_file(self, forward: Forward) -> Path:
        return self.folder / f"{forward.name}.pid"

    def running(self, forward: Forward) -> int | None:
        try:
            pid = int(self._pid_file(forward).read_text().strip())
            cmdline = psutil.Process(pid).cmdline()
        except (OSError, ValueError, psutil.Error):
            return None
        # The same arguments after a `kubectl` (started by name, or as a script by its interpreter).
        wanted = list(self.command(forward).argv)
        head = cmdline[-len(wanted)] if len(cmdline) >= len(wanted) else ""
        return pid if Path(head).name == wanted[0] and cmdline[-len(wanted) + 1 :] == wanted[1:] else None

    def _recorded(self, forward: Forward) -> int | None:
        """The pid in the forward's pid file when it is still a port-forward to that service, on any local port
        (a forward recorded before its port or context changed is still ours to stop)."""
        try:
            pid = int(self._pid_file(forward).read_text().strip())
            cmdline = psutil.Process(pid).cmdline()
        except (OSError, ValueError, psutil.Error):
            return None
        return pid if "port-forward" in cmdline and f"svc/{forward.service}" in cmdline else None

    def _kill(self, forward: Forward) -> None:
        pid = self._recorded(forward)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)

    def start(self, forward: Forward) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._kill(forward)  # never overwrite the pid file of a forward still running: it would be orphaned
        with open(self.folder / f"{forward.name}.log", "ab") as log:
            process = subprocess.Popen(
                list(self.command(forward).argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._pid_file(forward).write_text(str(process.pid))
        return process.pid

    def ensure(self, forwards: list[Forward]) -> list[str]:
        """Start every forward that is not running (first start or restart); the names started."""
        return [f.name for f in forwards if self.running(f) is None and self.start(f)]

    def stop(self, forwards: list[Forward]) -> None:
        for forward in forwards:
            self._kill(forward)
            self._pid_file(forward).unlink(missing_ok=True)
