"""Offline validation of everything the Kubernetes profiles apply: no cluster, no network.

- core kinds: kubernetes-validate's JSON schemas for the pinned Kubernetes minor, strict (an
  unknown field is an error, as a server-side apply with field validation would say);
- KServe's custom resources: the `kserve` SDK's typed models (an unknown field or a wrong type
  fails there too);
- the kind config: a model of the fields kind documents for `kind.x-k8s.io/v1alpha4`
  (kubernetes-sigs/kind pkg/apis/config/v1alpha4/types.go), unknown fields refused, and the
  sandbox's own rule that every host port listens on 127.0.0.1 only.

Each problem is one line that names the object (``Kind namespace/name``) and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sandbox.errors import ConfigError
from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests.bundle import Bundle

# Kinds kubernetes-validate has no schema for, and how each is checked instead.
KSERVE_KINDS = {"InferenceService", "ServingRuntime", "ClusterServingRuntime", "InferenceGraph", "TrainedModel"}


class InvalidObject(ConfigError):
    """A rendered object failed offline validation (its message names the object and the field)."""


def describe(obj: Mapping[str, Any]) -> str:
    """``Deployment ml-sandbox/mlflow``: how a problem names its object."""
    kind = obj.get("kind", "<no kind>") if isinstance(obj, Mapping) else "<not a mapping>"
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    name = meta.get("name", "<no name>")
    return f"{kind} {meta['namespace']}/{name}" if meta.get("namespace") else f"{kind} {name}"


def _path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


# --------------------------------------------------------------------------- core kinds


def _core_problems(obj: dict[str, Any], kubernetes_version: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{describe(obj)}: {_path(error.absolute_path)}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{describe(obj)}: no schema for {error.api_version} {error.kind} in Kubernetes {error.version}"]
    return []


def _kserve_problems(obj: dict[str, Any]) -> list[str]:
    """KServe objects through the SDK's typed models: unknown fields and wrong types fail."""
    import kserve

    model = getattr(kserve, f"V1beta1{obj['kind']}", None) or getattr(kserve, f"V1alpha1{obj['kind']}", None)
    if model is None:
        return [f"{describe(obj)}: the kserve SDK has no model for {obj['kind']}"]
    api = obj.get("apiVersion", "")
    if not api.startswith("serving.kserve.io/"):
        return [f"{describe(obj)}: apiVersion: {api!r} is not serving.kserve.io"]
    try:
        _strict_model(model, obj, [])
    except ValueError as error:
        return [f"{describe(obj)}: {error}"]
    return []


def _strict_model(model: type, data: Any, path: list) -> None:
    """Walk ``data`` against a swagger-generated kserve/kubernetes model, refusing unknown keys and
    values of the wrong type (the SDK's own constructors accept nearly anything)."""
    import datetime

    types: dict[str, str] = getattr(model, "openapi_types", None) or getattr(model, "swagger_types", {})
    attribute_map: dict[str, str] = model.attribute_map
    by_json = {json_name: python for python, json_name in attribute_map.items()}
    if not isinstance(data, Mapping):
        raise ValueError(f"{_path(path)}: expected an object, got {type(data).__name__}")
    for key, value in data.items():
        if key not in by_json:
            raise ValueError(f"{_path([*path, key])}: unknown field")
        _check_type(types[by_json[key]], value, [*path, key], datetime)


def _check_type(type_name: str, value: Any, path: list, datetime) -> None:
    import kserve
    import kubernetes.client

    if value is None:
        return
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise ValueError(f"{_path(path)}: expected a list, got {type(value).__name__}")
        for index, item in enumerate(value):
            _check_type(type_name[5:-1], item, [*path, index], datetime)
        return
    if type_name.startswith("dict("):
        if not isinstance(value, Mapping):
            raise ValueError(f"{_path(path)}: expected a map, got {type(value).__name__}")
        inner = type_name[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            if inner == "str" and isinstance(item, int | float) and not isinstance(item, bool):
                continue  # resource quantities: the SDK types them as strings, the API takes numbers too
            _check_type(inner, item, [*path, key], datetime)
        return
    simple = {"str": str, "int": int, "float": (int, float), "bool": bool, "object": object}
    if type_name in simple:
        wanted = simple[type_name]
        if isinstance(value, bool) and type_name in ("int", "float"):
            raise ValueError(f"{_path(path)}: expected {type_name}, got bool")
        if not isinstance(value, wanted):
            raise ValueError(f"{_path(path)}: expected {type_name}, got {type(value).__name__}")
        return
    if type_name in ("datetime", "date"):
        return
    model = getattr(kserve, type_name, None) or getattr(kubernetes.client, type_name, None)
    if model is None:
        return  # a type the SDKs do not model (e.g. resource quantities): accepted as written
    _strict_model(model, value, path)


# --------------------------------------------------------------------------- all objects


def validate_objects(
    objects: list[dict[str, Any]], *, kubernetes_version: str = versions.KUBERNETES_VERSION
) -> list[str]:
    """Problems with ``objects``, one line each; empty when every object is valid."""
    problems: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        if not isinstance(obj, Mapping) or not obj.get("kind") or not obj.get("apiVersion"):
            problems.append(f"{describe(obj)}: kind and apiVersion are required")
            continue
        identity = (obj["kind"], obj.get("metadata", {}).get("namespace", ""), obj.get("metadata", {}).get("name", ""))
        if identity in seen:
            problems.append(f"{describe(obj)}: appears twice")
        seen.add(identity)
        if obj["kind"] in KSERVE_KINDS:
            problems += _kserve_problems(dict(obj))
        else:
            problems += _core_problems(dict(obj), kubernetes_version)
    return problems


def check_objects(objects: list[dict[str, Any]], **kwargs: Any) -> None:
    """`validate_objects`, raising `InvalidObject` with every problem."""
    problems = validate_objects(objects, **kwargs)
    if problems:
        raise InvalidObject(problems[0], hint="fix the object named above", details="\n".join(problems))


# --------------------------------------------------------------------------- the kind config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _PortMapping(_Strict):
    containerPort: int = Field(ge=1, le=65535)
    hostPort: int = Field(ge=1, le=65535)  # kind allows -1 or 0 (random); the sandbox fixes each one
    listenAddress: Literal["127.0.0.1"]  # host ports on loopback only
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class _Mount(_Strict):
    containerPath: str
    hostPath: str
    readOnly: bool = False
    selinuxRelabel: bool = False
    propagation: Literal["None", "HostToContainer", "Bidirectional"] = "None"


class _Patch6902(_Strict):
    group: str
    version: str
    kind: str
    patch: str


def _kubeadm_patches(patches: list[str]) -> list[str]:
    for index, patch in enumerate(patches):
        try:
            parsed = yaml.safe_load(patch)
        except yaml.YAMLError as error:
            raise ValueError(f"kubeadmConfigPatches[{index}] is not YAML: {error}") from error
        if not isinstance(parsed, dict) or not parsed.get("kind"):
            raise ValueError(f"kubeadmConfigPatches[{index}] must be a YAML object with a `kind`")
    return patches


class _Node(_Strict):
    role: Literal["control-plane", "worker"] = "control-plane"
    image: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    extraMounts: list[_Mount] = Field(default_factory=list)
    extraPortMappings: list[_PortMapping] = Field(default_factory=list)
    gpus: str | None = None
    kubeadmConfigPatches: list[str] = Field(default_factory=list)
    kubeadmConfigPatchesJSON6902: list[_Patch6902] = Field(default_factory=list)

    @field_validator("kubeadmConfigPatches")
    @classmethod
    def _patches(cls, value: list[str]) -> list[str]:
        return _kubeadm_patches(value)


class _Networking(_Strict):
    ipFamily: Literal["ipv4", "ipv6", "dual"] | None = None
    apiServerPort: int | None = None
    apiServerAddress: Literal["127.0.0.1"] | None = None  # the API server on loopback too
    podSubnet: str | None = None
    serviceSubnet: str | None = None
    disableDefaultCNI: bool | None = None
    kubeProxyMode: Literal["iptables", "ipvs", "nftables", "none"] | None = None
    dnsSearch: list[str] | None = None


class KindCluster(_Strict):
    """kind's `Cluster` (kind.x-k8s.io/v1alpha4), the documented fields only."""

    kind: Literal["Cluster"]
    apiVersion: Literal["kind.x-k8s.io/v1alpha4"]
    name: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    nodes: list[_Node] = Field(default_factory=list)
    networking: _Networking | None = None
    featureGates: dict[str, bool] = Field(default_factory=dict)
    runtimeConfig: dict[str, str] = Field(default_factory=dict)
    kubeadmConfigPatches: list[str] = Field(default_factory=list)
    kubeadmConfigPatchesJSON6902: list[_Patch6902] = Field(default_factory=list)
    containerdConfigPatches: list[str] = Field(default_factory=list)
    containerdConfigPatchesJSON6902: list[str] = Field(default_factory=list)

    @field_validator("kubeadmConfigPatches")
    @classmethod
    def _patches(cls, value: list[str]) -> list[str]:
        return _kubeadm_patches(value)


def validate_kind_config(config: dict[str, Any]) -> list[str]:
    """Problems with a kind cluster config, one line each (``kind Cluster NAME: field.path: message``)."""
    name = config.get("name", "<no name>") if isinstance(config, Mapping) else "<not a mapping>"
    try:
        cluster = KindCluster.model_validate(config)
    except ValidationError as error:
        return [f"kind Cluster {name}: {_path(e['loc'])}: {e['msg']}" for e in error.errors()]
    problems = []
    if not any(node.role == "control-plane" for node in cluster.nodes):
        problems.append(f"kind Cluster {name}: nodes: no control-plane node")
    host_ports = [m.hostPort for node in cluster.nodes for m in node.extraPortMappings]
    if len(set(host_ports)) != len(host_ports):
        problems.append(f"kind Cluster {name}: extraPortMappings: a host port is mapped twice: {sorted(host_ports)}")
    for index, node in enumerate(cluster.nodes):
        if node.image is not None and "@sha256:" not in node.image:
            problems.append(f"kind Cluster {name}: nodes[{index}].image: not pinned by digest: {node.image}")
    return problems


# --------------------------------------------------------------------------- everything


def validate_bundle(bundle: Bundle, *, kubernetes_version: str = versions.KUBERNETES_VERSION) -> list[str]:
    """Every problem with what `up` applies (the bundle `render` writes): its objects, its Helm releases' values
    (YAML mappings, exact chart versions) and kind's config (with every NodePort mapped)."""
    objects = bundle.objects()
    problems = validate_objects(objects, kubernetes_version=kubernetes_version)
    for release in bundle.releases():
        if not isinstance(yaml.safe_load(release.values_yaml()) or {}, dict):
            problems.append(f"helm release {release.name}: values are not a mapping")
        if not release.chart.version or release.chart.version in ("latest", "*"):
            problems.append(f"helm release {release.name}: chart {release.chart.name} has no exact version")
    kind_config = bundle.kind_config
    if kind_config is not None:
        problems += validate_kind_config(kind_config)
        problems += _node_ports_mapped(objects, kind_config)
    return problems


def _node_ports_mapped(objects: list[dict[str, Any]], kind_config: dict[str, Any]) -> list[str]:
    """Each NodePort must be a containerPort of a control-plane mapping, or the host cannot reach it."""
    mapped = {
        m.get("containerPort")
        for node in kind_config.get("nodes", [])
        if node.get("role") == "control-plane"
        for m in node.get("extraPortMappings", [])
    }
    problems = []
    for obj in objects:
        if obj.get("kind") == "Service" and obj.get("spec", {}).get("type") == "NodePort":
            for port in obj["spec"].get("ports", []):
                if port.get("nodePort") not in mapped:
                    problems.append(
                        f"{describe(obj)}: spec.ports.nodePort {port.get('nodePort')} is not mapped by kind"
                    )
    return problems
