"""The objects of a model deployment on KServe (Standard mode): an InferenceService per model (or per variant of a
split), the project's A/B router as a Deployment and Service in front of a split's variants, and the S3
ServiceAccount the stock `kserve-mlserver` runtime's storage initializer reads.

Everything here lives in the stack's namespace and carries the sandbox's managed-by and instance labels (so
`down` removes it). The API is the record: each object keeps its `DeploymentSpec` as JSON in the
`ml-sandbox.io/deployment-spec` annotation (`record_of` reads it back).

- Runtime "sandbox" (the default): a custom predictor (`spec.predictor.containers[]`, container
  `kserve-container`) running the project image's model server on 8080 (REST) and 8081 (V2 gRPC), the same code
  as the local profile's processes, started with the same arguments (`sandbox.serving.launch`); S3 keys and the
  inference log's database URL come from the stack's Secrets through `secretKeyRef`, never as values, and so
  does the serving token (`serving.auth: token`): the servers and the router require it; probes use the health
  paths, which answer without it.
- Runtime "kserve-mlserver": KServe's stock MLflow runtime (`modelFormat: mlflow`, `protocolVersion: v2`) with
  `storageUri` (the model's `s3://` artifact folder) and a ServiceAccount whose Secret carries KServe's S3
  annotations.
- `gpus N`: `nvidia.com/gpu` requests and limits, plus tolerations for the GPU nodes' taints.
- A split: each variant is an InferenceService `NAME-LABEL`, and the project's router runs as a Deployment and
  Service `NAME-router` in front of their predictor Services. KServe's own `spec.canary` (v0.20, Standard mode)
  splits by replica count, not by weight, so it is not used.

Standard mode makes, per InferenceService NAME, a Deployment and a Service `NAME-predictor`; the Service's port 80
targets the predictor container's first port, and its further ports keep their numbers (kserve
pkg/controller/v1beta1/inferenceservice/reconcilers/service/service_reconciler.go); the pods carry
`serving.kserve.io/inferenceservice: NAME`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from sandbox.profiles.kube.manifests.gpu import gpu_tolerations
from sandbox.profiles.kube.manifests.spec import (
    REGION,
    S3,
    SECRET_POSTGRES,
    StackSpec,
    http_probe,
    labels,
    pod_spec,
    resources,
    secret_ref,
    security_context,
    serving_token_env,
    stack_client_env,
)
from sandbox.serving.launch import ModelServerArgs, RouterArgs, RouteVariant
from sandbox.serving.specs import KSERVE_MLSERVER, DeploymentSpec, variant_name
from sandbox.wire import HEALTH_PATHS

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
BIND_ALL = "0.0.0.0"  # in a pod the servers bind every interface (the pod's network is their own)
ROUTER_SUFFIX = "-router"
KSERVE_S3 = "kserve-s3"  # the ServiceAccount and Secret the stock runtime's storage initializer reads
IMAGE_USER = 10001  # the project image's user (Dockerfile)


def router_name(split: str) -> str:
    return f"{split}{ROUTER_SUFFIX}"


def predictor_service(name: str) -> str:
    return f"{name}-predictor"


def serving_labels(spec: StackSpec, name: str, parent: str | None = None) -> dict[str, str]:
    made = {**labels(spec, COMPONENT), "app.kubernetes.io/name": name}
    if parent:
        made[PARENT_LABEL] = parent
    return made


def serving_meta(spec: StackSpec, name: str, record: DeploymentSpec | None = None) -> dict[str, Any]:
    """A serving object's metadata; with ``record``, the record itself in `SPEC_ANNOTATION`."""
    made: dict[str, Any] = {
        "name": name,
        "namespace": spec.namespace,
        "labels": serving_labels(spec, record.name if record else name, record.parent if record else None),
    }
    if record is not None:
        made["annotations"] = {SPEC_ANNOTATION: record.model_dump_json(exclude_defaults=False)}
    return made


def record_of(obj: dict[str, Any]) -> DeploymentSpec | None:
    """The record an object carries (`SPEC_ANNOTATION`), or None."""
    text = obj.get("metadata", {}).get("annotations", {}).get(SPEC_ANNOTATION)
    try:
        return DeploymentSpec.model_validate_json(text) if text else None
    except ValueError:
        return None


# The probes' path: readiness without the token (`wire.HEALTH_PATHS`); a model server's is its one model's.
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
assert {READY_PATH, LIVE_PATH} <= HEALTH_PATHS


def _server_env(spec: StackSpec, record: DeploymentSpec) -> list[dict[str, Any]]:
    """What `sandbox env` gives a local model server, pointing at the in-cluster services; keys by reference."""
    env = [
        *stack_client_env(spec),
        {"name": "ML_SANDBOX_BIND_HOST", "value": BIND_ALL},
    ]
    if record.inference_log:  # the stack's `monitoring` database, as on the local profile
        env.append(secret_ref("ML_SANDBOX_MONITORING_DB_URL", SECRET_POSTGRES, "monitoring-url"))
    return env + serving_token_env(spec)


def model_server_args(record: DeploymentSpec) -> ModelServerArgs:
    """The model server's arguments in its pod: the local profile's, on the pod's ports."""
    return ModelServerArgs(
        name=record.name,
        model_uri=record.model_uri or "",
        port=HTTP_PORT,
        host=BIND_ALL,
        grpc_port=GRPC_PORT,
        batch_size=record.batch_size,
        batch_wait_ms=record.batch_wait_ms,
        inference_log=record.inference_log,
        allow_nan=record.allow_nan,
    )


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
            "resources": resources("100m", "1Gi", "2", "2Gi", gpus=record.gpus),
        }
    else:
        predictor["automountServiceAccountToken"] = False  # the model server never talks to the API
        predictor["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": IMAGE_USER}
        predictor["containers"] = [
            {
                "name": "kserve-container",
                "image": spec.image,
                "command": ["python", "-m", ModelServerArgs.MODULE],
                "args": model_server_args(record).to_argv(),
                "env": _server_env(spec, record),
                "ports": [
                    {"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"},
                    {"name": "h2c", "containerPort": GRPC_PORT, "protocol": "TCP"},
                ],
                # A model loads from S3 at start-up: up to 10 minutes before the pod is Ready, as KServe waits.
                "readinessProbe": http_probe(READY_PATH, HTTP_PORT, failures=120),
                "resources": resources("100m", "512Mi", "2", "2Gi", gpus=record.gpus),
                "securityContext": security_context(IMAGE_USER),
            }
        ]
    if record.gpus:
        predictor["tolerations"] = gpu_tolerations(spec)
    made = serving_meta(spec, record.name, record)
    made["annotations"][DEPLOYMENT_MODE_ANNOTATION] = DEPLOYMENT_MODE
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": made,
        "spec": {"predictor": predictor},
    }


def kserve_s3_objects(spec: StackSpec) -> list[dict[str, Any]]:
    """The Secret (keys, and KServe's S3 annotations) and the ServiceAccount naming it, for storageUri."""
    s3 = urlparse(spec.url(S3))
    keys = {"access": spec.secrets.s3_access_key, "secret": spec.secrets.s3_secret_key}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            **serving_meta(spec, KSERVE_S3),
            "annotations": {
                "serving.kserve.io/s3-endpoint": s3.netloc,  # host:port, no scheme
                "serving.kserve.io/s3-usehttps": "0",
                "serving.kserve.io/s3-region": REGION,
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
        "metadata": serving_meta(spec, KSERVE_S3),
        "secrets": [{"name": KSERVE_S3}],
        "automountServiceAccountToken": False,
    }
    return [secret, account]


def router_args(spec: StackSpec, record: DeploymentSpec) -> RouterArgs:
    """The router's arguments: each variant's predictor Service, by its in-cluster name."""
    variants = []
    for variant in record.variants:
        child = variant_name(record.name, variant.label)
        base = f"http://{predictor_service(child)}.{spec.namespace}.svc.cluster.local:{SERVICE_PORT}"
        variants.append(RouteVariant(variant.label, base, child, variant.weight))
    return RouterArgs(
        name=record.name, port=HTTP_PORT, variants=tuple(variants), host=BIND_ALL, sticky_header=record.sticky_header
    )


def router_objects(spec: StackSpec, record: DeploymentSpec) -> list[dict[str, Any]]:
    """The project's A/B router as a Deployment and a Service, in front of the variants' predictor Services."""
    name = router_name(record.name)
    selected = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": spec.instance}
    pod_labels = {**serving_labels(spec, record.name), "app.kubernetes.io/name": name}
    env = serving_token_env(spec)
    container = {
        "name": "router",
        "image": spec.image,
        "command": ["python", "-m", RouterArgs.MODULE],
        "args": router_args(spec, record).to_argv(),
        # The token it requires and sends its variants; it binds every interface (`router_args`): no Host check.
        **({"env": env} if env else {}),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": http_probe(LIVE_PATH, HTTP_PORT),
        "resources": resources("50m", "128Mi", "1", "512Mi"),
        "securityContext": security_context(IMAGE_USER),
    }
    made = serving_meta(spec, name, record)
    made["labels"]["app.kubernetes.io/name"] = name
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": made,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selected},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec([container])},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": serving_meta(spec, name),
        "spec": {
            "type": "ClusterIP",
            "selector": selected,
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"}],
        },
    }
    return [deployment, service]
