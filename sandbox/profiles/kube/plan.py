"""The vocabulary of the Kubernetes bring-up: what the actions work on (`Target`) and what each states it does
(`Effects`), for the plan invariants (`invariants.py`) to check offline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.actions import Action
from sandbox.config import KubeTimeouts
from sandbox.gpu.inventory import NodeSpec
from sandbox.profiles.kube import manifests
from sandbox.profiles.kube.tools import Tools

Ref = tuple[str, str, str]  # (kind, namespace, name): namespace "" for cluster-scoped, name "*" for "all of them"


@dataclass(frozen=True)
class Effects:
    """What an action does to the cluster, stated for the offline plan checks (`invariants.check_plan`)."""

    applies: tuple[dict[str, Any], ...] = ()  # objects it applies: the sandbox's own, and its changes to upstream ones
    images: tuple[str, ...] = ()  # images it builds and loads into the nodes
    creates: tuple[Ref, ...] = ()  # what else it makes exist (an upstream install's objects, nodes)
    waits: tuple[Ref, ...] = ()  # what it waits for
    upstream: tuple[Ref, ...] = ()  # of `creates`, the objects that belong to an upstream install


@dataclass(frozen=True)
class KubeAction(Action):
    effects: Effects = field(default_factory=Effects)


@dataclass
class Target:
    """What the actions work on: one namespace of one context, and the choices the profile made."""

    tools: Tools
    spec: Any  # manifests.StackSpec
    workdir: Path  # <sandbox dir>/kube: the kind config and Helm values files written for the tools
    cluster: str | None = None  # the kind cluster this profile creates (None: a cluster it was given)
    host_ports: dict[str, int] = field(default_factory=dict)
    gpu_nodes: list[NodeSpec] = field(default_factory=list)  # inventory nodes with fake GPUs
    real_gpu_nodes: list[NodeSpec] = field(default_factory=list)  # nodes with this machine's GPUs (nvkind)
    install_operators: bool = True
    load_image: bool = True  # kind: build the project image and `kind load` it
    server_dry_run: bool = False  # cluster: a server-side dry-run before each first apply
    build_context: Path | None = None  # the folder holding the project's Dockerfile
    health_url: Callable[[], str] | None = None  # MLflow's /health as reached from the host

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def timeouts(self) -> KubeTimeouts:
        return self.spec.timeouts

    @property
    def selector(self) -> str:
        """The labels every object the sandbox makes carries: what `down` deletes by."""
        return f"app.kubernetes.io/managed-by={manifests.MANAGED_BY},app.kubernetes.io/instance={self.spec.instance}"


def ref_of(obj: dict[str, Any]) -> Ref:
    """An object's (kind, namespace, name), kind in lower case as `kubectl` names it."""
    meta = obj["metadata"]
    return (obj["kind"].lower(), meta.get("namespace", ""), meta["name"])
