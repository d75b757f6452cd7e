"""The Kubernetes profiles' serving backend (KServe InferenceServices), driven for real against the FAKE
kubectl (tests/fakes/bin) and the FAKE KServe controller (tests/fakes/fake_kserve.py) on a fake cluster.

Nothing here is Kubernetes or KServe: the objects are checked as the backend builds them (and validated
offline, with kubernetes-validate and the kserve SDK's models), and the handling of the API's answers
(conditions, events, logs) against what the fakes answer. The registry lookup of `--runtime
kserve-mlserver` runs against a real MLflow registry (sqlite, in the test's folder).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import stat

import psutil
import pytest
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.config import load_config
from sandbox.errors import ConfigError, ExitCode, LockedError, ServiceStartError
from sandbox.files import read_pid_record
from sandbox.profiles import get_profile
from sandbox.profiles.kube import mlserver, validate
from sandbox.profiles.kube import serving as kube_serving
from sandbox.profiles.kube.manifests import serving as serving_objects
from sandbox.profiles.kube.state import KubeState
from sandbox.serving import deployments, specs
from sandbox.serving.deployments import Deployments
from sandbox.serving.specs import DeploymentSpec, VariantSpec
from tests.factories import lock_held_elsewhere, make_endpoints
from tests.fakes import FakeTools
from tests.fakes.stack import adopt_stack, seed_stack

CONTEXT = "minikube"
NS = "ml-sandbox"
INSTANCE = "sb-test"
ISVC = "InferenceService"


def _seed_stack(fakes: FakeTools, context: str, *, kind_cluster: str | None = None) -> None:
    """The stack `up` leaves, and a Deployment of a team's own that serving must never touch."""
    foreign = {"kind": "Deployment", "metadata": {"name": "team-app", "namespace": NS, "labels": {"app": "team"}}}
    extra = {f"Deployment/{NS}/team-app": foreign}
    seed_stack(fakes, context, NS, INSTANCE, extra=extra, kind_cluster=kind_cluster)


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    tools = FakeTools(tmp_path, monkeypatch)
    _seed_stack(tools, CONTEXT)
    # The fake cluster has no MLflow behind its port-forward: the registry check before a deploy is a FAKE that
    # takes every name and records it. test_a_model_the_registry_lacks_is_refused_before_anything_is_applied
    # runs the real one against a real registry.
    tools.registry_lookups = []
    monkeypatch.setattr(deployments, "check_registered", lambda uri, _tracking: tools.registry_lookups.append(uri))
    yield tools
    tools.stop_servers(tmp_path / "sb" / "kube" / "forwards")


def model(name: str, uri: str, **options) -> DeploymentSpec:
    return DeploymentSpec.model(name, uri, **options)


def split(name: str, variants: list[VariantSpec], **options) -> DeploymentSpec:
    return DeploymentSpec.split(name, variants, **options)


def with_registry(serving, uri: str):
    """``serving`` with its runtime's registry lookups going to ``uri`` (a test's sqlite registry)."""
    serving.runtime._tracking_uri = lambda: uri
    return serving


def cluster_profile(tmp_path):
    """A cluster profile whose stack is up (its state and secrets as `up` writes them), on the fake cluster."""
    prof = get_profile(load_config(profile="cluster", dir=tmp_path / "sb", **{"cluster.context": CONTEXT}))
    return adopt_stack(prof, CONTEXT, NS, INSTANCE)


@pytest.fixture
def prof(tmp_path, fakes):
    return cluster_profile(tmp_path)


def store(fakes: FakeTools, context: str = CONTEXT) -> dict:
    return fakes.objects(context)


def obj(fakes: FakeTools, kind: str, name: str) -> dict:
    return store(fakes)[f"{kind}/{NS}/{name}"]


def stored_spec(fakes: FakeTools, kind: str, name: str) -> DeploymentSpec:
    return DeploymentSpec.model_validate_json(
        obj(fakes, kind, name)["metadata"]["annotations"][serving_objects.SPEC_ANNOTATION]
    )


def serving_labels(name: str, parent: str | None = None) -> dict:
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": INSTANCE,
        "app.kubernetes.io/managed-by": "ml-sandbox",
        "app.kubernetes.io/part-of": "ml-sandbox",
        "app.kubernetes.io/component": "serving",
    }
    return {**labels, **({"ml-sandbox.io/parent": parent} if parent else {})}


def secret_ref(env: str, secret: str, key: str) -> dict:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def expected_server_env(*, inference_log: bool = True, token: bool = True) -> list[dict]:
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.ml-sandbox.svc.cluster.local:5000"},
        {"name": "MLFLOW_TRACKING_USERNAME", "value": "sandbox-admin"},
        secret_ref("MLFLOW_TRACKING_PASSWORD", "mlflow-backend", "admin-password"),
        {"name": "MLFLOW_S3_ENDPOINT_URL", "value": "http://s3.ml-sandbox.svc.cluster.local:8333"},
        {"name": "AWS_ENDPOINT_URL_S3", "value": "http://s3.ml-sandbox.svc.cluster.local:8333"},
        secret_ref("AWS_ACCESS_KEY_ID", "s3-credentials", "access-key"),
        secret_ref("AWS_SECRET_ACCESS_KEY", "s3-credentials", "secret-key"),
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},
        {"name": "ML_SANDBOX_BIND_HOST", "value": "0.0.0.0"},
    ]
    if inference_log:
        env.append(secret_ref("ML_SANDBOX_MONITORING_DB_URL", "postgres-credentials", "monitoring-url"))
    if token:  # `serving.auth: token`, the default: the servers require the token, given by reference
        env.append(secret_ref("ML_SANDBOX_SERVING_TOKEN", "serving-token", "token"))
    return env


def without_status(item: dict) -> dict:
    return {key: value for key, value in item.items() if key != "status"}


# --------------------------------------------------------------------------- deploy: the objects


def test_deploy_applies_one_validated_inference_service_running_the_projects_model_server(prof, fakes):
    notes = prof.serving().deploy(model("fraud", "models:/fraud-detector@champion", batch_size=8, batch_wait_ms=3))
    assert notes == ["InferenceService Ready"]
    spec = DeploymentSpec(
        name="fraud", kind="model", model_uri="models:/fraud-detector@champion", batch_size=8, batch_wait_ms=3
    )
    expected = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": ISVC,
        "metadata": {
            "name": "fraud",
            "namespace": NS,
            "labels": serving_labels("fraud"),
            "annotations": {
                "ml-sandbox.io/deployment-spec": spec.model_dump_json(),
                "serving.kserve.io/deploymentMode": "Standard",
            },
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 1,
                "automountServiceAccountToken": False,
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": 10001},
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": prof.source.image(),
                        "command": ["python", "-m", "sandbox.serving.model_server"],
                        "args": [
                            "--name",
                            "fraud",
                            "--model-uri",
                            "models:/fraud-detector@champion",
                            "--host",
                            "0.0.0.0",
                            "--port",
                            "8080",
                            "--grpc-port",
                            "8081",
                            "--batch-size",
                            "8",
                            "--batch-wait-ms",
                            "3",
                        ],
                        "env": expected_server_env(),
                        "ports": [
                            {"name": "http1", "containerPort": 8080, "protocol": "TCP"},
                            {"name": "h2c", "containerPort": 8081, "protocol": "TCP"},
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/v2/health/ready", "port": 8080},
                            "periodSeconds": 5,
                            "failureThreshold": 120,
                        },
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "512Mi"},
                            "limits": {"cpu": "2", "memory": "2Gi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "privileged": False,
                            "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True,
                            "runAsUser": 10001,
                            "runAsGroup": 10001,
                        },
                    }
                ],
            }
        },
    }
    assert without_status(obj(fakes, ISVC, "fraud")) == expected
    assert validate.validate_objects([expected]) == []
    lines = fakes.lines()
    apply = [line for line in lines if line.startswith("kubectl apply")]
    assert apply == [
        "kubectl apply --server-side --field-manager=ml-sandbox --force-conflicts -f - <<InferenceService/fraud"
    ]
    wait = "kubectl wait inferenceservice/fraud --for=condition=Ready --timeout=600s -n ml-sandbox"
    assert wait in lines and lines.index(wait) > lines.index(apply[0])


def test_the_inference_log_flag_and_nan_reach_the_server_and_its_environment(prof, fakes):
    prof.serving().deploy(model("plain", "models:/m/2", inference_log=False, allow_nan=True))
    container = obj(fakes, ISVC, "plain")["spec"]["predictor"]["containers"][0]
    assert container["args"][-2:] == ["--no-inference-log", "--allow-nan"]
    assert container["env"] == expected_server_env(inference_log=False)


def test_the_serving_token_reaches_servers_and_routers_by_reference_and_only_with_auth_on(prof, fakes):
    assert prof.endpoints().serving_token == prof._secrets(create=False).serving_token
    prof.serving().deploy(model("guarded", "models:/m/1"))
    guarded = obj(fakes, ISVC, "guarded")
    assert (
        secret_ref("ML_SANDBOX_SERVING_TOKEN", "serving-token", "token")
        in guarded["spec"]["predictor"]["containers"][0]["env"]
    )
    assert prof._secrets(create=False).serving_token not in str(guarded)  # never by value


def test_with_serving_auth_none_no_server_or_router_gets_the_token(tmp_path, fakes):
    options = {"cluster.context": CONTEXT, "serving.auth": "none"}
    off = adopt_stack(
        get_profile(load_config(profile="cluster", dir=tmp_path / "sb", **options)), CONTEXT, NS, INSTANCE
    )
    assert off.endpoints().serving_token is None
    serving = off.serving()
    serving.deploy(model("open", "models:/m/1"))
    assert obj(fakes, ISVC, "open")["spec"]["predictor"]["containers"][0]["env"] == expected_server_env(token=False)
    serving.deploy(split("open-ab", [VariantSpec.parse("a=models:/m/1:50"), VariantSpec.parse("b=models:/m/2:50")]))
    (router,) = obj(fakes, "Deployment", "open-ab-router")["spec"]["template"]["spec"]["containers"]
    assert "env" not in router


def test_gpus_become_nvidia_requests_and_limits_with_the_gpu_nodes_tolerations(prof, fakes):
    prof.serving().deploy(model("big", "models:/m/1", gpus=2))
    predictor = obj(fakes, ISVC, "big")["spec"]["predictor"]
    resources = predictor["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == "2" and resources["limits"]["nvidia.com/gpu"] == "2"
    # The default inventory's GPU nodes are tainted nvidia.com/gpu=present:NoSchedule.
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    prof.serving().deploy(model("small", "models:/m/1"))
    assert "tolerations" not in obj(fakes, ISVC, "small")["spec"]["predictor"]
    assert "nvidia.com/gpu" not in json.dumps(obj(fakes, ISVC, "small")["spec"])


def test_an_object_that_fails_offline_validation_is_never_applied(prof, fakes, monkeypatch):
    real = kube_serving.inference_service

    def broken(*args, **kwargs):
        made = real(*args, **kwargs)
        made["spec"]["predictor"]["replicaz"] = 1
        return made

    monkeypatch.setattr(kube_serving, "inference_service", broken)
    with pytest.raises(
        validate.InvalidObject, match=r"InferenceService ml-sandbox/fraud: spec.predictor.replicaz: unknown field"
    ):
        prof.serving().deploy(model("fraud", "models:/m/1"))
    assert not [line for line in fakes.lines() if line.startswith("kubectl apply")]


def test_bad_arguments_are_refused_before_any_call(prof, fakes):
    serving = prof.serving()
    for call, match in [
        (lambda: serving.deploy(model("Fraud_1", "models:/m/1")), "bad deployment name"),
        (lambda: serving.deploy(model("fraud", "fraud-detector")), "bad model URI"),
        (lambda: serving.deploy(model("fraud", "models:/m/1", gpus=-1)), "--gpus"),
        (lambda: serving.deploy(model("fraud", "models:/m/1", runtime="triton")), "unknown runtime"),
        (lambda: serving.deploy(split("ab", [VariantSpec.parse("a=models:/m/1:1")])), "at least two"),
        # KServe copies the InferenceService's labels onto its pods: named like a stack component, they would
        # be selected by that component's Service (app.kubernetes.io/name + instance).
        (lambda: serving.deploy(model("mlflow", "models:/m/1")), "stack's own services"),
        (
            lambda: serving.deploy(
                split("create", [VariantSpec.parse("buckets=models:/m/1:1"), VariantSpec.parse("b=models:/m/1:1")])
            ),
            "'create-buckets' is the name of one of the stack's own services",
        ),
    ]:
        with pytest.raises(ConfigError, match=match):
            call()
    assert fakes.mutating() == []


# --------------------------------------------------------------------------- readiness


def test_a_deployment_that_never_gets_ready_fails_with_its_pods_events_and_log_and_is_removed(prof, fakes):
    fakes.unready("fraud")
    with pytest.raises(ServiceStartError) as info:
        prof.serving().deploy(model("fraud", "models:/m/1"))
    error = info.value
    assert error.exit_code == ExitCode.FAILED
    assert "deployment fraud is not Ready after 600s" in error.message
    assert "FAKE predictor pod is not ready" in error.message  # the Ready condition's own message
    assert "--- pod fraud-predictor-7d9c5b-x2x4q (Pending)" in error.details
    assert "FAKE event: Back-off restarting failed container kserve-container" in error.details
    assert "FAKE the model flavor cannot be loaded by this runtime" in error.details
    assert "sandbox logs fraud" in error.hint
    events = [line for line in fakes.lines() if " get events " in line]
    assert events == [
        "kubectl get events -n ml-sandbox --field-selector involvedObject.name=fraud-predictor-7d9c5b-x2x4q "
        "--sort-by=.lastTimestamp"
    ]
    assert "kubectl logs fraud-predictor-7d9c5b-x2x4q -n ml-sandbox --tail=30 --all-containers --prefix" in (
        fakes.lines()
    )
    # A new deployment that failed is not left half-made; its predictor's pod and Service went with it.
    assert fakes.mutating()[-1] == "kubectl delete inferenceservice/fraud -n ml-sandbox --ignore-not-found --wait=false"
    assert not [key for key in store(fakes) if "fraud" in key]


def test_a_redeploy_replaces_the_predictor_pods_and_waits_for_their_rollout(prof, fakes):
    # The model server resolves `models:/NAME@champion` when it starts: redeploying the same URI after the
    # alias moved must replace the pods, and the InferenceService's Ready (True from before, and through a
    # rolling update) cannot tell when that is done; the predictor Deployment's rollout can.
    serving = prof.serving()
    serving.deploy(model("fraud", "models:/m@champion"))
    assert "annotations" not in obj(fakes, ISVC, "fraud")["spec"]["predictor"]  # a first deploy: nothing to replace
    serving.inference_endpoints()
    before = [c for c in _forward_cmdlines(prof) if "svc/fraud-predictor" in c]
    fakes.clear_log()
    serving.deploy(model("fraud", "models:/m@champion"))
    mark = obj(fakes, ISVC, "fraud")["spec"]["predictor"]["annotations"][serving_objects.RESTART_ANNOTATION]
    template = obj(fakes, "Deployment", "fraud-predictor")["spec"]["template"]["metadata"]
    assert template["annotations"][serving_objects.RESTART_ANNOTATION] == mark  # KServe puts it on the pods
    assert validate.validate_objects([without_status(obj(fakes, ISVC, "fraud"))]) == []
    lines = fakes.lines()
    apply = next(i for i, line in enumerate(lines) if line.startswith("kubectl apply"))
    rollout = lines.index("kubectl rollout status deployment/fraud-predictor -n ml-sandbox --timeout=600s")
    ready = lines.index("kubectl wait inferenceservice/fraud --for=condition=Ready --timeout=600s -n ml-sandbox")
    assert apply < rollout < ready
    # The old forwards went to the replaced pod: stopped, and started again (same ports) by the next endpoints.
    assert [c for c in _forward_cmdlines(prof) if "svc/fraud-predictor" in c] == []
    serving.inference_endpoints()
    assert sorted(" ".join(c[-2:]) for c in _forward_cmdlines(prof) if "svc/fraud-predictor" in c) == sorted(
        " ".join(c[-2:]) for c in before
    )
    serving.deploy(model("fraud", "models:/m@champion"))  # each redeploy replaces them again
    assert obj(fakes, ISVC, "fraud")["spec"]["predictor"]["annotations"][serving_objects.RESTART_ANNOTATION] != mark


def test_a_failed_redeploy_keeps_the_deployment_and_status_shows_why(prof, fakes):
    prof.serving().deploy(model("fraud", "models:/m/1"))
    fakes.unready("fraud")
    with pytest.raises(ServiceStartError):
        prof.serving().deploy(model("fraud", "models:/m/2"))
    (status,) = prof.serving().statuses()
    assert (status.name, status.state, status.model_uri) == ("fraud", "unhealthy", "models:/m/2")
    assert status.detail == (
        "no batching; FAKE predictor pod is not ready: containers with unready status: [kserve-container]"
    )
    assert status.instance == "fraud-predictor-7d9c5b-x2x4q"


# --------------------------------------------------------------------------- kserve-mlserver


@pytest.fixture
def registry(mlflow_db, monkeypatch):
    """A real MLflow registry (sqlite) holding one MLflow 3 logged model, registered as version 1 with the
    alias champion; its experiment's artifacts are where the stack's MLflow keeps them (mlflow-artifacts:/)."""
    from mlflow import MlflowClient

    uri = mlflow_db  # a new sqlite store in tmp_path (tests/unit/conftest.py)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the registry store looks the logged model up there
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("fraud", artifact_location="mlflow-artifacts:/7")
    logged = client.create_logged_model(experiment_id=experiment, name="model")
    client.create_registered_model("fraud-detector")
    version = client.create_model_version(
        "fraud-detector", source=f"models:/{logged.model_id}", model_id=logged.model_id
    )
    client.set_registered_model_alias("fraud-detector", "champion", version.version)
    # FAKE: the logged model has no files, so its MLmodel is this one (a cloudpickle model, which the kserve-mlserver
    # runtime loads); test_kserve_mlserver_refuses_a_skops_model_from_the_registry reads a skops one.
    monkeypatch.setattr(
        mlserver, "_mlmodel", lambda *_: {"flavors": {"sklearn": {"serialization_format": "cloudpickle"}}}
    )
    return uri, f"s3://mlflow-artifacts/7/models/{logged.model_id}/artifacts"


def test_kserve_mlserver_refuses_a_skops_model_from_the_registry(registry, monkeypatch):
    uri, _ = registry
    read = []

    def skops(location, tracking_uri):
        read.append((location, tracking_uri))
        return {"flavors": {"sklearn": {"serialization_format": "skops"}}}

    monkeypatch.setattr(mlserver, "_mlmodel", skops)
    with pytest.raises(ConfigError, match="serialized with 'skops'"):
        mlserver.resolve_storage_uri("models:/fraud-detector@champion", uri)
    assert read == [(read[0][0], uri)] and read[0][0].startswith("mlflow-artifacts:/7/models/")


def test_storage_uri_is_resolved_from_the_registry_by_version_and_by_alias(registry):
    uri, folder = registry
    assert mlserver.resolve_storage_uri("models:/fraud-detector/1", uri) == folder
    assert mlserver.resolve_storage_uri("models:/fraud-detector@champion", uri) == folder
    assert mlserver.resolve_storage_uri(folder + "/", uri) == folder
    with pytest.raises(ConfigError, match="is not in the registry"):
        mlserver.resolve_storage_uri("models:/fraud-detector/9", uri)
    with pytest.raises(ConfigError, match="is not in the registry"):
        mlserver.resolve_storage_uri("models:/fraud-detector@nope", uri)
    with pytest.raises(ConfigError, match="name a version or an alias"):
        mlserver.resolve_storage_uri("models:/fraud-detector/latest", uri)
    with pytest.raises(ConfigError, match="needs a registry URI"):
        mlserver.resolve_storage_uri("runs:/abc/model", uri)
    with pytest.raises(ConfigError, match="not in the stack's S3"):
        mlserver.artifact_s3_uri("file:///tmp/mlruns/1/models/m-1/artifacts")


def test_a_model_the_registry_lacks_is_refused_before_anything_is_applied(prof, fakes, registry, monkeypatch):
    # The default runtime resolves the model in the pod: without this check a wrong name shows only when the
    # 10-minute Ready wait ends. The real lookup, against a real registry.
    monkeypatch.setattr(deployments, "check_registered", specs.check_registered)
    uri, _ = registry
    serving = prof.serving()
    with_registry(serving, uri)
    before = set(store(fakes))
    with pytest.raises(ConfigError, match=r"models:/fraud-detector/9 is not in the registry"):
        serving.deploy(model("fraud", "models:/fraud-detector/9"))
    with pytest.raises(ConfigError, match=r"models:/nope@champion is not in the registry"):
        serving.deploy(
            split(
                "ab",
                [VariantSpec.parse("a=models:/fraud-detector/1:1"), VariantSpec.parse("b=models:/nope@champion:1")],
            )
        )
    assert set(store(fakes)) == before  # nothing applied
    assert serving.deploy(model("fraud", "models:/fraud-detector@champion")) == ["InferenceService Ready"]


def test_every_model_is_looked_up_before_a_deploy_or_a_split(prof, fakes):
    prof.serving().deploy(model("fraud", "models:/m/1"))
    prof.serving().deploy(split("ab", [VariantSpec.parse("a=models:/m/2:1"), VariantSpec.parse("b=models:/m@c:1")]))
    assert fakes.registry_lookups == ["models:/m/1", "models:/m/2", "models:/m@c"]


def test_the_kserve_mlserver_runtime_gets_storage_uri_and_an_s3_service_account(prof, fakes, registry):
    uri, folder = registry
    serving = prof.serving()
    with_registry(serving, uri)
    notes = serving.deploy(model("fraud-ml", "models:/fraud-detector@champion", runtime="kserve-mlserver"))
    assert notes == [f"InferenceService Ready (model {folder})"]
    isvc = obj(fakes, ISVC, "fraud-ml")
    assert isvc["spec"] == {
        "predictor": {
            "minReplicas": 1,
            "maxReplicas": 1,
            "serviceAccountName": "kserve-s3",
            "model": {
                "modelFormat": {"name": "mlflow"},
                "protocolVersion": "v2",
                "runtime": "kserve-mlserver",
                "storageUri": folder,
                "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
            },
        }
    }
    assert stored_spec(fakes, ISVC, "fraud-ml").runtime == "kserve-mlserver"
    keys = prof._secrets(create=False)
    secret = obj(fakes, "Secret", "kserve-s3")
    assert secret["metadata"]["annotations"] == {
        "serving.kserve.io/s3-endpoint": "s3.ml-sandbox.svc.cluster.local:8333",
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-region": "us-east-1",
        "serving.kserve.io/s3-usevirtualbucket": "false",
    }
    assert secret["stringData"]["AWS_ACCESS_KEY_ID"] == keys.s3_access_key
    assert secret["stringData"]["AWS_SECRET_ACCESS_KEY"] == keys.s3_secret_key
    account = obj(fakes, "ServiceAccount", "kserve-s3")
    assert account["secrets"] == [{"name": "kserve-s3"}] and account["automountServiceAccountToken"] is False
    assert account["metadata"]["labels"]["app.kubernetes.io/instance"] == INSTANCE
    applied = [line for line in fakes.lines() if line.startswith("kubectl apply")]
    assert applied[-1].endswith("<<Secret/kserve-s3,ServiceAccount/kserve-s3,InferenceService/fraud-ml")
    assert validate.validate_objects([secret, account, without_status(isvc)]) == []
    endpoint = serving.inference_endpoints()["fraud-ml"]
    assert endpoint.protocol == "v2" and endpoint.grpc is None  # MLServer: V2 REST here


# --------------------------------------------------------------------------- splits


def test_split_makes_an_inference_service_per_variant_and_the_router_in_front(prof, fakes):
    variants = [VariantSpec.parse("a=models:/fraud-detector/1:80"), VariantSpec.parse("b=models:/fraud-detector/2:20")]
    notes = prof.serving().deploy(split("fraud-ab", variants, sticky_header="x-user-id", batch_size=4))
    assert notes == [
        "fraud-ab-a: InferenceService Ready",
        "fraud-ab-b: InferenceService Ready",
        "fraud-ab (router): Deployment fraud-ab-router ready",
    ]
    for label, uri in (("a", "models:/fraud-detector/1"), ("b", "models:/fraud-detector/2")):
        child = obj(fakes, ISVC, f"fraud-ab-{label}")
        assert child["metadata"]["labels"] == serving_labels(f"fraud-ab-{label}", parent="fraud-ab")
        assert stored_spec(fakes, ISVC, f"fraud-ab-{label}").parent == "fraud-ab"
        args = child["spec"]["predictor"]["containers"][0]["args"]
        assert args[:4] == ["--name", f"fraud-ab-{label}", "--model-uri", uri] and "4" in args
    router = obj(fakes, "Deployment", "fraud-ab-router")
    assert router["metadata"]["labels"] == serving_labels("fraud-ab-router")
    assert stored_spec(fakes, "Deployment", "fraud-ab-router").variants == variants
    pod = router["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "sandbox.serving.router"]
    assert container["image"] == prof.source.image()
    # The token it requires and sends on to its variants, by reference; its probe needs none.
    assert container["env"] == [secret_ref("ML_SANDBOX_SERVING_TOKEN", "serving-token", "token")]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["args"] == [
        "--name",
        "fraud-ab",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--variant",
        "a=http://fraud-ab-a-predictor.ml-sandbox.svc.cluster.local:80/fraud-ab-a:80",
        "--variant",
        "b=http://fraud-ab-b-predictor.ml-sandbox.svc.cluster.local:80/fraud-ab-b:20",
        "--sticky-header",
        "x-user-id",
    ]
    assert pod["automountServiceAccountToken"] is False
    selector = {"app.kubernetes.io/name": "fraud-ab-router", "app.kubernetes.io/instance": INSTANCE}
    assert router["spec"]["selector"] == {"matchLabels": selector}
    service = obj(fakes, "Service", "fraud-ab-router")
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": selector,
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
    }
    made = [without_status(obj(fakes, k, n)) for k, n in [(ISVC, "fraud-ab-a"), (ISVC, "fraud-ab-b")]]
    assert validate.validate_objects([*made, without_status(router), service]) == []
    # The variants applied together, both Ready, then the router, then its rollout.
    lines = [line for line in fakes.lines() if line.startswith(("kubectl apply", "kubectl wait", "kubectl rollout"))]
    assert [
        line.split(" <<")[-1] if "<<" in line else line.split()[-4 if "rollout" in line else 2] for line in lines
    ] == [
        "InferenceService/fraud-ab-a,InferenceService/fraud-ab-b",
        "inferenceservice/fraud-ab-a",
        "inferenceservice/fraud-ab-b",
        "Deployment/fraud-ab-router,Service/fraud-ab-router",
        "deployment/fraud-ab-router",
    ]


def test_re_applying_a_split_replaces_its_variants_pods_and_waits_for_their_rollout(prof, fakes):
    # As a redeploy: the variants' model servers resolve their aliases when they start, so the same split
    # applied again after an alias moved must replace their pods; a variant added by it is simply made.
    serving = prof.serving()
    first = [VariantSpec.parse("a=models:/m@champion:50"), VariantSpec.parse("b=models:/m@challenger:50")]
    serving.deploy(split("ab", first))
    assert all("annotations" not in obj(fakes, ISVC, f"ab-{v}")["spec"]["predictor"] for v in "ab")
    serving.inference_endpoints()
    fakes.clear_log()
    serving.deploy(split("ab", [*first, VariantSpec.parse("c=models:/m/3:10")]))
    marks = {v: obj(fakes, ISVC, f"ab-{v}")["spec"]["predictor"].get("annotations") for v in "abc"}
    assert marks["a"] == marks["b"] and marks["a"][serving_objects.RESTART_ANNOTATION] and marks["c"] is None
    for v in "ab":
        template = obj(fakes, "Deployment", f"ab-{v}-predictor")["spec"]["template"]["metadata"]
        mark = marks[v][serving_objects.RESTART_ANNOTATION]
        assert template["annotations"][serving_objects.RESTART_ANNOTATION] == mark  # KServe puts it on the pods
    lines = fakes.lines()
    apply = next(i for i, line in enumerate(lines) if line.startswith("kubectl apply"))
    rolled = [
        lines.index(f"kubectl rollout status deployment/ab-{v}-predictor -n ml-sandbox --timeout=600s") for v in "ab"
    ]
    ready = lines.index("kubectl wait inferenceservice/ab-a --for=condition=Ready --timeout=600s -n ml-sandbox")
    assert apply < rolled[0] < ready
    assert not any("deployment/ab-c-predictor" in line and "rollout" in line for line in lines)
    # The forwards to the replaced variants' pods are stopped; the router's stays.
    names = {c[-2].split("/")[-1] for c in _forward_cmdlines(prof)}
    assert "ab-router" in names and not {"ab-a-predictor", "ab-b-predictor"} & names


def test_a_split_whose_variant_fails_leaves_nothing(prof, fakes):
    fakes.unready("fraud-ab-b")
    variants = [VariantSpec.parse("a=models:/m/1:50"), VariantSpec.parse("b=models:/m/2:50")]
    with pytest.raises(ServiceStartError, match="deployment fraud-ab-b is not Ready"):
        prof.serving().deploy(split("fraud-ab", variants))
    assert not [key for key in store(fakes) if "fraud-ab" in key]
    assert not [line for line in fakes.lines() if "Deployment/fraud-ab-router" in line]  # the router never applied


# --------------------------------------------------------------------------- reading back, undeploy


def test_get_and_statuses_read_the_deployments_back_from_the_api(tmp_path, prof, fakes):
    serving = prof.serving()
    serving.deploy(model("fraud", "models:/m/1", batch_size=8))
    serving.deploy(split("ab", [VariantSpec.parse("a=models:/m/1:80"), VariantSpec.parse("b=models:/m/2:20")]))
    again = cluster_profile(tmp_path).serving()  # a fresh backend: nothing is remembered but the API's objects
    assert again.get("fraud") == DeploymentSpec(name="fraud", kind="model", model_uri="models:/m/1", batch_size=8)
    assert again.get("ab").kind == "split" and [v.label for v in again.get("ab").variants] == ["a", "b"]
    assert again.get("ab-a").parent == "ab"
    assert again.get("nope") is None
    rows = {s.name: s for s in again.statuses()}
    assert set(rows) == {"fraud", "ab", "ab-a", "ab-b"}
    assert (rows["fraud"].kind, rows["fraud"].state, rows["fraud"].instance) == (
        "model",
        "running",
        "fraud-predictor-7d9c5b-x2x4q",
    )
    assert rows["fraud"].detail == "batch 8/5ms"
    assert (rows["ab"].kind, rows["ab"].state, rows["ab"].instance) == ("split", "running", "ab-router-0")
    assert rows["ab"].detail == "a=models:/m/1 (80), b=models:/m/2 (20)"
    assert rows["ab-a"].kind == "variant of ab"


def test_undeploy_deletes_exactly_its_objects(prof, fakes):
    serving = prof.serving()
    serving.deploy(model("fraud", "models:/m/1"))
    serving.deploy(model("other", "models:/m/1"))
    serving.deploy(split("ab", [VariantSpec.parse("a=models:/m/1:1"), VariantSpec.parse("b=models:/m/2:1")]))
    with pytest.raises(ConfigError, match="variant of 'ab'"):
        serving.undeploy("ab-a")
    with pytest.raises(ConfigError, match="no deployment named 'nope'") as info:  # a usage error, exit 2
        serving.undeploy("nope")
    assert info.value.exit_code == ExitCode.USAGE
    before = set(store(fakes))
    fakes.clear_log()
    assert serving.undeploy("ab") == ["ab", "ab-a", "ab-b"]
    assert fakes.mutating() == [
        "kubectl delete deployment/ab-router service/ab-router inferenceservice/ab-a inferenceservice/ab-b "
        "-n ml-sandbox --ignore-not-found --wait=false"
    ]
    assert serving.undeploy("fraud") == ["fraud"]
    gone = before - set(store(fakes))
    assert {key for key in gone if "/ab" not in key and "/fraud" not in key} == set()
    assert [key for key in store(fakes) if key.startswith(f"{ISVC}/")] == [f"{ISVC}/{NS}/other"]
    assert f"Deployment/{NS}/team-app" in store(fakes) and f"Pod/{NS}/mlflow-0" in store(fakes)
    assert [s.name for s in serving.statuses()] == ["other"]


def test_a_name_taken_by_the_other_kind_is_refused(prof, fakes):
    serving = prof.serving()
    serving.deploy(model("fraud", "models:/m/1"))
    serving.deploy(split("ab", [VariantSpec.parse("a=models:/m/1:1"), VariantSpec.parse("b=models:/m/2:1")]))
    with pytest.raises(ConfigError, match="is an A/B split"):
        serving.deploy(model("ab", "models:/m/1"))
    with pytest.raises(ConfigError, match="single-model deployment"):
        serving.deploy(split("fraud", [VariantSpec.parse("a=models:/m/1:1"), VariantSpec.parse("b=models:/m/2:1")]))
    with pytest.raises(ConfigError, match="variant of 'ab'"):
        serving.deploy(model("ab-a", "models:/m/1"))


def test_no_secret_value_is_in_any_object_but_a_secret_nor_on_any_command_line(prof, fakes, registry):
    uri, _ = registry
    serving = prof.serving()
    with_registry(serving, uri)
    serving.deploy(model("fraud", "models:/m/1", gpus=1))
    serving.deploy(model("ml", "models:/fraud-detector/1", runtime="kserve-mlserver"))
    serving.deploy(split("ab", [VariantSpec.parse("a=models:/m/1:1"), VariantSpec.parse("b=models:/m/2:1")]))
    keys = prof._secrets(create=False)
    values = [keys.postgres_password, keys.s3_access_key, keys.s3_secret_key, keys.jupyter_token]
    made = [o for o in store(fakes).values() if o["kind"] != "Secret"]
    assert {o["kind"] for o in made} >= {ISVC, "Deployment", "Service", "ServiceAccount"}
    for item in made:
        text = json.dumps(item)
        assert not [v for v in values if v in text], item["metadata"]["name"]
    for call in fakes.calls():
        assert not [v for v in values if v in " ".join(call["argv"])]


# --------------------------------------------------------------------------- reaching them, logs, status, down


def _forward_cmdlines(prof) -> list[list[str]]:
    out = []
    for pid_file in sorted((prof.folder / "forwards").glob("serve-*.pid")):
        try:
            out.append(psutil.Process(read_pid_record(pid_file).pid).cmdline())
        except psutil.Error:
            pass
    return out


def kept_ports(prof) -> dict[str, int]:
    """The deployments' loopback ports, as the profile keeps them with its others (state.json)."""
    ports = json.loads((prof.folder / "state.json").read_text())["host_ports"]
    return {key: port for key, port in ports.items() if key.startswith("serve-")}


def test_each_deployment_is_reached_on_loopback_through_a_kept_port_forward(prof, fakes):
    serving = prof.serving()
    serving.deploy(model("fraud", "models:/m/1"))
    serving.deploy(split("ab", [VariantSpec.parse("a=models:/m/1:1"), VariantSpec.parse("b=models:/m/2:1")]))
    endpoints = serving.inference_endpoints()
    ports = kept_ports(prof)
    # Each forward started here already listens when the endpoints are handed out: a kubectl port-forward
    # binds only after it found a pod, and the caller's first request must not be refused.
    for key in ("serve-fraud", "serve-fraud-grpc", "serve-ab"):
        socket.create_connection(("127.0.0.1", ports[key]), timeout=1).close()
    fraud = endpoints["fraud"]
    base = f"http://127.0.0.1:{ports['serve-fraud']}"
    assert (fraud.url, fraud.v1_predict, fraud.v2_infer) == (
        base,
        f"{base}/v1/models/fraud:predict",
        f"{base}/v2/models/fraud/infer",
    )
    assert fraud.grpc == f"127.0.0.1:{ports['serve-fraud-grpc']}" and fraud.kind == "model"
    assert endpoints["ab"].kind == "split" and endpoints["ab"].variants == ["a", "b"] and endpoints["ab"].grpc is None
    assert endpoints["ab"].v1_predict == f"http://127.0.0.1:{ports['serve-ab']}/v1/models/ab:predict"
    commands = [" ".join(line[-7:]) for line in _forward_cmdlines(prof)]
    assert f"port-forward --address 127.0.0.1 -n ml-sandbox svc/ab-router {ports['serve-ab']}:80" in commands
    assert f"port-forward --address 127.0.0.1 -n ml-sandbox svc/fraud-predictor {ports['serve-fraud']}:80" in commands
    assert (
        f"port-forward --address 127.0.0.1 -n ml-sandbox svc/fraud-predictor {ports['serve-fraud-grpc']}:8081"
        in commands
    )
    # The profile's endpoints carry them (serve url, loadtest), on the same kept ports.
    assert prof.endpoints().inference["fraud"].url == base
    assert serving.inference_endpoints()["fraud"].url == base
    # Undeploying stops its forwards and forgets its ports.
    serving.undeploy("fraud")
    assert set(kept_ports(prof)) == {"serve-ab", "serve-ab-a", "serve-ab-a-grpc", "serve-ab-b", "serve-ab-b-grpc"}
    assert [c for c in _forward_cmdlines(prof) if "svc/fraud-predictor" in c] == []


def test_logs_of_a_deployment_are_its_predictor_pods(prof, fakes):
    prof.serving().deploy(model("fraud", "models:/m/1"))
    assert "".join(prof.logs("fraud", lines=20)) == "FAKE log line 1\nFAKE log line 2: Back-off pulling image\n"
    assert (
        "kubectl logs -n ml-sandbox --tail=20 --all-containers --prefix -l serving.kserve.io/inferenceservice=fraud"
        in fakes.lines()
    )
    fakes.clear_log()
    list(prof.logs("mlflow", lines=5))  # a stack component, as before
    assert [line for line in fakes.lines() if line.startswith("kubectl logs")] == [
        "kubectl logs -n ml-sandbox --tail=5 --all-containers --prefix -l app.kubernetes.io/managed-by=ml-sandbox,"
        f"app.kubernetes.io/instance={INSTANCE},app.kubernetes.io/component=mlflow"
    ]


def test_status_lists_deployments_and_keeps_their_pods_out_of_the_services(prof, fakes):
    prof.serving().deploy(model("fraud", "models:/m/1"))
    status = prof.status()
    assert [s.name for s in status.services] == ["mlflow"]  # the predictor's pod is not a stack service
    assert [(d.name, d.state) for d in status.deployments] == [("fraud", "running")]
    assert "fraud" in status.endpoints.inference
    # A read starts nothing: the deployment's URL is its kept port, its forward starts with a command that needs it.
    ports = kept_ports(prof)
    assert status.deployments[0].url == f"http://127.0.0.1:{ports['serve-fraud']}"
    assert _forward_cmdlines(prof) == [] and [d.name for d in prof.serving().statuses()] == ["fraud"]
    assert _forward_cmdlines(prof) == []
    assert prof.endpoints().inference["fraud"].url == status.deployments[0].url
    assert len(_forward_cmdlines(prof)) == 2  # REST and gRPC


def test_down_deletes_the_inference_services_and_stops_their_forwards(prof, fakes):
    serving = prof.serving()
    serving.deploy(model("fraud", "models:/m/1"))
    serving.inference_endpoints()
    assert _forward_cmdlines(prof)
    prof.down()
    deletes = [line for line in fakes.mutating() if line.startswith("kubectl delete inferenceservices,")]
    assert deletes and f"-l app.kubernetes.io/managed-by=ml-sandbox,app.kubernetes.io/instance={INSTANCE}" in deletes[0]
    assert not [key for key in store(fakes) if key.startswith(f"{ISVC}/") or "fraud" in key]
    assert f"Deployment/{NS}/team-app" in store(fakes)
    assert not list((prof.folder / "forwards").glob("serve-*.pid"))


def test_the_kind_profile_serves_through_the_same_backend(tmp_path, fakes):
    _seed_stack(fakes, "kind-ml-sandbox", kind_cluster="ml-sandbox")
    prof = get_profile(load_config(profile="kind", dir=tmp_path / "sb", **{"gpu.real_gpus": "off"}))
    prof.folder.mkdir(parents=True)
    ports = {"postgres": 1, "s3": 2, "mlflow": 3, "notebooks": 4, "kfp": 5}
    prof._write_state(KubeState(INSTANCE, "kind-ml-sandbox", NS, ports, cluster="ml-sandbox"))
    prof._secrets(create=True)
    serving = prof.serving()
    assert isinstance(serving, Deployments) and isinstance(serving.runtime, kube_serving.KServeRuntime)
    serving.deploy(model("fraud", "models:/m/1"))
    assert f"{ISVC}/{NS}/fraud" in fakes.objects("kind-ml-sandbox")
    assert all(
        call["argv"][:2] == ["--context", "kind-ml-sandbox"] for call in fakes.calls() if call["tool"] == "kubectl"
    )


# --------------------------------------------------------------------------- the lock


def test_deploy_is_refused_while_another_command_holds_the_lock_and_applies_nothing(prof, fakes):
    lock_file = prof.folder / "sandbox.lock"
    before = copy.deepcopy(store(fakes))
    fakes.clear_log()
    with lock_held_elsewhere(lock_file, "serve undeploy other") as pid:
        for change in (
            lambda: prof.serving().deploy(model("fraud", "models:/m/1")),
            lambda: prof.serving().deploy(
                split("ab", [VariantSpec.parse("a=models:/m/1:1"), VariantSpec.parse("b=models:/m/2:1")])
            ),
            lambda: prof.serving().undeploy("fraud"),
        ):
            with pytest.raises(LockedError) as info:
                change()
            assert info.value.exit_code == ExitCode.LOCKED
            assert f"pid {pid}: sandbox serve undeploy other" in info.value.message
        assert prof.serving().statuses() == []  # a read takes no lock
    assert store(fakes) == before and fakes.mutating() == [] and fakes.registry_lookups == []
    prof.serving().deploy(model("fraud", "models:/m/1"))  # the holder is gone: its lock went with it
    assert f"{ISVC}/{NS}/fraud" in store(fakes)
    assert "sandbox serve deploy fraud" in lock_file.read_text()
    assert stat.S_IMODE(os.stat(lock_file).st_mode) == 0o600


def test_a_command_holding_the_lock_may_deploy_under_it(prof, fakes):
    with prof.lock("monitor retrain fraud"):  # re-entrant within one process
        prof.serving().deploy(model("fraud", "models:/m/1"))
    assert f"{ISVC}/{NS}/fraud" in store(fakes)


def test_cli_serve_deploy_exits_3_naming_the_holder_while_the_lock_is_held(tmp_path, prof, fakes):
    args = ["serve", "deploy", "fraud", "--model", "models:/m/1", "--profile", "cluster", "--dir", str(tmp_path / "sb")]
    with lock_held_elsewhere(prof.folder / "sandbox.lock", "down") as pid:
        result = CliRunner().invoke(app, args)
    assert result.exit_code == ExitCode.LOCKED == 3, result.output
    assert f"pid {pid}: sandbox down" in " ".join(result.output.split())
    assert f"{ISVC}/{NS}/fraud" not in store(fakes)


# --------------------------------------------------------------------------- the other profiles, the CLI


def test_the_local_and_remote_profiles_refuse_the_kserve_runtime_naming_the_kind_profile(tmp_path):
    from sandbox.profiles.local.serving import LocalProcessRuntime
    from sandbox.profiles.local.state import PortMap, SandboxDir
    from sandbox.profiles.remote.serving import RemoteRuntime

    sandbox = SandboxDir(tmp_path / "sb")
    local = Deployments(LocalProcessRuntime(sandbox, PortMap(sandbox), make_endpoints(), startup_timeout=1))
    with pytest.raises(ConfigError, match="local profile has no KServe") as info:
        local.deploy(model("fraud", "models:/m/1", runtime="kserve-mlserver"))
    assert "--profile kind" in info.value.hint
    with pytest.raises(ConfigError, match="remote profile has no KServe") as info:
        Deployments(RemoteRuntime({})).deploy(model("fraud", "models:/m/1", runtime="kserve-mlserver"))
    assert "--profile kind" in info.value.hint


def test_cli_serve_deploy_takes_runtime(tmp_path, prof, fakes):
    runner = CliRunner()
    folder = "s3://mlflow-artifacts/7/models/m-1/artifacts"
    args = ["serve", "deploy", "fraud", "--model", folder, "--runtime", "kserve-mlserver"]
    result = runner.invoke(app, [*args, "--profile", "cluster", "--dir", str(tmp_path / "sb")])
    assert result.exit_code == 0, result.output
    assert obj(fakes, ISVC, "fraud")["spec"]["predictor"]["model"]["storageUri"] == folder
    assert "V2: POST http://127.0.0.1:" in result.output and "V1:" not in result.output
    bad = runner.invoke(app, ["serve", "deploy", "x", "--model", "models:/m/1", "--runtime", "mlserver"])
    assert bad.exit_code == ExitCode.USAGE and "unknown runtime 'mlserver'" in bad.output
    help_text = runner.invoke(app, ["serve", "deploy", "--help"]).output
    assert "--runtime" in help_text and "kserve-mlserver" in help_text
