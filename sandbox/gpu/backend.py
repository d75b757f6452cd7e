"""The scheduler backend every profile offers, and the neutral snapshot it returns.

The local profile answers from its model of Kubernetes (`sandbox.gpu.scheduler.Cluster`);
a Kubernetes profile answers from the API server (nodes' capacity, Pods, ResourceQuota
status). Callers (`sandbox gpu status`, the `gpu-quotas` scenario) see only these types:
quantities as Kubernetes spells them, no local state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from sandbox.gpu.inventory import NodeSpec, QuotaSpec
from sandbox.gpu.scheduler import SchedulingDecision, Workload


@dataclass(frozen=True)
class NodeUsage:
    """A node, what it offers and what its workloads request (`kubectl describe node`)."""

    name: str
    labels: dict[str, str]
    taints: list[str]
    gpus: int
    gpus_used: int
    cpu: str
    cpu_used: str
    memory: str
    memory_used: str
    real: bool  # GPUs of this machine (or a real cluster's), not advertised fakes


@dataclass(frozen=True)
class WorkloadState:
    namespace: str
    name: str
    # The Pod's phase (`status.phase`): Pending until its containers run, bound to a node or not; Unknown when
    # its node stopped reporting. The local model has no kubelet: a placed workload is Running.
    phase: Literal["Running", "Pending", "Unknown"]
    node: str | None
    devices: list[int] = field(default_factory=list)
    # While pending: unplaced, the FailedScheduling message; placed, why its containers do not run yet
    # (a container's waiting reason and message, e.g. `ContainerCreating`, `ImagePullBackOff: ...`).
    reason: str = ""


@dataclass(frozen=True)
class QuotaUsage:
    """A ResourceQuota's `hard` and `used`, as its status shows them."""

    namespace: str
    name: str
    hard: dict[str, str]
    used: dict[str, str]


@dataclass(frozen=True)
class SchedulerSnapshot:
    nodes: list[NodeUsage]
    workloads: list[WorkloadState]
    quotas: list[QuotaUsage]

    def to_dict(self) -> dict:
        return asdict(self)


class SchedulerBackend(Protocol):
    """Admission, placement and quotas: `kubectl` and the scheduler, or the local model of them."""

    def nodes(self) -> list[NodeSpec]: ...

    def apply_quota(self, quota: QuotaSpec) -> None: ...

    def delete_quota(self, namespace: str, name: str) -> None: ...

    def submit(self, workload: Workload) -> SchedulingDecision: ...

    def release(self, name: str, namespace: str = "default") -> list[SchedulingDecision]:
        """Remove a workload (KeyError when there is none); returns the pending ones it let start."""
        ...

    def snapshot(self) -> SchedulerSnapshot: ...
