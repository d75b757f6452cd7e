"""Where a Kubernetes sandbox's cluster comes from: one of the two strategies of `KubeProfile` (the other,
`kube/reach.py`, is how the host reaches it).

A source names the context and namespace, refuses a configuration that must not touch anything, says what the
machine needs, adds its own parts to the bundle, gives the plan its first actions and the project's image, and
removes what `down` removes. `KindCluster` (`profiles/kind`) creates and deletes a kind cluster, builds the image
and loads it into the nodes; `GivenCluster` (`profiles/cluster`) allow-lists the context, checks the operators'
CRDs (or installs them) and lets the cluster pull the image.
"""

from __future__ import annotations

import abc
from typing import Literal

from sandbox import ui
from sandbox.config import SandboxConfig
from sandbox.gpu.inventory import GpuConfig
from sandbox.profiles.base import Check
from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests.bundle import Bundle
from sandbox.profiles.kube.manifests.spec import instance_selector
from sandbox.profiles.kube.plan import KubeAction, Site
from sandbox.profiles.kube.scheduler import remove_workloads
from sandbox.profiles.kube.state import KubeState
from sandbox.profiles.kube.tools import Tools


class Source(abc.ABC):
    """Where the cluster comes from; see the module docstring."""

    tool_names: tuple[str, ...] = ("kubectl", "helm")
    installs_operators: bool = True  # cert-manager, KServe and KFP are part of the plan
    dry_run_first: bool = False  # a server-side dry-run before each first apply

    def __init__(self, config: SandboxConfig):
        self.config = config

    # ---------------------------------------------------------------- configuration

    def check(self) -> None:
        """Refuse a configuration that must not touch anything (nothing is read or written)."""
        return None  # every configuration of it is safe to act on

    @abc.abstractmethod
    def new_state(self, instance: str, host_ports: dict[str, int]) -> KubeState: ...

    @property
    @abc.abstractmethod
    def object_store(self) -> Literal["seaweedfs", "minio"]: ...

    @abc.abstractmethod
    def image(self) -> str:
        """The project's image the stack's pods run."""

    def gpu(self) -> GpuConfig:
        """The GPU inventory the cluster is made from (the one place `plan` and `up` both read it)."""
        return self.config.gpu

    def preflight(self) -> list[Check]:
        """What this source needs from the machine, beyond the tools (`preflight.tool_checks(tool_names)`)."""
        return []

    # ---------------------------------------------------------------- the plan

    def complete(self, bundle: Bundle, state: KubeState) -> Bundle:
        """``bundle`` with this source's own parts (kind's cluster config)."""
        return bundle

    @abc.abstractmethod
    def prepare(self, site: Site, bundle: Bundle, state: KubeState) -> list[KubeAction]:
        """The plan's first actions: the cluster made ready for the stack."""

    @abc.abstractmethod
    def image_action(self, site: Site, state: KubeState) -> KubeAction:
        """The project's image, where the nodes find it (before any object names it)."""

    # ---------------------------------------------------------------- down

    @abc.abstractmethod
    def remove(self, state: KubeState, *, keep_cluster: bool) -> None:
        """What `down` removes (the reach has already stopped what reaches it)."""

    def remove_stack(self, state: KubeState) -> None:
        """Delete only what carries this sandbox's labels: never CRDs, cluster-scoped objects or an upstream
        install's objects. In KFP's namespace that is the sandbox's own NodePort Service and pipeline Secret;
        KFP's object-store Secret is KFP's and stays, with the sandbox's keys, which KFP's SeaweedFS now holds
        (the stock well-known keys are not restored); a later `up` finds it and rotates again if its keys differ."""
        tools = Tools(state.context)
        selector = instance_selector(state.instance)
        kinds = [
            "inferenceservices",  # first: KServe's own Deployments and Services under them go with them
            "deployments",
            "statefulsets",
            "jobs",
            "services",
            "configmaps",
            "secrets",
            "persistentvolumeclaims",
            "resourcequotas",
            "limitranges",
            "networkpolicies",
            "serviceaccounts",  # the kserve-mlserver runtime's S3 ServiceAccount
        ]
        quota_namespaces = [
            q.namespace for q in self.config.gpu.quotas if q.namespace not in ("default", state.namespace)
        ]
        kept: list[str] = []
        with ui.step(f"Delete the stack's objects in {state.namespace} ({selector})"):
            tools.run(tools.delete_labelled(kinds, namespace=state.namespace, selector=selector))
            for namespace in dict.fromkeys(quota_namespaces):
                tools.run(
                    tools.delete_labelled(["resourcequotas", "limitranges"], namespace=namespace, selector=selector)
                )
            kept = remove_workloads(tools, state.instance)  # what `sandbox gpu` made, in any namespace
            tools.run(
                tools.delete_labelled(
                    ["secrets", "jobs", "services", "networkpolicies"],
                    namespace=versions.KFP_NAMESPACE,
                    selector=selector,
                )
            )
        if kept:
            ui.err.print(f"Kept namespace(s) {', '.join(kept)}: the sandbox made them, but they hold others' pods.")
