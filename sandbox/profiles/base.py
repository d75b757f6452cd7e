"""The one protocol every profile implements (see kind's providers)."""

from __future__ import annotations

import abc
import contextlib
import enum
import secrets
import shutil
import string
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from sandbox.config import SandboxConfig
from sandbox.endpoints import Endpoints
from sandbox.errors import ConfigError, PortInUseError
from sandbox.net import free_port, port_is_free

if TYPE_CHECKING:
    from sandbox.actions import Action
    from sandbox.gpu.backend import SchedulerBackend
    from sandbox.pipelines.runner import PipelineRunner
    from sandbox.serving.deployments import Deployments
    from sandbox.serving.runtime import ServingRuntime
    from sandbox.serving.specs import ServingBackend

MIN_PYTHON = (3, 11, 5)  # the locked dependency set needs it (soupsieve: >=3.11.5; most: >=3.11)
MIN_FREE_DISK_GB = 2.0

TOKEN_ALPHABET = string.ascii_letters + string.digits


def generate_token(length: int) -> str:
    """A random alphanumeric secret (about 5.95 bits per character), for every profile's generated credentials.

    Alphanumerics only: safe in S3 keys, URLs and shell words; a URL-safe token may begin with '-', and then
    any CLI it is handed to (dvc, aws, psql) reads it as an option.
    """
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(length))


@dataclass
class Check:
    """One line of `sandbox doctor`."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


class ServiceState(str, enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    UNHEALTHY = "unhealthy"  # the process is there but its readiness probe fails
    WAITING = "waiting"  # not started: it starts on its first use (its port is listened on for it)


@dataclass
class ServiceStatus:
    """One component of a stack, as `status` shows it."""

    name: str
    title: str
    state: ServiceState
    instance: str | None  # what runs it, as the profile names it: "pid 4242" locally, a pod on Kubernetes
    port: int | None
    url: str | None
    ports: dict[str, int] = field(default_factory=dict)
    detail: str = ""


@dataclass
class ProfileStatus:
    profile: str
    dir: str
    services: list[ServiceStatus] = field(default_factory=list)
    endpoints: Endpoints | None = None
    deployments: list = field(default_factory=list)  # DeploymentStatus
    warnings: list[str] = field(default_factory=list)  # what the user should fix (e.g. files open to others)

    @property
    def overall(self) -> str:
        states = {s.state.value for s in self.services}
        if not self.services or states == {"stopped"}:
            return "stopped"
        return "running" if states <= {"running", "waiting"} else "degraded"

    def as_dict(self) -> dict:
        """What `sandbox status --json` prints (and what tests and the pytest plugin read in-process)."""
        return {
            "profile": self.profile,
            "dir": self.dir,
            "state": self.overall,
            "services": [{**asdict(s), "state": s.state.value} for s in self.services],
            "endpoints": self.endpoints.model_dump() if self.endpoints else None,
            "deployments": [asdict(d) for d in self.deployments],
            "warnings": self.warnings,
        }


def serving_planner(config: SandboxConfig, runtime: ServingRuntime) -> Deployments:
    """The serving control plane over a profile's runtime, knowing the inventory's largest GPU node."""
    from sandbox.gpu import inventory_nodes
    from sandbox.serving.deployments import Deployments

    most = max((node.gpus for node in inventory_nodes(config.gpu)), default=0)
    return Deployments(runtime, most_gpus_on_a_node=most)


class Profile(abc.ABC):
    name: ClassVar[str]
    summary: ClassVar[str]

    def __init__(self, config: SandboxConfig):
        self.config = config

    @abc.abstractmethod
    def preflight(self) -> list[Check]:
        """What this profile needs from the machine; no side effects."""

    @abc.abstractmethod
    def up(self, *, keep: bool = False) -> Endpoints:
        """Bring the stack up (idempotent); on failure tear down what it started unless ``keep``."""

    @abc.abstractmethod
    def down(self, *, purge: bool = False, keep_cluster: bool = False) -> None:
        """Stop everything this profile started (idempotent); ``purge`` deletes its data. ``keep_cluster``: keep the
        cluster the profile created and remove only the stack's objects (kind; the cluster profile, on a cluster it
        never deletes, removes its objects either way); a profile with no cluster refuses it (ConfigError, exit 2)."""

    @abc.abstractmethod
    def status(self) -> ProfileStatus:
        """State read from what actually runs."""

    @abc.abstractmethod
    def endpoints(self) -> Endpoints:
        """Endpoints of the running stack; raises NotRunningError when there is none."""

    @abc.abstractmethod
    def serving(self) -> ServingBackend:
        """The serving control plane (sandbox.serving.deployments.Deployments over this profile's runtime): deploy a
        model or a split from its spec, undeploy, get, statuses, inference endpoints."""

    @abc.abstractmethod
    def pipelines(self) -> PipelineRunner:
        """The pipeline runner (sandbox.pipelines.runner): run a KFP pipeline, get its outcome and MLflow runs."""

    @abc.abstractmethod
    def scheduler(self) -> SchedulerBackend:
        """The GPU scheduling and quota backend (sandbox.gpu.backend): submit, release, quotas, a snapshot."""

    @abc.abstractmethod
    def service_names(self) -> list[str]:
        """Names `logs` accepts."""

    @abc.abstractmethod
    def logs(self, service: str, *, lines: int = 50, follow: bool = False) -> Iterator[str]:
        """A service's or deployment's log as text: its last ``lines`` lines, then (``follow``) what is
        appended, as it arrives, until the caller stops. Where the log lives is the profile's business."""

    def plan(self) -> list[Action]:
        """The ordered actions `up` would run, each with the exact commands it runs (`up --dry-run`).

        Reads and writes nothing. A profile whose bring-up is not a list of commands returns none.
        """
        return []

    def render(self, out: Path) -> list[Path]:
        """Write every manifest and values file `up` would apply into ``out`` (`up --render DIR`)."""
        raise ConfigError(
            f"the {self.name} profile applies no manifests: there is nothing to render",
            hint="--render applies to the Kubernetes profiles (kind, cluster)",
        )

    def diagnose(self, out: Path | None = None) -> Path:
        """Write one archive with what explains a failed or sick stack (`sandbox diagnose`); returns its path."""
        raise ConfigError(
            f"the {self.name} profile has no cluster to collect diagnostics from",
            hint="read a service's log with `sandbox logs SERVICE` and its state with `sandbox status`",
        )

    def lock(self, command: str) -> contextlib.AbstractContextManager:
        """Serialise a command that changes the platform with the others that do (`monitor retrain`).

        The backends' own changes (deploy, submit) take it themselves. A profile that keeps
        no state of its own (remote) has nothing to lock.
        """
        return contextlib.nullcontext()

    def claim_port(self, key: str, configured: int, *, setting: str) -> int:
        """A loopback port for a listener the sandbox runs on this machine (`monitor watch`'s /metrics).

        ``configured`` when it is given (refused if taken), else a free one. A profile that keeps
        state (the local one) keeps the port under ``key``, so the next run gets the same one.
        """
        if configured:
            if not port_is_free(configured):
                raise PortInUseError(
                    f"port {configured} ({key}) is already in use by another process",
                    hint=f"free it, or choose another port with {setting} (0 picks a free one)",
                )
            return configured
        return free_port()


def common_checks(config: SandboxConfig) -> list[Check]:
    """Checks every profile shares: Python and disk."""
    version = ".".join(map(str, sys.version_info[:3]))
    checks = [
        Check(
            "Python",
            sys.version_info[:3] >= MIN_PYTHON,
            f"Python {version}",
            fix=f"use Python {'.'.join(map(str, MIN_PYTHON))} or newer",
        )
    ]
    probe = config.root
    while not probe.exists():
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    checks.append(
        Check(
            "Free disk",
            free_gb >= MIN_FREE_DISK_GB,
            f"{free_gb:.1f} GB free at {probe}",
            fix=f"free at least {MIN_FREE_DISK_GB:.0f} GB, or choose another --dir",
        )
    )
    return checks
