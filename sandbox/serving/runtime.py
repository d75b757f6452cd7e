"""What a profile's serving runtime does: start, stop and list deployment records, and say where they answer.

Everything else (validation, the conflict rules between models, splits and their variants, the child specs of a
split, status details, the `InferenceEndpoint`s) is the planner's, `sandbox.serving.deployments`, and is the same
on every profile. A runtime decides nothing: it is handed records that are already valid and consistent.

Runtimes: the local profile's processes (`profiles.local.serving`), KServe on kind and cluster
(`profiles.kube.serving`), and the remote profile's read-only one (`profiles.remote.serving`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sandbox.serving.specs import DeploymentSpec

# A command → a context manager holding the sandbox's lock for it (`profiles.locking.exclusive_lock`), or none.
Lock = Callable[[str], contextlib.AbstractContextManager]


@dataclass(frozen=True)
class Observed:
    """What runs for one record, as the runtime sees it."""

    state: str  # "running", "starting", "unhealthy" or "stopped"
    instance: str | None = None  # what runs it: "pid 4242" locally, the pod names on Kubernetes
    why: str = ""  # why it is not running, in the runtime's words (a condition's message)


@dataclass(frozen=True)
class Address:
    """Where one record answers from the host: REST base URL and V2 gRPC `host:port` (None: no gRPC)."""

    url: str
    grpc: str | None = None
    model_name: str | None = None  # the model's name in the URLs, when it is not the deployment's (remote)
    protocol: str | None = None  # "v1" or "v2" when only that one is known to be served; None: both


@runtime_checkable
class ServingRuntime(Protocol):
    """A profile's serving runtime. Records it is handed are valid; `start` and `stop` change what runs and
    what is recorded, the rest only read."""

    profile: str  # named in refusals: "the local profile has no KServe ..."
    model_runtimes: tuple[str, ...]  # the `DeploymentSpec.runtime` values it can run (`specs.RUNTIMES`)
    reserved_names: frozenset[str]  # deployment names the stack's own services use on this profile
    lock: Lock  # held by the planner around every change
    read_only: str | None  # None, or the hint every change is refused with (the remote profile deploys nothing)

    def tracking_uri(self) -> str:
        """The MLflow the registry lookups go to (a `models:/` URI is checked before anything starts), this process
        logged in to it (`endpoints.log_in_to_mlflow`)."""
        ...

    def records(self) -> dict[str, DeploymentSpec]:
        """Every deployment record, by name: models, splits (kind "split") and variants (with `parent`)."""
        ...

    def start(self, records: list[DeploymentSpec], *, replacing: Collection[str] = ()) -> list[str]:
        """Start these records (models before splits in the list), replacing whatever runs under their names,
        and wait until each is ready; record them. One note per record ("ready in 2.1s at ..."). On failure,
        stop those started here whose name is not in ``replacing`` (no half-made deployment), then raise."""
        ...

    def stop(self, names: list[str]) -> None:
        """Stop what runs under these names, release what they hold (GPUs, ports), and forget their records.
        Names without a record are ignored."""
        ...

    def observe(self, records: list[DeploymentSpec]) -> dict[str, Observed]:
        """What runs for each record, by name. Reads only: starts nothing."""
        ...

    def address(self, record: DeploymentSpec, *, reach: bool) -> Address | None:
        """Where ``record`` answers on the host; None when it cannot be reached. ``reach``: make sure what the
        host reaches it through runs (a port-forward on Kubernetes); without it, only what is known already."""
        ...
