"""The stack as rendered (`StackSpec`), its generated credentials, its names and ports, and the object helpers
every component module builds with: labels, metadata, Secrets and references to them, resources, security
contexts, probes, pods, Services and Deployments. One copy of each; nothing here talks to a cluster.

The security stance is the local profile's: generated credentials only, in Secrets (never in a pod spec, a
ConfigMap or an argument), read-only service accounts not mounted, no privilege escalation, every capability
dropped, host access only through 127.0.0.1 (how is the reach strategy's: `kube/reach.py`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from importlib import resources as package_files
from typing import Any, ClassVar, Literal

import yaml

from sandbox.config import KubeTimeouts
from sandbox.gpu.inventory import GpuConfig
from sandbox.profiles.base import TOKEN_ALPHABET, generate_token
from sandbox.profiles.kube import versions
from sandbox.tracking_server import ADMIN_USER
from sandbox.wire import SERVING_TOKEN_ENV

MANAGED_BY = "ml-sandbox"
PART_OF = "ml-sandbox"
LOOPBACK = "127.0.0.1"

# Component names: each is the name of its Service (and workload) inside spec.namespace.
POSTGRES = "postgres"
S3 = "s3"
MLFLOW = "mlflow"
NOTEBOOKS = "jupyterlab"
BUCKETS_JOB = "create-buckets"
KFP = "kfp"
# Ports the Services listen on inside the cluster.
PORTS = {POSTGRES: 5432, S3: 8333, MLFLOW: 5000, NOTEBOOKS: 8888}
DATABASE = "mlflow"
DB_USER = "mlflow"
MONITORING_DATABASE = "monitoring"  # the inference log's database, as on the local profile
ARTIFACTS_BUCKET = "mlflow-artifacts"
REGION = "us-east-1"

# Secrets (one per concern), and the keys in them.
SECRET_POSTGRES = "postgres-credentials"
SECRET_S3 = "s3-credentials"
SECRET_MLFLOW = "mlflow-backend"
SECRET_NOTEBOOKS = "jupyterlab-token"
SECRET_SERVING = "serving-token"  # key "token": the bearer token model servers and routers require

# The keys KFP's stock object-store Secret carries (`operators.KFP_SECRET`): the sandbox never uses them.
KFP_STOCK_ACCESS_KEY = "minio"
KFP_STOCK_SECRET_KEY = "minio123"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class StackSecrets:
    """Credentials generated per stack; none is a default. They go into Secrets and nowhere else."""

    postgres_password: str
    s3_access_key: str
    s3_secret_key: str
    jupyter_token: str
    kfp_s3_access_key: str
    kfp_s3_secret_key: str
    mlflow_admin_password: str  # MLflow's basic-auth admin (MLFLOW_ADMIN_USER)
    mlflow_flask_secret: str  # MLflow's auth app's CSRF key
    serving_token: str  # the bearer token of model servers and routers (wire.SERVING_TOKEN_ENV)

    MLFLOW_ADMIN_USER: ClassVar[str] = ADMIN_USER  # MLflow's basic-auth admin

    @classmethod
    def generate(cls) -> StackSecrets:
        # S3 access keys are conventionally 20 upper-case alphanumerics; secrets 40 characters.
        return cls(
            postgres_password=generate_token(32),
            s3_access_key="SBX" + secrets.token_hex(8).upper() + generate_token(1).upper(),
            s3_secret_key=generate_token(40),
            jupyter_token=generate_token(48),
            kfp_s3_access_key="KFP" + secrets.token_hex(8).upper() + generate_token(1).upper(),
            kfp_s3_secret_key=generate_token(40),
            mlflow_admin_password=generate_token(32),
            mlflow_flask_secret=generate_token(48),
            serving_token=generate_token(40),
        )

    def mlflow_auth_env(self) -> dict[str, str]:
        """MLflow's client's login (`Endpoints.mlflow_auth_env`) as the stack's admin."""
        return {
            "MLFLOW_TRACKING_USERNAME": self.MLFLOW_ADMIN_USER,
            "MLFLOW_TRACKING_PASSWORD": self.mlflow_admin_password,
        }

    @classmethod
    def kept(cls, saved: dict[str, str]) -> StackSecrets:
        """The secrets a stack saved; a secret added since (a stack made by an older version) is generated."""
        return cls(**{**asdict(cls.generate()), **saved})

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if len(value) < 16 or not all(c in TOKEN_ALPHABET for c in value):
                raise ValueError(f"StackSecrets.{item.name} must be at least 16 letters and digits")
        if {self.kfp_s3_access_key, self.kfp_s3_secret_key} & {KFP_STOCK_ACCESS_KEY, KFP_STOCK_SECRET_KEY}:
            raise ValueError("the KFP object-store keys must not be KFP's stock ones")

    def __repr__(self) -> str:  # never print the values
        return "StackSecrets(<hidden>)"


@dataclass(frozen=True)
class StackSpec:
    """Everything the stack's objects are rendered from (`manifests.bundle`)."""

    instance: str  # the instance id: label app.kubernetes.io/instance
    secrets: StackSecrets
    image: str  # the project's image
    namespace: str = "ml-sandbox"
    object_store: Literal["seaweedfs", "minio"] = "seaweedfs"
    notebooks: bool = True
    buckets: tuple[str, ...] = ("mlflow-artifacts", "data")
    gpu: GpuConfig = field(default_factory=lambda: GpuConfig(real_gpus="off"))
    timeouts: KubeTimeouts = field(default_factory=KubeTimeouts)  # `kube.timeouts`: every wait's limit
    # The 127.0.0.1 ports the host reaches the services by (the reach strategy's, by service key: `mlflow`, ...):
    # MLflow accepts exactly its own in the Host header; without one, any loopback port.
    host_ports: Mapping[str, int] = field(default_factory=dict)
    # `serving.auth`: "token" gives model servers and routers the serving token (`SECRET_SERVING`, by reference).
    serving_auth: Literal["token", "none"] = "token"

    def __post_init__(self) -> None:
        if not (_DNS_LABEL.match(self.namespace) and len(self.namespace) <= 63):
            raise ValueError(f"namespace {self.namespace!r} must be a DNS label (a-z, 0-9, '-', at most 63)")
        if self.namespace == versions.KFP_NAMESPACE:
            raise ValueError(f"namespace {self.namespace!r} is Kubeflow Pipelines' own; choose another")
        if not (self.instance and _LABEL_VALUE.match(self.instance) and len(self.instance) <= 63):
            raise ValueError(f"instance {self.instance!r} must be a Kubernetes label value (at most 63 characters)")
        if self.serving_auth not in ("token", "none"):
            raise ValueError(f"serving_auth must be token or none, not {self.serving_auth!r}")
        if self.object_store not in ("seaweedfs", "minio"):
            raise ValueError(f"object_store must be seaweedfs or minio, not {self.object_store!r}")
        for bucket in self.buckets:
            if not _BUCKET.match(bucket):
                raise ValueError(f"bucket name {bucket!r} is not a valid S3 bucket name")
        if ARTIFACTS_BUCKET not in self.buckets:
            raise ValueError(f"buckets must include {ARTIFACTS_BUCKET!r} (MLflow's artifacts)")
        if not self.image or any(c.isspace() for c in self.image):
            raise ValueError(f"image {self.image!r} is not an image reference")

    def host(self, component: str) -> str:
        """The in-cluster DNS name of a component's Service."""
        return f"{component}.{self.namespace}.svc.cluster.local"

    def url(self, component: str) -> str:
        return f"http://{self.host(component)}:{PORTS[component]}"

    @property
    def selector(self) -> str:
        """The labels every object the sandbox makes carries, as a selector: what `down` deletes by."""
        return instance_selector(self.instance)


def stack_id(instance: str) -> str:
    """A label-safe instance id from any text (e.g. the sandbox dir's name)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", instance).strip("-_.")[:63].strip("-_.")
    return cleaned or "sandbox"


# --------------------------------------------------------------------------- labels and metadata


def labels(spec: StackSpec, component: str) -> dict[str, str]:
    return instance_labels(spec.instance, component)


def instance_labels(instance: str, component: str) -> dict[str, str]:
    """The labels every object of a sandbox's stack carries (what `down` selects on), for ``instance``."""
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/component": component,
    }


def instance_selector(instance: str) -> str:
    return f"app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/instance={instance}"


def selector(spec: StackSpec, component: str) -> dict[str, str]:
    """The labels a Service and a workload select on (a stable subset of `labels`)."""
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/instance": spec.instance}


def meta(spec: StackSpec, component: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace or spec.namespace, "labels": labels(spec, component)}


# --------------------------------------------------------------------------- Secrets


def secret(spec: StackSpec, component: str, name: str, data: Mapping[str, str], namespace: str | None = None):
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(spec, component, name, namespace),
        "type": "Opaque",
        "stringData": dict(data),
    }


def secret_ref(env: str, secret_name: str, key: str) -> dict[str, Any]:
    """An environment variable read from a Secret's key: how every credential reaches a container."""
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


def serving_token_env(spec: StackSpec) -> list[dict[str, Any]]:
    """The serving token (`wire.SERVING_TOKEN_ENV`), by reference to its Secret, when `serving.auth` is "token":
    the model servers and routers require it, JupyterLab's kernels send it; none otherwise."""
    return [secret_ref(SERVING_TOKEN_ENV, SECRET_SERVING, "token")] if spec.serving_auth == "token" else []


# --------------------------------------------------------------------------- containers and pods

GPU = "nvidia.com/gpu"


def stack_client_env(spec: StackSpec) -> list[dict[str, Any]]:
    """What `sandbox env` exports, pointing at the in-cluster MLflow and S3, keys by reference: the environment of
    every pod that is a client of the stack (JupyterLab's kernels, the model servers)."""
    return [
        {"name": "MLFLOW_TRACKING_URI", "value": spec.url(MLFLOW)},
        {"name": "MLFLOW_TRACKING_USERNAME", "value": spec.secrets.MLFLOW_ADMIN_USER},
        secret_ref("MLFLOW_TRACKING_PASSWORD", SECRET_MLFLOW, "admin-password"),
        {"name": "MLFLOW_S3_ENDPOINT_URL", "value": spec.url(S3)},
        {"name": "AWS_ENDPOINT_URL_S3", "value": spec.url(S3)},
        secret_ref("AWS_ACCESS_KEY_ID", SECRET_S3, "access-key"),
        secret_ref("AWS_SECRET_ACCESS_KEY", SECRET_S3, "secret-key"),
        {"name": "AWS_DEFAULT_REGION", "value": REGION},
    ]


def resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str, *, gpus: int = 0) -> dict[str, Any]:
    # Modest requests: the whole stack must fit a 4-CPU/16 GB CI runner beside KServe and KFP. Limits are set
    # explicitly (a plan invariant), so no LimitRange default decides them. GPUs: requests equal to limits.
    given: dict[str, Any] = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }
    if gpus:
        given["requests"][GPU] = str(gpus)
        given["limits"][GPU] = str(gpus)
    return given


def security_context(user: int | None = None) -> dict[str, Any]:
    """A container's: no privilege escalation, every capability dropped, and (``user``) a fixed non-root uid."""
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    if user is not None:
        context.update(runAsNonRoot=True, runAsUser=user, runAsGroup=user)
    return context


def http_probe(
    path: str,
    port: int,
    *,
    period_s: int = 5,
    failures: int | None = None,
    initial_delay_s: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A readiness or liveness probe that GETs ``path`` on ``port``."""
    get: dict[str, Any] = {"path": path, "port": port}
    if headers:
        get["httpHeaders"] = [{"name": name, "value": value} for name, value in headers.items()]
    probe: dict[str, Any] = {"httpGet": get}
    if initial_delay_s is not None:
        probe["initialDelaySeconds"] = initial_delay_s
    probe["periodSeconds"] = period_s
    if failures is not None:
        probe["failureThreshold"] = failures
    return probe


def pod_spec(containers: list[dict], *, fs_group: int | None = None, **extra: Any) -> dict[str, Any]:
    pod_security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if fs_group is not None:
        pod_security["fsGroup"] = fs_group
    # No pod here talks to the Kubernetes API: no token is mounted.
    return {"automountServiceAccountToken": False, "securityContext": pod_security, "containers": containers, **extra}


def containers(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The containers (init containers first) of a Pod, or of the pod template of a workload or Job."""
    if obj.get("kind") == "Pod":
        pod = obj.get("spec", {})
    else:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def template(spec: StackSpec, component: str, pod: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": labels(spec, component)}, "spec": pod}


# --------------------------------------------------------------------------- objects


def pvc(spec: StackSpec, component: str, name: str, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(spec, component, name),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def service(spec: StackSpec, component: str, port: int, target: int) -> dict[str, Any]:
    """A component's ClusterIP Service (the reach strategy decides whether the host gets a NodePort to it)."""
    entry: dict[str, Any] = {"name": "http" if component != POSTGRES else "postgres", "port": port}
    entry.update(targetPort=target, protocol="TCP")
    body: dict[str, Any] = {"selector": selector(spec, component), "ports": [entry], "type": "ClusterIP"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(spec, component, component), "spec": body}


def deployment(spec: StackSpec, component: str, pod: dict[str, Any], *, recreate: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "replicas": 1,
        "selector": {"matchLabels": selector(spec, component)},
        "template": template(spec, component, pod),
    }
    if recreate:  # one writer on a ReadWriteOnce volume: never two pods at once
        body["strategy"] = {"type": "Recreate"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(spec, component, component), "spec": body}


# --------------------------------------------------------------------------- text


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors or aliases, even where two fields hold equal values."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False)


def script(name: str, **values: str) -> str:
    """The text of ``scripts/NAME`` (shipped as package data; `make lint` runs shellcheck on the shell ones) with
    each ``@KEY@`` replaced by ``values[KEY]``; a placeholder without a value, or a value without a placeholder,
    is an error."""
    text = package_files.files(__package__).joinpath("scripts", name).read_text()
    wanted = set(_PLACEHOLDER.findall(text))
    if wanted != set(values):
        raise ValueError(f"scripts/{name} takes {sorted(wanted)}, was given {sorted(values)}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
