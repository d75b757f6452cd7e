"""How the host reaches a Kubernetes sandbox: one of the two strategies of `KubeProfile` (the other,
`kube/source.py`, is where the cluster comes from).

A reach owns every 127.0.0.1 port the profile keeps (in `KubeState.host_ports`): the stack's services and KFP's
API by name (`mlflow`, `kfp`, ...), and each model deployment's by its forward's name (`serve-NAME`,
`serve-NAME-grpc`), claimed when it starts and released when it stops. It opens the bundle to the host
(`expose`), and makes sure what reaches a service runs only when a command needs it (`open_stack`,
`kfp_api`, `address(reach=True)`); reads (`status`, `serve list`) start nothing.

- `NodePortReach` (kind): the stack's Services and KFP's API on NodePorts, which kind maps to the host ports
  (fixed when the cluster is made: `extraPortMappings` on 127.0.0.1 only);
- `PortForwardReach` (cluster): a `kubectl port-forward` per service, never a port opened on the nodes.

On both, a model deployment is reached through a port-forward (`kube/portforward.py`) to its Service.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from sandbox.errors import PreflightError
from sandbox.net import LOOPBACK, free_port, port_is_free
from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests import kind
from sandbox.profiles.kube.manifests.bundle import Bundle, Part
from sandbox.profiles.kube.manifests.operators import KFP_API_PORT, KFP_API_SERVICE
from sandbox.profiles.kube.manifests.spec import KFP, PORTS
from sandbox.profiles.kube.portforward import Forward, PortForwards
from sandbox.profiles.kube.state import KubeState, StateFile
from sandbox.profiles.kube.tools import Tools

# The stack's own host ports, by name: its services' and KFP's API (kind's NodePorts, by the same names).
STACK_PORTS: tuple[str, ...] = tuple(kind.NodePorts().as_dict())
DEPLOYMENT_PREFIX = "serve-"


def deployment_forward_name(name: str, *, grpc: bool = False) -> str:
    """The forward (and kept port) of a deployment's REST, or V2 gRPC, port."""
    return f"{DEPLOYMENT_PREFIX}{name}{'-grpc' if grpc else ''}"


def url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


class Reach(abc.ABC):
    """How the host reaches the cluster's services; see the module docstring."""

    def __init__(self, folder: Path, *, notebooks: bool, configured: Mapping[str, int] | None = None):
        self.folder = folder  # <dir>/kube: state.json and the forwards' pid files
        self.notebooks = notebooks
        self.configured = {key: port for key, port in (configured or {}).items() if port}
        self.store = StateFile(folder)

    # ---------------------------------------------------------------- the ports

    def host_ports(self, kept: Mapping[str, int]) -> dict[str, int]:
        """A loopback port per stack service and KFP's API: configured, else kept from the last `up`, else a free
        one; the deployments' kept as they are."""
        ports = dict(kept)
        for key in STACK_PORTS:
            if key in self.configured:
                ports[key] = self.configured[key]
            elif not ports.get(key):
                ports[key] = free_port()
        return ports

    def check_ports(self, state: KubeState) -> None:
        """Before `up` changes anything: refuse host ports it would need and another process holds."""
        return None  # a port-forward binds its port when a command needs it

    def forwards(self, state: KubeState) -> PortForwards:
        return PortForwards(Tools(state.context), state.namespace, self.folder / "forwards")

    def _stack_services(self) -> dict[str, str]:
        services = dict(kind.SERVICES)
        if not self.notebooks:
            services.pop("notebooks")
        return services

    # ---------------------------------------------------------------- the stack

    @abc.abstractmethod
    def expose(self, bundle: Bundle, state: KubeState) -> Bundle:
        """``bundle`` as the host reaches it: what it applies to be reachable."""

    @abc.abstractmethod
    def open_stack(self, state: KubeState) -> list[str]:
        """Make sure the stack's services answer on their host ports (a command needs them); the forwards started."""

    def health_url(self, state: KubeState) -> str:
        """MLflow's /health on the host, reached (`up`'s readiness probe)."""
        self.open_stack(state)
        return f"{url(state.host_ports['mlflow'])}/health"

    @abc.abstractmethod
    def kfp_api(self, state: KubeState) -> tuple[Callable[[], str], str]:
        """KFP's API base URL on the host (a callable: it makes sure what reaches it runs), and how it is reached."""

    def stop_stack(self, state: KubeState) -> None:
        """Stop what reaches the stack's services (a failed `up`, `down`)."""
        return None  # nothing runs for them

    # ---------------------------------------------------------------- deployments

    def claim(self, state: KubeState, keys: Collection[str]) -> dict[str, int]:
        """A kept port for each of ``keys`` (forward names), a free one where none is kept yet; saved in the state."""
        missing = [key for key in keys if not state.host_ports.get(key)]
        if missing:
            saved = self.store.read()
            for key in missing:
                state.host_ports[key] = (saved.host_ports.get(key) if saved else None) or free_port()
            if saved is not None and saved.instance == state.instance:
                saved.host_ports.update({key: state.host_ports[key] for key in missing})
                self.store.write(saved)
        return {key: state.host_ports[key] for key in keys}

    def address(
        self, state: KubeState, name: str, service: str, port: int, *, grpc_port: int | None, reach: bool
    ) -> tuple[str, str | None] | None:
        """Where deployment ``name`` (its ``service``: ``port`` for REST, ``grpc_port`` for V2 gRPC) answers on the
        host: (base URL, gRPC host:port). ``reach``: its ports are claimed and its forwards made sure to run;
        without it, the ports already kept, or None."""
        keys = {deployment_forward_name(name): port}
        if grpc_port is not None:
            keys[deployment_forward_name(name, grpc=True)] = grpc_port
        if reach:
            ports = self.claim(state, list(keys))
            forwards = [Forward(key, service, remote, ports[key]) for key, remote in keys.items()]
            self.forwards(state).ensure(forwards)  # waits until a started one listens
        elif not all(state.host_ports.get(key) for key in keys):
            return None
        rest = state.host_ports[deployment_forward_name(name)]
        grpc = state.host_ports.get(deployment_forward_name(name, grpc=True)) if grpc_port is not None else None
        return url(rest), f"{LOOPBACK}:{grpc}" if grpc else None

    def restart(self, state: KubeState, names: Collection[str]) -> None:
        """Stop the deployments' forwards, which went to pods that are gone: the next `address(reach=True)` starts
        new ones on the same ports."""
        self.forwards(state).stop_named([f for name in names for f in self._forward_names(name)])

    def release(self, state: KubeState, names: Collection[str]) -> None:
        """Stop the deployments' forwards and forget their ports."""
        self.restart(state, names)
        keys = {f for name in names for f in self._forward_names(name)}
        for key in keys:
            state.host_ports.pop(key, None)
        saved = self.store.read()
        if saved is not None and keys & set(saved.host_ports):
            saved.host_ports = {k: v for k, v in saved.host_ports.items() if k not in keys}
            self.store.write(saved)

    @staticmethod
    def _forward_names(name: str) -> list[str]:
        return [deployment_forward_name(name), deployment_forward_name(name, grpc=True)]

    def close(self, state: KubeState) -> None:
        """Stop everything that reaches the sandbox from the host (`down`): the stack's, KFP's, every deployment's."""
        self.stop_stack(state)
        forwards = self.forwards(state)
        forwards.stop_named(forwards.recorded_names(DEPLOYMENT_PREFIX))


class NodePortReach(Reach):
    """kind: the stack's Services and KFP's API on fixed NodePorts, mapped by kind to 127.0.0.1 host ports."""

    def __init__(self, folder: Path, *, notebooks: bool, configured: Mapping[str, int] | None = None):
        super().__init__(folder, notebooks=notebooks, configured=configured)
        self.node_ports = kind.NodePorts()

    def check_ports(self, state: KubeState) -> None:
        """Before the cluster exists its host ports must be free (afterwards kind itself holds them)."""
        if state.cluster in Tools().kind_clusters():
            return
        wanted = {key: port for key, port in state.host_ports.items() if key in STACK_PORTS}
        taken = {key: port for key, port in wanted.items() if not port_is_free(port)}
        if taken:
            raise PreflightError(
                "host port(s) already in use: " + ", ".join(f"{key} {port}" for key, port in taken.items()),
                hint="free them, or choose others with kind.host_ports.* (0 picks a free one)",
            )

    def expose(self, bundle: Bundle, state: KubeState) -> Bundle:
        """kind's config maps each exposed NodePort to its host port; the stack's Services are NodePorts; KFP's API
        gets a NodePort Service of the sandbox's own."""
        ports = kind.exposed_ports(bundle.spec, self.node_ports)
        by_service = {kind.SERVICES[key]: port for key, port in ports.items() if key in kind.SERVICES}
        parts = []
        for part in bundle:
            if part.config is not None:
                mappings = kind.port_mappings(ports, state.host_ports)
                part = Part(part.name, part.title, part.stage, config=kind.with_port_mappings(part.config, mappings))
            elif part.stage == "stack":
                objects = tuple(
                    kind.as_node_port(copy.deepcopy(obj), by_service[obj["metadata"]["name"]])
                    if obj["kind"] == "Service" and obj["metadata"]["name"] in by_service
                    else obj
                    for obj in part.objects
                )
                part = Part(part.name, part.title, part.stage, objects)
            elif part.name == KFP:
                host = kind.kfp_host_service(bundle.spec, ports[KFP])
                part = Part(part.name, part.title, part.stage, (*part.objects, host))
            parts.append(part)
        return Bundle(bundle.spec, tuple(parts))

    def open_stack(self, state: KubeState) -> list[str]:
        return []  # kind's mappings, made with the cluster

    def kfp_api(self, state: KubeState) -> tuple[Callable[[], str], str]:
        port = state.host_ports[KFP]
        return (lambda: url(port)), f"kind maps KFP's NodePort {self.node_ports.kfp} to {LOOPBACK}:{port}"


class PortForwardReach(Reach):
    """cluster: a `kubectl port-forward` on 127.0.0.1 per service; nothing is opened on the cluster's nodes."""

    def expose(self, bundle: Bundle, state: KubeState) -> Bundle:
        return bundle  # ClusterIP Services only

    def _stack_forwards(self, state: KubeState) -> list[Forward]:
        return [
            Forward(key, service, PORTS[service], state.host_ports[key])
            for key, service in self._stack_services().items()
        ]

    def _kfp_forward(self, state: KubeState) -> Forward:
        """The forward to KFP's API (in KFP's namespace, not the stack's)."""
        port = state.host_ports[KFP]
        return Forward(KFP, KFP_API_SERVICE, KFP_API_PORT, port, namespace=versions.KFP_NAMESPACE)

    def open_stack(self, state: KubeState) -> list[str]:
        return self.forwards(state).ensure(self._stack_forwards(state))  # a dead forward comes back

    def kfp_api(self, state: KubeState) -> tuple[Callable[[], str], str]:
        forwards, forward = self.forwards(state), self._kfp_forward(state)

        def api() -> str:
            forwards.ensure([forward])  # restarted when it died; waits until it listens
            return url(forward.local_port)

        how = (
            f"it is reached through `kubectl port-forward -n {versions.KFP_NAMESPACE} "
            f"svc/{KFP_API_SERVICE} {forward.local_port}:{KFP_API_PORT}` "
            f"(its log: {forwards.folder / 'kfp.log'})"
        )
        return api, how

    def stop_stack(self, state: KubeState) -> None:
        forwards = self.forwards(state)
        forwards.stop(self._stack_forwards(state))
        if state.host_ports.get(KFP):  # the pipeline runner's, if it started one
            forwards.stop([self._kfp_forward(state)])
