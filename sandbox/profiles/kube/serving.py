"""Model deployments on the kind and cluster profiles: KServe InferenceServices (Standard mode) over kubectl.

`KubeServing` is the `ServingBackend` of both Kubernetes profiles. Everything it makes lives in the
stack's namespace and carries the sandbox's managed-by and instance labels (so `down` removes it), and
is validated offline (`validate.check_objects`) before `kubectl apply`. The API is the record: each
object keeps its `DeploymentSpec` as JSON in the `ml-sandbox.io/deployment-spec` annotation, and
`get`, `statuses` and `inference_endpoints` read it back from there.

- `deploy` makes an InferenceService. Runtime "sandbox" (the default): a custom predictor
  (`spec.predictor.containers[]`, container `kserve-container`) running the project image's model
  server on 8080 (REST) and 8081 (V2 gRPC), the same code as the local profile's processes, which
  resolves `models:/` URIs from the in-cluster MLflow at start-up; S3 keys and the inference log's
  database URL come from the stack's Secrets through `secretKeyRef`, never as values. Runtime
  "kserve-mlserver": KServe's stock MLflow runtime (`modelFormat: mlflow`, `protocolVersion: v2`) with
  `storageUri` resolved here from the registry to the model's `s3://` artifact folder, and a
  ServiceAccount whose Secret carries KServe's S3 annotations.
- `gpus N`: `nvidia.com/gpu` requests and limits, plus tolerations for the GPU nodes' taints, so the
  quota admission and the placement are Kubernetes' own.
- Ready is the InferenceService's `Ready` condition (`kubectl wait`); a failure carries the predictor
  pods' events and last log lines.
- `split`: each variant is an InferenceService `NAME-LABEL`, and the project's router runs as a
  Deployment and Service `NAME-router` in front of their predictor Services. KServe's own
  `spec.canary` (v0.20, Standard mode) splits by replica count, not by weight, so it is not used.
- From the host, each deployment is reached through a `kubectl port-forward` on 127.0.0.1 to its
  Service (the kind profile's NodePorts are fixed when the cluster is made), on a port kept in
  `<dir>/kube/serving-ports.json`.

Each InferenceService names its mode (annotation `serving.kserve.io/deploymentMode: Standard`).
Standard mode makes, per InferenceService NAME, a Deployment and a Service `NAME-predictor`; the
Service's port 80 targets the predictor container's first port, and its further ports keep their
numbers (kserve pkg/controller/v1beta1/inferenceservice/reconcilers/service/service_reconciler.go);
the pods carry `serving.kserve.io/inferenceservice: NAME`.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sandbox.endpoints import InferenceEndpoint
from sandbox.errors import ConfigError, NotRunningError, ServiceStartError
from sandbox.files import write_private
from sandbox.net import LOOPBACK, free_port
from sandbox.profiles.kube import manifests, validate
from sandbox.profiles.kube.manifests import StackSpec
from sandbox.profiles.kube.mlserver import resolve_storage_uri
from sandbox.profiles.kube.portforward import Forward, PortForwards
from sandbox.profiles.kube.tools import ToolError, Tools, pod_ready, status_condition
from sandbox.profiles.locking import locked, unlocked
from sandbox.serving.specs import (
    KSERVE_MLSERVER,
    SANDBOX_RUNTIME,
    DeploymentSpec,
    DeploymentStatus,
    VariantSpec,
    check_registered,
    validate_model_uri,
    validate_name,
    validate_runtime,
    validate_split,
    variant_name,
    variant_specs,
)

COMPONENT = "serving"  # app.kubernetes.io/component of every object made here
SPEC_ANNOTATION = "ml-sandbox.io/deployment-spec"
PARENT_LABEL = "ml-sandbox.io/parent"
ISVC_LABEL = "serving.kserve.io/inferenceservice"  # KServe's label on a predictor's pods
# KServe reads an InferenceService's mode from this annotation before the controller's default
# (`deploy.defaultDeploymentMode` of its inferenceservice-config); "Standard" is v0.16+'s name of
# RawDeployment (kserve pkg/constants/constants.go: DeploymentMode, Standard). Naming it on each object
# keeps the predictor a plain Deployment and Service (no Knative, which the stack does not install)
# whatever default the installed chart left in the ConfigMap.
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
DEPLOYMENT_MODE = "Standard"
# On a redeploy, in `spec.predictor.annotations` (which KServe puts on the predictor's pods: kserve
# components/predictor.go, buildObjectMeta): a new value changes the predictor Deployment's pod template,
# so Kubernetes rolls new pods, as `kubectl rollout restart` does with its own annotation. Without it an
# unchanged spec (the same `models:/NAME@champion` after the alias moved) keeps the old pods, which
# resolved the model when they started, and the InferenceService's Ready (still True from before, and
# kept True through a rolling update) says nothing about the new model.
RESTART_ANNOTATION = "ml-sandbox.io/deployed-at"
HTTP_PORT = 8080  # the model server's and the router's REST port in their pods (KServe's default)
GRPC_PORT = 8081  # the model server's V2 gRPC port; the predictor Service keeps it as is
SERVICE_PORT = 80  # KServe's predictor Service port for the container's first port; the router's too
ROUTER_SUFFIX = "-router"
KSERVE_S3 = "kserve-s3"  # the ServiceAccount and Secret the stock runtime's storage initializer reads
GPU = "nvidia.com/gpu"
READY_TIMEOUT_S = 600  # what KServe's own e2e tests wait for an InferenceService
LOG_LINES = 30


# KServe copies an InferenceService's labels onto the Deployment, Service and pods it makes (kserve
# pkg/controller/v1beta1/inferenceservice/components/predictor.go, buildObjectMeta: the runtime's labels,
# the InferenceService's, the predictor's, then its own), so a predictor's pods carry
# `app.kubernetes.io/name: NAME` and the stack's instance. The stack's Services select exactly those two
# labels (`manifests.selector`): a deployment named after a stack component would put its pods behind
# that component's Service.
RESERVED_NAMES = frozenset(
    {manifests.POSTGRES, manifests.S3, manifests.MLFLOW, manifests.NOTEBOOKS, manifests.BUCKETS_JOB}
)


def check_not_reserved(*names: str) -> None:
    for name in names:
        if name in RESERVED_NAMES:
            raise ConfigError(
                f"{name!r} is the name of one of the stack's own services on this profile",
                hint="choose another name: a deployment's pods carry its name as app.kubernetes.io/name, which "
                f"the stack's Services select on ({', '.join(sorted(RESERVED_NAMES))})",
            )


def router_name(split: str) -> str:
    return f"{split}{ROUTER_SUFFIX}"


def predictor_service(name: str) -> str:
    return f"{name}-predictor"


# --------------------------------------------------------------------------- the objects


def serving_labels(spec: StackSpec, name: str, parent: str | None = None) -> dict[str, str]:
    labels = {**manifests.labels(spec, COMPONENT), "app.kubernetes.io/name": name}
    if parent:
        labels[PARENT_LABEL] = parent
    return labels


def _meta(spec: StackSpec, name: str, record: DeploymentSpec | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": spec.namespace,
        "labels": serving_labels(spec, record.name if record else name, record.parent if record else None),
    }
    if record is not None:
        meta["annotations"] = {SPEC_ANNOTATION: record.model_dump_json(exclude_defaults=False)}
    return meta


def _security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 10001,  # the project image's user (Dockerfile)
        "runAsGroup": 10001,
    }


def _resources(
    gpus: int, *, cpu: str = "100m", memory: str = "512Mi", cpu_limit: str = "2", memory_limit: str = "2Gi"
) -> dict[str, Any]:
    # Low requests: a kind cluster on a 4-CPU CI runner holds the stack, KServe, KFP and a few predictors. Limits
    # explicit, so a namespace's LimitRange default never decides them.
    resources: dict[str, Any] = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }
    if gpus:
        resources["requests"][GPU] = str(gpus)
        resources["limits"][GPU] = str(gpus)
    return resources


def gpu_tolerations(spec: StackSpec) -> list[dict[str, Any]]:
    """Tolerations for every taint the inventory's GPU nodes carry (`nvidia.com/gpu` at least)."""
    tolerations = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    for node in spec.gpu.nodes:
        if not node.gpus:
            continue
        for taint in node.taints:
            toleration = {"key": taint.key, "operator": "Exists", "effect": taint.effect}
            if toleration not in tolerations:
                tolerations.append(toleration)
    return tolerations


def _server_env(spec: StackSpec, record: DeploymentSpec) -> list[dict[str, Any]]:
    """What `sandbox env` gives a local model server, pointing at the in-cluster services; keys by reference."""
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": spec.url(manifests.MLFLOW)},
        {"name": "MLFLOW_S3_ENDPOINT_URL", "value": spec.url(manifests.S3)},
        {"name": "AWS_ENDPOINT_URL_S3", "value": spec.url(manifests.S3)},
        _secret_ref("AWS_ACCESS_KEY_ID", manifests.SECRET_S3, "access-key"),
        _secret_ref("AWS_SECRET_ACCESS_KEY", manifests.SECRET_S3, "secret-key"),
        {"name": "AWS_DEFAULT_REGION", "value": manifests.REGION},
        {"name": "ML_SANDBOX_BIND_HOST", "value": "0.0.0.0"},
    ]
    if record.inference_log:  # the stack's `monitoring` database, as on the local profile
        env.append(_secret_ref("ML_SANDBOX_MONITORING_DB_URL", manifests.SECRET_POSTGRES, "monitoring-url"))
    return env


def _secret_ref(env: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _probe(path: str) -> dict[str, Any]:
    # A model loads from S3 at start-up: up to 10 minutes before the pod is Ready, as KServe waits.
    return {"httpGet": {"path": path, "port": HTTP_PORT}, "periodSeconds": 5, "failureThreshold": 120}


def model_server_args(record: DeploymentSpec) -> list[str]:
    """The model server's arguments in its pod: the local profile's, on the pod's ports."""
    return [
        "--name",
        record.name,
        "--model-uri",
        record.model_uri or "",
        "--host",
        "0.0.0.0",
        "--port",
        str(HTTP_PORT),
        "--grpc-port",
        str(GRPC_PORT),
        "--batch-size",
        str(record.batch_size),
        "--batch-wait-ms",
        f"{record.batch_wait_ms:g}",
        *([] if record.inference_log else ["--no-inference-log"]),
        *(["--allow-nan"] if record.allow_nan else []),
    ]


def inference_service(
    spec: StackSpec, record: DeploymentSpec, *, storage_uri: str | None = None, restart: str | None = None
) -> dict[str, Any]:
    """The InferenceService of one model deployment (or one variant of a split); ``restart``: a redeploy's
    mark, put on the predictor's pods so that they are replaced (`RESTART_ANNOTATION`)."""
    predictor: dict[str, Any] = {"minReplicas": 1, "maxReplicas": 1}
    if restart:
        predictor["annotations"] = {RESTART_ANNOTATION: restart}
    if record.runtime == KSERVE_MLSERVER:
        if not storage_uri:
            raise ValueError("the kserve-mlserver runtime needs the model's s3:// storageUri")
        predictor["serviceAccountName"] = KSERVE_S3  # the storage initializer's S3 keys, by KServe's annotations
        predictor["model"] = {
            "modelFormat": {"name": "mlflow"},
            "protocolVersion": "v2",
            "runtime": KSERVE_MLSERVER,
            "storageUri": storage_uri,
            # The runtime's default is 1 CPU / 2Gi: too much beside the stack on kind.
            "resources": _resources(record.gpus, memory="1Gi", memory_limit="2Gi"),
        }
    else:
        predictor["automountServiceAccountToken"] = False  # the model server never talks to the API
        predictor["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": 10001}
        predictor["containers"] = [
            {
                "name": "kserve-container",
                "image": spec.image,
                "command": ["python", "-m", "sandbox.serving.model_server"],
                "args": model_server_args(record),
                "env": _server_env(spec, record),
                "ports": [
                    {"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"},
                    {"name": "h2c", "containerPort": GRPC_PORT, "protocol": "TCP"},
                ],
                "readinessProbe": _probe(f"/v2/models/{record.name}/ready"),
                "resources": _resources(record.gpus),
                "securityContext": _security(),
            }
        ]
    if record.gpus:
        predictor["tolerations"] = gpu_tolerations(spec)
    meta = _meta(spec, record.name, record)
    meta["annotations"][DEPLOYMENT_MODE_ANNOTATION] = DEPLOYMENT_MODE
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": predictor},
    }


def kserve_s3_objects(spec: StackSpec) -> list[dict[str, Any]]:
    """The Secret (keys, and KServe's S3 annotations) and the ServiceAccount naming it, for storageUri."""
    s3 = urlparse(spec.url(manifests.S3))
    keys = {"access": spec.secrets.s3_access_key, "secret": spec.secrets.s3_secret_key}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            **_meta(spec, KSERVE_S3),
            "annotations": {
                "serving.kserve.io/s3-endpoint": s3.netloc,  # host:port, no scheme
                "serving.kserve.io/s3-usehttps": "0",
                "serving.kserve.io/s3-region": manifests.REGION,
                "serving.kserve.io/s3-usevirtualbucket": "false",  # SeaweedFS: path-style buckets
            },
        },
        "type": "Opaque",
        # KServe's credentials config names the keys it reads (s3AccessKeyIDName; AWS_ACCESS_KEY_ID in its
        # chart, awsAccessKeyID without one): both are given.
        "stringData": {
            "AWS_ACCESS_KEY_ID": keys["access"],
            "AWS_SECRET_ACCESS_KEY": keys["secret"],
            "awsAccessKeyID": keys["access"],
            "awsSecretAccessKey": keys["secret"],
        },
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(spec, KSERVE_S3),
        "secrets": [{"name": KSERVE_S3}],
        "automountServiceAccountToken": False,
    }
    return [secret, account]


def router_objects(spec: StackSpec, record: DeploymentSpec) -> list[dict[str, Any]]:
    """The project's A/B router as a Deployment and a Service, in front of the variants' predictor Services."""
    name = router_name(record.name)
    args = ["--name", record.name, "--host", "0.0.0.0", "--port", str(HTTP_PORT)]
    for variant in record.variants:
        child = variant_name(record.name, variant.label)
        base = f"http://{predictor_service(child)}.{spec.namespace}.svc.cluster.local:{SERVICE_PORT}"
        args += ["--variant", f"{variant.label}={base}/{child}:{variant.weight:g}"]
    if record.sticky_header:
        args += ["--sticky-header", record.sticky_header]
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": spec.instance}
    pod_labels = {**serving_labels(spec, record.name), "app.kubernetes.io/name": name}
    container = {
        "name": "router",
        "image": spec.image,
        "command": ["python", "-m", "sandbox.serving.router"],
        "args": args,
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/live", "port": HTTP_PORT}, "periodSeconds": 5},
        "resources": _resources(0, cpu="50m", memory="128Mi", cpu_limit="1", memory_limit="512Mi"),
        "securityContext": _security(),
    }
    pod = {
        "automountServiceAccountToken": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    meta = _meta(spec, name, record)
    meta["labels"]["app.kubernetes.io/name"] = name
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod},
        },
    }
    service_meta = _meta(spec, name)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": service_meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"}],
        },
    }
    return [deployment, service]


# --------------------------------------------------------------------------- the backend


def _restart_mark() -> str:
    """A fresh value for RESTART_ANNOTATION: when it was made, and unique even within one second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f"-{secrets.token_hex(4)}"


def record_of(obj: dict[str, Any]) -> DeploymentSpec | None:
    text = obj.get("metadata", {}).get("annotations", {}).get(SPEC_ANNOTATION)
    try:
        return DeploymentSpec.model_validate_json(text) if text else None
    except ValueError:
        return None


class KubeServing:
    """Deploy, split, list and undeploy as KServe InferenceServices in the stack's namespace."""

    def __init__(
        self,
        spec: StackSpec,
        tools: Tools,
        folder: Path,
        *,
        tracking_uri: Callable[[], str],
        ready_timeout_s: int = READY_TIMEOUT_S,
        lock: Callable[[str], contextlib.AbstractContextManager] = unlocked,
    ):
        self.spec = spec
        self.tools = tools
        self.folder = folder  # <dir>/kube: the kept ports and the port-forwards' pid files
        self.tracking_uri = tracking_uri  # the host-side MLflow URL (kserve-mlserver's storageUri lookup)
        self.ready_timeout_s = ready_timeout_s
        self.lock = lock  # the profile's (`KubeProfile.lock`): deploy, split and undeploy run under it
        self.forwards = PortForwards(tools, spec.namespace, folder / "forwards")

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def selector(self) -> str:
        return (
            f"app.kubernetes.io/managed-by={manifests.MANAGED_BY},"
            f"app.kubernetes.io/instance={self.spec.instance},app.kubernetes.io/component={COMPONENT}"
        )

    # ---------------------------------------------------------------- reading the API

    def _items(self, kind: str) -> list[dict[str, Any]]:
        return (self.tools.get_json(kind, namespace=self.namespace, selector=self.selector) or {}).get("items", [])

    def _objects(self) -> list[tuple[DeploymentSpec, dict[str, Any]]]:
        """Every deployment made here, with its object (the InferenceService, or a split's router Deployment)."""
        out = []
        for obj in self._items("inferenceservices") + self._items("deployments"):
            record = record_of(obj)
            if record is None:
                continue
            # Only the object that is the record: KServe may copy an InferenceService's labels and
            # annotations onto the predictor Deployment it makes.
            own = router_name(record.name) if record.kind == "split" else record.name
            if obj.get("kind") == ("Deployment" if record.kind == "split" else "InferenceService"):
                if obj["metadata"].get("name") == own:
                    out.append((record, obj))
        return out

    def records(self) -> dict[str, DeploymentSpec]:
        return {record.name: record for record, _ in self._objects()}

    def get(self, name: str) -> DeploymentSpec | None:
        for kind, object_name in (("inferenceservice", name), ("deployment", router_name(name))):
            obj = self.tools.get_json(kind, object_name, namespace=self.namespace)
            record = record_of(obj) if obj else None
            if record is not None and record.name == name:
                return record
        return None

    # ---------------------------------------------------------------- applying

    def _apply(self, objects: list[dict[str, Any]]) -> None:
        validate.check_objects(objects)  # offline first: a bad object never reaches the cluster
        self.tools.run(self.tools.apply(objects))

    def _wait_ready(self, name: str) -> None:
        """The InferenceService's Ready condition; a failure says why, with its pods' events and logs."""
        command = self.tools.wait(
            f"inferenceservice/{name}", "condition=Ready", namespace=self.namespace, timeout_s=self.ready_timeout_s
        )
        try:
            self.tools.run(command)
        except ToolError as exc:
            obj = self.tools.get_json("inferenceservice", name, namespace=self.namespace) or {}
            condition = status_condition(obj, "Ready") or {}
            why = condition.get("message") or condition.get("reason") or exc.message
            raise ServiceStartError(
                f"deployment {name} is not Ready after {self.ready_timeout_s}s: {why}",
                hint=f"read its predictor pod's events and log below (`sandbox logs {name}`); a model the runtime "
                "cannot load, an image that cannot be pulled or a GPU request no node or quota admits shows there",
                details=self.pods_report(f"{ISVC_LABEL}={name}") or exc.details,
            ) from None

    def pods_report(self, selector: str, *, lines: int = LOG_LINES) -> str:
        """Each selected pod's phase, events and last log lines."""
        pods = (self.tools.get_json("pods", namespace=self.namespace, selector=selector) or {}).get("items", [])
        parts = []
        for pod in pods:
            name = pod["metadata"]["name"]
            phase = pod.get("status", {}).get("phase", "?")
            events = self.tools.run(
                self.tools.kubectl(
                    "get",
                    "events",
                    "-n",
                    self.namespace,
                    "--field-selector",
                    f"involvedObject.name={name}",
                    "--sort-by=.lastTimestamp",
                    mutates=False,
                    timeout_s=60,
                ),
                check=False,
            )
            log = self.tools.run(self.tools.logs(name, namespace=self.namespace, lines=lines), check=False)
            parts.append(
                f"--- pod {name} ({phase})\nevents:\n{events.stdout.strip() or '(none)'}\n"
                f"last log lines:\n{(log.stdout + log.stderr).strip() or '(none)'}"
            )
        return "\n".join(parts)

    def _delete(self, *targets: str) -> None:
        self.tools.run(
            self.tools.kubectl("delete", *targets, "-n", self.namespace, "--ignore-not-found", "--wait=false")
        )

    # ---------------------------------------------------------------- commands

    @locked("serve deploy")
    def deploy(
        self,
        name: str,
        model_uri: str,
        *,
        batch_size: int = 1,
        batch_wait_ms: float = 5.0,
        gpus: int = 0,
        inference_log: bool = True,
        allow_nan: bool = False,
        runtime: str = SANDBOX_RUNTIME,
    ) -> str:
        validate_runtime(runtime)
        validate_name(name)
        check_not_reserved(name)
        validate_model_uri(model_uri)
        if batch_size < 1 or batch_wait_ms < 0:
            raise ConfigError(
                "batch size must be >= 1 and batch wait >= 0 ms", hint="e.g. --batch-size 32 --batch-wait-ms 5"
            )
        if gpus < 0:
            raise ConfigError("--gpus must be 0 or more", hint="e.g. --gpus 1")
        existing = self.get(name)
        if existing is not None and existing.kind == "split":
            raise ConfigError(f"{name!r} is an A/B split", hint=f"undeploy it first: sandbox serve undeploy {name}")
        if existing is not None and existing.parent:
            raise ConfigError(f"{name!r} is a variant of {existing.parent!r}", hint=f"undeploy {existing.parent!r}")
        record = DeploymentSpec(
            name=name,
            kind="model",
            model_uri=model_uri,
            batch_size=batch_size,
            batch_wait_ms=batch_wait_ms,
            gpus=gpus,
            inference_log=inference_log,
            allow_nan=allow_nan,
            runtime=runtime,
        )
        objects: list[dict[str, Any]] = []
        storage_uri = None
        if runtime == KSERVE_MLSERVER:
            storage_uri = resolve_storage_uri(model_uri, self.tracking_uri())
            objects += kserve_s3_objects(self.spec)
        else:  # the model server resolves it in the pod: a wrong name would show only at the Ready wait's end
            check_registered(model_uri, self.tracking_uri())
        # A redeploy replaces the predictor's pods (see RESTART_ANNOTATION) and waits for the new ones.
        restart = _restart_mark() if existing else None
        objects.append(inference_service(self.spec, record, storage_uri=storage_uri, restart=restart))
        self._apply(objects)
        try:
            if restart:
                self._wait_rollout(name, restart)
            self._wait_ready(name)
        except BaseException:
            if existing is None:  # no half-made deployment left behind (its report is in the error)
                self._delete(f"inferenceservice/{name}")
            raise
        if restart:  # a running forward still goes to a pod that is gone: the next endpoints start a new one
            self.forwards.stop_named([f"serve-{name}", f"serve-{name}-grpc"])
        return f"InferenceService {name} Ready" + (f" (model {storage_uri})" if storage_uri else "")

    def _wait_rollout(self, name: str, restart: str) -> None:
        """Until the predictor's Deployment (named as its Service in Standard mode) carries ``restart`` in its
        pod template, i.e. KServe has reconciled the change, then until Kubernetes has rolled it out."""
        deployment = predictor_service(name)
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            obj = self.tools.get_json("deployment", deployment, namespace=self.namespace) or {}
            template = obj.get("spec", {}).get("template", {}).get("metadata", {})
            if (template.get("annotations") or {}).get(RESTART_ANNOTATION) == restart:
                break
            if time.monotonic() >= deadline:
                raise ServiceStartError(
                    f"KServe did not update deployment/{deployment} for the redeploy of {name} "
                    f"within {self.ready_timeout_s}s",
                    hint="is KServe's controller running? `kubectl -n kserve logs deploy/kserve-controller-manager`",
                )
            time.sleep(1.0)
        self._rollout(
            deployment,
            f"{ISVC_LABEL}={name}",
            f"the redeploy of {name} did not roll out within {self.ready_timeout_s}s",
            hint=f"read its predictor pods' events and log below (`sandbox logs {name}`)",
            timeout_s=self.ready_timeout_s,
        )

    def _rollout(self, deployment: str, pods: str, failure: str, *, hint: str, timeout_s: int) -> None:
        """`kubectl rollout status` of ``deployment``; a failure carries its pods' (selector ``pods``) report."""
        try:
            self.tools.run(
                self.tools.rollout_status(f"deployment/{deployment}", namespace=self.namespace, timeout_s=timeout_s)
            )
        except ToolError as exc:
            raise ServiceStartError(failure, hint=hint, details=self.pods_report(pods) or exc.details) from None

    @locked("serve split")
    def split(
        self,
        name: str,
        variants: list[VariantSpec],
        *,
        sticky_header: str | None = None,
        batch_size: int = 1,
        batch_wait_ms: float = 5.0,
        inference_log: bool = True,
        allow_nan: bool = False,
    ) -> list[str]:
        validate_split(name, variants)
        labels = [v.label for v in variants]
        check_not_reserved(name, router_name(name), *(variant_name(name, label) for label in labels))
        existing = self.get(name)
        if existing is not None and existing.kind == "model":
            raise ConfigError(
                f"{name!r} is a single-model deployment", hint=f"undeploy it first: sandbox serve undeploy {name}"
            )
        for variant in variants:
            check_registered(variant.model_uri, self.tracking_uri())
        children = variant_specs(
            name,
            variants,
            batch_size=batch_size,
            batch_wait_ms=batch_wait_ms,
            inference_log=inference_log,
            allow_nan=allow_nan,
        )
        router = DeploymentSpec(name=name, kind="split", variants=variants, sticky_header=sticky_header)
        # Re-applying a split replaces its variants' pods, as a redeploy does (their aliases may have moved).
        kept = {variant_name(name, v.label) for v in existing.variants} if existing is not None else set()
        restart = _restart_mark() if kept else None
        objects = [
            inference_service(self.spec, child, restart=restart if child.name in kept else None) for child in children
        ] + router_objects(self.spec, router)
        validate.check_objects(objects)
        # The variants first, all at once (their models load in parallel), then the router in front of them.
        self._apply(objects[: len(children)])
        notes = []
        try:
            for child in children:
                if restart and child.name in kept:
                    self._wait_rollout(child.name, restart)
                self._wait_ready(child.name)
                notes.append(f"{child.name}: InferenceService Ready")
            self._apply(objects[len(children) :])
            self._rollout(
                router_name(name),
                f"app.kubernetes.io/name={router_name(name)}",
                f"the router of {name} did not become ready",
                hint=f"read its pod's events and log below (`sandbox logs {name}`)",
                timeout_s=300,
            )
        except BaseException:
            if existing is None:  # no half-made split left running
                self._delete_split(name, [child.name for child in children])
            raise
        notes.append(f"{name} (router): Deployment {router_name(name)} ready")
        if restart:  # forwards to replaced variant pods are gone with them: the next endpoints start new ones
            self.forwards.stop_named([f"serve-{child}{suffix}" for child in sorted(kept) for suffix in ("", "-grpc")])
        return notes

    def _delete_split(self, name: str, children: list[str]) -> None:
        router = router_name(name)
        self._delete(f"deployment/{router}", f"service/{router}", *(f"inferenceservice/{c}" for c in children))

    @locked("serve undeploy")
    def undeploy(self, name: str) -> list[str]:
        record = self.get(name)
        if record is None:
            raise NotRunningError(f"no deployment named {name!r}", hint="see `sandbox serve list`")
        if record.parent:
            raise ConfigError(f"{name!r} is a variant of {record.parent!r}", hint=f"undeploy {record.parent!r}")
        if record.kind == "split":
            children = [variant_name(name, v.label) for v in record.variants]
            self._delete_split(name, children)
        else:
            children = []
            self._delete(f"inferenceservice/{name}")
        removed = [name, *children]
        self._forget(removed)
        return removed

    # ---------------------------------------------------------------- status

    def _pods(self) -> list[dict[str, Any]]:
        return (self.tools.get_json("pods", namespace=self.namespace) or {}).get("items", [])

    def statuses(self) -> list[DeploymentStatus]:
        objects = self._objects()
        pods = self._pods() if objects else []
        ports = self._ports()
        out = []
        for record, obj in objects:
            if record.kind == "split":
                mine = [p for p in pods if _label(p, "app.kubernetes.io/name") == router_name(record.name)]
                ready_pods = [p for p in mine if pod_ready(p)]
                status = obj.get("status", {})
                state = "running" if ready_pods and status.get("readyReplicas") else "unhealthy"
                detail = ", ".join(f"{v.label}={v.model_uri} ({v.weight:g})" for v in record.variants)
            else:
                mine = [p for p in pods if _label(p, ISVC_LABEL) == record.name]
                condition = status_condition(obj, "Ready")
                if condition is None:
                    state, why = "starting", "no Ready condition yet"
                elif condition.get("status") == "True":
                    state, why = "running", ""
                else:
                    state = "unhealthy"
                    why = condition.get("message") or condition.get("reason") or "Ready is False"
                detail = f"runtime {record.runtime}"
                detail += f", batch {record.batch_size}/{record.batch_wait_ms:g}ms" if record.batch_size > 1 else ""
                detail += f", {record.gpus} GPU(s)" if record.gpus else ""
                detail += ", inference log off" if not record.inference_log else ""
                detail += ", NaN allowed" if record.allow_nan else ""
                detail += f"; {why}" if why else ""
            port = ports.get(record.name)
            url = f"http://{LOOPBACK}:{port}" if port else obj.get("status", {}).get("url")
            out.append(
                DeploymentStatus(
                    name=record.name,
                    kind=record.kind if not record.parent else f"variant of {record.parent}",
                    state=state,
                    instance=", ".join(p["metadata"]["name"] for p in mine) or None,
                    url=url,
                    model_uri=record.model_uri,
                    detail=detail,
                )
            )
        return out

    # ---------------------------------------------------------------- reaching them from the host

    @property
    def _ports_file(self) -> Path:
        return self.folder / "serving-ports.json"

    def _ports(self) -> dict[str, int]:
        try:
            return {str(k): int(v) for k, v in json.loads(self._ports_file.read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def _save_ports(self, ports: dict[str, int]) -> None:
        write_private(self._ports_file, json.dumps(ports, indent=1, sort_keys=True))

    def forwards_for(self, record: DeploymentSpec, ports: dict[str, int]) -> list[Forward]:
        """The port-forwards a deployment is reached by: REST (and a model server's V2 gRPC)."""
        if record.kind == "split":
            return [Forward(f"serve-{record.name}", router_name(record.name), SERVICE_PORT, ports[record.name])]
        service = predictor_service(record.name)
        forwards = [Forward(f"serve-{record.name}", service, SERVICE_PORT, ports[record.name])]
        if record.runtime == SANDBOX_RUNTIME:
            grpc = f"{record.name}.grpc"
            forwards.append(Forward(f"serve-{record.name}-grpc", service, GRPC_PORT, ports[grpc]))
        return forwards

    def _claim_ports(self, records: list[DeploymentSpec]) -> dict[str, int]:
        ports = self._ports()
        changed = False
        for record in records:
            keys = [record.name] + ([f"{record.name}.grpc"] if _has_grpc(record) else [])
            for key in keys:
                if not ports.get(key):
                    ports[key] = free_port()
                    changed = True
        if changed:
            self._save_ports(ports)
        return ports

    def _forget(self, names: list[str]) -> None:
        """Stop the named deployments' port-forwards and drop their kept ports."""
        ports = self._ports()
        for name in names:
            self.forwards.stop_named([f"serve-{name}", f"serve-{name}-grpc"])
            ports.pop(name, None)
            ports.pop(f"{name}.grpc", None)
        self._save_ports(ports)

    def inference_endpoints(self) -> dict[str, InferenceEndpoint]:
        """Each deployment on 127.0.0.1 through its port-forward (started, or restarted, here)."""
        records = [record for record, _ in self._objects()]
        if not records:
            return {}
        ports = self._claim_ports(records)
        out = {}
        for record in records:
            self.forwards.ensure(self.forwards_for(record, ports))  # waits until a started one listens
            base = f"http://{LOOPBACK}:{ports[record.name]}"
            grpc = ports.get(f"{record.name}.grpc") if _has_grpc(record) else None
            out[record.name] = InferenceEndpoint(
                name=record.name,
                url=base,
                v1_predict=f"{base}/v1/models/{record.name}:predict",
                v2_infer=f"{base}/v2/models/{record.name}/infer",
                kind=record.kind,
                model_uri=record.model_uri,
                variants=[v.label for v in record.variants],
                grpc=f"{LOOPBACK}:{grpc}" if grpc else None,
                protocol="v2" if record.runtime == KSERVE_MLSERVER else None,  # MLServer speaks V2 only
            )
        return out

    # ---------------------------------------------------------------- logs

    def log_selector(self, name: str) -> str | None:
        """The label selector of a deployment's pods, or None when no deployment has that name."""
        record = self.get(name)
        if record is None:
            return None
        if record.kind == "split":
            return f"app.kubernetes.io/name={router_name(name)},app.kubernetes.io/instance={self.spec.instance}"
        return f"{ISVC_LABEL}={name}"

    def logs(self, name: str, *, lines: int, follow: bool) -> Iterator[str]:
        selector = self.log_selector(name)
        if selector is None:
            raise ConfigError(f"no deployment named {name!r}", hint="see `sandbox serve list`")
        return self.tools.stream(
            self.tools.logs(namespace=self.namespace, lines=lines, selector=selector, follow=follow)
        )


def _label(obj: dict[str, Any], key: str) -> str | None:
    return obj.get("metadata", {}).get("labels", {}).get(key)


def _has_grpc(record: DeploymentSpec) -> bool:
    return record.kind == "model" and record.runtime == SANDBOX_RUNTIME


def stop_all_forwards(forwards: PortForwards) -> None:
    """End every deployment's port-forward (`down`): the forwards recorded as `serve-*`."""
    forwards.stop_named(forwards.recorded_names("serve-"))
