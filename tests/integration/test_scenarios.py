"""The production checklist on a real stack that a user also uses, then on a broken one.

Before the checklist runs, the stack gets a user's things: `fraud-detector` with
two versions, a `champion` alias, tags and a description; experiments named as
`sandbox monitor` and the pipeline name theirs; a deployment; an object in the
`data` bucket. After it, all of them are exactly as they were, and everything
new is named with the reserved prefix (`sandbox.scenarios.SCENARIO_PREFIX`).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

import psutil
import pytest

from sandbox.errors import ExitCode
from sandbox.scenarios import SCENARIO_PREFIX

pytestmark = pytest.mark.integration

CHECKLIST = [
    "tracking",
    "pipelines",
    "registry",
    "data-versioning",
    "ab-testing",
    "gpu-quotas",
    "drift",
    "retraining",
    "notebooks",
]

USER_MODEL = "fraud-detector"  # the name the README tells users to give their model
USER_EXPERIMENTS = ["monitoring", "retraining", "pipelines"]  # `sandbox monitor`'s and the pipeline's defaults
USER_DEPLOYMENT = "fraud"
USER_KEY = "fraud/train.csv"
DATA_BUCKET = "data"


def _registered_model_dump(client, name: str) -> str:
    """Everything the registry says about one model and its versions, as canonical JSON."""
    model = client.get_registered_model(name)
    versions = []
    for found in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        v = client.get_model_version(name, found.version)
        versions.append(
            {
                "version": v.version,
                "source": v.source,
                "run_id": v.run_id,
                "tags": v.tags,
                "aliases": sorted(v.aliases),
                "description": v.description,
                "status": v.status,
                "status_message": v.status_message,
                "current_stage": v.current_stage,
                "user_id": v.user_id,
                "model_id": v.model_id,
                "creation_timestamp": v.creation_timestamp,
                "last_updated_timestamp": v.last_updated_timestamp,
            }
        )
    return json.dumps(
        {
            "name": model.name,
            "description": model.description,
            "tags": model.tags,
            "aliases": model.aliases,
            "creation_timestamp": model.creation_timestamp,
            "last_updated_timestamp": model.last_updated_timestamp,
            "versions": versions,
        },
        sort_keys=True,
    )


def _registered_model_names(client) -> set[str]:
    names, token = set(), None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        names |= {m.name for m in page}
        token = page.token
        if not token:
            return names


def _experiments(client) -> dict[str, list[str]]:
    """Every experiment, deleted ones too: name → [id, lifecycle stage]."""
    from mlflow.entities import ViewType

    found = client.search_experiments(view_type=ViewType.ALL, max_results=50000)
    return {e.name: [e.experiment_id, e.lifecycle_stage] for e in found}


def _runs(client, experiment_ids: list[str]) -> str:
    """The runs in these experiments (id, experiment, status, end time, tags, metrics), as canonical JSON."""
    from mlflow.entities import ViewType

    runs = client.search_runs(experiment_ids, run_view_type=ViewType.ALL, max_results=50000)
    return json.dumps(
        sorted(
            [r.info.run_id, r.info.experiment_id, r.info.status, r.info.end_time, r.data.tags, r.data.metrics]
            for r in runs
        ),
        sort_keys=True,
    )


def _data_objects(stack) -> dict[str, str]:
    endpoints = stack.endpoints()
    return {o.object_name: o.etag for o in endpoints.minio_client().list_objects(DATA_BUCKET, recursive=True)}


def _snapshot(stack) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(stack.endpoints().mlflow_tracking_uri)
    experiments = _experiments(client)
    return {
        "model": _registered_model_dump(client, USER_MODEL),
        "models": _registered_model_names(client),
        "experiments": experiments,
        "runs": _runs(client, [experiment_id for experiment_id, _ in experiments.values()]),
        "objects": _data_objects(stack),
        "deployments": {d["name"]: (d["kind"], d["model_uri"]) for d in stack.status()["deployments"]},
    }


@pytest.fixture
def checklist_stack(platform):
    return platform


@pytest.fixture(scope="module")
def checklist_run(_platform, tmp_path_factory):
    """The user's things, the checklist run once beside them, and a snapshot before and after."""
    from mlflow import MlflowClient

    checklist_stack = _platform.running().with_reference_model(2)  # USER_MODEL: versions 1 and 2
    endpoints = checklist_stack.endpoints()
    uri = endpoints.mlflow_tracking_uri
    client = MlflowClient(uri)
    client.set_registered_model_alias(USER_MODEL, "champion", "1")
    client.set_registered_model_tag(USER_MODEL, "owner", "a-user")
    client.set_model_version_tag(USER_MODEL, "1", "validation", "approved")
    client.update_registered_model(USER_MODEL, description="the user's own model")
    for name in USER_EXPERIMENTS:  # another module of the platform stack may have made one (`sandbox monitor`)
        experiment = client.get_experiment_by_name(name)
        run = client.create_run(
            experiment.experiment_id if experiment else client.create_experiment(name), tags={"mine": "yes"}
        )
        client.set_terminated(run.info.run_id)
    content = b"f0,label\n1,0\n"
    endpoints.minio_client().put_object(DATA_BUCKET, USER_KEY, io.BytesIO(content), len(content))
    checklist_stack.cli("serve", "deploy", USER_DEPLOYMENT, "--model", f"models:/{USER_MODEL}@champion")

    before = _snapshot(checklist_stack)
    out = tmp_path_factory.mktemp("checklist-run")
    junit, report = out / "junit.xml", out / "report"
    result = checklist_stack.cli("checklist", "--junit", str(junit), "--report", str(report), check=False)
    return result, junit, report, before, _snapshot(checklist_stack)


def test_the_checklist_passes_and_writes_reports(checklist_stack, checklist_run):
    result, junit, report, _, _ = checklist_run
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CHECKLIST:
        assert f"scenario {name}:" in result.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "0" and suite.get("skipped") == "0"
    assert {case.get("name") for case in suite.iter("testcase")} == set(CHECKLIST)
    page = (report / "checklist.html").read_text()
    assert f"{len(CHECKLIST)} passed" in page and "#/experiments/" in page  # links to the MLflow runs
    # The notebooks scenario attaches the executed notebooks, outputs and all.
    executed = report / "attachments" / "notebooks" / "02-pipeline-deploy-loadtest.ipynb"
    assert '"output_type"' in executed.read_text() and executed.name in page
    assert "s3://mlflow-artifacts/" in (report / "checklist.md").read_text()  # tracking's evidence
    # Scenarios clean up after themselves: no deployment of theirs is left behind, the user's runs on.
    deployments = {d["name"]: d["state"] for d in checklist_stack.status()["deployments"]}
    assert deployments == {USER_DEPLOYMENT: "running"}


def test_the_checklist_leaves_the_users_things_alone(checklist_run):
    _, _, _, before, after = checklist_run
    # The user's model: not a version added, not an alias moved, not a tag or timestamp changed.
    assert after["model"] == before["model"]
    assert '"aliases": {"champion": "1"}' in before["model"] and '"version": "2"' in before["model"]
    # "Before" may hold the checklist's own things too (another test of this stack ran scenarios first):
    # what must not change is the user's, everything without the prefix.
    experiments = {name: ids for name, ids in before["experiments"].items() if not name.startswith(SCENARIO_PREFIX)}
    # Everything new is the checklist's, by its prefix; nothing of the user's is gone.
    new_models = after["models"] - before["models"]
    assert new_models and all(name.startswith(SCENARIO_PREFIX) for name in new_models), sorted(new_models)
    assert _users(before["models"]) <= after["models"]
    new_experiments = set(after["experiments"]) - set(before["experiments"])
    assert new_experiments and all(name.startswith(SCENARIO_PREFIX) for name in new_experiments), new_experiments
    assert {name: after["experiments"][name] for name in experiments} == experiments
    # No run was added to or changed in an experiment of the user's ("monitoring", "Default", ...).
    assert _runs_of(after, experiments) == _runs_of(before, experiments)
    # S3: the user's object is unchanged; every new key in the data bucket is under the prefix.
    users_objects = {key: etag for key, etag in before["objects"].items() if not key.startswith(SCENARIO_PREFIX)}
    assert {key: after["objects"].get(key) for key in users_objects} == users_objects
    assert USER_KEY in users_objects
    new_keys = set(after["objects"]) - set(before["objects"])
    assert new_keys and all(key.startswith(SCENARIO_PREFIX) for key in new_keys), sorted(new_keys)[:10]
    # The user's deployment is the same deployment.
    assert (
        after["deployments"] == before["deployments"] == {USER_DEPLOYMENT: ("model", f"models:/{USER_MODEL}@champion")}
    )


def _users(names) -> set[str]:
    """The names that are not the checklist's."""
    return {name for name in names if not name.startswith(SCENARIO_PREFIX)}


def _runs_of(snapshot: dict, experiments: dict[str, list[str]]) -> str:
    wanted = {experiment_id for experiment_id, _ in experiments.values()}
    return json.dumps([run for run in json.loads(snapshot["runs"]) if run[1] in wanted], sort_keys=True)


def test_with_s3_stopped_tracking_fails_naming_s3_and_the_rest_still_report(checklist_stack, tmp_path):
    junit = tmp_path / "broken.xml"
    with checklist_stack.supervisor_paused():  # S3 stays down; `up` brings it back after, whatever happened
        s3_pid = checklist_stack.pids()["s3"]
        os.kill(s3_pid, signal.SIGTERM)
        psutil.wait_procs([psutil.Process(s3_pid)], timeout=15)
        result = checklist_stack.cli("scenario", "run", "tracking", "registry", "--junit", str(junit), check=False)
    assert result.returncode == ExitCode.FAILED
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"tracking", "registry"}  # the runner went on after the first failure
    tracking_failure = cases["tracking"].find("failure").get("message")
    assert "S3 at http://127.0.0.1:" in tracking_failure
    assert cases["registry"].find("failure") is not None
    # `sandbox up` brought S3 back, and the checklist item passes again.
    assert checklist_stack.cli("scenario", "run", "tracking", check=False).returncode == 0


def test_with_mlflow_stopped_the_notebooks_fail_naming_notebook_cell_and_error(checklist_stack, tmp_path):
    junit = tmp_path / "no-mlflow.xml"
    with checklist_stack.supervisor_paused():  # MLflow stays down; `up` brings it back after
        mlflow_pid = checklist_stack.pids()["mlflow"]
        os.killpg(mlflow_pid, signal.SIGTERM)  # the server and its uvicorn worker
        psutil.wait_procs([psutil.Process(mlflow_pid)], timeout=30)
        result = checklist_stack.cli("scenario", "run", "notebooks", "gpu-quotas", "--junit", str(junit), check=False)
    assert result.returncode == ExitCode.FAILED
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"notebooks", "gpu-quotas"}  # the runner went on after the failure
    assert cases["gpu-quotas"].find("failure") is None  # it needs no MLflow: it still passes
    message = cases["notebooks"].find("failure").get("message")
    assert "01-explore-track-register.ipynb, code cell " in message, message
    assert "connection refused" in message.lower(), message


def test_scenario_list_and_unknown_names(checklist_stack):
    listed = subprocess.run(
        [sys.executable, "-m", "sandbox", "scenario", "list"], capture_output=True, text=True, check=True
    ).stdout
    for name in CHECKLIST:
        assert name in listed
    unknown = checklist_stack.cli("scenario", "run", "nope", check=False)
    assert unknown.returncode == ExitCode.USAGE and "unknown scenario" in unknown.stderr
    assert json.loads(checklist_stack.cli("status", "--json").stdout)["state"] == "running"
