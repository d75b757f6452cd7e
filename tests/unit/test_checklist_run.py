"""A checklist run on a platform the sandbox does not own: per-run names, the run's tag, clean-up, skip reasons."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sandbox.endpoints import Endpoints
from sandbox.scenarios import Outcome, Scenario, run_scenario
from sandbox.scenarios import artifacts as run_artifacts
from sandbox.scenarios.context import ChecklistRun, ScenarioContext, current_run
from sandbox.scenarios.names import RUN_ID_TAG
from sandbox.scenarios.results import ScenarioResult
from tests.factories import make_endpoints
from tests.scenario_names import name_problems


def _endpoints(*, owned: bool, **extra) -> Endpoints:
    return make_endpoints(
        profile="local" if owned else "remote", postgres_url="", capabilities=["mlflow"], owned=owned, **extra
    )


def _run(func, endpoints, run=None, needs=()):
    item = Scenario(func.__name__, "t", "c", tuple(needs), func, __file__)
    return run_scenario(item, endpoints, lambda: None, run=run)


def test_names_are_per_run_only_where_the_sandbox_does_not_own_the_platform():
    run = ChecklistRun("ab12cd34")
    result = ScenarioResult("n", "t", "c", Outcome.PASSED)
    own = ScenarioContext(_endpoints(owned=True), None, Path("."), result, run=run)
    assert own.scenario_name("registry") == "checklist-registry"  # as today on the local profile
    assert own.unique("tracking").startswith("checklist-tracking-20")  # a time stamp
    shared = ScenarioContext(_endpoints(owned=False), None, Path("."), result, run=run)
    assert shared.scenario_name("registry") == "checklist-registry-ab12cd34"
    assert shared.scenario_name("drift", "monitoring") == "checklist-drift-monitoring-ab12cd34"
    first, second = shared.unique("data-versioning"), shared.unique("data-versioning")
    assert first != second and first.startswith("checklist-data-versioning-ab12cd34-")
    assert all(run_artifacts.owns(name, "ab12cd34") for name in (first, shared.scenario_name("registry")))
    assert not run_artifacts.owns("checklist-registry", "ab12cd34")
    assert not run_artifacts.owns("fraud-ab12cd34", "ab12cd34")  # not prefixed: never the checklist's
    assert not run_artifacts.owns("checklist-registry-ab12cd345", "ab12cd34")
    assert shared.tags == {RUN_ID_TAG: "ab12cd34"}


def test_one_run_per_process_unless_one_is_given():
    assert current_run() is current_run() and len(current_run().run_id) == 8
    assert ChecklistRun().run_id != ChecklistRun().run_id


def test_a_skip_names_what_to_configure():
    endpoints = _endpoints(owned=False, capability_fixes={"serving": "use `profile: local`"})

    def never(ctx):
        raise AssertionError("must not run")

    skipped = _run(never, endpoints, needs=["mlflow", "serving", "gpu"])
    assert skipped.outcome == Outcome.SKIPPED
    assert skipped.reason == "the remote profile lacks serving (use `profile: local`), gpu"


def test_the_scenario_sees_the_run_tag_and_the_credentials_in_its_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_RUN_CONTEXT", json.dumps({"team": "ml"}))
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setattr(run_artifacts, "find", lambda endpoints, run_id: run_artifacts.RunArtifacts(run_id))
    seen = {}

    def looks(ctx):
        seen["context"] = json.loads(os.environ["MLFLOW_RUN_CONTEXT"])
        seen["token"] = os.environ.get("MLFLOW_TRACKING_TOKEN")

    result = _run(looks, _endpoints(owned=False, mlflow_token="t0k"), ChecklistRun("feedbeef"))
    assert result.outcome == Outcome.PASSED, result.reason
    assert seen == {"context": {"team": "ml", RUN_ID_TAG: "feedbeef"}, "token": "t0k"}
    assert json.loads(os.environ["MLFLOW_RUN_CONTEXT"]) == {"team": "ml"} and "MLFLOW_TRACKING_TOKEN" not in os.environ


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    found = run_artifacts.RunArtifacts("c0ffee00", models=["checklist-x-c0ffee00"])
    monkeypatch.setattr(run_artifacts, "find", lambda endpoints, run_id: calls.append(("find", run_id)) or found)
    monkeypatch.setattr(run_artifacts, "tag", lambda endpoints, what: calls.append(("tag", what.run_id)))
    monkeypatch.setattr(run_artifacts, "delete", lambda endpoints, what: calls.append(("delete", what.run_id)))
    return calls


def _passes(ctx):
    ctx.evidence("did its work")


def test_on_a_platform_it_does_not_own_a_run_deletes_what_it_made(recorded):
    result = _run(_passes, _endpoints(owned=False), ChecklistRun("c0ffee00"))
    assert result.outcome == Outcome.PASSED, result.reason
    assert recorded == [("find", "c0ffee00"), ("tag", "c0ffee00"), ("delete", "c0ffee00")]
    assert result.evidence[0] == "did its work"  # the scenario's own evidence stays first in the table
    assert "deleted 0 experiment(s)" in result.evidence[1] and "1 registered model(s)" in result.evidence[1]
    assert result.steps[-1].name == "delete what checklist run c0ffee00 made"


def test_keep_artifacts_tags_and_keeps(recorded):
    result = _run(_passes, _endpoints(owned=False), ChecklistRun("c0ffee00", keep_artifacts=True))
    assert result.outcome == Outcome.PASSED
    assert recorded == [("find", "c0ffee00"), ("tag", "c0ffee00")]
    assert "kept" in result.evidence[1]


def test_on_the_sandboxs_own_stack_nothing_is_deleted(recorded):
    assert _run(_passes, _endpoints(owned=True), ChecklistRun("c0ffee00")).outcome == Outcome.PASSED
    assert recorded == []


def test_a_failed_clean_up_fails_the_scenario(monkeypatch):
    def broken(endpoints, run_id):
        raise ConnectionError("MLflow went away")

    monkeypatch.setattr(run_artifacts, "find", broken)
    result = _run(_passes, _endpoints(owned=False), ChecklistRun("c0ffee00"))
    assert result.outcome == Outcome.FAILED
    assert result.reason == "delete what checklist run c0ffee00 made: ConnectionError: MLflow went away"


def test_the_static_check_follows_the_new_helpers():
    source = """
def scenario_body(ctx):
    ctx.experiment("pipelines")
    ctx.registered_model("fraud-detector")
    ctx.experiment(ctx.scenario_name("ok"))
    ctx.registered_model(ctx.unique("ok"))
"""
    problems = "\n".join(name_problems(source, "s.py"))
    assert "s.py:3: experiment: the name 'pipelines' lacks" in problems
    assert "s.py:4: registered model: the name 'fraud-detector' lacks" in problems
    assert ":5:" not in problems and ":6:" not in problems
