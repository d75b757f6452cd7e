"""Pipelines that can run anywhere, and the pipeline runner.

The compile check: the training pipeline compiled for the cluster image holds
no local path, each component's code imports only what the image has (never
`sandbox`), and the image and packages are the configured ones. The runner:
real pipelines through `kfp.local` (subprocesses of this Python), against an
MLflow in a SQLite file: a tiny one for what an outcome says (outputs, the
MLflow runs a pipeline made, state and log on failure, where its folder goes),
and the training pipeline itself, run from the YAML compiled for the cluster
image, reading its data by a `runs:/` URI and logging the reference drift
checks read.
"""

# No `from __future__ import annotations`: KFP reads the components' real signatures.
import ast
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl

from sandbox.endpoints import Endpoints
from sandbox.errors import ConfigError, NotRunningError
from sandbox.pipelines import training
from sandbox.pipelines.config import COMPONENT_PACKAGES, LOCAL, PROJECT_IMAGE, PipelinesConfig
from sandbox.pipelines.runner import (
    PIPELINE_RUN_TAG,
    LocalPipelineRunner,
    PipelineFailed,
    PipelineRunner,
    PipelineState,
)
from tests.factories import make_endpoints

REPO = Path(__file__).resolve().parents[2]
# What a component may import besides the standard library: what the image has (sandbox.pipelines.config).
IMAGE_MODULES = {"kfp", "mlflow", "sklearn", "pandas", "boto3", "botocore"}
LOCAL_PATH = re.compile(r"^(~|\.{1,2})?/[\w.-]")  # /x, ~/x, ./x, ../x


def _endpoints(tracking_uri: str, **extra) -> Endpoints:
    return make_endpoints(
        mlflow_tracking_uri=tracking_uri,
        s3_endpoint_url="",
        s3_access_key="",
        s3_secret_key="",
        postgres_url="",
        **extra,
    )


# --------------------------------------------------------------------------- compiling for a cluster


def _executors(spec: Path) -> dict[str, dict]:
    return {name: e["container"] for name, e in yaml.safe_load(spec.read_text())["deploymentSpec"]["executors"].items()}


def _imports(program: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(program)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def _strings(program: str) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(program)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_the_pipeline_compiled_for_the_cluster_image_holds_no_local_path_and_no_sandbox_import(tmp_path):
    spec = tmp_path / "pipeline.yaml"
    training.compile_spec(spec, PipelinesConfig())  # the default: the project's image
    text = spec.read_text()
    for local in {str(REPO), str(Path.home()), str(tmp_path), tempfile.gettempdir() + "/", sys.prefix}:
        assert local not in text, f"{local} is in the compiled pipeline"

    executors = _executors(spec)
    assert set(executors) == {"exec-preprocess", "exec-train"}
    for name, container in executors.items():
        assert container["image"] == PROJECT_IMAGE
        assert "pip install" not in " ".join(container["command"]), f"{name} installs packages its image has"
        program = container["command"][-1]  # the component's source, as KFP runs it
        imported = _imports(program)
        assert "sandbox" not in imported, f"{name} imports the sandbox package"
        third_party = imported - set(sys.stdlib_module_names)
        assert third_party <= IMAGE_MODULES, f"{name} imports {third_party - IMAGE_MODULES}, which its image lacks"
        assert not [value for value in _strings(program) if LOCAL_PATH.match(value)], f"{name} holds a path"

    parameters = yaml.safe_load(text)["root"]["inputDefinitions"]["parameters"]
    assert "data_uri" in parameters and not {"data_path", "processed_path"} & set(parameters)
    defaults = [p.get("defaultValue") for p in parameters.values()]
    assert not [d for d in defaults if isinstance(d, str) and LOCAL_PATH.match(d)]


def test_the_base_image_and_packages_come_from_the_setting(tmp_path):
    stock = PipelinesConfig(base_image="python:3.11", packages_to_install=COMPONENT_PACKAGES)
    spec = tmp_path / "stock.yaml"
    training.compile_spec(spec, stock)
    for container in _executors(spec).values():
        assert container["image"] == "python:3.11"
        script = " ".join(container["command"])
        assert all(f"'{package}'" in script for package in COMPONENT_PACKAGES)
        assert "'kfp==" in script  # a stock image lacks KFP's SDK too
    assert any(package.startswith("mlflow==") for package in COMPONENT_PACKAGES)  # this environment's versions
    # kfp.local needs nothing installed and a Python image's name; the config section takes either.
    assert LOCAL.base_image.startswith("python:") and not LOCAL.packages_to_install
    assert LOCAL.component_options()["install_kfp_package"] is False


def test_the_pipelines_section_of_the_config(monkeypatch):
    from sandbox.config import load_config

    assert load_config().pipelines.base_image == PROJECT_IMAGE
    monkeypatch.setenv("SANDBOX_PIPELINES__BASE_IMAGE", "registry.example.com/team/ml:2")
    assert load_config().pipelines.base_image == "registry.example.com/team/ml:2"
    monkeypatch.setenv("SANDBOX_PIPELINES__COLOUR", "blue")
    with pytest.raises(ConfigError):
        load_config()


def test_components_and_arguments_refuse_local_paths(tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("f0,label\n1,1\n")
    with pytest.raises(ValueError, match="no local path"):
        training.preprocess(str(data), "", cleaned=None)  # the component's function, called as Python
    with pytest.raises(ValueError, match="s3://"):
        training.pipeline_arguments(
            data_uri=str(data),
            model_name="m",
            seed=1,
            tracking_uri="",
            spec_sha256="",
            data_version="",
        )


def test_the_train_component_logs_the_reference_in_the_format_drift_checks_read():
    import inspect

    from sandbox.serving import reference

    source = inspect.getsource(training.train)
    for value in (reference.REFERENCE_ARTIFACT, reference.PREDICTION_COLUMN, str(reference.MAX_REFERENCE_ROWS)):
        assert repr(value) in source or value in source, value


# --------------------------------------------------------------------------- the runner, with a tiny pipeline


def double(number: int) -> int:
    return number * 2


def log_run(value: int, tracking_uri: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("runner-test")
    with mlflow.start_run() as run:
        mlflow.log_metric("value", value)
    return run.info.run_id


def fail(number: int, message: str) -> int:
    raise RuntimeError(f"{message} {number}")


_double = dsl.component(double, **LOCAL.component_options())
_log_run = dsl.component(log_run, **LOCAL.component_options())
_fail = dsl.component(fail, **LOCAL.component_options())


@dsl.pipeline(name="tiny")
def tiny(number: int, tracking_uri: str) -> str:
    doubled = _double(number=number)
    return _log_run(value=doubled.output, tracking_uri=tracking_uri).output


@dsl.pipeline(name="tiny-plain")
def tiny_plain(number: int) -> int:
    return _double(number=number).output


@dsl.pipeline(name="tiny-fails")
def tiny_fails(number: int) -> int:
    doubled = _double(number=number)
    return _fail(number=doubled.output, message="boom-marker").output


def test_a_pipeline_that_succeeds_gives_its_outputs_and_the_mlflow_runs_it_made(tmp_path, mlflow_db):
    from mlflow import MlflowClient

    uri = mlflow_db  # a new sqlite store in tmp_path (tests/unit/conftest.py)
    runner = LocalPipelineRunner(_endpoints(uri), tmp_path / "runs")
    assert isinstance(runner, PipelineRunner) and runner.image == LOCAL
    environment = dict(os.environ)

    outcome = runner.run(tiny, {"number": 21, "tracking_uri": uri})

    assert outcome.state == PipelineState.SUCCEEDED and outcome.succeeded, outcome.describe()
    made = outcome.outputs["Output"]
    assert outcome.mlflow_run_ids == [made]
    run = MlflowClient(uri).get_run(made)
    assert run.data.metrics["value"] == 42 and run.data.tags[PIPELINE_RUN_TAG] == outcome.run_id
    assert outcome.pipeline == "tiny" and outcome.error == "" and outcome.log_tail == ""
    log = Path(outcome.log)
    assert log.parent.parent == tmp_path / "runs" and "double" in log.read_text()  # kept under the root
    assert dict(os.environ) == environment  # the steps' settings were for the run only
    assert outcome.raise_for_state() is outcome
    # Its steps ran as forks of the runner's warm interpreter, which the next run reuses.
    again = runner.run(tiny, {"number": 1, "tracking_uri": uri})
    runner.close()
    warm_log = next((tmp_path / "runs").glob(".warm-*/warm.log")).read_text()
    assert again.succeeded and warm_log.count("ran kfp.dsl.executor_main as pid") == 4, warm_log  # 2 steps a run


def test_a_failing_step_fails_the_outcome_with_the_log_tail_and_keeps_the_log(mlflow_db):
    runner = LocalPipelineRunner(_endpoints(mlflow_db), root=None)

    outcome = runner.run(tiny_fails, {"number": 2})

    assert outcome.state == PipelineState.FAILED and not outcome.succeeded
    assert "fail" in outcome.error and "FAILURE" in outcome.error and "\x1b[" not in outcome.error
    assert "boom-marker 4" in outcome.log_tail and "\x1b[" not in outcome.log_tail
    assert outcome.outputs == {} and outcome.mlflow_run_ids == []
    assert Path(outcome.log).is_file()  # a temporary folder, kept for the log
    assert f"log: {outcome.log}" in outcome.describe()
    with pytest.raises(PipelineFailed) as failed:
        outcome.raise_for_state()
    assert outcome.log in failed.value.hint and "boom-marker 4" in failed.value.details
    shutil.rmtree(Path(outcome.log).parent)


def test_without_a_root_a_successful_run_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # mkdtemp reads TMPDIR again
    outcome = LocalPipelineRunner(_endpoints(""), root=None).run(tiny_plain, {"number": 4})
    assert outcome.succeeded and outcome.outputs == {"Output": 8} and outcome.log is None
    assert outcome.mlflow_run_ids == []  # no MLflow to ask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("sandbox-pipeline-")]


def test_without_a_root_a_run_that_raises_leaves_no_folder_behind(tmp_path, monkeypatch):
    """No outcome names its folder then (arguments the pipeline does not take: kfp raises before any step)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(TypeError):
        LocalPipelineRunner(_endpoints(""), root=None).run(tiny_plain, {"number": 4, "unknown": 1})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("sandbox-pipeline-")]


def test_a_compiled_package_runs_and_anything_else_is_refused(tmp_path):
    runner = LocalPipelineRunner(_endpoints(""), tmp_path / "runs")
    with pytest.raises(FileNotFoundError):
        runner.run(tmp_path / "missing.yaml", {})
    with pytest.raises(TypeError):
        runner.run(double, {"number": 1})  # a plain function is not a pipeline
    package = tmp_path / "tiny-fails.yaml"
    compiler.Compiler().compile(tiny_fails, str(package))
    outcome = runner.run(package, {"number": 5})
    assert outcome.pipeline == "tiny-fails" and "boom-marker 10" in outcome.log_tail


# --------------------------------------------------------------------------- the training pipeline, for real


def test_the_training_pipeline_compiled_for_the_cluster_reads_a_uri_and_logs_a_loadable_reference(tmp_path, mlflow_db):
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from sandbox.serving.reference import load_reference

    uri = mlflow_db
    client = MlflowClient(uri)
    experiment = client.create_experiment("checklist-unit", artifact_location=str(tmp_path / "artifacts"))
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(200, 3)).round(5), columns=["f0", "f1", "f2"])
    frame["label"] = (frame["f0"] > 0).astype(int)
    frame.loc[:9, "f2"] = np.nan
    data = tmp_path / "train.csv"
    frame.to_csv(data, index=False)
    data_run = client.create_run(experiment)
    client.log_artifact(data_run.info.run_id, str(data), "data")

    spec = tmp_path / "pipeline.yaml"
    spec_sha256 = training.compile_spec(spec, PipelinesConfig())  # the cluster's image: kfp.local runs it all the same
    runner = LocalPipelineRunner(_endpoints(uri), tmp_path / "runs")
    outcome = runner.run(
        spec,
        training.pipeline_arguments(
            data_uri=f"runs:/{data_run.info.run_id}/data/train.csv",
            model_name="checklist-unit-model",
            seed=7,
            tracking_uri=uri,
            spec_sha256=spec_sha256,
            data_version=training.data_version(data),
            experiment="checklist-unit",
        ),
    )

    assert outcome.succeeded, outcome.describe() + "\n" + Path(outcome.log).read_text()[-3000:]
    output = outcome.outputs
    assert output["rows"] == 190 and output["version"] == "1" and 0.5 < output["accuracy"] <= 1
    assert outcome.mlflow_run_ids == [output["run_id"]]
    tags = client.get_run(output["run_id"]).data.tags
    assert tags["pipeline_spec_sha256"] == spec_sha256 and tags["data_version"] == training.data_version(data)
    assert client.get_model_version("checklist-unit-model", "1").run_id == output["run_id"]
    reference = load_reference(client, "checklist-unit-model", "1")
    assert reference.feature_names == ["f0", "f1", "f2"] and reference.rows == 190 - math.ceil(0.25 * 190)


# --------------------------------------------------------------------------- the profiles and the scenario context


def test_each_profile_offers_its_pipeline_runner_or_says_why_not(tmp_path, monkeypatch):
    from sandbox.config import load_config
    from sandbox.profiles import PROFILES, get_profile

    assert all(not getattr(cls.pipelines, "__isabstractmethod__", False) for cls in PROFILES.values())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotRunningError, match="no kind sandbox"):  # KFP's runner needs the stack it ran up
        get_profile(load_config(profile="kind")).pipelines()
    with pytest.raises(NotRunningError):
        get_profile(load_config(profile="local", dir=tmp_path / "none")).pipelines()

    (tmp_path / "sandbox.yaml").write_text("profile: remote\nremote:\n  mlflow: {tracking_uri: 'http://127.0.0.1:9'}\n")
    remote = get_profile(load_config()).pipelines()
    assert isinstance(remote, LocalPipelineRunner) and remote.root is None  # writes nothing to the sandbox dir
    assert remote.endpoints.mlflow_tracking_uri == "http://127.0.0.1:9"
    (tmp_path / "sandbox.yaml").write_text(
        "profile: remote\nremote:\n  inference: {m: 'http://127.0.0.1:9/v2/models/m/infer'}\n"
    )
    with pytest.raises(ConfigError, match="without an MLflow"):
        get_profile(load_config()).pipelines()


def test_the_scenario_context_makes_the_runner_once_and_only_when_used():
    from sandbox.scenarios import Outcome, ScenarioFailed
    from sandbox.scenarios.context import ScenarioContext
    from sandbox.scenarios.results import ScenarioResult

    made = []

    def factory():
        made.append(1)
        return "runner"

    result = ScenarioResult("n", "t", "c", Outcome.PASSED)
    context = ScenarioContext(None, lambda: None, Path("."), result, pipelines_factory=factory)
    assert made == []
    assert context.pipelines == "runner" and context.pipelines == "runner" and made == [1]
    with pytest.raises(ScenarioFailed, match="no pipeline runner"):
        ScenarioContext(None, lambda: None, Path("."), result).pipelines  # noqa: B018


def test_the_retrainer_hands_the_pipeline_a_uri_putting_a_local_file_on_s3_first(tmp_path, monkeypatch):
    from sandbox.monitoring.retraining import Retrainer

    put = []

    class FakeS3:
        def fput_object(self, bucket, key, path):
            put.append((bucket, key, Path(path).read_text()))

    monkeypatch.setattr(Endpoints, "minio_client", lambda self: FakeS3())
    copy = tmp_path / "train-20260101-000000-abcdef.csv"
    copy.write_text("f0,label\n1,1\n")
    with_s3 = _endpoints("http://127.0.0.1:1").model_copy(update={"s3_endpoint_url": "http://127.0.0.1:2"})
    retrainer = Retrainer(with_s3, tmp_path / "work")
    assert isinstance(retrainer.pipelines, LocalPipelineRunner)  # no runner given: kfp.local on the endpoints
    assert retrainer.stage("s3://data/team/train.csv", copy, "fraud") == "s3://data/team/train.csv" and put == []
    uri = retrainer.stage("train.csv", copy, "fraud")
    assert uri == f"s3://data/retraining/fraud/{copy.name}"
    assert put == [("data", f"retraining/fraud/{copy.name}", "f0,label\n1,1\n")]
    with pytest.raises(ConfigError, match="local file with no S3"):
        Retrainer(_endpoints("http://127.0.0.1:1"), tmp_path / "work").stage("train.csv", copy, "fraud")
