"""`ClusterProfile`: the kind profile's actions minus creating a cluster, on a cluster it was given.

Where the cluster comes from (`GivenCluster`), Tilt's `allow_k8s_contexts`: it touches only the context the user
names (`--context`, required), and only a known local one (kind-*, k3d-*, minikube, docker-desktop) unless
`cluster.allowed_contexts` lists it. One namespace; every object labelled managed-by and instance; a server-side
dry-run before each first apply; the operators (cert-manager, KServe, KFP) installed only with
`cluster.install_operators: true`, else their CRDs must exist; the nodes pull the project's image. `down` deletes
only what carries its labels: never CRDs or cluster-scoped objects. How the host reaches it
(`reach.PortForwardReach`): `kubectl port-forward` processes on 127.0.0.1 (`kube/portforward.py`).
"""

from __future__ import annotations

from typing import Literal

from sandbox import ui
from sandbox.config import SandboxConfig
from sandbox.errors import ConfigError
from sandbox.profiles.kube import actions, versions
from sandbox.profiles.kube.manifests.bundle import Bundle
from sandbox.profiles.kube.plan import KubeAction, Site
from sandbox.profiles.kube.profile import KubeProfile
from sandbox.profiles.kube.reach import PortForwardReach
from sandbox.profiles.kube.source import Source
from sandbox.profiles.kube.state import KubeState

LOCAL_CONTEXT_PREFIXES = ("kind-", "k3d-")
LOCAL_CONTEXTS = ("minikube", "docker-desktop")


def is_local_context(name: str) -> bool:
    return name in LOCAL_CONTEXTS or name.startswith(LOCAL_CONTEXT_PREFIXES)


class GivenCluster(Source):
    """A cluster the user names by its context: allow-listed, its operators' CRDs checked, the image pulled."""

    dry_run_first = True

    def __init__(self, config: SandboxConfig):
        super().__init__(config)
        self.installs_operators = config.cluster.install_operators
        self.tool_names = ("kubectl", "helm") if self.installs_operators else ("kubectl",)

    def check(self) -> None:
        context = self.config.cluster.context
        if not context:
            raise ConfigError(
                "the cluster profile needs the context to install into",
                hint="name it: `sandbox up --profile cluster --context NAME` (or `cluster.context` in sandbox.yaml)",
            )
        if not (is_local_context(context) or context in self.config.cluster.allowed_contexts):
            raise ConfigError(
                f"context {context!r} is not a known local one (kind-*, k3d-*, minikube, docker-desktop); "
                "the sandbox refuses to touch it",
                hint=f"if it is yours to change, allow it by name: `cluster.allowed_contexts: [{context}]` "
                "in sandbox.yaml",
            )

    def new_state(self, instance: str, host_ports: dict[str, int]) -> KubeState:
        return KubeState(instance, self.config.cluster.context or "", self.config.cluster.namespace, host_ports)

    @property
    def object_store(self) -> Literal["seaweedfs", "minio"]:
        return self.config.cluster.object_store

    def image(self) -> str:
        return self.config.cluster.image or versions.project_image()

    def prepare(self, site: Site, bundle: Bundle, state: KubeState) -> list[KubeAction]:
        return [] if self.installs_operators else [actions.operator_crds(site)]

    def image_action(self, site: Site, state: KubeState) -> KubeAction:
        return actions.pulled_image(site)

    def remove(self, state: KubeState, *, keep_cluster: bool) -> None:
        self.remove_stack(state)  # the cluster is never this sandbox's: --keep-cluster changes nothing here
        ui.err.print("Deleted the objects labelled with this sandbox's instance; CRDs and operators are untouched.")


class ClusterProfile(KubeProfile):
    name = "cluster"
    summary = "the stack installed into an existing cluster (a context you name; one namespace)"

    def __init__(self, config: SandboxConfig):
        reach = PortForwardReach(config.root / "kube", notebooks=config.notebooks.enabled)
        super().__init__(config, source=GivenCluster(config), reach=reach)
