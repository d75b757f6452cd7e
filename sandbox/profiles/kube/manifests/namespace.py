"""The stack's namespace, and the GPU quotas (`gpu.quotas`) with their limit ranges, in the namespaces they name."""

from __future__ import annotations

from typing import Any

from sandbox.gpu import render as gpu_render
from sandbox.profiles.kube.manifests.spec import StackSpec, labels

TITLE = "Namespace, quota and limit range"


def quota_namespaces(spec: StackSpec) -> list[str]:
    """Namespaces the quotas go to: the stack's for a quota left at `default`, else the one it names."""
    names = []
    for quota in spec.gpu.quotas:
        target = spec.namespace if quota.namespace == "default" else quota.namespace
        if target not in names:
            names.append(target)
    return names


def _namespace(spec: StackSpec, name: str) -> dict[str, Any]:
    meta = {"name": name, "labels": labels(spec, "namespace")}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _quotas(spec: StackSpec) -> list[dict[str, Any]]:
    objects = gpu_render.quota_objects(spec.gpu)
    for obj in objects:
        meta = obj["metadata"]
        if meta["namespace"] == "default":
            meta["namespace"] = spec.namespace
        meta["labels"] = labels(spec, "quota")
    return objects


def objects(spec: StackSpec) -> list[dict[str, Any]]:
    """The stack's namespace and each quota's (one object per name), then the quotas and limit ranges."""
    namespaces = [_namespace(spec, name) for name in [spec.namespace, *quota_namespaces(spec)] if name != "default"]
    return [*{obj["metadata"]["name"]: obj for obj in namespaces}.values(), *_quotas(spec)]
