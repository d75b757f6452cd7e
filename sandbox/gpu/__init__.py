"""GPU scheduling and resource quotas with Kubernetes' semantics, on fake or real GPU nodes.

A model, whatever the profile: the inventory (`inventory`), Kubernetes quantities
(`quantity`), admission and placement (`scheduler.Cluster`), real GPUs (`detect`),
the kind profile's objects (`render`). `inventory_nodes()` is the configured nodes
plus this machine's real GPUs when NVML finds them and `gpu.real_gpus` allows; the
local profile keeps a cluster's state in its sandbox dir (`sandbox.profiles.local.scheduler`).
"""

from __future__ import annotations

from pathlib import Path

from sandbox.errors import ConfigError
from sandbox.gpu.detect import detect_gpus
from sandbox.gpu.inventory import GpuConfig, NodeSpec, QuotaSpec, Taint
from sandbox.gpu.scheduler import Cluster, SchedulingDecision, Toleration, Workload

REAL_NODE = "local-gpu"


def inventory_nodes(config: GpuConfig) -> list[NodeSpec]:
    nodes = list(config.nodes)
    if config.real_gpus == "off":
        return nodes
    devices = detect_gpus()
    if not devices:
        if config.real_gpus == "on":
            raise ConfigError(
                "gpu.real_gpus is 'on' but neither NVML nor nvidia-smi found a GPU",
                hint="install the NVIDIA driver (and nvidia-ml-py), or set gpu.real_gpus: auto",
            )
        return nodes
    products = {d.product_label for d in devices}
    nodes.append(
        NodeSpec(
            name=REAL_NODE,
            gpus=len(devices),
            gpu_product=devices[0].product_label if len(products) == 1 else "mixed",
            gpu_memory=f"{min(d.memory_bytes for d in devices) // 2**20}Mi",
            taints=[Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")],
            real=True,
        )
    )
    return nodes


def read_workload(path: Path) -> Workload:
    """A Pod-like workload from a YAML file (name, namespace, requests, limits, tolerations, ...)."""
    import yaml
    from pydantic import ValidationError

    try:
        return Workload(**(yaml.safe_load(path.read_text()) or {}))
    except (OSError, yaml.YAMLError, ValidationError, TypeError) as exc:
        raise ConfigError(f"cannot read workload {path}: {exc}", hint="see docs/gpus.md") from None


__all__ = [
    "Cluster",
    "GpuConfig",
    "NodeSpec",
    "QuotaSpec",
    "SchedulingDecision",
    "Toleration",
    "Workload",
    "inventory_nodes",
    "read_workload",
]
