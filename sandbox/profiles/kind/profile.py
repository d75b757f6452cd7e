"""`KindProfile`: creates a kind cluster from the GPU inventory and brings the stack up in it.

Services are reached from the host through kind's port mappings (NodePorts to 127.0.0.1 host
ports chosen once and kept). `down` deletes the cluster; `down --keep-cluster` removes only the
stack's labelled objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox import ui
from sandbox.gpu import inventory_nodes
from sandbox.profiles.kube import actions, manifests
from sandbox.profiles.kube.profile import KubeProfile, KubeState, gpu_nodes, refuse_taken
from sandbox.profiles.kube.tools import Tools

# The repository's root: the project's Dockerfile is there when running from a checkout.
REPOSITORY = Path(__file__).resolve().parents[3]


class KindProfile(KubeProfile):
    name = "kind"
    summary = "a kind Kubernetes cluster with fake or real GPU nodes, the whole stack in it"
    tool_names = ("docker", "kind", "kubectl", "helm")

    def _namespace(self) -> str:
        return self.config.kind.namespace

    def _object_store(self) -> str:
        return self.config.kind.object_store

    def _configured_ports(self) -> dict[str, int]:
        return self.config.kind.host_ports.model_dump()

    def _new_state(self, instance: str, host_ports: dict[str, int]) -> KubeState:
        name = self.config.kind.cluster_name
        return KubeState(instance, f"kind-{name}", self._namespace(), host_ports, cluster=name)

    def _target(self, state: KubeState, spec: Any, tools: Tools) -> actions.Target:
        real = [node.name for node in inventory_nodes(self.config.gpu) if node.real]
        if real:
            ui.err.print(
                "[yellow]This machine's GPUs are not handed to the kind cluster:[/] that needs nvkind (the NVIDIA "
                "driver and container toolkit, `nvidia-ctk runtime configure --runtime=docker --set-as-default "
                "--cdi.enabled`) and the NVIDIA device plugin, see docs/kind.md; the inventory's fake GPUs are used."
            )
        return actions.Target(
            tools=tools,
            spec=spec,
            workdir=self.folder,
            cluster=state.cluster,
            host_ports=state.host_ports,
            gpu_nodes=gpu_nodes(self.config),
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
