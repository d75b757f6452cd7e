"""The stack's Kubernetes objects, Helm releases and kind cluster config, built from one `StackSpec`.

Plain dicts, in the order they are applied; nothing here talks to a cluster. Every object
carries `labels(spec, component)` (`app.kubernetes.io/managed-by: ml-sandbox` and the
instance id), so the `cluster` profile can delete exactly what it made. The security stance
is the local profile's: generated credentials only, in Secrets (never in a pod spec, a
ConfigMap or an argument), read-only service accounts not mounted, no privilege escalation,
every capability dropped, host access only through 127.0.0.1 (kind's port mappings) or
port-forwards.

The bring-up this module serves, in order (`render` numbers its files the same way):

1. kind: `kind create cluster --config 00-kind-config.yaml` (`kind_cluster_config`);
2. the stack: `stack_objects` (namespace, quotas, Secrets, PostgreSQL, the S3 store, the bucket
   Job, MLflow, JupyterLab), applied in the order given;
3. `helm_releases`: cert-manager, then KServe's CRDs, controller (Standard mode) and runtimes;
4. KFP: `kubectl apply -k` of `versions.KFP_KUSTOMIZE[0]`, wait for `versions.KFP_WAIT_CRD`
   Established, `kubectl apply -k` of `[1]`; then `kfp_objects` (after every apply of KFP's own
   manifests, which bring back the stock Secret), `kubectl rollout restart` of `KFP_RESTART`, and
   `kfp_rotate_keys_command()` once SeaweedFS is ready again.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from sandbox.config import KubeTimeouts
from sandbox.files import write_private
from sandbox.gpu import render as gpu_render
from sandbox.gpu.inventory import GpuConfig, NodeSpec
from sandbox.profiles.base import TOKEN_ALPHABET, generate_token
from sandbox.profiles.kube import versions
from sandbox.profiles.kube.versions import Chart

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

# KFP standalone (kubeflow/pipelines manifests, 2.17.0): the Secret holding the object-store keys.
# The stock one (third-party/seaweedfs/base/seaweedfs/mlpipeline-minio-artifact-secret.yaml) carries
# the well-known `minio`/`minio123`; the SeaweedFS Deployment reads it with `envFrom` and its
# postStart hook runs `s3.configure -user kubeflow-admin -access_key $accesskey ...` (which adds a key
# and never removes one); the API server and the UI read it through `secretKeyRef`, run pods look it
# up by name. After it is replaced, those Deployments must restart (KFP_RESTART) and the identity is
# made again with the new keys only (`kfp_rotate_keys_command`).
KFP_SECRET = "mlpipeline-minio-artifact"
KFP_S3_USER = "kubeflow-admin"
KFP_STOCK_ACCESS_KEY = "minio"
KFP_STOCK_SECRET_KEY = "minio123"
KFP_RESTART: tuple[str, ...] = ("seaweedfs", "ml-pipeline", "ml-pipeline-ui")
KFP_API_SERVICE = "ml-pipeline"
KFP_API_PORT = 8888
KFP_NODEPORT_SERVICE = "ml-pipeline-host"
# kind's pod network, set explicitly in the kind config so the NetworkPolicy above can name it.
KIND_POD_SUBNET = "10.244.0.0/16"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


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
        )

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
class NodePorts:
    """The fixed NodePorts (kind maps each to a 127.0.0.1 host port)."""

    postgres: int = 30432
    s3: int = 30333
    mlflow: int = 30500
    notebooks: int = 30888
    kfp: int = 30880

    def __post_init__(self) -> None:
        values = self.as_dict()
        for key, port in values.items():
            if not 30000 <= port <= 32767:
                raise ValueError(f"node_ports.{key} = {port} is outside Kubernetes' NodePort range 30000-32767")
        if len(set(values.values())) != len(values):
            raise ValueError(f"node_ports must be distinct: {values}")

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


@dataclass(frozen=True)
class StackSpec:
    instance: str  # the instance id: label app.kubernetes.io/instance
    secrets: StackSecrets
    image: str  # the project's image
    namespace: str = "ml-sandbox"
    node_ports: NodePorts = field(default_factory=NodePorts)
    expose: Literal["NodePort", "ClusterIP"] = "NodePort"
    object_store: Literal["seaweedfs", "minio"] = "seaweedfs"
    notebooks: bool = True
    buckets: tuple[str, ...] = ("mlflow-artifacts", "data")
    gpu: GpuConfig = field(default_factory=lambda: GpuConfig(real_gpus="off"))
    timeouts: KubeTimeouts = field(default_factory=KubeTimeouts)  # `kube.timeouts`: every wait's limit

    def __post_init__(self) -> None:
        if not (_DNS_LABEL.match(self.namespace) and len(self.namespace) <= 63):
            raise ValueError(f"namespace {self.namespace!r} must be a DNS label (a-z, 0-9, '-', at most 63)")
        if self.namespace == versions.KFP_NAMESPACE:
            raise ValueError(f"namespace {self.namespace!r} is Kubeflow Pipelines' own; choose another")
        if not (self.instance and _LABEL_VALUE.match(self.instance) and len(self.instance) <= 63):
            raise ValueError(f"instance {self.instance!r} must be a Kubernetes label value (at most 63 characters)")
        if self.expose not in ("NodePort", "ClusterIP"):
            raise ValueError(f"expose must be NodePort or ClusterIP, not {self.expose!r}")
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


def stack_id(instance: str) -> str:
    """A label-safe instance id from any text (e.g. the sandbox dir's name)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", instance).strip("-_.")[:63].strip("-_.")
    return cleaned or "sandbox"


# --------------------------------------------------------------------------- helpers


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


def selector(spec: StackSpec, component: str) -> dict[str, str]:
    """The labels a Service and a workload select on (a stable subset of `labels`)."""
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/instance": spec.instance}


def _meta(spec: StackSpec, component: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace or spec.namespace, "labels": labels(spec, component)}


def _secret(spec: StackSpec, component: str, name: str, data: Mapping[str, str], namespace: str | None = None):
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(spec, component, name, namespace),
        "type": "Opaque",
        "stringData": dict(data),
    }


def _from_secret(env: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    # Modest requests: the whole stack must fit a 4-CPU/16 GB CI runner beside KServe and KFP. Limits are set
    # explicitly (a plan invariant), so no LimitRange default decides them.
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}


def _container_security(user: int | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    if user is not None:
        context.update(runAsNonRoot=True, runAsUser=user, runAsGroup=user)
    return context


def _pod_spec(containers: list[dict], *, fs_group: int | None = None, **extra: Any) -> dict[str, Any]:
    security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if fs_group is not None:
        security["fsGroup"] = fs_group
    # No pod here talks to the Kubernetes API: no token is mounted.
    return {"automountServiceAccountToken": False, "securityContext": security, "containers": containers, **extra}


def containers(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The containers (init containers first) of a Pod, or of the pod template of a workload or Job."""
    if obj.get("kind") == "Pod":
        pod = obj.get("spec", {})
    else:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _template(spec: StackSpec, component: str, pod: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": labels(spec, component)}, "spec": pod}


def _pvc(spec: StackSpec, component: str, name: str, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(spec, component, name),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def _service(spec: StackSpec, component: str, port: int, target: int, node_port: int | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "http" if component != POSTGRES else "postgres", "port": port}
    entry.update(targetPort=target, protocol="TCP")
    service_spec: dict[str, Any] = {"selector": selector(spec, component), "ports": [entry]}
    if spec.expose == "NodePort" and node_port is not None:
        service_spec["type"] = "NodePort"
        entry["nodePort"] = node_port
    else:
        service_spec["type"] = "ClusterIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(spec, component, component), "spec": service_spec}


def _deployment(spec: StackSpec, component: str, pod: dict[str, Any], *, recreate: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "replicas": 1,
        "selector": {"matchLabels": selector(spec, component)},
        "template": _template(spec, component, pod),
    }
    if recreate:  # one writer on a ReadWriteOnce volume: never two pods at once
        body["strategy"] = {"type": "Recreate"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(spec, component, component), "spec": body}


# --------------------------------------------------------------------------- namespace and quotas


def _namespace(spec: StackSpec, name: str) -> dict[str, Any]:
    meta = {"name": name, "labels": labels(spec, "namespace")}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def quota_namespaces(spec: StackSpec) -> list[str]:
    """Namespaces the quotas go to: the stack's for a quota left at `default`, else the one it names."""
    names = []
    for quota in spec.gpu.quotas:
        target = spec.namespace if quota.namespace == "default" else quota.namespace
        if target not in names:
            names.append(target)
    return names


def _quotas(spec: StackSpec) -> list[dict[str, Any]]:
    objects = gpu_render.quota_objects(spec.gpu)
    for obj in objects:
        meta = obj["metadata"]
        if meta["namespace"] == "default":
            meta["namespace"] = spec.namespace
        meta["labels"] = labels(spec, "quota")
    return objects


# --------------------------------------------------------------------------- PostgreSQL


def _postgres(spec: StackSpec) -> list[dict[str, Any]]:
    init_sql = (
        f"-- The inference log's database, owned by the application role (as on the local profile).\n"
        f"CREATE DATABASE {MONITORING_DATABASE} OWNER {DB_USER};\n"
    )
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, POSTGRES, "postgres-init"),
        "data": {"10-monitoring.sql": init_sql},
    }
    env = [
        _from_secret("POSTGRES_USER", SECRET_POSTGRES, "username"),
        _from_secret("POSTGRES_PASSWORD", SECRET_POSTGRES, "password"),
        {"name": "POSTGRES_DB", "value": DATABASE},
        # Password logins only, hashed with SCRAM (no trust, no md5), on TCP and on the socket too: the
        # image's entrypoint exports PGPASSWORD for its own init scripts for this case
        # (docker-library/postgres docker-entrypoint.sh).
        {"name": "POSTGRES_INITDB_ARGS", "value": "--auth-host=scram-sha-256 --auth-local=scram-sha-256"},
        {"name": "POSTGRES_HOST_AUTH_METHOD", "value": "scram-sha-256"},
        # A folder below the mount point: a fresh volume may hold lost+found.
        {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
    ]
    probe = {
        "exec": {"command": ["sh", "-c", f'pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d {DATABASE}']},
        "periodSeconds": 5,
        "timeoutSeconds": 3,
        "failureThreshold": 6,
    }
    container = {
        "name": "postgres",
        "image": versions.IMAGES["postgres"],
        "env": env,
        "ports": [{"name": "postgres", "containerPort": PORTS[POSTGRES], "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {**copy.deepcopy(probe), "initialDelaySeconds": 30, "periodSeconds": 10},
        "resources": _resources("100m", "256Mi", "2", "1Gi"),
        # The official image's `postgres` user (uid 999): the server refuses to run as root anyway.
        "securityContext": _container_security(999),
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
            {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True},
            {"name": "run", "mountPath": "/var/run/postgresql"},
        ],
    }
    pod = _pod_spec(
        [container],
        fs_group=999,
        volumes=[
            {"name": "init", "configMap": {"name": "postgres-init"}},
            {"name": "run", "emptyDir": {}},
        ],
    )
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, POSTGRES, "postgres-headless"),
        "spec": {
            "clusterIP": "None",
            "selector": selector(spec, POSTGRES),
            "ports": [{"name": "postgres", "port": PORTS[POSTGRES], "targetPort": PORTS[POSTGRES]}],
        },
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(spec, POSTGRES, POSTGRES),
        "spec": {
            "serviceName": "postgres-headless",
            "replicas": 1,
            "selector": {"matchLabels": selector(spec, POSTGRES)},
            "template": _template(spec, POSTGRES, pod),
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": labels(spec, POSTGRES)},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
                }
            ],
        },
    }
    client = _service(spec, POSTGRES, PORTS[POSTGRES], PORTS[POSTGRES], spec.node_ports.postgres)
    return [config_map, headless, statefulset, client]


# --------------------------------------------------------------------------- the S3 store


def seaweedfs_identities(access_key: str, secret_key: str, name: str = "sandbox") -> dict[str, Any]:
    """SeaweedFS's `-s3.config` file: one identity, these keys; anonymous requests are refused."""
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    return {
        "identities": [
            {"name": name, "credentials": [{"accessKey": access_key, "secretKey": secret_key}], "actions": actions}
        ]
    }


def _s3_store(spec: StackSpec) -> list[dict[str, Any]]:
    pvc = _pvc(spec, S3, "s3-data", "5Gi")
    if spec.object_store == "seaweedfs":
        port = PORTS[S3]
        container: dict[str, Any] = {
            "name": "seaweedfs",
            "image": versions.IMAGES["seaweedfs"],
            "args": [
                "server",
                "-dir=/data",
                "-filer",
                "-s3",
                f"-s3.port={port}",
                # Only the S3 port is for clients: no Iceberg or Lance catalog listeners (weed 4.48's
                # `server -h`: "0 to disable").
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-s3.config=/etc/seaweedfs/s3.json",
                "-master.volumePreallocate=false",
                "-master.volumeSizeLimitMB=1024",
                "-master.telemetry=false",
                "-volume.max=0",
            ],
            "ports": [{"name": "s3", "containerPort": port, "protocol": "TCP"}],
            # /status is SeaweedFS's unauthenticated health page on the S3 port (KFP's manifests probe it).
            "readinessProbe": {
                "httpGet": {"path": "/status", "port": port},
                "periodSeconds": 5,
                "failureThreshold": 24,
            },
            "resources": _resources("50m", "128Mi", "1", "1Gi"),
            "securityContext": _container_security(1001),
            "volumeMounts": [
                {"name": "data", "mountPath": "/data"},
                {"name": "s3-config", "mountPath": "/etc/seaweedfs", "readOnly": True},
            ],
        }
        volumes = [
            {"name": "data", "persistentVolumeClaim": {"claimName": "s3-data"}},
            {
                "name": "s3-config",
                "secret": {"secretName": SECRET_S3, "items": [{"key": "s3.json", "path": "s3.json"}]},
            },
        ]
        fs_group = 1001
    else:
        port = 9000
        container = {
            "name": "minio",
            "image": versions.IMAGES["minio"],
            "args": ["server", "/data", "--address", f":{port}", "--console-address", "127.0.0.1:9001"],
            "env": [
                _from_secret("MINIO_ROOT_USER", SECRET_S3, "access-key"),
                _from_secret("MINIO_ROOT_PASSWORD", SECRET_S3, "secret-key"),
                {"name": "MINIO_BROWSER", "value": "off"},
                {"name": "HOME", "value": "/tmp"},
            ],
            "ports": [{"name": "s3", "containerPort": port, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": port}, "periodSeconds": 5},
            "resources": _resources("50m", "256Mi", "1", "1Gi"),
            "securityContext": _container_security(1000),
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }
        volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "s3-data"}}]
        fs_group = 1000
    deployment = _deployment(spec, S3, _pod_spec([container], fs_group=fs_group, volumes=volumes), recreate=True)
    service = _service(spec, S3, PORTS[S3], port, spec.node_ports.s3)
    return [pvc, deployment, service]


_BUCKETS_SCRIPT = """\
import os, sys, time
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name=os.environ["AWS_DEFAULT_REGION"],
                  config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=10))
for attempt in range(60):
    try:
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        break
    except Exception as error:
        print(f"waiting for the object store: {error}", flush=True)
        time.sleep(5)
else:
    sys.exit("the object store did not answer")
for bucket in os.environ["BUCKETS"].split(","):
    if bucket in existing:
        print(f"bucket {bucket} exists")
    else:
        s3.create_bucket(Bucket=bucket)
        print(f"bucket {bucket} created")
"""


def _buckets_job(spec: StackSpec) -> dict[str, Any]:
    # The project's image carries boto3; the Job needs nothing else.
    container = {
        "name": "create-buckets",
        "image": spec.image,
        "command": ["python", "-c", _BUCKETS_SCRIPT],
        "env": [
            {"name": "S3_ENDPOINT", "value": spec.url(S3)},
            {"name": "AWS_DEFAULT_REGION", "value": REGION},
            {"name": "BUCKETS", "value": ",".join(spec.buckets)},
            {"name": "HOME", "value": "/tmp"},
            _from_secret("AWS_ACCESS_KEY_ID", SECRET_S3, "access-key"),
            _from_secret("AWS_SECRET_ACCESS_KEY", SECRET_S3, "secret-key"),
        ],
        "resources": _resources("10m", "64Mi", "500m", "256Mi"),
        "securityContext": _container_security(1000),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(spec, BUCKETS_JOB, BUCKETS_JOB),
        "spec": {
            "backoffLimit": 6,
            "template": _template(spec, BUCKETS_JOB, _pod_spec([container], restartPolicy="OnFailure")),
        },
    }


# --------------------------------------------------------------------------- MLflow


def mlflow_allowed_hosts(spec: StackSpec, host_ports: Mapping[str, int] | None = None) -> list[str]:
    """What MLflow (>= 3.5 checks the Host header) accepts: its Service names, with and without the
    port, and the loopback forms the host reaches it by. MLflow matches entries with fnmatch, so
    without known host ports ``127.0.0.1:*`` stands for any (mlflow/server/security_utils.py)."""
    port = PORTS[MLFLOW]
    names = [MLFLOW, f"{MLFLOW}.{spec.namespace}", f"{MLFLOW}.{spec.namespace}.svc", spec.host(MLFLOW)]
    hosts = [form for name in names for form in (name, f"{name}:{port}")]
    host_port = (host_ports or {}).get("mlflow")
    loopback = [f"{LOOPBACK}:{host_port}", f"localhost:{host_port}"] if host_port else [f"{LOOPBACK}:*", "localhost:*"]
    return hosts + loopback


def _mlflow(spec: StackSpec, host_ports: Mapping[str, int] | None) -> list[dict[str, Any]]:
    port = PORTS[MLFLOW]
    container = {
        "name": "mlflow",
        # The project's image: the MLflow (3.17.2) the local profile runs, with psycopg and boto3; built and
        # loaded by the plan, so no third-party tag without a digest is pulled.
        "image": spec.image,
        "command": ["mlflow", "server"],
        "args": [
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--workers",
            "1",
            "--artifacts-destination",
            f"s3://{ARTIFACTS_BUCKET}",
            "--serve-artifacts",
            "--allowed-hosts",
            ",".join(mlflow_allowed_hosts(spec, host_ports)),
        ],
        "env": [
            # From the Secret, not argv: the URL carries the password.
            _from_secret("MLFLOW_BACKEND_STORE_URI", SECRET_MLFLOW, "backend-store-uri"),
            {"name": "MLFLOW_S3_ENDPOINT_URL", "value": spec.url(S3)},
            _from_secret("AWS_ACCESS_KEY_ID", SECRET_S3, "access-key"),
            _from_secret("AWS_SECRET_ACCESS_KEY", SECRET_S3, "secret-key"),
            {"name": "AWS_DEFAULT_REGION", "value": REGION},
            # One worker and no job runner: about 0.6 GB instead of 3.3 (../shared/FACTS.md).
            {"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"},
            {"name": "HOME", "value": "/tmp"},
        ],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        # /health skips the Host check; the first start migrates the schema (about 20 s).
        "readinessProbe": {"httpGet": {"path": "/health", "port": port}, "periodSeconds": 5, "failureThreshold": 36},
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": port},
            "initialDelaySeconds": 120,
            "periodSeconds": 20,
            "failureThreshold": 6,
        },
        "resources": _resources("100m", "512Mi", "2", "1536Mi"),
        "securityContext": _container_security(1000),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = _pod_spec([container], volumes=[{"name": "tmp", "emptyDir": {}}])
    return [_deployment(spec, MLFLOW, pod), _service(spec, MLFLOW, port, port, spec.node_ports.mlflow)]


# --------------------------------------------------------------------------- JupyterLab


def _notebooks(spec: StackSpec) -> list[dict[str, Any]]:
    port = PORTS[NOTEBOOKS]
    argv = [
        "python",
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=0.0.0.0",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.root_dir=/workspace",
        # Host must be a loopback name (127.0.0.1:PORT through kind's mapping or a port-forward): DNS rebinding.
        "--ServerApp.allow_remote_access=False",
        "--ServerApp.allow_origin=",
        "--ServerApp.disable_check_xsrf=False",
        "--ServerApp.allow_unauthenticated_access=False",
        "--ServerApp.terminals_enabled=False",
        "--ServerApp.jpserver_extensions=jupyter_server_terminals=False",
        "--ServerApp.jpserver_extensions=jupyter_lsp=False",
        "--PasswordIdentityProvider.hashed_password=",
        "--PasswordIdentityProvider.allow_password_change=False",
        "--KernelManager.ip=127.0.0.1",  # each kernel's ZMQ ports on the pod's loopback
        "--KernelManager.transport=tcp",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=",
    ]
    env = [
        _from_secret("JUPYTER_TOKEN", SECRET_NOTEBOOKS, "token"),  # the environment, not argv
        {"name": "HOME", "value": "/workspace"},
        {"name": "JUPYTER_CONFIG_DIR", "value": "/tmp/jupyter/config"},
        {"name": "JUPYTER_DATA_DIR", "value": "/tmp/jupyter/data"},
        {"name": "JUPYTER_RUNTIME_DIR", "value": "/tmp/jupyter/runtime"},
        {"name": "IPYTHONDIR", "value": "/tmp/ipython"},
        # The kernels' environment: what `sandbox env` exports, pointing at the in-cluster services.
        {"name": "MLFLOW_TRACKING_URI", "value": spec.url(MLFLOW)},
        {"name": "MLFLOW_S3_ENDPOINT_URL", "value": spec.url(S3)},
        {"name": "AWS_ENDPOINT_URL_S3", "value": spec.url(S3)},
        _from_secret("AWS_ACCESS_KEY_ID", SECRET_S3, "access-key"),
        _from_secret("AWS_SECRET_ACCESS_KEY", SECRET_S3, "secret-key"),
        {"name": "AWS_DEFAULT_REGION", "value": REGION},
        _from_secret("ML_SANDBOX_POSTGRES_URL", SECRET_POSTGRES, "url"),
        _from_secret("ML_SANDBOX_MONITORING_DB_URL", SECRET_POSTGRES, "monitoring-url"),
        {"name": "ML_SANDBOX_BUCKETS", "value": ",".join(spec.buckets)},
        {"name": "ML_SANDBOX_COMPONENT", "value": "notebooks.kernel"},
    ]
    probe = {
        # GET /api answers without the token; the Host header is a loopback name, as the server demands.
        "httpGet": {"path": "/api", "port": port, "httpHeaders": [{"name": "Host", "value": f"{LOOPBACK}:{port}"}]},
        "periodSeconds": 5,
        "failureThreshold": 24,
    }
    container = {
        "name": "jupyterlab",
        "image": versions.IMAGES.get("jupyterlab") or spec.image,
        "command": argv,
        "env": env,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": probe,
        "resources": _resources("100m", "512Mi", "2", "2Gi"),
        "securityContext": _container_security(1000),
        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = _pod_spec(
        [container],
        fs_group=1000,
        volumes=[
            {"name": "workspace", "persistentVolumeClaim": {"claimName": "notebooks-workspace"}},
            {"name": "tmp", "emptyDir": {}},
        ],
    )
    return [
        _pvc(spec, NOTEBOOKS, "notebooks-workspace", "1Gi"),
        _deployment(spec, NOTEBOOKS, pod, recreate=True),
        _service(spec, NOTEBOOKS, port, port, spec.node_ports.notebooks),
    ]


# --------------------------------------------------------------------------- the stack


def _secrets(spec: StackSpec) -> list[dict[str, Any]]:
    s = spec.secrets
    db = f"{spec.host(POSTGRES)}:{PORTS[POSTGRES]}"
    postgres = {
        "username": DB_USER,
        "password": s.postgres_password,
        "url": f"postgresql://{DB_USER}:{s.postgres_password}@{db}/{DATABASE}",
        "monitoring-url": f"postgresql://{DB_USER}:{s.postgres_password}@{db}/{MONITORING_DATABASE}",
    }
    s3 = {"access-key": s.s3_access_key, "secret-key": s.s3_secret_key}
    if spec.object_store == "seaweedfs":
        s3["s3.json"] = json.dumps(seaweedfs_identities(s.s3_access_key, s.s3_secret_key), indent=1)
    objects = [
        _secret(spec, POSTGRES, SECRET_POSTGRES, postgres),
        _secret(spec, S3, SECRET_S3, s3),
        _secret(
            spec,
            MLFLOW,
            SECRET_MLFLOW,
            {"backend-store-uri": f"postgresql+psycopg://{DB_USER}:{s.postgres_password}@{db}/{DATABASE}"},
        ),
    ]
    if spec.notebooks:
        objects.append(_secret(spec, NOTEBOOKS, SECRET_NOTEBOOKS, {"token": s.jupyter_token}))
    return objects


def stack_objects(spec: StackSpec, *, host_ports: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Every object of the stack, in apply order. ``host_ports`` (kind's loopback ports, by
    NodePorts key) narrows MLflow's allowed hosts to them; without it any loopback port is allowed."""
    objects = [_namespace(spec, name) for name in [spec.namespace, *quota_namespaces(spec)] if name != "default"]
    objects = list({obj["metadata"]["name"]: obj for obj in objects}.values())
    objects += _quotas(spec)
    objects += _secrets(spec)
    objects += _postgres(spec)
    objects += _s3_store(spec)
    objects.append(_buckets_job(spec))
    objects += _mlflow(spec, host_ports)
    if spec.notebooks:
        objects += _notebooks(spec)
    return objects


# --------------------------------------------------------------------------- Kubeflow Pipelines

# Run inside KFP's SeaweedFS pod (`kubectl exec`: its NetworkPolicy admits only the S3 port from other
# pods, and the pod's environment already holds the Secret's keys through `envFrom`), after the pod was
# restarted with the replaced Secret. `s3.configure -user U -delete` without keys or actions removes the
# whole identity (seaweedfs weed/shell/command_s3_configure.go), the stock key with it; the identity is
# then made again with the generated keys only.
KFP_ROTATE_KEYS_SCRIPT = f"""\
set -eu
key="${{accesskey:?the Secret's accesskey is not in the environment}}"
secret="${{secretkey:?the Secret's secretkey is not in the environment}}"
echo "s3.configure -user {KFP_S3_USER} -delete -apply" | /usr/bin/weed shell >/dev/null
echo "s3.configure -user {KFP_S3_USER} -access_key $key -secret_key $secret -actions Admin -apply" \\
  | /usr/bin/weed shell >/dev/null
echo "{KFP_S3_USER}'s keys replaced"
"""


def kfp_rotate_keys_command(namespace: str = versions.KFP_NAMESPACE) -> list[str]:
    """The `kubectl` command that replaces KFP's SeaweedFS identity with the Secret's keys."""
    return ["kubectl", "-n", namespace, "exec", "deploy/seaweedfs", "--", "/bin/sh", "-c", KFP_ROTATE_KEYS_SCRIPT]


def kfp_objects(spec: StackSpec) -> list[dict[str, Any]]:
    """Applied after KFP's own manifests (and again after any re-apply of them, which restores the
    stock Secret): KFP's object-store Secret with generated keys and, when exposed, a NodePort for
    the API. Then: restart the Deployments in `KFP_RESTART`, wait for them, and run `kfp_rotate_keys_command()`.

    The Secret is KFP's (its Deployments and Argo's artifact repository read it): it gets the sandbox's keys but
    not its labels, so `down` never deletes it. No NetworkPolicy: KFP 2.17 ships none that admits its own
    namespace, and kind's kindnet enforces every policy, so one that selected `app: ml-pipeline` would cut the
    persistence agent, the scheduled-workflow controller and every run's driver off from the API."""
    ns = versions.KFP_NAMESPACE
    s = spec.secrets
    secret = _secret(spec, KFP, KFP_SECRET, {"accesskey": s.kfp_s3_access_key, "secretkey": s.kfp_s3_secret_key}, ns)
    del secret["metadata"]["labels"]
    objects = [secret]
    if spec.expose != "NodePort":
        return objects
    port = {"name": "http", "port": KFP_API_PORT, "targetPort": KFP_API_PORT, "protocol": "TCP"}
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(spec, KFP, KFP_NODEPORT_SERVICE, ns),
            "spec": {
                "type": "NodePort",
                "selector": {"app": "ml-pipeline"},  # KFP's own selector for svc/ml-pipeline
                "ports": [{**port, "nodePort": spec.node_ports.kfp}],
            },
        }
    )
    return objects


# --------------------------------------------------------------------------- Helm


@dataclass(frozen=True)
class HelmRelease:
    name: str
    chart: Chart
    values: dict[str, Any]

    def values_yaml(self) -> str:
        return to_yaml(self.values)


def helm_releases(spec: StackSpec) -> list[HelmRelease]:
    """cert-manager, then KServe (CRDs, controller in Standard mode, runtimes), in install order."""
    del spec  # the same releases for every stack; the argument keeps the call uniform
    # Standard mode: plain Deployments and Services, no Knative, no Istio, no Ingress objects.
    resources = {"kserve": {"controller": {"deploymentMode": "Standard", "gateway": {"disableIngressCreation": True}}}}
    # The ClusterServingRuntimes (kserve-mlserver for MLflow models among them); no LLM configs.
    runtimes = {"kserve": {"servingruntime": {"enabled": True}, "llmisvcConfigs": {"enabled": False}}}
    return [
        HelmRelease("cert-manager", versions.CERT_MANAGER, {"crds": {"enabled": True}}),
        HelmRelease("kserve-crd", versions.KSERVE_CRD, {}),
        HelmRelease("kserve", versions.KSERVE_RESOURCES, resources),
        HelmRelease("kserve-runtime-configs", versions.KSERVE_RUNTIME_CONFIGS, runtimes),
    ]


# --------------------------------------------------------------------------- real GPUs (nvkind's way)

# Run in each real-GPU kind node (`docker exec NODE bash -c ...`), as nvkind does after `kind create
# cluster` (NVIDIA/nvkind cmd/nvkind/cluster_create.go: InstallContainerToolkit, ConfigureContainerRuntime,
# PatchProcDriverNvidia, in that order; the scripts are those of pkg/nvkind/node.go). `--set-as-default`
# makes the nvidia runtime containerd's default, so a pod asking for `nvidia.com/gpu` gets its device with
# or without `runtimeClassName: nvidia`.
NVIDIA_TOOLKIT_SCRIPT = f"""\
set -eu
apt-get update
apt-get install -y gpg
curl -fsSL {versions.NVIDIA_TOOLKIT_APT}/gpgkey \\
  | gpg --dearmor --yes -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
curl -s -L {versions.NVIDIA_TOOLKIT_APT}/stable/deb/nvidia-container-toolkit.list \\
  | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' \\
  | tee /etc/apt/sources.list.d/nvidia-container-toolkit.list
apt-get update
apt-get install -y nvidia-container-toolkit
"""
NVIDIA_CONTAINERD_SCRIPT = """\
set -eu
nvidia-ctk runtime configure --runtime=containerd --config-source=command --set-as-default
systemctl restart containerd
"""
# Toolkits before v1.19.0 bind-mount a tmpfs over /proc/driver/nvidia in the node; nvkind unmounts it
# and masks `ModifyDeviceFiles` so the driver does not recreate device nodes. Toolkits from v1.19.0 on
# already leave `ModifyDeviceFiles: 0` there, and the script does nothing (as nvkind checks first). The copy
# goes to /root/gpu-params (nvkind writes `root/gpu-params`, relative to the exec's working folder, /). In the
# toolkit script, `gpg --dearmor --yes` (nvkind has no `--yes`) lets a second run overwrite the keyring.
NVIDIA_PROC_SCRIPT = """\
set -eu
if grep -qx 'ModifyDeviceFiles: 1' /proc/driver/nvidia/params; then
  umount -R /proc/driver/nvidia
  cp /proc/driver/nvidia/params /root/gpu-params
  sed -i 's/^ModifyDeviceFiles: 1$/ModifyDeviceFiles: 0/' /root/gpu-params
  mount --bind /root/gpu-params /proc/driver/nvidia/params
fi
"""
NVIDIA_NODE_SCRIPTS: tuple[tuple[str, str], ...] = (
    ("install the NVIDIA container toolkit", NVIDIA_TOOLKIT_SCRIPT),
    ("make nvidia containerd's default runtime", NVIDIA_CONTAINERD_SCRIPT),
    ("unmask /proc/driver/nvidia", NVIDIA_PROC_SCRIPT),
)


def real_gpu_nodes(spec: StackSpec) -> list[NodeSpec]:
    """The inventory's nodes that carry this machine's GPUs (`NodeSpec.real`)."""
    return [node for node in spec.gpu.nodes if node.real and node.gpus]


def real_gpu_objects(spec: StackSpec) -> list[dict[str, Any]]:
    """The RuntimeClass the device plugin (and any pod that names it) runs with; none without real GPUs."""
    if not real_gpu_nodes(spec):
        return []
    return [
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": versions.NVIDIA_RUNTIME_CLASS, "labels": labels(spec, "gpu")},
            "handler": versions.NVIDIA_RUNTIME_CLASS,
        }
    ]


def device_plugin_release(spec: StackSpec) -> HelmRelease | None:
    """NVIDIA's device plugin on the real-GPU nodes only, run with the nvidia runtime."""
    nodes = real_gpu_nodes(spec)
    if not nodes:
        return None
    # The chart's default tolerations, which `tolerations` replaces, plus each GPU node's own taints.
    tolerations = [
        {"key": "CriticalAddonsOnly", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    for node in nodes:
        for taint in node.taints:
            toleration = {"key": taint.key, "operator": "Exists", "effect": taint.effect}
            if toleration not in tolerations:
                tolerations.append(toleration)
    values = {
        "runtimeClassName": versions.NVIDIA_RUNTIME_CLASS,
        "nodeSelector": {gpu_render.GPU_PRESENT_LABEL: "true"},
        "tolerations": tolerations,
    }
    return HelmRelease("nvidia-device-plugin", versions.NVIDIA_DEVICE_PLUGIN, values)


# --------------------------------------------------------------------------- kind


def exposed_ports(spec: StackSpec) -> dict[str, int]:
    """The NodePorts that exist for this spec (by NodePorts key): none when exposed as ClusterIP."""
    if spec.expose != "NodePort":
        return {}
    ports = spec.node_ports.as_dict()
    if not spec.notebooks:
        ports.pop("notebooks")
    return ports


def kind_cluster_config(spec: StackSpec, *, name: str, host_ports: Mapping[str, int]) -> dict[str, Any]:
    """The kind config of the inventory (`sandbox gpu render`'s), node image pinned, each exposed
    NodePort mapped to a host port on 127.0.0.1 only."""
    config = gpu_render.kind_config(spec.gpu, name=name)
    missing = sorted(set(exposed_ports(spec)) - set(host_ports))
    if missing:
        raise ValueError(f"no host port given for {', '.join(missing)}")
    mappings = [
        {"containerPort": node_port, "hostPort": int(host_ports[key]), "listenAddress": LOOPBACK, "protocol": "TCP"}
        for key, node_port in exposed_ports(spec).items()
    ]
    config["networking"] = {"podSubnet": KIND_POD_SUBNET}
    for node in config["nodes"]:
        node["image"] = versions.KIND_NODE_IMAGE
        if node["role"] == "control-plane" and mappings:
            node["extraPortMappings"] = mappings
    return config


# --------------------------------------------------------------------------- render


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors or aliases, even where two fields hold equal values."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False)


def _slug(obj: dict[str, Any]) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}"


def render(
    spec: StackSpec,
    out: Path,
    *,
    kind_config: dict[str, Any] | None = None,
    host_ports: Mapping[str, int] | None = None,
) -> list[Path]:
    """Write everything `up` applies into ``out``, numbered in apply order, each file 0600.

    00-kind-config.yaml (when given), 10-... the stack's objects one per file, helm-values-NN-<release>.yaml,
    kfp-NN-*.yaml; returns the paths in that order."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[Path] = []

    def write(name: str, text: str) -> None:
        path = out / name
        write_private(path, text)
        written.append(path)

    if kind_config is not None:
        write("00-kind-config.yaml", to_yaml(kind_config))
    objects = stack_objects(spec, host_ports=host_ports)
    width = max(2, len(str(9 + len(objects))))  # the names sort in apply order however many there are
    for index, obj in enumerate(objects, start=10):
        write(f"{index:0{width}d}-{_slug(obj)}.yaml", to_yaml(obj))
    for index, release in enumerate(helm_releases(spec), start=1):
        header = (
            f"# helm upgrade --install {release.name} {release.chart.ref} --version {release.chart.version}"
            f"{'' if release.chart.oci else ' --repo ' + release.chart.repo}"
            f" --namespace {release.chart.namespace} --create-namespace --wait --timeout {spec.timeouts.helm}s"
            f" -f THIS_FILE\n"
        )
        write(f"helm-values-{index:02d}-{release.name}.yaml", header + release.values_yaml())
    for index, obj in enumerate(kfp_objects(spec), start=1):
        write(f"kfp-{index:02d}-{_slug(obj)}.yaml", to_yaml(obj))
    for index, obj in enumerate(real_gpu_objects(spec), start=1):
        write(f"gpu-{index:02d}-{_slug(obj)}.yaml", to_yaml(obj))
    plugin = device_plugin_release(spec)
    if plugin is not None:
        header = (
            f"# helm upgrade --install {plugin.name} {plugin.chart.ref} --version {plugin.chart.version}"
            f" --repo {plugin.chart.repo} --namespace {plugin.chart.namespace} --create-namespace --wait"
            f" --timeout {spec.timeouts.helm}s -f THIS_FILE\n"
        )
        write(f"gpu-helm-values-{plugin.name}.yaml", header + plugin.values_yaml())
    return written
