"""Kubernetes objects for the kind profile, rendered from the same inventory.

- a kind `Cluster` config: one worker per inventory node, with its labels and
  taints (kubeadm's `nodeRegistration`), plus a control-plane node; a node with
  this machine's real GPUs also gets nvkind's mount (`real_gpu_mounts`);
- per GPU node, the JSON patch for the node's status that advertises the
  extended resource `nvidia.com/gpu` (what a device plugin would report);
- `ResourceQuota` and `LimitRange` objects per quota.
Everything here is checked against the Kubernetes schemas by the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from sandbox.gpu.inventory import GpuConfig, NodeSpec

KIND_API = "kind.x-k8s.io/v1alpha4"
INVENTORY_LABEL = "ml-sandbox/inventory-node"
# What the NVIDIA device plugin chart's default affinity selects GPU nodes by.
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
# nvkind's way of handing GPUs to a kind worker (NVIDIA/nvkind pkg/nvkind/default-config-template.yaml and
# node.go): /dev/null mounted at /var/run/nvidia-container-devices/<index|all>. The host's NVIDIA container
# runtime (Docker's default runtime) reads those mount points as the list of GPUs to inject, which it does
# only with `accept-nvidia-visible-devices-as-volume-mounts = true` in /etc/nvidia-container-runtime/config.toml.
NVIDIA_DEVICES_DIR = "/var/run/nvidia-container-devices"


def real_gpu_mounts(devices: str = "all") -> list[dict[str, str]]:
    """The kind `extraMounts` that hand this machine's GPUs (all of them, or one index) to a worker."""
    return [{"hostPath": "/dev/null", "containerPath": f"{NVIDIA_DEVICES_DIR}/{devices}"}]


def kind_config(config: GpuConfig, *, name: str = "ml-sandbox") -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"role": "control-plane"}]
    for node in config.nodes:
        # kind names the nodes itself; the inventory name travels as a label.
        labels = {INVENTORY_LABEL: node.name}
        labels.update({k: v for k, v in node.all_labels().items() if k != "kubernetes.io/hostname"})
        worker: dict[str, Any] = {"role": "worker", "labels": labels}
        if node.real:  # this machine's GPUs, all of them, the nvkind way; the device plugin advertises them
            labels[GPU_PRESENT_LABEL] = "true"
            worker["extraMounts"] = real_gpu_mounts("all")
        if node.taints:
            taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in node.taints]
            patch = {"kind": "JoinConfiguration", "nodeRegistration": {"taints": taints}}
            worker["kubeadmConfigPatches"] = [yaml.safe_dump(patch, sort_keys=False)]
        nodes.append(worker)
    return {"kind": "Cluster", "apiVersion": KIND_API, "name": name, "nodes": nodes}


def gpu_capacity_patch(node: NodeSpec) -> list[dict[str, Any]]:
    """`kubectl patch node NAME --subresource=status --type=json -p ...` for fake GPUs."""
    return [
        {"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(node.gpus)},
        {"op": "add", "path": "/status/allocatable/nvidia.com~1gpu", "value": str(node.gpus)},
    ]


def node_with_patch(node: NodeSpec) -> dict[str, Any]:
    """The Node object as it looks once the patch is applied (for schema validation)."""
    gpus = str(node.gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": node.all_labels()},
        "spec": {"taints": [{"key": t.key, "value": t.value, "effect": t.effect} for t in node.taints]},
        "status": {
            "capacity": {"cpu": node.cpu, "memory": node.memory, "pods": str(node.pods), "nvidia.com/gpu": gpus},
            "allocatable": {"cpu": node.cpu, "memory": node.memory, "pods": str(node.pods), "nvidia.com/gpu": gpus},
        },
    }


def quota_objects(config: GpuConfig) -> list[dict[str, Any]]:
    objects = []
    for quota in config.quotas:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": quota.name, "namespace": quota.namespace},
                "spec": {"hard": dict(quota.hard)},
            }
        )
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": f"{quota.name}-defaults", "namespace": quota.namespace},
                "spec": {"limits": [limit_range_defaults(quota.hard)]},
            }
        )
    return objects


# What a container that sets nothing gets under a quota: a request, so a Pod without requests is still
# admitted under a `requests.*` quota.
DEFAULT_REQUEST = {"cpu": "250m", "memory": "256Mi"}
DEFAULT_LIMIT = {"cpu": "1", "memory": "1Gi"}


def limit_range_defaults(hard: dict[str, Any]) -> dict[str, Any]:
    """The LimitRange entry for a quota: default requests always; a default *limit* only for a resource whose
    limit the quota counts (`limits.cpu`, `limits.memory`), where a Pod without one would be refused. A default
    limit elsewhere would silently cap every container that sets none (one core for the whole stack's)."""
    entry: dict[str, Any] = {"type": "Container", "defaultRequest": dict(DEFAULT_REQUEST)}
    limits = {resource: value for resource, value in DEFAULT_LIMIT.items() if f"limits.{resource}" in hard}
    if limits:
        entry["default"] = limits
    return entry


def render_all(config: GpuConfig) -> str:
    """Every rendered object as one multi-document YAML (kind config first)."""
    documents: list[dict[str, Any]] = [kind_config(config)]
    documents += quota_objects(config)
    return yaml.safe_dump_all(documents, sort_keys=False)


def write_all(config: GpuConfig, out: Path) -> None:
    """The same objects as files in ``out``: kind-config.yaml, quotas.yaml, gpu-patch-NODE.json per fake GPU node."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "kind-config.yaml").write_text(yaml.safe_dump(kind_config(config), sort_keys=False))
    (out / "quotas.yaml").write_text(yaml.safe_dump_all(quota_objects(config), sort_keys=False))
    for node in (n for n in config.nodes if n.gpus and not n.real):
        (out / f"gpu-patch-{node.name}.json").write_text(json.dumps(gpu_capacity_patch(node)))
