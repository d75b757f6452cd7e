"""What every local service has: a runtime folder, a verified process, a real readiness probe."""

from __future__ import annotations

import abc
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from sandbox.config import SandboxConfig
from sandbox.profiles.base import ServiceState, ServiceStatus
from sandbox.profiles.local.process import PORTS_MARKER, Identity, ManagedProcess
from sandbox.profiles.local.readiness import wait_ready
from sandbox.profiles.local.state import PortMap, SandboxDir, Secrets


@dataclass
class ServiceContext:
    """What a service needs to know about its sandbox."""

    config: SandboxConfig
    sandbox: SandboxDir
    secrets: Secrets
    ports: PortMap


class LocalService(abc.ABC):
    """A server process the local profile runs on 127.0.0.1."""

    name: ClassVar[str]  # short id: folder name, `sandbox logs NAME`
    title: ClassVar[str]  # what the user reads
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    signal_whole_group: ClassVar[bool] = True

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self.dir = ctx.sandbox.service_dir(self.name)
        self.process = ManagedProcess(
            self.dir / "service.pid", self.dir / "service.log", Identity(ctx.sandbox.home, self.name)
        )

    # ---------------------------------------------------------------- to implement

    @abc.abstractmethod
    def claim_ports(self) -> None:
        """Choose this service's ports (called only when it is about to start)."""

    @abc.abstractmethod
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and the extra environment to start the server with."""

    @abc.abstractmethod
    def probe(self) -> None:
        """One real request; raise if the service cannot serve it."""

    @abc.abstractmethod
    def port_keys(self) -> list[str]:
        """Keys in the port map that belong to this service; the first is its main port."""

    @abc.abstractmethod
    def url(self) -> str | None:
        """Where a client reaches it (without credentials)."""

    def prepare(self) -> str:
        """One-time set-up before the first start (e.g. initdb); returns a note for the user."""
        return ""

    def after_ready(self) -> None:
        """Idempotent set-up that needs the running server (databases, buckets)."""
        return None

    def run_as(self) -> str | None:
        """System user to run the server as, when it must not run as root."""
        return None

    def describe(self) -> str:
        """A few words on what runs (binary source, version) for the ✓ line."""
        return ""

    def clean_up_after_stop(self) -> None:
        """Remove what the server leaves outside the sandbox dir once it no longer runs (nothing by default)."""
        return None

    # ---------------------------------------------------------------- shared behaviour

    @property
    def port(self) -> int | None:
        return self.ctx.ports.get(self.port_keys()[0])

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def start(self, *, pass_fds: tuple[int, ...] = ()) -> str:
        """Start the server and wait until it answers; returns a note for the ✓ line.

        ``pass_fds``: descriptors the server inherits (a listening socket handed over by the supervisor)."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv, extra_env = self.command()
        env = {**os.environ, **extra_env, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        env[PORTS_MARKER] = json.dumps({key: self.ctx.ports.get(key) for key in self.port_keys()})
        self.process.start(argv, env=env, cwd=self.dir, user=self.run_as(), pass_fds=pass_fds)
        took = wait_ready(self.title, self.probe, self.process, timeout=self.ctx.config.startup_timeout)
        self.after_ready()
        return f"ready in {took:.1f}s"

    def stop(self) -> bool:
        return self.process.stop(sig=self.stop_signal, whole_group=self.signal_whole_group)

    def reap_leftovers(self) -> int:
        """After a crash of the leader, stop what is left of its process group."""
        leftovers = self.process.leftovers()
        if leftovers and self.process.running() is None:
            self.process.stop(sig=signal.SIGKILL)
        return len(leftovers)

    def healthy(self) -> bool:
        try:
            self.probe()
        except Exception:  # noqa: BLE001 - any failure of the probe means unhealthy
            return False
        return True

    def status(self) -> ServiceStatus:
        proc = self.process.running()
        if proc is None:
            state = ServiceState.STOPPED
        else:
            state = ServiceState.RUNNING if self.healthy() else ServiceState.UNHEALTHY
        ports = {key: self.ctx.ports.get(key) for key in self.port_keys() if self.ctx.ports.get(key)}
        return ServiceStatus(
            name=self.name,
            title=self.title,
            state=state,
            instance=f"pid {proc.pid}" if proc else None,
            port=self.port,
            url=self.url(),
            ports=ports,
        )
