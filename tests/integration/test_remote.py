"""The remote profile against a platform it did not start: a second sandbox, reached only by its URLs and keys.

One target for the module: a sandbox in a directory of its own with a user's
things on it (`fraud-detector` served as `fraud`, an experiment, an object in
each bucket, rows in the inference log). In front of its MLflow sits a proxy
that asks for a bearer token, as a team's staging MLflow would. A `remote`
profile (a sandbox.yaml in another folder; credentials only in environment
variables) points at it: `up` checks and lists capabilities; the checklist
passes what the platform offers and skips what needs deploying, naming what to
configure; a load test runs against the inference URL the config lists; and the
target is afterwards exactly as it was (MLflow through its client, S3, the
inference log, deployments). Bad settings fail `up` with one line per endpoint.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.errors import ExitCode
from sandbox.scenarios import SCENARIO_PREFIX
from sandbox.scenarios.names import RUN_ID_TAG
from tests.servers import ThreadedServer, free_port
from tests.stacks import Stack

pytestmark = pytest.mark.integration

TOKEN = "staging-token-1234"
SKIPPED = {"ab-testing", "gpu-quotas", "retraining", "notebooks"}  # they deploy models, or schedule GPUs
# `make test` runs the scenarios that read the registry, S3 and the inference log through the remote profile, and
# those it must skip; `make nightly` (REMOTE_CHECKLIST=full) the whole checklist (the local one runs it in full).
FULL = os.environ.get("REMOTE_CHECKLIST", "short") == "full"
PASSED = {"tracking", "registry", "data-versioning", "pipelines", "drift"} if FULL else {"registry", "drift"}
FOREIGN = ("SANDBOX_", "MLFLOW_TRACKING_", "ML_SANDBOX_")  # variables the remote CLI must not inherit
USER_MODEL, USER_DEPLOYMENT, USER_EXPERIMENT = "fraud-detector", "fraud", "team-experiments"


def _token_proxy(upstream: str, login: tuple[str, str]) -> Starlette:
    """MLflow behind a bearer token: 401 without the token, otherwise the request as it came, to MLflow, which the
    gateway logs in to itself (``login``: the sandbox's MLflow admin)."""
    client = httpx.AsyncClient(base_url=upstream, timeout=120, auth=login)
    hop = {"host", "authorization", "content-length", "connection", "transfer-encoding"}

    async def forward(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error_code": "UNAUTHENTICATED", "message": "a bearer token is required"}, 401)
        answer = await client.request(
            request.method,
            request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            headers={k: v for k, v in request.headers.items() if k.lower() not in hop},
            content=await request.body(),
        )
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in hop | {"content-encoding"}}
        return Response(answer.content, status_code=answer.status_code, headers=headers)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])


@dataclass
class Target:
    stack: Stack
    mlflow_url: str  # the token proxy in front of its MLflow
    inference_url: str
    env: dict[str, str] = field(default_factory=dict)  # the credentials, by the variable names the config uses


@pytest.fixture(scope="module")
def target(_platform):
    from mlflow import MlflowClient

    stack = _platform.running().with_reference_model(1)  # USER_MODEL
    try:
        endpoints = stack.endpoints()
        uri = endpoints.mlflow_tracking_uri
        client = MlflowClient(uri)
        client.set_registered_model_alias(USER_MODEL, "champion", "1")
        run = client.create_run(client.create_experiment(USER_EXPERIMENT), tags={"mine": "yes"})
        client.set_terminated(run.info.run_id)
        s3 = endpoints.minio_client()
        for bucket in endpoints.buckets:
            s3.put_object(bucket, "team/notes.txt", io.BytesIO(b"ours"), 4)
        import psycopg

        with psycopg.connect(endpoints.monitoring_db_url) as conn:  # a user's logged inference
            conn.execute(
                "INSERT INTO inference_log (event_id, ts, deployment, model_name, model_version, features, prediction)"
                " VALUES (%s, now(), %s, %s, '1', %s, '1')",
                (uuid.uuid4(), USER_DEPLOYMENT, USER_MODEL, [0.1] * 8),
            )
        stack.cli("serve", "deploy", USER_DEPLOYMENT, "--model", f"models:/{USER_MODEL}@champion", "--no-inference-log")
        inference_url = stack.cli("serve", "url", USER_DEPLOYMENT).stdout.strip()
        login = (endpoints.mlflow_username or "", endpoints.mlflow_password or "")
        with ThreadedServer(_token_proxy(uri, login)) as proxy:
            yield Target(
                stack,
                proxy.url,
                inference_url,
                {
                    "TARGET_MLFLOW_TOKEN": TOKEN,
                    "TARGET_S3_ACCESS_KEY": endpoints.s3_access_key,
                    "TARGET_S3_SECRET_KEY": endpoints.s3_secret_key,
                    "TARGET_MONITORING_DB_URL": endpoints.monitoring_db_url,
                    "TARGET_SERVING_TOKEN": endpoints.serving_token,  # its model servers require it
                },
            )
    finally:
        stack.running().cli("serve", "undeploy", USER_DEPLOYMENT, check=False)  # the platform stack goes on


@dataclass
class Remote:
    folder: Path
    env: dict[str, str]

    def cli(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        config = ["--config", str(self.folder / "sandbox.yaml"), "--dir", str(self.folder / ".sandbox")]
        return subprocess.run(
            [sys.executable, "-m", "sandbox", *args, *config],
            capture_output=True,
            text=True,
            cwd=self.folder,
            # Not the developer's own SANDBOX_* (`eval "$(sandbox env)"` exports SANDBOX_PROFILE) nor MLflow login
            # (this session's, for the target's own MLflow): this config and its variables only.
            env={**{k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}, **self.env, **(env or {})},
            timeout=600,
        )


def _remote(folder: Path, target: Target, **overrides: str) -> Remote:
    """A remote profile pointed at the target by URLs; ``overrides`` replace a URL (key: mlflow, s3, kfp, ...)."""
    endpoints = target.stack.endpoints()
    urls = {"mlflow": target.mlflow_url, "s3": endpoints.s3_endpoint_url, "inference": target.inference_url}
    urls.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    kfp = f"  kfp: {{host: {urls['kfp']}}}\n" if "kfp" in urls else ""
    (folder / "sandbox.yaml").write_text(
        "profile: remote\n"
        "remote:\n"
        "  timeout_s: 5\n"
        f"  mlflow: {{tracking_uri: {urls['mlflow']}, token_env: TARGET_MLFLOW_TOKEN}}\n"
        f"  s3: {{endpoint_url: {urls['s3']}, access_key_env: TARGET_S3_ACCESS_KEY, "
        "secret_key_env: TARGET_S3_SECRET_KEY, buckets: [mlflow-artifacts, data]}\n"
        "  monitoring: {db_url_env: TARGET_MONITORING_DB_URL}\n"
        f"{kfp}"
        "  serving: {token_env: TARGET_SERVING_TOKEN}\n"
        f"  inference: {{fraud: {urls['inference']}}}\n"
    )
    return Remote(folder, dict(target.env))


def _snapshot(target: Target) -> dict:
    """What the target holds: active experiments and their runs, models, objects, inference rows, deployments."""
    import psycopg
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    endpoints = target.stack.endpoints()
    client = MlflowClient(endpoints.mlflow_tracking_uri)
    experiments = {e.experiment_id: [e.name, e.tags] for e in client.search_experiments(max_results=1000)}
    runs = client.search_runs(list(experiments), run_view_type=ViewType.ALL, max_results=1000)
    models = {}
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name='{model.name}'")
        models[model.name] = [
            model.tags,
            model.aliases,
            model.last_updated_timestamp,
            sorted((v.version, v.source, v.run_id, v.tags, v.last_updated_timestamp) for v in versions),
        ]
    s3 = endpoints.minio_client()
    objects = {b: {o.object_name: o.etag for o in s3.list_objects(b, recursive=True)} for b in endpoints.buckets}
    with psycopg.connect(endpoints.monitoring_db_url) as conn:
        rows = dict(conn.execute("SELECT model_name, count(*) FROM inference_log GROUP BY 1").fetchall())
    deployments = target.stack.status()["deployments"]
    return {
        "experiments": experiments,
        "runs": sorted(
            [r.info.run_id, r.info.status, r.info.lifecycle_stage, r.data.tags, r.data.metrics] for r in runs
        ),
        "models": models,
        "objects": objects,
        "inference_rows": rows,
        "deployments": {d["name"]: (d["kind"], d["model_uri"], d["state"]) for d in deployments},
    }


@pytest.fixture(scope="module")
def remote(target, tmp_path_factory) -> Remote:
    return _remote(tmp_path_factory.mktemp("remote"), target)


@pytest.fixture(scope="module")
def checklist_run(target, remote):
    """`up`, the checklist and a load test through the remote profile, between two snapshots of the target."""
    before = _snapshot(target)
    deleted_before = {e.experiment_id for e in _deleted_experiments(target)}  # other modules' runs on the platform
    up = remote.cli("up")
    scenarios = ["checklist"] if FULL else ["scenario", "run", *sorted(PASSED | SKIPPED)]
    checklist = remote.cli(*scenarios, "--junit", "junit.xml", "--report", "report")
    loadtest = remote.cli(
        "loadtest", "fraud", "--users", "4", "--duration", "3s", "--slo", "error_rate<1%,p99<2000ms", "--report", "lt"
    )
    return {
        "up": up,
        "checklist": checklist,
        "loadtest": loadtest,
        "before": before,
        "after": _snapshot(target),
        "deleted_by_run": [e for e in _deleted_experiments(target) if e.experiment_id not in deleted_before],
    }


def _deleted_experiments(target: Target) -> list:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(target.stack.endpoints().mlflow_tracking_uri)
    return client.search_experiments(view_type=ViewType.DELETED_ONLY, max_results=1000)


def test_up_checks_each_endpoint_and_lists_the_capabilities(checklist_run, remote):
    up = checklist_run["up"]
    assert up.returncode == 0, up.stderr
    for name in ("MLflow", "S3", "inference log (PostgreSQL)", "inference fraud"):
        assert f"✓ {name}" in up.stderr, up.stderr
    assert "bearer token" in up.stderr  # MLflow was reached through the token proxy, with the token
    assert "offers: mlflow, s3, kfp, postgres, monitoring, inference" in up.stderr
    assert "not offered: serving" in up.stderr and "not offered: gpu" in up.stderr
    assert not (remote.folder / ".sandbox").exists()  # nothing written, nothing started
    status = remote.cli("status")
    assert status.returncode == 0 and "inference fraud" in status.stdout
    assert "stops nothing" in remote.cli("down").stderr


def test_the_checklist_passes_what_the_platform_offers_and_skips_deploying(checklist_run, remote):
    result = checklist_run["checklist"]
    assert result.returncode == 0, result.stdout + result.stderr
    cases = {case.get("name"): case for case in ET.parse(remote.folder / "junit.xml").getroot().iter("testcase")}
    passed = {name for name, case in cases.items() if case.find("failure") is None and case.find("skipped") is None}
    skipped = {
        name: case.find("skipped").get("message") for name, case in cases.items() if case.find("skipped") is not None
    }
    assert passed == PASSED and set(skipped) == SKIPPED, (passed, skipped)
    for name in ("ab-testing", "retraining"):
        assert "lacks serving" in skipped[name] and "profile: local" in skipped[name], skipped[name]
    assert "lacks gpu" in skipped["gpu-quotas"] and "profile: local" in skipped["gpu-quotas"]
    report = (remote.folder / "report" / "checklist.md").read_text()
    assert "drift" in report and "rows predicted here and written by the inference log's writer" in report
    assert "deploying by alias not checked: the remote profile lacks serving" in report
    assert report.count("delete what checklist run") == len(PASSED)  # each scenario cleaned up after itself


def test_a_load_test_runs_against_the_inference_url_in_the_config(checklist_run, remote):
    result = checklist_run["loadtest"]
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((remote.folder / "lt" / "summary.json").read_text())
    assert summary["passed"] and summary["requests"] > 0 and summary["failures"] == 0
    assert summary["environment"]["target"] == "fraud"


def test_the_target_holds_nothing_of_the_run_and_its_own_things_are_unchanged(checklist_run, target):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    before, after = checklist_run["before"], checklist_run["after"]
    assert checklist_run["checklist"].returncode == 0
    assert after == before
    assert USER_MODEL in before["models"] and USER_EXPERIMENT in [n for n, _ in before["experiments"].values()]
    assert before["inference_rows"].get(USER_MODEL, 0) >= 1  # the user's row (and other tests' of the platform)
    assert all("team/notes.txt" in keys for keys in before["objects"].values())
    assert before["deployments"] == {USER_DEPLOYMENT: ("model", f"models:/{USER_MODEL}@champion", "running")}
    # What the run made is deleted as MLflow's API deletes: in the `deleted` stage, prefixed, with the run's tag.
    client = MlflowClient(target.stack.endpoints().mlflow_tracking_uri)
    gone = checklist_run["deleted_by_run"]
    assert {e.name.split("-")[1] for e in gone} >= {name.split("-")[0] for name in PASSED}
    run_ids = {e.tags.get(RUN_ID_TAG) for e in gone}
    assert len(run_ids) == 1 and None not in run_ids
    (run_id,) = run_ids
    for experiment in gone:
        assert experiment.name.startswith(SCENARIO_PREFIX) and run_id in experiment.name
        runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
        assert runs and all(r.data.tags.get(RUN_ID_TAG) == run_id and r.info.lifecycle_stage == "deleted" for r in runs)


def test_bad_settings_fail_up_with_one_line_per_endpoint_and_change_nothing(target, tmp_path):
    before = _snapshot(target)
    closed = f"http://127.0.0.1:{free_port()}"
    bad = _remote(tmp_path / "bad", target, kfp=closed, inference=f"{closed}/v2/models/fraud/infer")
    wrong = {
        "TARGET_MLFLOW_TOKEN": "expired-token",
        "TARGET_S3_ACCESS_KEY": "NOT-A-KEY",
        "TARGET_MONITORING_DB_URL": f"postgresql://mlflow:x@127.0.0.1:{free_port()}/monitoring",
    }
    result = bad.cli("up", env=wrong)
    assert result.returncode == ExitCode.PREFLIGHT, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("remote.")]
    assert [line.split(":")[0] for line in lines] == [
        "remote.mlflow.token_env ($TARGET_MLFLOW_TOKEN)",
        "remote.s3.access_key_env ($TARGET_S3_ACCESS_KEY)",
        "remote.monitoring.db_url_env ($TARGET_MONITORING_DB_URL)",
        "remote.kfp.host",
        "remote.inference.fraud",
    ], result.stderr
    assert "HTTP 401" in lines[0] and "InvalidAccessKeyId" in lines[1]
    assert "expired-token" not in result.stderr and "NOT-A-KEY" not in result.stderr

    wrong_secret = bad.cli("up", env={"TARGET_S3_SECRET_KEY": "not-the-secret"})
    assert wrong_secret.returncode == ExitCode.PREFLIGHT
    assert "remote.s3.secret_key_env ($TARGET_S3_SECRET_KEY): " in wrong_secret.stderr

    unreachable = _remote(tmp_path / "unreachable", target, mlflow=closed, s3=closed).cli("up")
    assert unreachable.returncode == ExitCode.PREFLIGHT
    assert f"remote.mlflow.tracking_uri: MLflow at {closed} is unreachable" in unreachable.stderr
    assert f"remote.s3.endpoint_url: S3 at {closed} is unreachable" in unreachable.stderr

    unset = bad.cli("up", env={"TARGET_S3_SECRET_KEY": ""})
    assert unset.returncode == ExitCode.USAGE
    assert "remote.s3.secret_key_env ($TARGET_S3_SECRET_KEY): the environment variable" in unset.stderr
    assert _snapshot(target) == before
