"""The one list of what `up` applies, rendered once from a `StackSpec`, in plan order.

`bundle(spec)` calls each builder in `COMPONENTS`, in order; the bring-up (`kube/actions.py`), the offline
validation (`kube/validate.py`) and `--render` (`render` here) all read the `Bundle` it returns. Adding a
component is one more builder in `COMPONENTS`: its objects are then applied by their own action, validated
and rendered. The two strategies of a profile complete it (`KubeProfile.bundle`): where the cluster comes
from adds kind's cluster config, how the host reaches it opens Services on NodePorts.

A part's `stage` says where in the plan it goes: `cluster` (made before anything else), `nodes` (the nodes'
set-up: real GPUs), `stack` (the stack's own objects, each part one action, after the project's image),
`operators` (Helm releases and Kubeflow Pipelines: installed only where the profile installs them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sandbox.files import write_private
from sandbox.profiles.kube.manifests import (
    credentials,
    gpu,
    jupyterlab,
    mlflow,
    namespace,
    operators,
    postgres,
    s3,
)
from sandbox.profiles.kube.manifests.operators import KFP_TITLE, HelmRelease
from sandbox.profiles.kube.manifests.spec import KFP, StackSpec, to_yaml

Stage = Literal["cluster", "nodes", "stack", "operators"]
STAGES: tuple[Stage, ...] = ("cluster", "nodes", "stack", "operators")


@dataclass(frozen=True)
class Part:
    """One piece of what `up` applies: a component's objects, a Helm release, or kind's cluster config."""

    name: str  # the component ("postgres"), the release ("kserve"), "kfp", "real-gpus" or "kind-config"
    title: str  # its action's title in the plan
    stage: Stage
    objects: tuple[dict[str, Any], ...] = ()  # applied with kubectl
    release: HelmRelease | None = None  # installed with helm
    config: dict[str, Any] | None = None  # kind's cluster config (`kind create cluster --config`)


def stack_part(name: str, title: str, objects: list[dict[str, Any]]) -> list[Part]:
    """A component of the stack as one part (none when it has no objects: a component that is off)."""
    return [Part(name, title, "stack", tuple(objects))] if objects else []


def _real_gpus(spec: StackSpec) -> list[Part]:
    release = gpu.device_plugin_release(spec)
    if release is None:
        return []
    return [Part("real-gpus", gpu.TITLE, "nodes", tuple(gpu.real_gpu_objects(spec)), release=release)]


def _operators(spec: StackSpec) -> list[Part]:
    releases = [
        Part(release.name, f"Helm: {release.name} {release.chart.version}", "operators", release=release)
        for release in operators.helm_releases(spec)
    ]
    return [*releases, Part(KFP, KFP_TITLE, "operators", tuple(operators.kfp_objects(spec)))]


# What `up` applies, in plan order: each builder gives the parts of one component (none when it is off).
COMPONENTS: list[Callable[[StackSpec], list[Part]]] = [
    _real_gpus,
    lambda spec: stack_part("namespace", namespace.TITLE, namespace.objects(spec)),
    lambda spec: stack_part("secrets", credentials.TITLE, credentials.objects(spec)),
    lambda spec: stack_part("postgres", postgres.TITLE, postgres.objects(spec)),
    lambda spec: stack_part("s3", s3.TITLE, s3.objects(spec)),
    lambda spec: stack_part("mlflow", mlflow.TITLE, mlflow.objects(spec)),
    lambda spec: stack_part("jupyterlab", jupyterlab.TITLE, jupyterlab.objects(spec)),
    _operators,
]


@dataclass(frozen=True)
class Bundle:
    """What `up` applies for one spec, in plan order."""

    spec: StackSpec
    parts: tuple[Part, ...] = field(default_factory=tuple)

    def __iter__(self) -> Iterator[Part]:
        return iter(self.parts)

    def stage(self, stage: Stage) -> list[Part]:
        return [part for part in self.parts if part.stage == stage]

    def part(self, name: str) -> Part | None:
        return next((part for part in self.parts if part.name == name), None)

    def objects(self, *stages: Stage) -> list[dict[str, Any]]:
        """Every object the parts of ``stages`` (all, when none is named) apply, in order."""
        return [obj for part in self.parts if not stages or part.stage in stages for obj in part.objects]

    def releases(self) -> list[HelmRelease]:
        return [part.release for part in self.parts if part.release is not None]

    @property
    def kind_config(self) -> dict[str, Any] | None:
        return next((part.config for part in self.parts if part.config is not None), None)

    def with_part(self, part: Part, *, first: bool = False) -> Bundle:
        return replace(self, parts=(part, *self.parts) if first else (*self.parts, part))

    def replaced(self, name: str, part: Part) -> Bundle:
        return replace(self, parts=tuple(part if p.name == name else p for p in self.parts))


def bundle(spec: StackSpec) -> Bundle:
    """The stack's parts for ``spec``: every builder in `COMPONENTS`, in order."""
    return Bundle(spec, tuple(part for build in COMPONENTS for part in build(spec)))


def stack_objects(spec: StackSpec) -> list[dict[str, Any]]:
    """The stack's own objects for ``spec``, in apply order (every `stack` part's)."""
    return bundle(spec).objects("stack")


# --------------------------------------------------------------------------- render


def _slug(obj: dict[str, Any]) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}"


def render(bundle: Bundle, out: Path) -> list[Path]:
    """Write every part of ``bundle`` into ``out``, each file 0600; the paths in plan order.

    00-kind-config.yaml; gpu-NN-*.yaml and gpu-helm-values-<release>.yaml (the real GPUs' set-up); the stack's
    objects one per file, numbered from 10 in apply order; helm-values-NN-<release>.yaml, each headed by its
    `helm` command; kfp-NN-*.yaml."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[Path] = []
    timeout = bundle.spec.timeouts.helm

    def write(name: str, text: str) -> None:
        path = out / name
        write_private(path, text)
        written.append(path)

    stack = bundle.objects("stack")
    width = max(2, len(str(9 + len(stack))))  # the names sort in apply order however many there are
    numbers = iter(range(10, 10 + len(stack)))
    releases = iter(range(1, 1 + len(bundle.stage("operators"))))
    for part in bundle:
        if part.config is not None:
            write("00-kind-config.yaml", to_yaml(part.config))
        elif part.stage == "nodes":
            for index, obj in enumerate(part.objects, start=1):
                write(f"gpu-{index:02d}-{_slug(obj)}.yaml", to_yaml(obj))
            if part.release is not None:
                name = f"gpu-helm-values-{part.release.name}.yaml"
                write(name, part.release.command_comment(timeout) + part.release.values_yaml())
        elif part.stage == "stack":
            for obj in part.objects:
                write(f"{next(numbers):0{width}d}-{_slug(obj)}.yaml", to_yaml(obj))
        elif part.release is not None:
            name = f"helm-values-{next(releases):02d}-{part.release.name}.yaml"
            write(name, part.release.command_comment(timeout) + part.release.values_yaml())
        else:
            for index, obj in enumerate(part.objects, start=1):
                write(f"{part.name}-{index:02d}-{_slug(obj)}.yaml", to_yaml(obj))
    return written
