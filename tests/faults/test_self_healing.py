"""Self-healing: kill -9 a part of a real stack and the supervisor brings it back, with no `sandbox up`.

Each killed component must come back on the port and URL it had, a client holding the old URI must work
again, and nothing else may be restarted with it. A component that cannot come back is marked
crash-looping instead of being restarted forever; `sandbox down` leaves no process behind.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import psutil
import psycopg
import pytest

from sandbox.endpoints import Endpoints
from sandbox.serving.reference_model import synthetic_data
from tests.faults import recovery
from tests.stacks import Stack, local_pid

pytestmark = pytest.mark.integration

DEPLOYMENT = "healer"


@pytest.fixture(scope="module")
def deployed(faults_stack: Stack) -> Iterator[Stack]:
    faults_stack.cli("serve", "deploy", DEPLOYMENT, "--model", "models:/fraud-detector/1")
    yield faults_stack
    faults_stack.running().cli("serve", "undeploy", DEPLOYMENT, check=False)  # the scratch stack goes on


@pytest.fixture
def stack(deployed: Stack, monkeypatch) -> Stack:
    """The module's stack, running and supervised (a test before may have killed, crashed or stopped parts)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # each client try fails fast; the test polls
    deployed.running()
    recovery.wait_for(
        lambda: recovery.settled(deployed.status()), "the stack running and its supervisor idle", deployed
    )
    return deployed


def _predict(url: str, headers: dict[str, str]) -> list:
    frame, _ = synthetic_data(rows=3, seed=11)
    rows = frame.to_numpy().tolist()
    response = httpx.post(url, json={"instances": rows}, headers=headers, timeout=10, trust_env=False)
    response.raise_for_status()
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    return predictions


def _search_experiments(tracking_uri: str) -> list:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri).search_experiments()


def _client_works(service: str, endpoints: Endpoints) -> bool:
    """One request of a client built from the endpoints read before the kill."""
    if service == "postgres":
        with psycopg.connect(endpoints.postgres_url, connect_timeout=3) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    elif service == "s3":
        names = {bucket.name for bucket in endpoints.minio_client().list_buckets()}
        assert set(endpoints.buckets) <= names
    elif service == "notebooks":  # the URL with its token, as status printed it before the kill
        base, _, token = endpoints.notebooks_url.partition("?token=")
        response = httpx.get(f"{base.rstrip('/')}/api/kernelspecs", params={"token": token}, timeout=5, trust_env=False)
        assert response.status_code == 200, response.text
    # Whatever was restarted, MLflow answers through the URI it had (after PostgreSQL: it reconnected by itself).
    assert _search_experiments(endpoints.mlflow_tracking_uri)
    return True


def _state_file(stack: Stack) -> dict:
    return json.loads((stack.dir / "supervisor" / "state.json").read_text())


# --------------------------------------------------------------------------- the cases


@pytest.mark.parametrize("service", ["postgres", "s3", "mlflow", "notebooks"])
def test_a_killed_service_comes_back_on_its_port_and_only_it_restarts(stack, service):
    before = stack.status()
    endpoints = Endpoints(**before["endpoints"])
    was = recovery.entry(before, service)
    pids = recovery.pids(before)
    predict_url, auth = endpoints.inference[DEPLOYMENT].v1_predict, endpoints.serving_headers()
    expected = _predict(predict_url, auth)

    recovery.kill(pids[service])

    def back() -> dict | None:
        entry = recovery.entry(stack.status(), service)
        return entry if entry["state"] == "running" and local_pid(entry) != pids[service] else None

    now = recovery.wait_for(back, f"{service} running again", stack)
    assert (now["port"], now["url"]) == (was["port"], was["url"])
    assert recovery.wait_for(lambda: _client_works(service, endpoints), f"a client of the old {service} URI", stack)
    # The model server kept serving through it, at the URL it had, with the same answers.
    assert recovery.wait_for(
        lambda: _predict(predict_url, auth) == expected, "a prediction at the old model URL", stack
    )
    after = recovery.pids(stack.status())
    assert {name: pid for name, pid in after.items() if name != service} == {
        name: pid for name, pid in pids.items() if name != service
    }  # the others (and the supervisor) were left alone
    assert f"restarted {service} after its process (pid {pids[service]})" in stack.cli("logs", "supervisor").stdout


def test_a_killed_model_server_comes_back_on_its_url(stack):
    before = stack.status()
    was = recovery.entry(before, DEPLOYMENT)
    pids = recovery.pids(before)
    endpoints = Endpoints(**before["endpoints"])
    predict_url, auth = endpoints.inference[DEPLOYMENT].v1_predict, endpoints.serving_headers()
    expected = _predict(predict_url, auth)

    recovery.kill(pids[DEPLOYMENT])

    def back() -> dict | None:
        entry = recovery.entry(stack.status(), DEPLOYMENT)
        return entry if entry["state"] == "running" and local_pid(entry) != pids[DEPLOYMENT] else None

    now = recovery.wait_for(back, f"deployment {DEPLOYMENT} running again", stack)
    assert now["url"] == was["url"]
    assert recovery.wait_for(
        lambda: _predict(predict_url, auth) == expected, "a prediction at the old model URL", stack
    )
    after = recovery.pids(stack.status())
    assert {n: p for n, p in after.items() if n != DEPLOYMENT} == {n: p for n, p in pids.items() if n != DEPLOYMENT}
    detail = recovery.entry(stack.status(), "supervisor")["detail"]
    assert f"{DEPLOYMENT} " in detail and "restart" in detail, detail


def test_a_deployment_that_cannot_come_back_ends_crash_looping_not_restarted_forever(stack):
    name = "looper"
    limits = {"SANDBOX_SUPERVISOR__MAX_RESTARTS": "2", "SANDBOX_SUPERVISOR__BACKOFF_MAX_S": "2"}
    stack.cli("up", env=limits)  # the running supervisor re-reads its settings: 2 restarts, then give up
    stack.cli("serve", "deploy", name, "--model", "models:/fraud-detector/1")
    blocker = socket.socket()
    try:
        entry = recovery.entry(stack.status(), name)
        port = urlparse(entry["url"]).port
        ports_before = json.loads((stack.dir / "ports.json").read_text())
        # Its server dies and another program takes its port at once: every restart fails.
        recovery.kill(local_pid(entry))
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen()

        looping = recovery.wait_for(
            lambda: _state_file(stack)["components"].get(name, {}).get("crash_looping") and _state_file(stack),
            f"{name} marked crash-looping",
            stack,
        )
        tried = looping["components"][name]["failures"]
        assert tried == 2  # max_restarts, then no more
        rounds = looping["rounds"]
        later = recovery.wait_for(
            lambda: _state_file(stack)["rounds"] >= rounds + 5 and _state_file(stack), "5 more rounds", stack
        )
        assert later["components"][name]["failures"] == tried  # left alone, round after round
        status = stack.status()
        assert recovery.entry(status, name)["state"] == "stopped"
        assert f"{name} crash-looping" in recovery.entry(status, "supervisor")["detail"]
        assert f"{name} is crash-looping" in stack.cli("logs", "supervisor").stdout
        assert json.loads((stack.dir / "ports.json").read_text()) == ports_before  # no other port was taken

        blocker.close()
        stack.cli("up", env=limits)  # clears the mark and starts it again, on its port
        status = stack.status()
        assert (
            recovery.entry(status, name)["state"] == "running" and recovery.entry(status, name)["url"] == entry["url"]
        )
        assert "crash-looping" not in recovery.entry(status, "supervisor")["detail"]
    finally:
        blocker.close()
        stack.cli("serve", "undeploy", name, check=False)
        stack.cli("up")  # the default settings again


def test_logs_rotate_at_the_configured_size(stack):
    log = stack.dir / "services" / "mlflow" / "service.log"
    assert log.stat().st_size > 1024  # MLflow's start-up alone writes more
    try:
        stack.cli("up", env={"SANDBOX_LOGS__MAX_BYTES": "1024", "SANDBOX_LOGS__KEEP": "2"})
        copy = log.with_name("service.log.1")
        recovery.wait_for(copy.exists, "service.log.1 of mlflow", stack)
        assert oct(copy.stat().st_mode & 0o777) == oct(0o600)
        assert b"starting:" in copy.read_bytes()  # what the log held went to the copy
        assert "rotated" in stack.cli("logs", "supervisor").stdout
        assert recovery.wait_for(lambda: _search_experiments(stack.endpoints().mlflow_tracking_uri), "MLflow", stack)
    finally:
        stack.cli("up")


def test_down_stops_the_supervisor_first_and_leaves_no_process(stack):
    root = str(stack.dir.resolve())
    result = stack.cli("down")
    assert result.stderr.index("Stopping the supervisor") < result.stderr.index("Stopping PostgreSQL")
    status = stack.status()
    assert {s["name"]: s["state"] for s in status["services"]}["supervisor"] == "stopped"

    def mentions_the_sandbox(proc: psutil.Process) -> bool:
        try:
            return root in " ".join(proc.cmdline()) or root in proc.cwd()
        except psutil.Error:
            return False

    left = [p for p in psutil.process_iter() if p.pid != os.getpid() and mentions_the_sandbox(p)]
    assert left == [], [(p.pid, p.cmdline()) for p in left]
