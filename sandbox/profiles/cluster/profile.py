"""`ClusterProfile`: the kind profile's actions minus creating a cluster, on a cluster it was given.

Tilt's `allow_k8s_contexts`: it touches only the context the user names (`--context`, required),
and only a known local one (kind-*, k3d-*, minikube, docker-desktop) unless `cluster.allowed_contexts`
lists it. One namespace; every object labelled managed-by and instance; a server-side dry-run before
each first apply; the operators (cert-manager, KServe, KFP) installed only with
`cluster.install_operators: true`, else their CRDs must exist. `down` deletes only what carries its
labels: never CRDs or cluster-scoped objects. Services are reached through `kubectl port-forward`
processes on 127.0.0.1 (`kube/portforward.py`).
"""

from __future__ import annotations

from typing import Any

from sandbox import ui
from sandbox.errors import ConfigError
from sandbox.profiles.kube import actions, manifests
from sandbox.profiles.kube.pipelines import stop_kfp_forward
from sandbox.profiles.kube.portforward import Forward, PortForwards
from sandbox.profiles.kube.profile import KubeProfile, KubeState
from sandbox.profiles.kube.tools import Tools

LOCAL_CONTEXT_PREFIXES = ("kind-", "k3d-")
LOCAL_CONTEXTS = ("minikube", "docker-desktop")


def is_local_context(name: str) -> bool:
    return name in LOCAL_CONTEXTS or name.startswith(LOCAL_CONTEXT_PREFIXES)


class ClusterProfile(KubeProfile):
    name = "cluster"
    summary = "the stack installed into an existing cluster (a context you name; one namespace)"

    @property
    def tool_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("kubectl", "helm") if self.config.cluster.install_operators else ("kubectl",)

    def _namespace(self) -> str:
        return self.config.cluster.namespace

    def _object_store(self) -> str:
        return self.config.cluster.object_store

    def _image(self) -> str:
        return self.config.cluster.image or super()._image()

    def _expose(self) -> str:
        return "ClusterIP"  # reached through port-forwards, never opened on the cluster's nodes

    def _check_context(self) -> None:
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

    def _new_state(self, instance: str, host_ports: dict[str, int]) -> KubeState:
        return KubeState(instance, self.config.cluster.context or "", self._namespace(), host_ports)

    def _target(self, state: KubeState, spec: Any, tools: Tools) -> actions.Target:
        return actions.Target(
            tools=tools,
            spec=spec,
            workdir=self.folder,
            install_operators=self.config.cluster.install_operators,
            load_image=False,
            server_dry_run=True,
            health_url=lambda: self._forward_ready(state),
        )

    # ------------------------------------------------------------------ port-forwards

    def _forwards(self, state: KubeState) -> list[Forward]:
        services = {"postgres": manifests.POSTGRES, "s3": manifests.S3, "mlflow": manifests.MLFLOW}
        if self.config.notebooks.enabled:
            services["notebooks"] = manifests.NOTEBOOKS
        return [
            Forward(key, service, manifests.PORTS[service], state.host_ports[key]) for key, service in services.items()
        ]

    def _port_forwards(self, state: KubeState) -> PortForwards:
        return PortForwards(Tools(state.context), state.namespace, self.folder / "forwards")

    def _forward_ready(self, state: KubeState) -> str:
        self._port_forwards(state).ensure(self._forwards(state))
        return f"http://127.0.0.1:{state.host_ports['mlflow']}/health"

    def _up(self, *, keep: bool):
        try:  # under the lock: a refused `up` stops no forward of the command that holds it
            return super()._up(keep=keep)
        except BaseException:
            state = self._read_state()
            if state is not None and not keep:  # the readiness probe may have started them
                self._port_forwards(state).stop(self._forwards(state))
            raise

    def _after_up(self, state: KubeState, target: actions.Target) -> None:
        started = self._port_forwards(state).ensure(self._forwards(state))
        if started:
            ui.err.print(f"Port-forwards on 127.0.0.1 started: {', '.join(started)}")

    def endpoints(self):
        state = self._read_state()
        if state is not None:
            self._port_forwards(state).ensure(self._forwards(state))  # a dead forward comes back
        return super().endpoints()

    def _remove(self, state: KubeState, *, keep_cluster: bool) -> None:
        self._port_forwards(state).stop(self._forwards(state))
        stop_kfp_forward(self, state)  # the pipeline runner's, in KFP's namespace
        self.remove_stack(state)
        ui.err.print("Deleted the objects labelled with this sandbox's instance; CRDs and operators are untouched.")
