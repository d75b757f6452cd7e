"""The inference log, drift checks and their CLI on a real stack; restarts lose no logged inference."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import psutil
import pytest

from sandbox.errors import ExitCode
from sandbox.monitoring.inference_log import InferenceLogStore, wait_for_rows
from sandbox.serving.reference_model import synthetic_data
from sandbox.state import port_is_free

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    """A stack with the reference model (v1, with its training reference) served as `fd`."""
    from sandbox.serving.reference_model import register_reference_model
    from tests.integration.conftest import Stack

    stack = Stack(tmp_path_factory.mktemp("monitoring") / "sandbox")
    stack.cli("up")
    try:
        register_reference_model(stack.endpoints().mlflow_tracking_uri, MODEL, n_estimators=20, seed=0)
        stack.cli("serve", "deploy", "fd", "--model", f"models:/{MODEL}/1")
        yield stack
    finally:
        stack.cli("down", "--purge", check=False)


def _store(stack) -> InferenceLogStore:
    return InferenceLogStore(stack.endpoints().monitoring_db_url)


def _send(stack, rows, *, per_request: int = 10, deployment: str = "fd") -> int:
    url = stack.endpoints().inference[deployment].v1_predict
    with httpx.Client(timeout=30, trust_env=False) as client:
        for start in range(0, len(rows), per_request):
            response = client.post(url, json={"instances": rows[start : start + per_request]})
            assert response.status_code == 200, response.text
    return len(rows)


def _rows(count: int, seed: int, **shift) -> list[list[float]]:
    return synthetic_data(count, seed=seed, **shift)[0].round(4).values.tolist()


def _deployment_pid(stack, name: str) -> int:
    return next(d["pid"] for d in stack.status()["deployments"] if d["name"] == name)


def _terminate(pid: int, *, postgres: bool = False) -> None:
    """Stop a service as `sandbox down` does (PostgreSQL: SIGINT, its fast shutdown); wait until it is gone."""
    if postgres:
        os.kill(pid, signal.SIGINT)
    else:
        os.killpg(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs([psutil.Process(pid)], timeout=30)
    assert not alive, f"pid {pid} did not stop"


def test_every_answered_row_is_logged_with_its_model_version(monitored):
    store = _store(monitored)
    since = datetime.now(UTC)
    sent = _send(monitored, _rows(30, seed=1), per_request=3)
    assert wait_for_rows(store, sent, model_name=MODEL, since=since) == sent
    features, predictions = store.window(MODEL, "1", since=since)
    assert features.shape == (30, 8) and len(predictions) == 30
    assert store.latest_version(MODEL) == "1"
    # The model server reports its writer on /metrics.
    metrics = httpx.get(f"{monitored.endpoints().inference['fd'].url}/metrics", trust_env=False).text
    assert "inference_log_rows_written_total" in metrics


def test_a_split_logs_the_variant_and_version_that_answered(monitored):
    from sandbox.serving.reference_model import register_reference_model

    register_reference_model(monitored.endpoints().mlflow_tracking_uri, MODEL, n_estimators=20, seed=1)
    monitored.cli(
        "serve", "split", "ab", "--variant", f"a=models:/{MODEL}/1:50", "--variant", f"b=models:/{MODEL}/2:50"
    )
    try:
        since = datetime.now(UTC)
        sent = _send(monitored, _rows(200, seed=2), per_request=1, deployment="ab")
        store = _store(monitored)
        assert wait_for_rows(store, sent, model_name=MODEL, since=since) == sent
        import psycopg

        with psycopg.connect(monitored.endpoints().monitoring_db_url) as conn:
            pairs = dict(
                conn.execute(
                    "SELECT variant, array_agg(DISTINCT model_version) FROM inference_log "
                    "WHERE ts >= %s AND deployment LIKE 'ab-%%' GROUP BY variant",
                    (since,),
                ).fetchall()
            )
        assert pairs == {"a": ["1"], "b": ["2"]}
    finally:
        monitored.cli("serve", "undeploy", "ab")


def test_restarting_any_service_loses_no_logged_inference(monitored):
    """Acceptance 4: count before a restart equals count after, for every service of the stack."""
    store = _store(monitored)
    before = store.count()
    sent = _send(monitored, _rows(100, seed=3))
    total = wait_for_rows(store, before + sent, timeout=30)  # all written before the restarts
    assert total == before + sent
    for service in ("postgres", "s3", "mlflow"):
        _terminate(monitored.pids()[service], postgres=service == "postgres")
        monitored.cli("up")
        assert _store(monitored).count() == total, f"after restarting {service}"
    _terminate(_deployment_pid(monitored, "fd"))
    monitored.cli("up")
    assert _store(monitored).count() == total, "after restarting the model server"


def test_rows_logged_while_postgres_is_down_arrive_after_it_returns(monitored):
    """Rows wait in the server's memory, or in its spool if the server stops too; none is lost."""
    before = _store(monitored).count()
    _terminate(monitored.pids()["postgres"], postgres=True)
    # PostgreSQL is away: the model server still answers, and keeps what it logs.
    sent = _send(monitored, _rows(40, seed=4))
    _terminate(_deployment_pid(monitored, "fd"))  # stops with the rows unwritten: they go to its spool
    spool = monitored.dir / "deployments" / "fd" / "inference-spool.jsonl"
    assert len(spool.read_text().splitlines()) == sent
    monitored.cli("up")  # PostgreSQL back, the server restarted: it replays the spool
    sent += _send(monitored, _rows(20, seed=5))  # and rows sent after the restart
    assert wait_for_rows(_store(monitored), before + sent, timeout=30) == before + sent
    assert not spool.exists()


def test_monitor_check_cli_no_drift_then_drift_on_the_shifted_features(monitored):
    since = datetime.now(UTC)
    _send(monitored, _rows(600, seed=6), per_request=50)
    wait_for_rows(_store(monitored), 600, model_name=MODEL, since=since)
    window = f"{(datetime.now(UTC) - since).total_seconds() + 1:.0f}s"
    quiet = monitored.cli("monitor", "check", MODEL, "--since", window, check=False)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "no drift" in quiet.stdout and "f7" in quiet.stdout  # the per-feature table

    time.sleep(1)
    since = datetime.now(UTC)
    _send(monitored, _rows(600, seed=7, shifts={"f3": 1.5}), per_request=50)
    wait_for_rows(_store(monitored), 600, model_name=MODEL, since=since)
    window = f"{(datetime.now(UTC) - since).total_seconds() + 0.5:.1f}s"
    drifted = monitored.cli("monitor", "check", MODEL, "--since", window, "--json", check=False)
    assert drifted.returncode == ExitCode.DRIFT, drifted.stdout + drifted.stderr
    report = json.loads(drifted.stdout)
    assert report["verdict"] == "drift" and report["drifted_features"] == ["f3"]
    assert report["mlflow_run_id"]  # logged to MLflow

    unknown = monitored.cli("monitor", "check", "no-such-model", check=False)
    assert unknown.returncode == ExitCode.USAGE and "no logged inferences" in unknown.stderr


def test_monitor_watch_serves_drift_gauges_on_loopback(monitored):
    since = datetime.now(UTC)
    _send(monitored, _rows(300, seed=8), per_request=50)
    wait_for_rows(_store(monitored), 300, model_name=MODEL, since=since)
    port = next(p for p in range(23100, 23200) if port_is_free(p))
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "monitor",
            "watch",
            MODEL,
            "no-such-model",
            "--interval",
            "1",
            "--iterations",
            "30",
            "--metrics-port",
            str(port),
            "--dir",
            str(monitored.dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, body = time.monotonic() + 60, ""
        while time.monotonic() < deadline and 'feature="f0"' not in body:
            time.sleep(0.5)
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2, trust_env=False).text
            except httpx.HTTPError:
                pass
        assert f'sandbox_drift_psi{{feature="f0",model="{MODEL}"' in body
        assert "sandbox_drift_alarm" in body
        listening = {
            c.laddr.ip for c in psutil.net_connections(kind="inet") if c.laddr.port == port and c.status == "LISTEN"
        }
        assert listening == {"127.0.0.1"}
    finally:
        watch.terminate()
        _, errors = watch.communicate(timeout=30)
    # A model with no traffic is reported each round; the watch goes on with the others.
    assert "no logged inferences" in errors and "no-such-model" in errors
