"""The KFP pipeline runner of the kind and cluster profiles, against a FAKE KFP API and FAKE kubectl.

`tests/fakes/fake_kfp.py` answers kfp.Client's REST calls and records what was submitted; it runs
nothing, so where a step would log to MLflow the test does it (a real MLflow file store in
tmp_path, with the tags MLflow's own context providers give a run started in a step's
environment). What a real KFP does with the spec is checked only by the kind CI workflow.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable

import psutil
import pytest
import yaml

from sandbox.config import load_config
from sandbox.endpoints import Endpoints, patched_environ
from sandbox.errors import NotRunningError, ServiceStartError
from sandbox.files import read_pid_record
from sandbox.pipelines import training
from sandbox.pipelines.config import PROJECT_IMAGE, PipelinesConfig
from sandbox.pipelines.runner import PIPELINE_RUN_TAG, PipelineFailed, PipelineRunner, PipelineState
from sandbox.profiles import get_profile
from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests.spec import StackSecrets, StackSpec
from sandbox.profiles.kube.pipelines import (
    NODE_NAME,
    OUTPUTS_MARKER,
    OUTPUTS_TASK,
    PIPELINES_S3_SECRET,
    KfpPipelineRunner,
    load_package,
)
from sandbox.profiles.kube.tools import Tools
from tests.fakes import FakeTools
from tests.fakes.fake_kfp import FakeKfp

CONTEXT = "minikube"
IMAGE = PipelinesConfig(base_image="registry.example/ml-sandbox:test")
OUTPUTS = {"run_id": "abc123", "accuracy": 0.9466666666666667, "model_sha256": "f00d", "version": "3", "rows": 570.0}


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    tools = FakeTools(tmp_path, monkeypatch)
    namespace = {"kind": "Namespace", "metadata": {"name": versions.KFP_NAMESPACE, "labels": {}}}
    tools.seed({"contexts": [CONTEXT], "objects": {CONTEXT: {f"Namespace//{versions.KFP_NAMESPACE}": namespace}}})
    yield tools
    tools.stop_servers()


@pytest.fixture
def kfp():
    fake = FakeKfp().start()
    yield fake
    fake.stop()


@pytest.fixture
def pod_logs(tmp_path, monkeypatch):
    """What the FAKE `kubectl logs POD` answers, by pod name."""
    path = tmp_path / "pod-logs.json"
    monkeypatch.setenv("FAKE_POD_LOGS", str(path))

    def set_logs(logs: dict[str, str]) -> None:
        path.write_text(json.dumps(logs))

    set_logs({})
    return set_logs


@pytest.fixture
def spec() -> StackSpec:
    return StackSpec(instance="t1", secrets=StackSecrets.generate(), image=IMAGE.base_image)


@pytest.fixture
def endpoints(mlflow_db, spec) -> Endpoints:
    return Endpoints(
        profile="kind",
        mlflow_tracking_uri=mlflow_db,  # a new sqlite store in tmp_path (tests/unit/conftest.py)
        s3_endpoint_url="http://127.0.0.1:1",
        s3_access_key=spec.secrets.s3_access_key,
        s3_secret_key=spec.secrets.s3_secret_key,
        postgres_url="postgresql://unused",
    )


def runner(kfp: FakeKfp, spec, endpoints, **options) -> KfpPipelineRunner:
    return KfpPipelineRunner(
        api=lambda: kfp.url,
        image=IMAGE,
        spec=spec,
        tools=Tools(CONTEXT),
        endpoints=endpoints,
        reach="FAKE reach",
        poll_s=0.01,
        **options,
    )


def arguments(tracking_uri: str) -> dict:
    return training.pipeline_arguments(
        data_uri="s3://data/train.csv",
        model_name="m",
        seed=7,
        tracking_uri=tracking_uri,
        spec_sha256="0" * 64,
        data_version="md5:1",
    )


def run_pods(fakes, kfp, *pods: dict) -> Callable[[dict], None]:
    """An ``on_create`` that makes the run's pods in the FAKE cluster once KFP gave the run its id, labelled
    and annotated as KFP and Argo do: each ``{"name", "task", "phase"}`` (driver: True for a driver pod)."""

    def make(body: dict) -> None:
        run_id = list(kfp.runs)[-1]
        state = fakes.state()
        for index, pod in enumerate(pods):
            node = f"wf-abc.root.{pod['task']}" + ("-driver" if pod.get("driver") else ".executor")
            state["objects"][CONTEXT][f"Pod/kubeflow/{pod['name']}"] = {
                "kind": "Pod",
                "metadata": {
                    "name": pod["name"],
                    "namespace": "kubeflow",
                    "labels": {"pipeline/runid": run_id, "pipelines.kubeflow.org/v2_component": "true"},
                    "annotations": {NODE_NAME: node},
                    "creationTimestamp": f"2026-11-27T10:00:{index:02d}Z",
                },
                "status": {"phase": pod["phase"], **pod.get("status", {})},
            }
        fakes.seed(state)

    return make


def succeed_with(fakes, kfp: FakeKfp, pod_logs, outputs: dict) -> Callable[[dict], None]:
    kfp.final = {"state": "SUCCEEDED"}
    pod_logs(
        {"wf-outputs-pod": "I launcher: starting\n" + OUTPUTS_MARKER + json.dumps(outputs) + "\nI launcher: done\n"}
    )
    return run_pods(
        fakes,
        kfp,
        {"name": "wf-train-driver-pod", "task": "train", "phase": "Succeeded", "driver": True},
        {"name": "wf-train-pod", "task": "train", "phase": "Succeeded"},
        {"name": "wf-outputs-pod", "task": OUTPUTS_TASK, "phase": "Succeeded"},
    )


def step_env(executor: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in executor["container"].get("env", [])}


def log_like_a_step(endpoints: Endpoints, body: dict) -> str:
    """What `train` does in its pod: an MLflow run started in the step's environment (its tags from
    MLflow's context providers, MLFLOW_RUN_CONTEXT among them); returns the run's id."""
    from mlflow import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags

    executor = body["pipeline_spec"]["pipeline_spec"]["deploymentSpec"]["executors"]["exec-train"]
    context = step_env(executor)["MLFLOW_RUN_CONTEXT"]
    client = MlflowClient(tracking_uri=endpoints.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("pipelines") or client.get_experiment(
        client.create_experiment("pipelines")
    )
    with patched_environ({"MLFLOW_RUN_CONTEXT": context}):
        run = client.create_run(experiment.experiment_id, tags=resolve_tags())
    client.set_terminated(run.info.run_id)
    return run.info.run_id


# --------------------------------------------------------------------------- the submitted spec


def test_the_submitted_spec_runs_every_step_in_the_image_with_the_stack_by_reference(
    tmp_path, fakes, kfp, pod_logs, spec, endpoints, monkeypatch
):
    monkeypatch.setenv("MLFLOW_RUN_CONTEXT", json.dumps({"sandbox.checklist.run_id": "cl-1"}))
    made = []
    make_pods = succeed_with(fakes, kfp, pod_logs, OUTPUTS)
    kfp.on_create = lambda body: (make_pods(body), made.append(log_like_a_step(endpoints, body)))
    package = tmp_path / "pipeline.yaml"
    training.compile_spec(package, IMAGE)
    prof_runner = runner(kfp, spec, endpoints)
    assert isinstance(prof_runner, PipelineRunner) and prof_runner.image == IMAGE

    outcome = prof_runner.run(package, arguments(endpoints.mlflow_tracking_uri))

    assert outcome.succeeded, outcome.describe()
    [body] = kfp.created_runs()
    submitted, platform = body["pipeline_spec"]["pipeline_spec"], body["pipeline_spec"]["platform_spec"]
    executors = submitted["deploymentSpec"]["executors"]
    assert set(executors) == {"exec-preprocess", "exec-train", f"exec-{OUTPUTS_TASK}"}
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE.base_image}
    for label in ("exec-preprocess", "exec-train"):
        env = step_env(executors[label])
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.ml-sandbox.svc.cluster.local:5000"
        assert env["MLFLOW_TRACKING_USERNAME"] == spec.secrets.MLFLOW_ADMIN_USER  # its password: from the Secret
        assert (
            env["AWS_ENDPOINT_URL_S3"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://s3.ml-sandbox.svc.cluster.local:8333"
        )
        # The run's own tag, with the context this process had (the checklist's tag) kept.
        assert json.loads(env["MLFLOW_RUN_CONTEXT"]) == {
            "sandbox.checklist.run_id": "cl-1",
            PIPELINE_RUN_TAG: outcome.run_id,
        }
        assert platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][label] == {
            "secretAsEnv": [
                {
                    "secretName": PIPELINES_S3_SECRET,
                    "secretNameParameter": {"runtimeValue": {"constant": PIPELINES_S3_SECRET}},
                    "keyToEnv": [
                        {"secretKey": "access-key", "envVar": "AWS_ACCESS_KEY_ID"},
                        {"secretKey": "secret-key", "envVar": "AWS_SECRET_ACCESS_KEY"},
                        {"secretKey": "mlflow-password", "envVar": "MLFLOW_TRACKING_PASSWORD"},
                    ],
                    "optional": False,
                }
            ],
            "imagePullPolicy": "IfNotPresent",
        }
    # The outputs step gets nothing of the stack: no environment, no Secret.
    assert "env" not in executors[f"exec-{OUTPUTS_TASK}"]["container"]
    assert f"exec-{OUTPUTS_TASK}" not in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    everything = json.dumps(kfp.requests, default=vars)
    for value in dataclasses.astuple(spec.secrets):  # no generated credential, the S3 keys included
        assert value not in everything
    # The arguments as given, but the host's MLflow URI, which no pod reaches, is the in-cluster one.
    assert body["runtime_config"]["parameters"] == {
        **arguments(endpoints.mlflow_tracking_uri),
        "tracking_uri": "http://mlflow.ml-sandbox.svc.cluster.local:5000",
    }
    assert body["display_name"] == f"ml-training-pipeline {outcome.run_id}"
    # The Secret the steps read, in KFP's namespace, with the stack's labels (`down` deletes it).
    secret = fakes.objects(CONTEXT)[f"Secret/{versions.KFP_NAMESPACE}/{PIPELINES_S3_SECRET}"]
    assert secret["stringData"] == {
        "access-key": spec.secrets.s3_access_key,
        "secret-key": spec.secrets.s3_secret_key,
        "mlflow-password": spec.secrets.mlflow_admin_password,
    }
    assert secret["metadata"]["labels"]["app.kubernetes.io/instance"] == "t1"
    # What comes back: the outputs with kfp.local's types, the MLflow run the step made, the run's URL.
    assert outcome.outputs == {**OUTPUTS, "rows": 570}
    assert isinstance(outcome.outputs["rows"], int) and isinstance(outcome.outputs["accuracy"], float)
    assert outcome.mlflow_run_ids == made and len(made) == 1
    kfp_run = next(iter(kfp.runs))
    assert outcome.log == f"{kfp.url}/apis/v2beta1/runs/{kfp_run}"
    assert outcome.error == "" and outcome.log_tail == ""
    assert "kubectl logs wf-outputs-pod -n kubeflow -c main" in fakes.lines()


def test_the_outputs_step_takes_the_pipelines_outputs_from_the_steps_that_make_them(tmp_path, spec, endpoints, kfp):
    package = tmp_path / "pipeline.yaml"
    training.compile_spec(package, IMAGE)
    submitted, _ = runner(kfp, spec, endpoints).prepare(package, "r1")
    task = submitted["root"]["dag"]["tasks"][OUTPUTS_TASK]
    assert task["dependentTasks"] == ["preprocess", "train"]
    assert task["inputs"]["parameters"]["rows"] == {
        "taskOutputParameter": {"producerTask": "preprocess", "outputParameterKey": "rows"}
    }
    assert set(task["inputs"]["parameters"]) == {"run_id", "accuracy", "model_sha256", "version", "rows"}
    component = submitted["components"][f"comp-{OUTPUTS_TASK}"]
    assert component["inputDefinitions"]["parameters"]["accuracy"] == {"parameterType": "NUMBER_DOUBLE"}
    container = submitted["deploymentSpec"]["executors"][f"exec-{OUTPUTS_TASK}"]["container"]
    assert container["command"][:2] == ["python3", "-c"] and container["args"] == ["{{$}}"]


def test_the_outputs_program_prints_what_the_runner_reads(tmp_path, spec, endpoints, kfp):
    """The outputs step's program, run here on an executor input as KFP's launcher fills `{{$}}`."""
    import subprocess
    import sys

    package = tmp_path / "pipeline.yaml"
    training.compile_spec(package, IMAGE)
    submitted, _ = runner(kfp, spec, endpoints).prepare(package, "r1")
    container = submitted["deploymentSpec"]["executors"][f"exec-{OUTPUTS_TASK}"]["container"]
    executor_input = {
        "inputs": {
            "parameterValues": {"rows": 570, "accuracy": 0.5},
            "artifacts": {"model": {"artifacts": [{"uri": "s3://mlpipeline/v2/artifacts/x/model"}]}},
        }
    }
    program = container["command"][2]
    printed = subprocess.run(
        [sys.executable, "-c", program, json.dumps(executor_input)], capture_output=True, text=True, check=True
    ).stdout
    assert (
        printed
        == OUTPUTS_MARKER
        + json.dumps({"accuracy": 0.5, "model": "s3://mlpipeline/v2/artifacts/x/model", "rows": 570}, sort_keys=True)
        + "\n"
    )


# --------------------------------------------------------------------------- states


@pytest.mark.parametrize(
    ("state", "said"),
    [("FAILED", "failed"), ("CANCELED", "was canceled"), ("SKIPPED", "was skipped")],
)
def test_a_run_that_does_not_succeed_is_failed_with_its_reason_and_the_failed_steps_log(
    tmp_path, fakes, kfp, pod_logs, spec, endpoints, state, said
):
    failed = state == "FAILED"
    kfp.final = {
        "state": state,
        "error": {"code": 9, "message": "FAKE: the workflow ended early"},
        "run_details": {"task_details": [{"display_name": "executor", "state": state, "error": {"message": "exit 1"}}]},
    }
    kfp.on_create = run_pods(
        fakes,
        kfp,
        {"name": "wf-pre-pod", "task": "preprocess", "phase": "Succeeded"},
        {"name": "wf-train-driver-pod", "task": "train", "phase": "Succeeded", "driver": True},
        {"name": "wf-train-pod", "task": "train", "phase": "Failed" if failed else "Succeeded"},
    )
    pod_logs({"wf-train-pod": "Traceback (most recent call last):\nValueError: FAKE: label column missing\n"})
    package = tmp_path / "pipeline.yaml"
    training.compile_spec(package, IMAGE)

    outcome = runner(kfp, spec, endpoints).run(package, arguments(endpoints.mlflow_tracking_uri))

    assert outcome.state == PipelineState.FAILED and not outcome.succeeded
    kfp_run = next(iter(kfp.runs))
    assert outcome.error == f"the KFP run {kfp_run} {said}: FAKE: the workflow ended early; executor: exit 1"
    assert outcome.log == f"{kfp.url}/apis/v2beta1/runs/{kfp_run}"
    assert outcome.outputs == {} and outcome.mlflow_run_ids == []
    if failed:
        assert outcome.log_tail == (
            "--- pod wf-train-pod (train, namespace kubeflow)\n"
            "Traceback (most recent call last):\nValueError: FAKE: label column missing"
        )
        assert "kubectl logs wf-train-pod -n kubeflow -c main --tail=30" in fakes.lines()
    else:
        assert outcome.log_tail == f"(no failed pod of KFP run {kfp_run} was found)"
    with pytest.raises(PipelineFailed, match=re.escape(outcome.error)):
        outcome.raise_for_state()


def test_a_run_that_does_not_end_in_time_is_terminated_and_says_what_kept_its_pods_from_running(
    tmp_path, fakes, kfp, pod_logs, spec, endpoints
):
    kfp.polls_running = 10**6
    image_pull = {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}
    kfp.on_create = run_pods(
        fakes,
        kfp,
        {"name": "wf-pre-pod", "task": "preprocess", "phase": "Pending", "status": {"containerStatuses": [image_pull]}},
    )
    package = tmp_path / "pipeline.yaml"
    training.compile_spec(package, IMAGE)

    outcome = runner(kfp, spec, endpoints, timeout_s=0).run(package, arguments(endpoints.mlflow_tracking_uri))

    kfp_run = next(iter(kfp.runs))
    assert not outcome.succeeded
    assert outcome.error == f"the KFP run {kfp_run} did not end within 0s (state RUNNING); it was terminated"
    assert [r.path for r in kfp.requests if r.method == "POST"][-1] == f"/apis/v2beta1/runs/{kfp_run}:terminate"
    assert outcome.log_tail == "--- pod wf-pre-pod (preprocess) Pending: ImagePullBackOff: Back-off pulling image"


def test_a_success_whose_outputs_cannot_be_read_is_not_passed_off_as_one(
    tmp_path, fakes, kfp, pod_logs, spec, endpoints
):
    package = tmp_path / "pipeline.yaml"
    training.compile_spec(package, IMAGE)
    kfp.on_create = succeed_with(fakes, kfp, pod_logs, OUTPUTS)
    pod_logs({"wf-outputs-pod": "I launcher: the step printed nothing\n"})

    outcome = runner(kfp, spec, endpoints).run(package, arguments(endpoints.mlflow_tracking_uri))

    prefix = f"the KFP run {list(kfp.runs)[-1]} succeeded, but its outputs could not be read from the {OUTPUTS_TASK}"
    assert not outcome.succeeded
    assert outcome.error == f"{prefix} step's log: no line starting with 'SANDBOX_PIPELINE_OUTPUTS' in it"

    kfp.on_create = None  # no pod at all (gone with its workflow, say)
    outcome = runner(kfp, spec, endpoints).run(package, arguments(endpoints.mlflow_tracking_uri))

    prefix = f"the KFP run {list(kfp.runs)[-1]} succeeded, but its outputs could not be read from the {OUTPUTS_TASK}"
    assert outcome.error == (
        f"{prefix} step's log: no pod of the run is that step's (label pipeline/runid, "
        "annotation workflows.argoproj.io/node-name)"
    )


def test_an_unreachable_api_is_a_clear_error_and_nothing_is_submitted_or_applied(fakes, spec, endpoints):
    from sandbox.net import free_port

    port = free_port()
    unreachable = KfpPipelineRunner(
        api=lambda: f"http://127.0.0.1:{port}",
        image=IMAGE,
        spec=spec,
        tools=Tools(CONTEXT),
        endpoints=endpoints,
        reach=f"kind maps KFP's NodePort 30880 to 127.0.0.1:{port}",
    )
    with pytest.raises(NotRunningError) as error:
        unreachable.run(training.build(IMAGE), arguments(endpoints.mlflow_tracking_uri))
    assert error.value.message.startswith(
        f"Kubeflow Pipelines' API does not answer at http://127.0.0.1:{port}/apis/v2beta1/healthz"
    )
    assert error.value.hint.startswith(f"kind maps KFP's NodePort 30880 to 127.0.0.1:{port}; `sandbox status`")
    assert "kubectl --context minikube -n kubeflow get pods" in error.value.hint
    assert fakes.calls() == []


def test_a_run_kfp_refuses_is_an_error_with_kfps_own_message(tmp_path, fakes, kfp, spec, endpoints):
    message = "Failed to create a new run: InvalidInputError: unknown template format: pipeline spec is invalid"
    kfp.refuse_runs = (400, message)

    with pytest.raises(ServiceStartError) as error:
        runner(kfp, spec, endpoints).run(training.build(IMAGE), arguments(endpoints.mlflow_tracking_uri))

    assert error.value.message == f"Kubeflow Pipelines' API at {kfp.url} answered 400 Bad Request"
    assert message in error.value.details


# --------------------------------------------------------------------------- what it takes


def test_a_pipeline_function_and_its_compiled_package_submit_the_same_spec(tmp_path, spec, endpoints, kfp):
    package = tmp_path / "pipeline.yaml"
    training.compile_spec(package, IMAGE)
    prof_runner = runner(kfp, spec, endpoints)
    from_package = prof_runner.prepare(package, "same")
    from_function = prof_runner.prepare(training.build(IMAGE), "same")
    assert from_package == from_function
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a pipeline YAML package"):
        prof_runner.prepare(tmp_path / "x.json", "r")
    with pytest.raises(FileNotFoundError):
        prof_runner.prepare(tmp_path / "missing.yaml", "r")
    with pytest.raises(TypeError):
        prof_runner.prepare(object(), "r")


def test_a_pipeline_built_for_another_image_is_sent_as_it_is_with_a_warning(tmp_path, spec, endpoints, kfp, caplog):
    from sandbox.pipelines.config import LOCAL

    submitted, _ = runner(kfp, spec, endpoints).prepare(training.build(LOCAL), "r1")

    assert submitted["deploymentSpec"]["executors"]["exec-train"]["container"]["image"] == LOCAL.base_image
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"step exec-train runs in {LOCAL.base_image}, not in this runner's image {IMAGE.base_image}" in warned[-1]


def test_the_pipelines_scenarios_pipeline_compiles_for_the_project_image(tmp_path):
    package = tmp_path / "pipeline.yaml"
    training.compile_spec(package, PipelinesConfig())  # the default: what the kind profile builds and loads
    spec, platform = load_package(package)
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {"exec-preprocess", "exec-train"}
    for executor in executors.values():
        assert executor["container"]["image"] == PROJECT_IMAGE
        assert "pip install" not in yaml.safe_dump(executor)  # the image has every package: nothing installed
    assert platform == {}


# --------------------------------------------------------------------------- the profiles


@pytest.fixture
def kind_fakes(tmp_path, monkeypatch):
    tools = FakeTools(tmp_path, monkeypatch)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setattr("sandbox.profiles.kind.profile.REPOSITORY", checkout)
    yield tools
    tools.stop_servers(tmp_path / "sb" / "kube" / "forwards")


def test_the_kind_profile_runs_pipelines_on_kfp_through_its_mapped_port_in_its_image(tmp_path, kind_fakes):
    prof = get_profile(load_config(profile="kind", dir=tmp_path / "sb", **{"gpu.real_gpus": "off"}))
    prof.up()
    state = json.loads((tmp_path / "sb" / "kube" / "state.json").read_text())

    pipelines = prof.pipelines()

    assert isinstance(pipelines, KfpPipelineRunner)
    assert pipelines._api() == f"http://127.0.0.1:{state['host_ports']['kfp']}"
    assert pipelines.image.base_image == state["image"]  # the image `up` built and loaded
    assert state["image"].startswith(versions.project_image() + "-")  # tagged by its build context's digest
    assert pipelines.spec.namespace == "ml-sandbox" and pipelines.tools.context == "kind-ml-sandbox"
    assert pipelines.endpoints.mlflow_tracking_uri == f"http://127.0.0.1:{state['host_ports']['mlflow']}"
    configured = get_profile(
        load_config(
            profile="kind",
            dir=tmp_path / "sb",
            **{"gpu.real_gpus": "off", "pipelines.base_image": "python:3.11", "pipelines.packages_to_install": ["x"]},
        )
    )
    assert configured.pipelines().image == PipelinesConfig(base_image="python:3.11", packages_to_install=["x"])


def test_the_cluster_profile_forwards_kfps_api_and_down_stops_the_forward(tmp_path, kind_fakes):
    crds = ["inferenceservices.serving.kserve.io", "certificates.cert-manager.io", "scheduledworkflows.kubeflow.org"]
    objects = {
        f"CustomResourceDefinition//{n}": {"kind": "CustomResourceDefinition", "metadata": {"name": n}} for n in crds
    }
    kind_fakes.seed({"contexts": [CONTEXT], "objects": {CONTEXT: objects}})
    config = load_config(profile="cluster", dir=tmp_path / "sb", **{"cluster.context": CONTEXT})
    prof = get_profile(config)
    prof.up()
    port = json.loads((tmp_path / "sb" / "kube" / "state.json").read_text())["host_ports"]["kfp"]
    pid_file = tmp_path / "sb" / "kube" / "forwards" / "kfp.pid"

    url = prof.pipelines()._api()

    assert url == f"http://127.0.0.1:{port}"
    forward_process = psutil.Process(read_pid_record(pid_file).pid)  # the FAKE kubectl, serving on the port
    forward = ["--context", CONTEXT, "port-forward", "--address", "127.0.0.1", "-n", "kubeflow"]
    assert forward_process.cmdline()[-9:] == [*forward, "svc/ml-pipeline", f"{port}:8888"]
    prof.down()
    assert not pid_file.exists()
    _, alive = psutil.wait_procs([forward_process], timeout=10)
    assert alive == []


@pytest.mark.parametrize(
    ("node", "task"),
    [
        ("wf-abc.root.train.executor", "train"),
        ("wf-abc.root.train.executor(0)", "train"),  # a retried step
        ("wf-abc.root.train-driver", None),
        ("wf-abc.root-driver", None),
        ("", None),
    ],
)
def test_a_pods_task_is_read_from_argos_node_name(node, task):
    from sandbox.profiles.kube.pipelines import _executor_of

    assert _executor_of({"metadata": {"annotations": {NODE_NAME: node}}}) == task
