"""`KindProfile`: creates a kind cluster from the GPU inventory and brings the stack up in it.

Services are reached from the host through kind's port mappings (NodePorts to 127.0.0.1 host
ports chosen once and kept). `down` deletes the cluster; `down --keep-cluster` removes only the
stack's labelled objects.

GPUs: the inventory's fake GPU nodes advertise `nvidia.com/gpu` on their status; when NVML finds
this machine's GPUs (`gpu.real_gpus: auto|on`), their node is made the way NVIDIA's nvkind makes
one (`node_actions.real_gpus`), provided the host is set up for it (`preflight.real_gpu_checks`). With
`auto` and a host that is not, that node falls back to fake GPUs, with a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox import ui
from sandbox.gpu import NodeSpec, inventory_nodes
from sandbox.profiles.base import Check
from sandbox.profiles.kube import actions, manifests, preflight
from sandbox.profiles.kube.image import project_image
from sandbox.profiles.kube.profile import KubeProfile, KubeState, refuse_taken
from sandbox.profiles.kube.tools import Tools

# The repository's root: the project's Dockerfile is there when running from a checkout.
REPOSITORY = Path(__file__).resolve().parents[3]


class KindProfile(KubeProfile):
    name = "kind"
    summary = "a kind Kubernetes cluster with fake or real GPU nodes, the whole stack in it"
    tool_names = ("docker", "kind", "kubectl", "helm")

    _nodes: list[NodeSpec] | None = None
    _real_ready: bool | None = None  # the host's nvkind prerequisites, once the preflight has looked

    def _namespace(self) -> str:
        return self.config.kind.namespace

    def _object_store(self) -> str:
        return self.config.kind.object_store

    def _image(self) -> str:
        """The project's image, its tag carrying its build context's digest (`kube/image.py`)."""
        return project_image(REPOSITORY)

    def _configured_ports(self) -> dict[str, int]:
        return self.config.kind.host_ports.model_dump()

    def _new_state(self, instance: str, host_ports: dict[str, int]) -> KubeState:
        name = self.config.kind.cluster_name
        return KubeState(instance, f"kind-{name}", self._namespace(), host_ports, cluster=name)

    # ------------------------------------------------------------------ GPUs

    def _inventory(self) -> list[NodeSpec]:
        """The configured nodes plus this machine's real GPUs (NVML), looked up once."""
        if self._nodes is None:
            self._nodes = inventory_nodes(self.config.gpu)
        return self._nodes

    def _gpu(self) -> Any:
        """The inventory as the cluster is built from it: a real node stays real unless the preflight
        found the host unready (only possible with `auto`: `on` refuses), then its GPUs are fake."""
        nodes = self._inventory()
        if self._real_ready is False:
            nodes = [node.model_copy(update={"real": False}) if node.real else node for node in nodes]
        return self.config.gpu.model_copy(update={"nodes": nodes})

    def preflight(self) -> list[Check]:
        checks = super().preflight()
        real = [node.name for node in self._inventory() if node.real]
        if not real:
            return checks
        required = self.config.gpu.real_gpus == "on"
        gpu_checks = preflight.real_gpu_checks(required=required)
        self._real_ready = all(check.ok for check in gpu_checks)
        if not self._real_ready and not required:
            missing = ", ".join(check.name for check in gpu_checks if not check.ok)
            ui.err.print(
                f"[yellow]This machine's GPUs ({', '.join(real)}) are not handed to the kind cluster: the host "
                f"lacks {missing} (each fix below; see docs/kind.md). With gpu.real_gpus: auto their node gets "
                "fake GPUs instead (scheduling only, no device); set gpu.real_gpus: on to make this an error.[/]"
            )
        return checks + gpu_checks

    def _target(self, state: KubeState, spec: Any, tools: Tools) -> actions.Target:
        nodes = spec.gpu.nodes
        return actions.Target(
            tools=tools,
            spec=spec,
            workdir=self.folder,
            cluster=state.cluster,
            host_ports=state.host_ports,
            gpu_nodes=[node for node in nodes if node.gpus and not node.real],
            real_gpu_nodes=manifests.real_gpu_nodes(spec),
            install_operators=True,
            load_image=True,
            build_context=REPOSITORY,
            health_url=lambda: f"http://127.0.0.1:{state.host_ports['mlflow']}/health",
        )

    def _kind_config(self, state: KubeState, spec: Any) -> dict[str, Any]:
        return manifests.kind_cluster_config(spec, name=state.cluster, host_ports=state.host_ports)

    def _refuse_taken_ports(self, state: KubeState) -> None:
        if state.cluster not in Tools().kind_clusters():  # once it runs, kind itself holds them
            refuse_taken(state.host_ports, "kind.host_ports.*")

    def _remove(self, state: KubeState, *, keep_cluster: bool) -> None:
        tools = Tools(state.context)
        if keep_cluster:
            self.remove_stack(state)
            ui.err.print(f"Kept the kind cluster {state.cluster}; the stack's objects were deleted.")
            return
        with ui.step(f"Delete the kind cluster {state.cluster}"):
            tools.run(tools.kind_delete(state.cluster))
