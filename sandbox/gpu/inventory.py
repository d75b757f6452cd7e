"""The node inventory and namespace quotas (the `gpu:` section of sandbox.yaml).

gpu:
  real_gpus: auto            # auto | on | off: add a node with the GPUs NVML finds
  scoring: LeastAllocated    # NodeResourcesFit's strategy: LeastAllocated (spread) | MostAllocated (pack)
  score_resources: {cpu: 1, memory: 1}   # what the score weighs (kube-scheduler's default); add nvidia.com/gpu: 1
  nodes:
    - {name: gpu-a, gpus: 4, gpu_product: NVIDIA-A100-SXM4-80GB, gpu_memory: 80Gi,
       taints: ["nvidia.com/gpu=present:NoSchedule"]}
    - {name: cpu-1, cpu: 8, memory: 16Gi}
  quotas:
    - {namespace: default, name: gpu-quota, hard: {requests.nvidia.com/gpu: 4, count/pods: 20}}
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandbox.gpu import quantity

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # what NVIDIA's GPU feature discovery sets
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
_TAINT = re.compile(r"^([A-Za-z0-9./_-]+)(?:=([A-Za-z0-9._-]*))?:(NoSchedule|PreferNoSchedule|NoExecute)$")
QUOTA_RESOURCES = {
    "requests.nvidia.com/gpu": quantity.GPU,
    "requests.cpu": quantity.CPU,
    "requests.memory": quantity.MEMORY,
    "limits.cpu": quantity.CPU,
    "limits.memory": quantity.MEMORY,
    "count/pods": quantity.PODS,
}


class Taint(BaseModel):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]

    @classmethod
    def parse(cls, text: str) -> Taint:
        match = _TAINT.match(text)
        if not match:
            raise ValueError(f"taint {text!r} must look like key=value:NoSchedule")
        return cls(key=match.group(1), value=match.group(2) or "", effect=match.group(3))

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    gpus: int = Field(0, ge=0, le=64)
    gpu_product: str | None = None
    gpu_memory: str | None = None
    cpu: str = "8"
    memory: str = "32Gi"
    pods: int = Field(110, ge=1)
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    real: bool = False  # the GPUs are this machine's, found by NVML

    @field_validator("taints", mode="before")
    @classmethod
    def _parse_taints(cls, value):
        return [Taint.parse(t) if isinstance(t, str) else t for t in value or []]

    @field_validator("cpu", "memory", "gpu_memory", mode="before")
    @classmethod
    def _as_text(cls, value):
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str) -> str:
        quantity.parse(value, quantity.CPU)
        return str(value)

    @field_validator("memory", "gpu_memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            quantity.parse(value, quantity.MEMORY)
        return value

    def allocatable(self) -> dict[str, int]:
        return {
            quantity.CPU: quantity.parse(self.cpu, quantity.CPU),
            quantity.MEMORY: quantity.parse(self.memory, quantity.MEMORY),
            quantity.GPU: self.gpus,
            quantity.PODS: self.pods,
        }

    def all_labels(self) -> dict[str, str]:
        labels = {"kubernetes.io/hostname": self.name, **self.labels}
        if self.gpus:
            labels[GPU_PRODUCT_LABEL] = self.gpu_product or "NVIDIA-FAKE-GPU"
            labels["nvidia.com/gpu.count"] = str(self.gpus)
            if self.gpu_memory:
                labels[GPU_MEMORY_LABEL] = str(quantity.parse(self.gpu_memory, quantity.MEMORY) // 2**20)
        return labels


class QuotaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = "default"
    name: str = "compute-quota"
    hard: dict[str, str] = Field(default_factory=dict)

    @field_validator("hard", mode="before")
    @classmethod
    def _known_resources(cls, value: dict) -> dict[str, str]:
        out = {}
        for key, amount in (value or {}).items():
            if key not in QUOTA_RESOURCES:
                raise ValueError(f"quota resource {key!r} is not supported; use one of {', '.join(QUOTA_RESOURCES)}")
            quantity.parse(amount, QUOTA_RESOURCES[key])
            out[key] = str(amount)  # YAML may give a number
        return out

    def limits(self) -> dict[str, int]:
        return {key: quantity.parse(value, QUOTA_RESOURCES[key]) for key, value in self.hard.items()}


def default_nodes() -> list[NodeSpec]:
    """Fake GPUs: a tainted 4-GPU A100 node, a 2-GPU L4 node, a CPU node."""
    gpu_taint = [Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")]
    return [
        NodeSpec(
            name="gpu-a100",
            gpus=4,
            gpu_product="NVIDIA-A100-SXM4-80GB",
            gpu_memory="80Gi",
            cpu="32",
            memory="256Gi",
            taints=gpu_taint,
        ),
        NodeSpec(
            name="gpu-l4", gpus=2, gpu_product="NVIDIA-L4", gpu_memory="24Gi", cpu="16", memory="64Gi", taints=gpu_taint
        ),
        NodeSpec(name="cpu-1", cpu="8", memory="32Gi"),
    ]


def default_quotas() -> list[QuotaSpec]:
    hard = {"requests.nvidia.com/gpu": "4", "requests.cpu": "32", "requests.memory": "128Gi", "count/pods": "20"}
    return [QuotaSpec(namespace="default", name="compute-quota", hard=hard)]


ScoreResource = Literal["cpu", "memory", "nvidia.com/gpu"]
# NodeResourcesFit's default scoring resources and weights (kube-scheduler's
# pkg/scheduler/apis/config/v1/defaults.go, `defaultResourceSpec`): cpu and memory only.
DEFAULT_SCORE_RESOURCES: dict[str, int] = {quantity.CPU: 1, quantity.MEMORY: 1}


class GpuConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    real_gpus: Literal["auto", "on", "off"] = "auto"
    scoring: Literal["LeastAllocated", "MostAllocated"] = Field(
        "LeastAllocated",
        description="NodeResourcesFit's scoring strategy: LeastAllocated (spread), MostAllocated (pack)",
    )
    score_resources: dict[ScoreResource, Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: dict(DEFAULT_SCORE_RESOURCES),
        min_length=1,
        description=(
            "the resources the score weighs, with their weights, as NodeResourcesFit's scoringStrategy.resources:"
            " cpu and memory (weight 1 each) by default, as kube-scheduler's default profile; a GPU request counts"
            " for fit always, for the score only when nvidia.com/gpu is named here (a scheduler profile that names it)"
        ),
    )
    nodes: list[NodeSpec] = Field(default_factory=default_nodes)
    quotas: list[QuotaSpec] = Field(default_factory=default_quotas)

    @field_validator("real_gpus", mode="before")
    @classmethod
    def _yaml_booleans(cls, value):
        # YAML reads a bare `on`/`off` as a boolean.
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("nodes")
    @classmethod
    def _unique(cls, nodes: list[NodeSpec]) -> list[NodeSpec]:
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique: {names}")
        return nodes
