"""`kubectl port-forward --address 127.0.0.1` processes the Kubernetes profiles start, watch and stop.

The reach strategies (`kube/reach.py`) decide which run: on a cluster the sandbox did not create, each stack
service (and KFP's API) is forwarded to a kept loopback port; on both profiles so is each model deployment (kind
maps only the stack's fixed NodePorts, made with the cluster). A forward is one process with a pid file, trusted
only while that pid is still the process `start` made (its start time, recorded with the command it was
given: a stale file is harmless, and a forward stopped right after its start, still inside exec and showing no
command line in /proc, is still found). `ensure` restarts the dead ones and
waits (bounded) until those it started listen, so the caller's first request does not race a forward still
connecting; the commands that need a forward call it (`endpoints`, `serve url`), so a forward that died with a
pod's restart comes back on the next of them. Reads (`status`, `serve list`) start none.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import psutil

from sandbox.files import PidRecord, read_pid_record, write_pid_record
from sandbox.net import LOOPBACK, wait_listening
from sandbox.profiles.kube.tools import Command, Tools

# A forward listens on its local port only once it has found a pod behind the Service and opened its stream
# through the API server: `ensure` waits this long for one it started, so a request right after is not refused.
LISTEN_WAIT_S = 15.0


@dataclass(frozen=True)
class Forward:
    name: str  # its pid file's name: the component (mlflow, kfp, ...) or the deployment's (serve-NAME[-grpc])
    service: str  # the Service's name in the namespace
    remote_port: int
    local_port: int
    namespace: str | None = None  # the Service's namespace, when not the one the forwards are kept for


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
            forward.namespace or self.namespace,
            f"svc/{forward.service}",
            f"{forward.local_port}:{forward.remote_port}",
            timeout_s=0,
        )

    def _pid_file(self, name: str) -> Path:
        return self.folder / f"{name}.pid"

    def _live_record(self, name: str) -> PidRecord | None:
        """The record of the forward ``name`` while the process it names still runs."""
        record = read_pid_record(self._pid_file(name))
        return record if record is not None and record.process() is not None else None

    def running(self, forward: Forward) -> int | None:
        """The pid of ``forward`` when it runs as wanted now (same context, ports and Service)."""
        record = self._live_record(forward.name)
        return record.pid if record is not None and record.cmdline == list(self.command(forward).argv) else None

    def _recorded(self, name: str, service: str | None = None) -> int | None:
        """The pid of the forward ``name`` when it is still a port-forward (to ``service``, when given), on any
        local port: a forward recorded before its port or context changed is still ours to stop."""
        record = self._live_record(name)
        if record is None or "port-forward" not in record.cmdline:
            return None
        return record.pid if service is None or f"svc/{service}" in record.cmdline else None

    def _kill(self, name: str, service: str | None = None) -> None:
        pid = self._recorded(name, service)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)

    def start(self, forward: Forward) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._kill(forward.name, forward.service)  # never overwrite a running forward's pid file: it would be orphaned
        command = self.command(forward)
        pid = self.tools.start(command, self.folder / f"{forward.name}.log")
        try:
            record = PidRecord.of(psutil.Process(pid), command.argv)
        except psutil.NoSuchProcess:
            return pid  # it ended at once (its log says why): nothing to record or stop
        write_pid_record(self._pid_file(forward.name), record)
        return pid

    def ensure(self, forwards: list[Forward], *, wait_s: float = LISTEN_WAIT_S) -> list[str]:
        """Start every forward that is not running (first start or restart), then wait up to ``wait_s`` for
        those to listen (one that never does is left to the caller's request, whose error says so); the names
        started."""
        started = [f for f in forwards if self.running(f) is None and self.start(f)]
        for forward in started:
            wait_listening(forward.local_port, wait_s)
        return [f.name for f in started]

    def stop(self, forwards: list[Forward]) -> None:
        self.stop_named([f.name for f in forwards])

    def stop_named(self, names: list[str]) -> None:
        """End the forwards recorded under ``names`` (only a pid that is a kubectl port-forward: a stale pid file
        is harmless) and remove their pid files."""
        for name in names:
            self._kill(name)
            self._pid_file(name).unlink(missing_ok=True)

    def recorded_names(self, prefix: str) -> list[str]:
        """The names of the forwards recorded in the folder whose names start with ``prefix``."""
        if not self.folder.is_dir():
            return []
        return sorted(path.stem for path in self.folder.glob(f"{prefix}*.pid"))
