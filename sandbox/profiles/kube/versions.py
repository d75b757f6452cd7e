"""Every version the Kubernetes profiles install, pinned exactly, in one place.

Each pin says where it was checked (searched in November 2026 with the project's `search`
tool: the upstream release notes, repositories and registries). Nothing here can be pulled
from the development machines (no registry, no Docker engine): a pin is only as good as
the source named beside it. Where a digest could not be found, the pin is a tag and the
comment says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

# --------------------------------------------------------------------------- kind and Kubernetes

# kind v0.32.0's release notes (github.com/kubernetes-sigs/kind/releases/tag/v0.32.0, quoted in full by
# the renovate PR backube/volsync#2027): "The default node image is now kindest/node:v1.36.1@sha256:3489c7…".
# The same image@digest is pinned by several public repositories found with `find_string`. The pair
# (kind v0.32.0, Kubernetes 1.36.1) is what KFP's own CI uses (../shared/KUBERNETES.md). Node images
# from 1.35 on need cgroup v2 on the host; kind 0.32 generates kubeadm v1beta4 config for 1.36, and
# the kubeadm patches rendered here carry no apiVersion, so kind converts them.
KIND_VERSION = "v0.32.0"
KUBERNETES_VERSION = "1.36.1"
KIND_NODE_DIGEST = "sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5"
KIND_NODE_IMAGE = f"kindest/node:v{KUBERNETES_VERSION}@{KIND_NODE_DIGEST}"

# Minimum versions the preflight asks for. kind: the release above (its node images need its
# containerd for `kind load`, per the same release notes). kubectl: within one minor of the
# API server (Kubernetes' version skew policy), so 1.35 for a 1.36 cluster. helm: OCI charts
# (`helm install oci://...`) are GA since Helm 3.8.0. docker: 20.10 is the oldest engine kind's
# quick start still names; cgroup v2 is checked separately by the preflight.
MIN_TOOLS: dict[str, str] = {
    "docker": "20.10.0",
    "kind": KIND_VERSION.removeprefix("v"),
    "kubectl": "1.35.0",
    "helm": "3.8.0",
}


# --------------------------------------------------------------------------- Helm charts


@dataclass(frozen=True)
class Chart:
    """One Helm chart, pinned: ``repo`` is an https chart repository or an ``oci://`` reference."""

    name: str
    repo: str
    version: str
    namespace: str

    @property
    def oci(self) -> bool:
        return self.repo.startswith("oci://")

    @property
    def ref(self) -> str:
        """What `helm install NAME REF --version V` takes: ``oci://.../name``, or ``name`` with ``--repo``."""
        return f"{self.repo.rstrip('/')}/{self.name}" if self.oci else self.name


# cert-manager: KServe's quick-install script installs the jetstack chart with `crds.enabled=true`
# (kserve/kserve hack/setup/quick-install/kserve-helm-install.sh pins v1.17.0 for KServe v0.20).
CERT_MANAGER = Chart(
    name="cert-manager", repo="https://charts.jetstack.io", version="v1.17.0", namespace="cert-manager"
)

# KServe v0.20.0: OCI charts at ghcr.io/kserve/charts, version "v0.20.0" with the v (KServe's install
# docs and quick-install script). runtime-configs holds the ClusterServingRuntimes ("no runtime
# found" without it).
KSERVE_VERSION = "v0.20.0"
_KSERVE_CHARTS = "oci://ghcr.io/kserve/charts"
KSERVE_CRD = Chart(name="kserve-crd", repo=_KSERVE_CHARTS, version=KSERVE_VERSION, namespace="kserve")
KSERVE_RESOURCES = Chart(name="kserve-resources", repo=_KSERVE_CHARTS, version=KSERVE_VERSION, namespace="kserve")
KSERVE_RUNTIME_CONFIGS = Chart(
    name="kserve-runtime-configs", repo=_KSERVE_CHARTS, version=KSERVE_VERSION, namespace="kserve"
)

# --------------------------------------------------------------------------- Kubeflow Pipelines

# KFP standalone 2.17.0: `kubectl apply -k` of the cluster-scoped resources, a wait for the
# Application CRD, then env/platform-agnostic (MySQL + SeaweedFS). Not env/dev-kind (its API
# server has 0 replicas). kubeflow/pipelines manifests/kustomize, tag 2.17.0.
KFP_VERSION = "2.17.0"
KFP_NAMESPACE = "kubeflow"
_KFP_KUSTOMIZE = "github.com/kubeflow/pipelines/manifests/kustomize"
KFP_KUSTOMIZE: tuple[str, ...] = (
    f"{_KFP_KUSTOMIZE}/cluster-scoped-resources?ref={KFP_VERSION}",
    f"{_KFP_KUSTOMIZE}/env/platform-agnostic?ref={KFP_VERSION}",
)
# Between the two: `kubectl wait --for condition=established crd/<this>`.
KFP_WAIT_CRD = "applications.app.k8s.io"

# --------------------------------------------------------------------------- images

IMAGES: dict[str, str] = {
    "postgres": "docker.io/library/postgres:16.6",
    "seaweedfs": "docker.io/chrislusf/seaweedfs:3.92",
    "minio": "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z",
    "mlflow": "ghcr.io/mlflow/mlflow:v3.13.0-full",
}

# The project's own image (built from the repository's Dockerfile and `kind load`ed): the model
# server, the A/B router, the pipeline components and JupyterLab. Tagged with the package version.
PROJECT_IMAGE_REPO = "ml-sandbox"


def project_version() -> str:
    try:
        return version("ml-platform-sandbox")
    except PackageNotFoundError:
        return "0.0.0"


def project_image(tag: str | None = None) -> str:
    return f"{PROJECT_IMAGE_REPO}:{tag or project_version()}"


def kubernetes_minor(full: str = KUBERNETES_VERSION) -> str:
    """``"1.36.1"`` -> ``"1.36"``."""
    major, minor, *_ = full.removeprefix("v").split(".")
    return f"{major}.{minor}"
