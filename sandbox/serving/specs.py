"""What a serving backend is asked for and answers, whatever the profile: variant specs, names, statuses.

The CLI and the scenarios build these; each profile's serving backend takes them
(`sandbox.profiles.local.serving` runs them as processes; the remote profile lists
what the platform already serves).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from sandbox.endpoints import InferenceEndpoint
from sandbox.errors import ConfigError, SandboxError

# KServe InferenceService names are DNS-1123 labels; keep room for "-<variant>".
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")
_MODEL_URI = re.compile(r"^(models:/[^/@]+(/[^/]+|@[^/]+)|runs:/[^/]+/.+|s3://.+|mlflow-artifacts:/.+|/.+)$")

# What runs a deployment's model: the project's own model server ("sandbox", every profile), or KServe's
# stock MLflow runtime (an InferenceService's `modelFormat: mlflow`, the Kubernetes profiles only).
SANDBOX_RUNTIME = "sandbox"
KSERVE_MLSERVER = "kserve-mlserver"
RUNTIMES = (SANDBOX_RUNTIME, KSERVE_MLSERVER)


class VariantSpec(BaseModel):
    """One variant of an A/B split: a label, the model it serves, its share of the traffic."""

    label: str
    model_uri: str
    weight: float = Field(ge=0)

    @classmethod
    def parse(cls, spec: str) -> VariantSpec:
        """`a=models:/fraud-detector/1:80` (the weight after the last colon)."""
        label, sep, rest = spec.partition("=")
        model_uri, _, weight = rest.rpartition(":")
        if not sep or not label or not model_uri or not weight:
            raise ConfigError(
                f"bad --variant {spec!r}", hint="write it as LABEL=MODEL_URI:WEIGHT, e.g. a=models:/fraud-detector/1:80"
            )
        try:
            value = float(weight)
        except ValueError:
            raise ConfigError(
                f"bad weight {weight!r} in --variant {spec!r}",
                hint="write it as LABEL=MODEL_URI:WEIGHT with a number last, e.g. a=models:/fraud-detector/1:80",
            ) from None
        if value < 0:
            raise ConfigError(f"negative weight in --variant {spec!r}", hint="weights are 0 or more")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", label):
            raise ConfigError(f"bad variant label {label!r}", hint="use a short lower-case label such as a, b, canary")
        return cls(label=label, model_uri=model_uri, weight=value)


class DeploymentSpec(BaseModel):
    """What was asked for: a model (or an A/B split of several) served under a name."""

    name: str
    kind: Literal["model", "split"]
    model_uri: str | None = None
    batch_size: int = 1
    batch_wait_ms: float = 5.0
    gpus: int = 0  # placed through the profile's scheduler; the server sees only its devices
    inference_log: bool = True  # the model server logs each inference (sandbox.monitoring)
    allow_nan: bool = False  # NaN and infinities reach the model instead of being a 400
    variants: list[VariantSpec] = Field(default_factory=list)
    sticky_header: str | None = None
    parent: str | None = None  # a variant's model server belongs to its split
    runtime: str = SANDBOX_RUNTIME  # one of RUNTIMES

    @classmethod
    def model(cls, name: str, model_uri: str, **options) -> DeploymentSpec:
        """One model served under ``name`` (``options``: batching, gpus, the inference log, NaN policy, runtime)."""
        return cls(name=name, kind="model", model_uri=model_uri, **options)

    @classmethod
    def split(cls, name: str, variants: list[VariantSpec], **options) -> DeploymentSpec:
        """An A/B split: one URL in front of ``variants`` (``options``: sticky_header, and the batching, inference
        log and NaN policy every variant's server gets)."""
        return cls(name=name, kind="split", variants=variants, **options)


@dataclass
class DeploymentStatus:
    """One deployment as `serve list` and `status` show it."""

    name: str
    kind: str
    state: str
    instance: str | None  # what runs it, as the profile names it: "pid 4242" locally, a pod on Kubernetes
    url: str | None
    model_uri: str | None
    detail: str


def variant_name(split: str, label: str) -> str:
    """The deployment name of a split's variant: `NAME-LABEL`, on every profile."""
    return f"{split}-{label}"


def variant_specs(split: str, variants: list[VariantSpec], **options) -> list[DeploymentSpec]:
    """A split's variants as the single-model deployments that serve them (``options``: batching, the
    inference log, NaN policy, shared by every variant)."""
    return [
        DeploymentSpec(
            name=variant_name(split, variant.label), kind="model", model_uri=variant.model_uri, parent=split, **options
        )
        for variant in variants
    ]


def validate_name(name: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(
            f"bad deployment name {name!r}",
            hint="use lower-case letters, digits and '-', at most 42 characters (a DNS label, as KServe requires)",
        )


def validate_model_uri(uri: str) -> None:
    if not _MODEL_URI.match(uri):
        raise ConfigError(
            f"bad model URI {uri!r}",
            hint="use a registry URI such as models:/fraud-detector/3 or models:/fraud-detector@champion",
        )


def validate_runtime(runtime: str, *, profile: str | None = None) -> None:
    """``runtime`` is one of `RUNTIMES`; with ``profile`` (one that runs no KServe), only "sandbox"."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}", hint=f"use --runtime {' or '.join(RUNTIMES)}")
    if profile is not None and runtime != SANDBOX_RUNTIME:
        raise ConfigError(
            f"the {profile} profile has no KServe to run --runtime {runtime}",
            hint="deploy with --runtime sandbox (the same protocols), or on KServe: `--profile kind` (or cluster)",
        )


def validate_split(name: str, variants: list[VariantSpec]) -> None:
    """What every profile refuses in `serve split`: a bad name or model URI, fewer than two variants, a label
    given twice, weights that add up to 0."""
    validate_name(name)
    if len(variants) < 2:
        raise ConfigError("a split needs at least two --variant", hint="e.g. --variant a=URI:80 --variant b=URI:20")
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"duplicate variant labels {labels}", hint="give each variant its own label")
    if sum(v.weight for v in variants) <= 0:
        raise ConfigError("the weights add up to 0", hint="give at least one variant a positive weight")
    for variant in variants:
        validate_model_uri(variant.model_uri)


@runtime_checkable
class ServingBackend(Protocol):
    """A profile's serving backend: the one interface workloads use to deploy and find models.

    Every profile's is `sandbox.serving.deployments.Deployments` over the profile's runtime: processes (local),
    KServe (kind, cluster), or the listed endpoints of a platform the sandbox did not start (remote, read-only).
    """

    def deploy(self, spec: DeploymentSpec) -> list[str]: ...

    def undeploy(self, name: str) -> list[str]: ...

    def get(self, name: str) -> DeploymentSpec | None: ...

    def statuses(self) -> list[DeploymentStatus]: ...

    def inference_endpoints(self) -> dict[str, InferenceEndpoint]: ...


# --------------------------------------------------------------------------- the registry


@contextmanager
def registry_errors(uri: str) -> Iterator[None]:
    """The registry's answers as the sandbox's errors: no such model is bad input (exit 2), anything else is
    the registry being unreachable."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ConfigError(
                f"{uri} is not in the registry ({exc.error_code})",
                hint="check the name and version with the MLflow UI or MlflowClient().search_model_versions()",
            ) from None
        raise SandboxError(f"cannot look {uri} up in the registry: {exc}", hint="is the sandbox up?") from None


def registry_version(client, uri: str) -> tuple[str, str | None]:
    """The registered model and version that `models:/NAME/VERSION` or `models:/NAME@ALIAS` names (the alias
    looked up in the registry); the version is None for `models:/NAME/<stage or latest>`. Lookups raise
    MlflowException: run it inside `registry_errors` where that is the user's bad input."""
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, version = ref.split("/", 1)
    return name, version if version.isdigit() else None


def check_registered(uri: str, tracking_uri: str) -> None:
    """A `models:/` URI names a model the registry has: fail early, in its own words, rather than in a server's
    log (locally) or at the end of a 10-minute Ready wait (on Kubernetes). Other URIs are the server's to read."""
    from mlflow import MlflowClient

    if not uri.startswith("models:/"):
        return
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with registry_errors(uri):
        name, version = registry_version(client, uri)
        if version is None:  # a stage or "latest": the model, at least
            client.get_registered_model(name)
        elif "@" not in uri:  # an alias's lookup found its version already
            client.get_model_version(name, version)
