"""The checklist leaves the user's things alone: every name a scenario creates has the reserved prefix.

Two guards. A static check of every file in `scenarios/`: each place that
names something on the stack (an MLflow experiment or registered model, an S3
key or URL, a deployment, a GPU namespace) gets a name that provably starts
with `SCENARIO_PREFIX`, followed through module constants, local variables and
the scenario's own helper functions; APIs whose default name is a shared one
(`check_drift`'s and `Watcher`'s `monitoring`, `Retrainer`'s `retraining`, the pipeline's
`pipelines`, the reference model's `fraud-detector`) must be given one. And
the runtime guard: `ctx.serving` deploys only prefixed names and
`remove_deployments` removes only what the scenario deployed. The integration
test (tests/integration/test_scenarios.py) proves the rest on a real stack.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from sandbox.scenarios import (
    SCENARIO_PREFIX,
    Outcome,
    Scenario,
    ScenarioFailed,
    is_scenario_name,
    run_scenario,
    scenario_name,
)
from sandbox.scenarios.context import ScenarioContext
from sandbox.scenarios.registry import default_scenarios_dir
from sandbox.scenarios.results import ScenarioResult
from sandbox.serving.specs import DeploymentSpec
from tests.factories import make_endpoints
from tests.scenario_names import callee_of, name_problems

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEPLOYMENT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")  # sandbox/serving/deployments.py


def _scenario_files() -> list[Path]:
    return sorted(p for p in default_scenarios_dir().glob("*.py") if not p.name.startswith("_"))


def test_the_project_has_the_scenario_files_this_checks():
    names = {p.stem for p in _scenario_files()}
    assert {"tracking", "pipelines", "registry", "data_versioning", "ab_testing", "drift", "retraining"} <= names


@pytest.mark.parametrize("path", _scenario_files(), ids=lambda p: p.stem)
def test_every_name_a_scenario_creates_has_the_prefix(path):
    assert name_problems(path.read_text(), str(path)) == []


BROKEN = """
import mlflow
from sandbox.monitoring.checks import check_drift
from sandbox.monitoring.retraining import Retrainer
from sandbox.pipelines import training
from sandbox.serving.reference_model import register_reference_model

MODEL = "fraud-detector"


def _register(ctx, model_name):
    mlflow.set_experiment("scenario-registry")
    mlflow.sklearn.log_model(object(), name="model", registered_model_name=model_name)


def _upload(ctx, key):
    ctx.endpoints.minio_client().fput_object("data", key, "/tmp/x")
    return f"s3://data/{key}"


def scenario_body(ctx):
    _register(ctx, MODEL)
    _upload(ctx, f"retraining/{ctx.unique('x')}/train.csv")
    run = "scenario-1"
    remote = f"s3://data/{run}"
    ctx.serving.deploy(DeploymentSpec.model("fraud", f"models:/{MODEL}/1"))
    ctx.remove_deployments("fraud")
    ctx.mlflow_client().set_registered_model_alias("fraud-detector", "champion", "1")
    check_drift(ctx.endpoints, "checklist-ok", None)
    Retrainer(ctx.endpoints, ctx.workdir)
    register_reference_model(ctx.endpoints.mlflow_tracking_uri, experiment="checklist-x")
    training.pipeline_arguments(model_name=MODEL, experiment="pipelines")
    "a: b".split(": ")  # str.split is not a deployment
    Watcher(ctx.endpoints, None)
"""


def test_the_check_finds_each_kind_of_unprefixed_name():
    problems = "\n".join(name_problems(BROKEN, "broken.py"))
    expected = [
        "broken.py:12: experiment: the name 'scenario-registry' lacks",  # set_experiment literal
        "broken.py:22: registered model: the name 'fraud-detector' lacks",  # through a helper's parameter
        "broken.py:23: S3 key: the name 'retraining/…' lacks",  # through a helper's parameter, an f-string
        "broken.py:25: S3 key: the name 'scenario-1' lacks",  # s3:// URL built from a local variable
        "broken.py:26: deployment: the name 'fraud' lacks",
        "broken.py:27: deployment: the name 'fraud' lacks",
        "broken.py:28: registered model: the name 'fraud-detector' lacks",
        "broken.py:29: check_drift() is given no experiment name",
        "broken.py:30: Retrainer() is given no experiment name",
        "broken.py:31: register_reference_model() is given no registered model name",
        "broken.py:32: experiment: the name 'pipelines' lacks",
        "broken.py:32: registered model: the name 'fraud-detector' lacks",
        "broken.py:34: Watcher() is given no experiment name",
    ]
    for line in expected:
        assert line in problems, f"not reported: {line}\n--- reported:\n{problems}"
    assert "split" not in problems and ":33:" not in problems


def test_the_same_file_with_prefixed_names_passes():
    fixed = (
        BROKEN.replace('"fraud-detector"', 'scenario_name("fraud-detector")')
        .replace('"scenario-registry"', 'scenario_name("registry")')
        .replace('f"retraining/{ctx.unique', 'f"{ctx.unique')
        .replace('"scenario-1"', 'ctx.unique("one")')
        .replace('"fraud"', '"checklist-fraud"')
        .replace(
            'check_drift(ctx.endpoints, "checklist-ok", None)',
            'check_drift(ctx.endpoints, "checklist-ok", None, experiment=E)',
        )
        .replace("Retrainer(ctx.endpoints, ctx.workdir)", "Retrainer(ctx.endpoints, ctx.workdir, experiment=E)")
        .replace("Watcher(ctx.endpoints, None)", "Watcher(ctx.endpoints, None, experiment=E)")
        .replace("mlflow_tracking_uri, experiment=", "mlflow_tracking_uri, MODEL, experiment=")
        .replace('experiment="pipelines"', "experiment=E")
        .replace("MODEL = ", 'E = "checklist-e"\nMODEL = ')
    )
    assert name_problems(fixed, "fixed.py") == []


# --------------------------------------------------------------------------- the prefix and the runtime guard


def test_names_made_by_the_helpers_have_the_prefix_and_fit_where_they_go():
    assert SCENARIO_PREFIX == "checklist-"
    assert scenario_name("ab-testing", "same") == "checklist-ab-testing-same"
    assert is_scenario_name("checklist-x") and not is_scenario_name("checklist-") and not is_scenario_name("fraud")
    with pytest.raises(ValueError):
        scenario_name()
    context = ScenarioContext(None, lambda: None, Path("."), ScenarioResult("n", "t", "c", Outcome.PASSED))
    namespace = context.unique("gpu-quotas")
    assert namespace.startswith("checklist-gpu-quotas-") and DNS_LABEL.match(namespace) and len(namespace) <= 63
    assert context.unique("checklist-tracking").startswith("checklist-tracking-")  # not prefixed twice


@pytest.mark.parametrize("path", _scenario_files(), ids=lambda p: p.stem)
def test_fixed_deployment_names_in_the_scenarios_are_valid_with_room_for_a_variant(path):
    module = ast.parse(path.read_text())
    for node in module.body:
        call = node.value if isinstance(node, ast.Assign) else None
        if isinstance(call, ast.Call) and callee_of(call) == "scenario_name":
            value = scenario_name(*(ast.literal_eval(arg) for arg in node.value.args))
            assert DEPLOYMENT_NAME.match(value) and DEPLOYMENT_NAME.match(f"{value}-a"), value


class FakeServing:
    def __init__(self, existing):
        self.records_ = dict.fromkeys(existing, "record")
        self.calls = []

    def records(self):
        return dict(self.records_)

    def get(self, name):
        return self.records_.get(name)

    def deploy(self, spec):
        self.calls.append(("deploy", spec.name))
        self.records_[spec.name] = "record"

    def undeploy(self, name):
        self.calls.append(("undeploy", name))
        self.records_.pop(name)
        return [name]

    def inference_endpoints(self):
        return {"passed": "through"}


@pytest.fixture
def endpoints():
    return make_endpoints(capabilities=["serving"])


def _run(func, endpoints, serving_factory):
    """Run ``func`` as a scenario (not registered: the project's registry stays as it is)."""
    return run_scenario(Scenario(func.__name__, "t", "c", (), func, __file__), endpoints, serving_factory)


def test_a_scenario_cannot_deploy_over_a_users_deployment(endpoints):
    backend = FakeServing(["fraud"])

    def deploys_a_users_name(ctx):
        ctx.serving.deploy(DeploymentSpec.model("fraud", "models:/checklist-x/1"))

    result = _run(deploys_a_users_name, endpoints, lambda: backend)
    assert result.outcome == Outcome.FAILED and "'checklist-'" in result.reason and "'fraud'" in result.reason
    assert backend.calls == []


def test_clean_up_removes_only_what_the_scenario_deployed(endpoints):
    backend = FakeServing(["fraud", "checklist-leftover"])

    def deploys_and_cleans_up(ctx):
        ctx.serving.deploy(DeploymentSpec.model("checklist-mine", "models:/checklist-x/1"))
        ctx.serving.deploy(DeploymentSpec.split("checklist-split", []))
        assert ctx.serving.inference_endpoints() == {"passed": "through"}
        ctx.remove_deployments("checklist-mine", "checklist-split", "checklist-leftover", "fraud", "checklist-gone")
        with pytest.raises(ScenarioFailed):
            ctx.serving.undeploy("fraud")

    result = _run(deploys_and_cleans_up, endpoints, lambda: backend)
    assert result.outcome == Outcome.PASSED, result.reason
    assert set(backend.records_) == {"fraud", "checklist-leftover"}
    assert ("undeploy", "checklist-mine") in backend.calls and ("undeploy", "checklist-split") in backend.calls


def test_clean_up_after_a_failed_deploy_and_with_nothing_deployed(endpoints):
    class Failing(FakeServing):
        def deploy(self, spec):
            self.records_[spec.name] = "half-made"
            raise RuntimeError("the model server did not start")

    backend = Failing(["fraud"])

    def fails_half_way(ctx):
        try:
            ctx.serving.deploy(DeploymentSpec.model("checklist-mine", "models:/checklist-x/1"))
        finally:
            ctx.remove_deployments("checklist-mine")

    result = _run(fails_half_way, endpoints, lambda: backend)
    assert result.outcome == Outcome.FAILED and set(backend.records_) == {"fraud"}

    def never_deploys(ctx):
        ctx.remove_deployments("fraud")

    def no_backend():
        raise AssertionError("clean-up with nothing deployed must not need serving")

    assert _run(never_deploys, endpoints, no_backend).outcome == Outcome.PASSED
