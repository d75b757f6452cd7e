"""A cluster or kind profile whose stack is already up, on the FAKE cluster: what the serving tests start from.

`seed_stack` puts in the fake API what `up` leaves there that serving reads (the namespace and one stack pod);
`adopt_stack` writes the profile's state and secrets as `up` writes them.
"""

from __future__ import annotations

from typing import Any

from sandbox.profiles.kube.manifests import spec as manifests
from sandbox.profiles.kube.profile import KubeState

PORTS = {"postgres": 1, "s3": 2, "mlflow": 3, "notebooks": 4, "kfp": 5}  # loopback ports nothing listens on


def seed_stack(
    fakes, context: str, namespace: str, instance: str, *, extra: dict[str, Any] | None = None, kind_cluster=None
) -> None:
    """The namespace and a Ready MLflow pod labelled as the stack's (``extra``: more objects by store key)."""
    labels = {
        "app.kubernetes.io/managed-by": manifests.MANAGED_BY,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": manifests.MLFLOW,
    }
    pod = {
        "kind": "Pod",
        "metadata": {"name": "mlflow-0", "namespace": namespace, "labels": labels},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    objects = {
        f"Namespace//{namespace}": {"kind": "Namespace", "metadata": {"name": namespace, "labels": {}}},
        f"Pod/{namespace}/mlflow-0": pod,
        **(extra or {}),
    }
    seed: dict = {"contexts": [context], "objects": {context: objects}}
    if kind_cluster:
        seed["clusters"] = {kind_cluster: {"nodes": {}, "images": []}}
    fakes.seed(seed)


def adopt_stack(prof, context: str, namespace: str, instance: str):
    """``prof`` with the state and secrets `up` would have written (kept when already there)."""
    prof.folder.mkdir(parents=True, exist_ok=True)
    if prof._read_state() is None:
        prof._write_state(KubeState(instance, context, namespace, dict(PORTS)))
        prof._secrets(create=True)
    return prof
