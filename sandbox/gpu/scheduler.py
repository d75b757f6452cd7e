"""Admission and placement with Kubernetes' semantics, for workloads on the local profile.

What it mirrors, rule by rule (each is a case in tests/unit/test_gpu_parity.py):
- ResourceQuota admission: a workload's requests plus what its namespace
  already uses (running and pending workloads) must stay within every `hard`
  limit; otherwise it is refused with the API server's wording
  `exceeded quota: NAME, requested: R=x, used: R=y, limited: R=z`. A quota on
  requests.cpu / requests.memory makes those requests mandatory
  (`failed quota: NAME: must specify requests.cpu for: workload; ...`, naming
  the container, as the pod evaluator's Constraints does).
- Extended resources (`nvidia.com/gpu`): the request defaults to the limit;
  if both are given they must be equal; no overcommit (the API server's
  validation messages: `must be equal to nvidia.com/gpu limit of N`,
  `Limit must be set for non overcommitable resources`).
- Filters, in the scheduler's order, the first that fails a node giving its
  reasons: TaintToleration (NoSchedule/NoExecute taints must be tolerated),
  NodeAffinity (nodeSelector labels, e.g. the GPU product label),
  NodeResourcesFit (pods, then cpu, memory, nvidia.com/gpu: every resource
  short is a reason of its own).
- Scoring: NodeResourcesFit's LeastAllocated (spread) or MostAllocated (pack),
  over cpu and memory as kube-scheduler's default profile (an extended resource
  such as nvidia.com/gpu counts for fit, not for the score, unless
  `gpu.score_resources` names it, as a scheduler profile's
  scoringStrategy.resources would). Ties go to the first node in the inventory
  (kube-scheduler picks one of the tied nodes at random).
- No fit: the workload stays Pending with kube-scheduler 1.36's FailedScheduling
  message, and is retried, in order, when capacity frees:
  `0/N nodes are available: <count reason, ...>. no new claims to deallocate,
  preemption: 0/N nodes are available: <count reason, ...>.` The reasons are
  counted across nodes and sorted as strings (FitError.Error); a taint is never
  named (`node(s) had untolerated taint(s)`, since Kubernetes 1.34). After the
  filters' reasons come the PostFilter plugins': DynamicResources' (a Pod
  without ResourceClaims: `no new claims to deallocate`), then DefaultPreemption's.
  Workloads here have no priority, so preemption never finds a victim: a node
  rejected for a reason preemption could cure (a resource short that the node
  has in all) says `No preemption victims found for incoming pod`, every other
  node `Preemption is not helpful for scheduling`.
- A placed GPU workload gets its own device ids in CUDA_VISIBLE_DEVICES and
  NVIDIA_VISIBLE_DEVICES, distinct from every other workload on that node.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.gpu import quantity
from sandbox.gpu.inventory import DEFAULT_SCORE_RESOURCES, QUOTA_RESOURCES, NodeSpec, QuotaSpec, Taint

FIT_RESOURCES = (quantity.CPU, quantity.MEMORY, quantity.GPU)
# kube-scheduler 1.36's wording (pkg/scheduler/framework/types.go, FitError.Error; plugins tainttoleration,
# nodeaffinity, noderesources, dynamicresources, defaultpreemption; framework/preemption).
NO_NODES = "0/{} nodes are available"
TAINT_REASON = "node(s) had untolerated taint(s)"
AFFINITY_REASON = "node(s) didn't match Pod's node affinity/selector"
NO_CLAIMS = "no new claims to deallocate"
NO_VICTIMS = "No preemption victims found for incoming pod"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
# A workload is a Pod with one container of this name (the Kubernetes backend creates it so);
# the API server's messages name it.
CONTAINER = "workload"


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' rule: the effect matches (empty: all), the key matches (empty + Exists: all)."""
        if self.effect is not None and self.effect != taint.effect:
            return False
        if self.key is None:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


def untolerated(tolerations: list[Toleration], taints: list[Taint]) -> list[Taint]:
    """The NoSchedule/NoExecute taints that no toleration tolerates (TaintToleration's filter)."""
    return [
        t
        for t in taints
        if t.effect in ("NoSchedule", "NoExecute") and not any(tol.tolerates(t) for tol in tolerations)
    ]


@dataclass(frozen=True)
class Rejection:
    """Why a node failed the filters: the first failing filter's reasons, and whether preemption could cure it
    (the status Unschedulable) or not (UnschedulableAndUnresolvable)."""

    reasons: tuple[str, ...]
    resolvable: bool


def failed_scheduling(total: int, rejections: list[Rejection]) -> str:
    """kube-scheduler's FailedScheduling message for a pod no node passed (without the `FailedScheduling: `)."""
    if total == 0:
        return "no nodes available to schedule pods"  # ErrNoNodesAvailable
    filters = _histogram(reason for rejection in rejections for reason in rejection.reasons)
    preemption = _histogram(NO_VICTIMS if rejection.resolvable else NOT_HELPFUL for rejection in rejections)
    available = NO_NODES.format(total)
    return f"{available}: {filters}. {NO_CLAIMS}, preemption: {available}: {preemption}."


def _histogram(reasons) -> str:
    """`N reason` per distinct reason, sorted as strings (as FitError.Error sorts them), comma-joined."""
    return ", ".join(sorted(f"{n} {reason}" for reason, n in Counter(reasons).items()))


class Workload(BaseModel):
    """The parts of a Pod spec that admission and placement read."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str = "default"
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)

    def effective(self) -> tuple[dict[str, int], dict[str, int]]:
        """(requests, limits) in base units, with Kubernetes' defaulting and validation."""
        requests = {k: quantity.parse(v, k) for k, v in self.requests.items()}
        limits = {k: quantity.parse(v, k) for k, v in self.limits.items()}
        for resource, limit in limits.items():
            requests.setdefault(resource, limit)  # a limit alone sets the request
        gpu_request, gpu_limit = requests.get(quantity.GPU), limits.get(quantity.GPU)
        if gpu_limit is not None and gpu_request != gpu_limit:
            raise ValueError(
                f'Pod "{self.name}" is invalid: spec.containers[0].resources.requests: '
                f'Invalid value: "{gpu_request}": must be equal to nvidia.com/gpu limit of {gpu_limit}'
            )
        if gpu_request and gpu_limit is None:
            raise ValueError(
                f'Pod "{self.name}" is invalid: spec.containers[0].resources.limits: '
                "Required value: Limit must be set for non overcommitable resources"
            )
        return requests, limits


@dataclass
class Placement:
    workload: Workload
    node: str | None  # None while pending
    devices: list[int] = field(default_factory=list)
    reason: str = ""  # FailedScheduling message while pending

    @property
    def env(self) -> dict[str, str]:
        if not self.devices:
            return {}
        ids = ",".join(str(d) for d in self.devices)
        return {"CUDA_VISIBLE_DEVICES": ids, "NVIDIA_VISIBLE_DEVICES": ids}


@dataclass
class SchedulingDecision:
    """What admission and the scheduler decided for one workload: Scheduled (on a node, with devices and their
    environment), Pending (why it fits nowhere yet) or Rejected (admission's refusal, as the API words it)."""

    status: Literal["Scheduled", "Pending", "Rejected"]
    workload: str
    message: str = ""
    node: str | None = None
    devices: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


class QuotaExceeded(Exception):
    pass


class Cluster:
    """Nodes, quotas and the workloads admitted to them (scheduled or pending)."""

    def __init__(
        self,
        nodes: list[NodeSpec],
        quotas: list[QuotaSpec],
        scoring: str = "LeastAllocated",
        score_resources: dict[str, int] | None = None,
    ):
        self.nodes = {node.name: node for node in nodes}
        self.quotas = quotas
        self.scoring = scoring
        self.score_resources = dict(score_resources or DEFAULT_SCORE_RESOURCES)
        self.placements: dict[str, Placement] = {}  # key: namespace/name, in admission order

    # ------------------------------------------------------------------ accounting

    @staticmethod
    def key(name: str, namespace: str = "default") -> str:
        return f"{namespace}/{name}"

    def used_on(self, node: str) -> dict[str, int]:
        used = Counter()
        for placement in self.placements.values():
            if placement.node == node:
                requests, _ = placement.workload.effective()
                used.update({r: requests.get(r, 0) for r in FIT_RESOURCES})
                used[quantity.PODS] += 1
        return dict(used)

    def devices_used_on(self, node: str) -> set[int]:
        return {d for p in self.placements.values() if p.node == node for d in p.devices}

    def quota_used(self, namespace: str) -> dict[str, int]:
        used = Counter()
        for placement in self.placements.values():
            if placement.workload.namespace == namespace:
                used.update(_quota_usage(placement.workload))
        return dict(used)

    # ------------------------------------------------------------------ admission

    def _admit(self, workload: Workload) -> None:
        requests, _ = workload.effective()
        usage = _quota_usage(workload)
        for quota in (q for q in self.quotas if q.namespace == workload.namespace):
            hard = quota.limits()
            missing = [
                r for r in hard if r in ("requests.cpu", "requests.memory") and r.split(".", 1)[1] not in requests
            ]
            if missing:
                detail = "; ".join(f"{resource} for: {CONTAINER}" for resource in sorted(missing))
                raise QuotaExceeded(f"failed quota: {quota.name}: must specify {detail}")
            used = self.quota_used(workload.namespace)
            over = [r for r, limit in hard.items() if usage.get(r, 0) and used.get(r, 0) + usage[r] > limit]
            if over:
                raise QuotaExceeded(
                    f"exceeded quota: {quota.name}, requested: {_fmt(usage, over)}, used: {_fmt(used, over)}, "
                    f"limited: {_fmt(hard, over)}"
                )

    # ------------------------------------------------------------------ placement

    def _filter(self, workload: Workload, node: NodeSpec) -> Rejection | None:
        """None if the node passes every filter, else the first failing filter's reasons."""
        if untolerated(workload.tolerations, node.taints):
            return Rejection((TAINT_REASON,), resolvable=False)
        labels = node.all_labels()
        if any(labels.get(k) != v for k, v in workload.node_selector.items()):
            return Rejection((AFFINITY_REASON,), resolvable=False)
        # NodeResourcesFit (fitsRequest): pods first; a pod that requests nothing is checked for nothing else;
        # then every resource short, each a reason; past the node's whole allocatable, preemption cannot help.
        requests, _ = workload.effective()
        free, allocatable = self._free(node), node.allocatable()
        reasons, resolvable = [], True
        if free[quantity.PODS] < 1:
            reasons.append("Too many pods")
        if any(requests.get(r, 0) for r in FIT_RESOURCES):
            for resource in FIT_RESOURCES:
                wanted = requests.get(resource, 0)
                if wanted and wanted > free[resource]:
                    reasons.append(f"Insufficient {resource}")
                    resolvable = resolvable and wanted <= allocatable[resource]
        return Rejection(tuple(reasons), resolvable) if reasons else None

    def _free(self, node: NodeSpec) -> dict[str, int]:
        used = self.used_on(node.name)
        return {r: amount - used.get(r, 0) for r, amount in node.allocatable().items()}

    def _score(self, workload: Workload, node: NodeSpec) -> float:
        """NodeResourcesFit's score: the weighted mean of each scored resource's fraction (requested after
        placing the workload / allocatable); an extended resource the workload does not request, or one the
        node has none of, is left out, as kube-scheduler leaves it out."""
        requests, _ = workload.effective()
        allocatable, used = node.allocatable(), self.used_on(node.name)
        total = weights = 0.0
        for resource, weight in self.score_resources.items():
            if resource not in (quantity.CPU, quantity.MEMORY) and not requests.get(resource):
                continue
            if not allocatable.get(resource):
                continue
            after = used.get(resource, 0) + requests.get(resource, 0)
            total += weight * min(after / allocatable[resource], 1.0)
            weights += weight
        if not weights:
            return 0.0
        mean = total / weights
        return (1 - mean) if self.scoring == "LeastAllocated" else mean

    def _place(self, placement: Placement) -> bool:
        workload = placement.workload
        rejections = []
        feasible = []
        for node in self.nodes.values():
            rejection = self._filter(workload, node)
            if rejection is None:
                feasible.append(node)
            else:
                rejections.append(rejection)
        if not feasible:
            placement.reason = failed_scheduling(len(self.nodes), rejections)
            return False
        best = max(feasible, key=lambda n: (self._score(workload, n), -list(self.nodes).index(n.name)))
        requests, _ = workload.effective()
        wanted = requests.get(quantity.GPU, 0)
        free_devices = [d for d in range(best.gpus) if d not in self.devices_used_on(best.name)]
        placement.node, placement.devices, placement.reason = best.name, free_devices[:wanted], ""
        return True

    # ------------------------------------------------------------------ API

    def submit(self, workload: Workload) -> SchedulingDecision:
        key = self.key(workload.name, workload.namespace)
        if key in self.placements:
            return SchedulingDecision("Rejected", workload.name, f'pods "{workload.name}" already exists')
        try:
            workload.effective()
            self._admit(workload)
        except QuotaExceeded as exc:
            return SchedulingDecision("Rejected", workload.name, f'pods "{workload.name}" is forbidden: {exc}')
        except ValueError as exc:
            return SchedulingDecision("Rejected", workload.name, str(exc))
        placement = Placement(workload, None)
        self.placements[key] = placement
        if self._place(placement):
            return self._decision(placement)
        return SchedulingDecision("Pending", workload.name, f"FailedScheduling: {placement.reason}")

    def release(self, name: str, namespace: str = "default") -> list[SchedulingDecision]:
        """Remove a workload; pending ones that now fit are scheduled, oldest first."""
        if self.placements.pop(self.key(name, namespace), None) is None:
            raise KeyError(f"no workload {namespace}/{name}")
        scheduled = []
        for placement in self.placements.values():
            if placement.node is None and self._place(placement):
                scheduled.append(self._decision(placement))
        return scheduled

    def _decision(self, placement: Placement) -> SchedulingDecision:
        devices = ",".join(map(str, placement.devices)) or "none"
        return SchedulingDecision(
            "Scheduled",
            placement.workload.name,
            f"Successfully assigned {placement.workload.namespace}/{placement.workload.name} to {placement.node}"
            f" (GPUs: {devices})",
            placement.node,
            list(placement.devices),
            placement.env,
        )

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict:
        return {
            "placements": [
                {"workload": p.workload.model_dump(), "node": p.node, "devices": p.devices, "reason": p.reason}
                for p in self.placements.values()
            ]
        }

    def load(self, state: dict) -> None:
        for item in state.get("placements", []):
            workload = Workload(**item["workload"])
            if item["node"] is not None and item["node"] not in self.nodes:
                item = {**item, "node": None, "devices": []}  # its node left the inventory: reschedule
            self.placements[self.key(workload.name, workload.namespace)] = Placement(
                workload, item["node"], item["devices"], item.get("reason", "")
            )
        for placement in self.placements.values():
            if placement.node is None:
                self._place(placement)


def _fmt(values: dict[str, int], resources: list[str]) -> str:
    return ",".join(f"{r}={quantity.format_quantity(values.get(r, 0), QUOTA_RESOURCES[r])}" for r in resources)


def _quota_usage(workload: Workload) -> dict[str, int]:
    requests, limits = workload.effective()
    usage = {"count/pods": 1}
    for resource in FIT_RESOURCES:
        if requests.get(resource):
            usage[f"requests.{resource}"] = requests[resource]
    for resource in (quantity.CPU, quantity.MEMORY):
        if limits.get(resource):
            usage[f"limits.{resource}"] = limits[resource]
    return usage
