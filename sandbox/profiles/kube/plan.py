"""The vocabulary of the Kubernetes bring-up: where the actions run (`Site`) and what each states it does
(`Effects`), for the plan invariants (`invariants.py`) to check offline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.actions import Action
from sandbox.config import KubeTimeouts
from sandbox.profiles.kube.manifests.spec import StackSpec
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


@dataclass(frozen=True)
class Site:
    """Where the actions run: the tools for one context, the spec the bundle was rendered from (its namespace,
    instance and timeouts), the folder the tools' files go to, and MLflow's /health as the host reaches it."""

    tools: Tools
    spec: StackSpec
    workdir: Path  # <sandbox dir>/kube: the kind config and Helm values files written for the tools
    health_url: Callable[[], str] = lambda: ""  # the reach strategy's: it makes sure a port-forward runs

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def timeouts(self) -> KubeTimeouts:
        return self.spec.timeouts

    @property
    def selector(self) -> str:
        """The labels every object the sandbox makes carries: what `down` deletes by."""
        return self.spec.selector


def ref_of(obj: dict[str, Any]) -> Ref:
    """An object's (kind, namespace, name), kind in lower case as `kubectl` names it."""
    meta = obj["metadata"]
    return (obj["kind"].lower(), meta.get("namespace", ""), meta["name"])
