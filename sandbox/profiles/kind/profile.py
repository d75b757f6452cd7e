"""`KindProfile`: creates a kind cluster from the GPU inventory and brings the stack up in it.

Where the cluster comes from (`KindCluster`): a kind cluster this sandbox creates from the GPU inventory, the
project's image built here and loaded into its nodes; `down` deletes the cluster, `down --keep-cluster` removes
only the stack's labelled objects. How the host reaches it (`reach.NodePortReach`): kind's port mappings, NodePorts
to 127.0.0.1 host ports chosen once and kept.

GPUs: the inventory's fake GPU nodes advertise `nvidia.com/gpu` on their status; when NVML finds this machine's
GPUs (`gpu.real_gpus: auto|on`), their node is made the way NVIDIA's nvkind makes one (`node_actions.real_gpus`),
provided the host is set up for it (`preflight.real_gpu_checks`). With `auto` and a host that is not, that node
falls back to fake GPUs, with a warning. `KindCluster.gpu` decides it, once, for the plan and `up` alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sandbox import ui
from sandbox.config import SandboxConfig
from sandbox.gpu import GpuConfig, NodeSpec, inventory_nodes
from sandbox.profiles.base import Check
from sandbox.profiles.kube import actions, preflight
from sandbox.profiles.kube.image import project_image
from sandbox.profiles.kube.manifests import kind
from sandbox.profiles.kube.manifests.bundle import Bundle, Part
from sandbox.profiles.kube.manifests.gpu import fake_gpu_nodes
from sandbox.profiles.kube.node_actions import fake_gpus, kind_cluster
from sandbox.profiles.kube.plan import KubeAction, Site
from sandbox.profiles.kube.profile import KubeProfile
from sandbox.profiles.kube.reach import STACK_PORTS, NodePortReach
from sandbox.profiles.kube.source import Source
from sandbox.profiles.kube.state import KubeState
from sandbox.profiles.kube.tools import Tools

# The repository's root: the project's Dockerfile is there when running from a checkout.
REPOSITORY = Path(__file__).resolve().parents[3]


class KindCluster(Source):
    """A kind cluster this sandbox creates (and deletes), the project's image built and loaded into it."""

    tool_names = ("docker", "kind", "kubectl", "helm")

    def __init__(self, config: SandboxConfig, build_context: Path):
        super().__init__(config)
        self.build_context = build_context
        self._nodes: list[NodeSpec] | None = None
        self._gpu: GpuConfig | None = None
        self._gpu_checks: list[Check] | None = None

    def new_state(self, instance: str, host_ports: dict[str, int]) -> KubeState:
        name = self.config.kind.cluster_name
        return KubeState(instance, f"kind-{name}", self.config.kind.namespace, host_ports, cluster=name)

    @property
    def object_store(self) -> Literal["seaweedfs", "minio"]:
        return self.config.kind.object_store

    def image(self) -> str:
        """The project's image, its tag carrying its build context's digest (`kube/image.py`)."""
        return project_image(self.build_context)

    # ---------------------------------------------------------------- GPUs

    def _inventory(self) -> list[NodeSpec]:
        """The configured nodes plus this machine's real GPUs (NVML), looked up once."""
        if self._nodes is None:
            self._nodes = inventory_nodes(self.config.gpu)
        return self._nodes

    def real_gpu_checks(self) -> list[Check]:
        """What the host needs to hand this machine's GPUs to kind (none without real GPUs); looked up once."""
        if self._gpu_checks is None:
            real = [node for node in self._inventory() if node.real]
            required = self.config.gpu.real_gpus == "on"
            self._gpu_checks = preflight.real_gpu_checks(required=required) if real else []
        return self._gpu_checks

    def gpu(self) -> GpuConfig:
        """The inventory as the cluster is made from it: the configured nodes plus this machine's real GPUs (NVML).
        A real node stays real with `gpu.real_gpus: on` (the preflight refuses a host that is not ready) or when
        the host is ready; with `auto` on a host that is not, its GPUs are fake. The plan and `up` both read this."""
        if self._gpu is None:
            nodes = self._inventory()
            ready = self.config.gpu.real_gpus == "on" or all(check.ok for check in self.real_gpu_checks())
            if not ready:
                nodes = [node.model_copy(update={"real": False}) if node.real else node for node in nodes]
            self._gpu = self.config.gpu.model_copy(update={"nodes": nodes})
        return self._gpu

    def preflight(self) -> list[Check]:
        checks = [
            *preflight.architecture_checks(),
            *preflight.docker_daemon_checks(),
            *preflight.resource_checks(self.config.root),
            *preflight.inotify_checks(),
        ]
        gpu_checks = self.real_gpu_checks()
        missing = ", ".join(check.name for check in gpu_checks if not check.ok)
        if missing and self.config.gpu.real_gpus != "on":
            real = ", ".join(node.name for node in self._inventory() if node.real)
            ui.err.print(
                f"[yellow]This machine's GPUs ({real}) are not handed to the kind cluster: the host "
                f"lacks {missing} (each fix below; see docs/kind.md). With gpu.real_gpus: auto their node gets "
                "fake GPUs instead (scheduling only, no device); set gpu.real_gpus: on to make this an error.[/]"
            )
        return checks + gpu_checks

    # ---------------------------------------------------------------- the plan

    def complete(self, bundle: Bundle, state: KubeState) -> Bundle:
        """kind's cluster config first: the inventory's nodes, pinned node image (the reach adds the host ports)."""
        config = kind.cluster_config(bundle.spec.gpu, name=state.cluster or self.config.kind.cluster_name)
        title = f"kind cluster {state.cluster}"
        return bundle.with_part(Part("kind-config", title, "cluster", config=config), first=True)

    def prepare(self, site: Site, bundle: Bundle, state: KubeState) -> list[KubeAction]:
        part = next(iter(bundle.stage("cluster")))
        host_ports = {key: port for key, port in state.host_ports.items() if key in STACK_PORTS}
        made = [kind_cluster(site, state.cluster or self.config.kind.cluster_name, part, host_ports)]
        if fake_gpu_nodes(site.spec):
            made.append(fake_gpus(site))
        return made

    def image_action(self, site: Site, state: KubeState) -> KubeAction:
        cluster = state.cluster or self.config.kind.cluster_name
        return actions.built_image(site, cluster=cluster, build_context=self.build_context)

    # ---------------------------------------------------------------- down

    def remove(self, state: KubeState, *, keep_cluster: bool) -> None:
        if keep_cluster:
            self.remove_stack(state)
            ui.err.print(f"Kept the kind cluster {state.cluster}; the stack's objects were deleted.")
            return
        tools = Tools(state.context)
        with ui.step(f"Delete the kind cluster {state.cluster}"):
            tools.run(tools.kind_delete(state.cluster))


class KindProfile(KubeProfile):
    name = "kind"
    summary = "a kind Kubernetes cluster with fake or real GPU nodes, the whole stack in it"

    def __init__(self, config: SandboxConfig):
        reach = NodePortReach(
            config.root / "kube",
            notebooks=config.notebooks.enabled,
            configured=config.kind.host_ports.model_dump(),
        )
        super().__init__(config, source=KindCluster(config, REPOSITORY), reach=reach)
