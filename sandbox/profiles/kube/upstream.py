"""The upstream installs' objects the plan relies on, by name: what `up` waits for and what it must never take
for its own (label, or delete in `down`). Each name was read at the pinned tag (docs/kind.md, "Upstream facts
the plan relies on"); `tests/unit/test_upstream_facts.py` pins them."""

from __future__ import annotations

from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests import operators

Ref = tuple[str, str, str]  # (kind, namespace, name); namespace "" for cluster-scoped objects

KFP = versions.KFP_NAMESPACE

# kubeflow/pipelines manifests/kustomize/cluster-scoped-resources: the namespace and the CRDs.
KFP_CLUSTER_SCOPED: tuple[Ref, ...] = (
    ("namespace", "", KFP),
    ("crd", "", versions.KFP_WAIT_CRD),
    ("crd", "", "scheduledworkflows.kubeflow.org"),
)
# kubeflow/pipelines manifests/kustomize/env/platform-agnostic: what the plan restarts, reads, changes or waits on.
KFP_ENV: tuple[Ref, ...] = (
    *(("deployment", KFP, name) for name in operators.KFP_RESTART),
    ("service", KFP, operators.KFP_API_SERVICE),
    ("secret", KFP, operators.KFP_SECRET),
    ("pod", KFP, "*"),
)
CERT_MANAGER: tuple[Ref, ...] = (
    ("namespace", "", versions.CERT_MANAGER.namespace),
    *(
        ("deployment", versions.CERT_MANAGER.namespace, name)
        for name in ("cert-manager", "cert-manager-webhook", "cert-manager-cainjector")
    ),
)
KSERVE: tuple[Ref, ...] = (
    ("namespace", "", versions.KSERVE_RESOURCES.namespace),
    ("crd", "", "inferenceservices.serving.kserve.io"),
    ("deployment", versions.KSERVE_RESOURCES.namespace, "kserve-controller-manager"),
    ("clusterservingruntime", "", "kserve-mlserver"),
)
DEVICE_PLUGIN: tuple[Ref, ...] = (
    ("namespace", "", versions.NVIDIA_DEVICE_PLUGIN.namespace),
    ("daemonset", versions.NVIDIA_DEVICE_PLUGIN.namespace, "nvidia-device-plugin"),
)
# Namespaces an upstream install owns: nothing the sandbox labels as its own may live there, except the
# Service it adds in front of KFP's API (a new object of its own, deleted by `down`).
UPSTREAM_NAMESPACES = tuple(
    ref[2] for ref in (*KFP_CLUSTER_SCOPED, *CERT_MANAGER, *KSERVE, *DEVICE_PLUGIN) if ref[0] == "namespace"
)


def helm_creates(chart: versions.Chart) -> tuple[Ref, ...]:
    """What a Helm release of ``chart`` makes that the plan relies on."""
    return {
        versions.CERT_MANAGER.name: CERT_MANAGER,
        versions.KSERVE_CRD.name: (("crd", "", "inferenceservices.serving.kserve.io"),),
        versions.KSERVE_RESOURCES.name: KSERVE[:3],
        versions.KSERVE_RUNTIME_CONFIGS.name: KSERVE[3:],
        versions.NVIDIA_DEVICE_PLUGIN.name: DEVICE_PLUGIN,
    }.get(chart.name, ())


def all_objects() -> tuple[Ref, ...]:
    return (*KFP_CLUSTER_SCOPED, *KFP_ENV, *CERT_MANAGER, *KSERVE, *DEVICE_PLUGIN)
