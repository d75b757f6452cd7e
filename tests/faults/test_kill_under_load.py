"""kill -9 of each component while clients write: nothing acknowledged is lost, nothing is written twice,
and the stack heals itself (no `sandbox up`) on the URIs the clients already hold.

The writers keep a ledger of what the stack acknowledged:
- MLflow: runs created (each tagged with a unique id), a metric and an artifact logged to each, model
  versions registered; every acknowledged one must be there afterwards exactly once.
- Inference through an A/B router: every request answered 200 must have its row in the inference log once.
MLflow's client retries are off, so a write either is acknowledged once or fails; a failed write is not in
the ledger (it may or may not have landed: that is the client's to retry, as with any server).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from sandbox.serving.reference_model import synthetic_data
from tests.faults import recovery
from tests.stacks import Stack

pytestmark = pytest.mark.integration

SPLIT = "loadsplit"
MODEL = "fraud-detector"


@pytest.fixture(scope="module")
def split(faults_stack: Stack) -> Iterator[Stack]:
    faults_stack.cli(
        "serve", "split", SPLIT, "--variant", f"a=models:/{MODEL}/1:50", "--variant", f"b=models:/{MODEL}/1:50"
    )
    yield faults_stack
    faults_stack.running().cli("serve", "undeploy", SPLIT, check=False)  # the scratch stack goes on


@pytest.fixture
def stack(split: Stack, monkeypatch) -> Stack:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # one try per write: acknowledged or failed
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    split.running()
    recovery.wait_for(lambda: recovery.settled(split.status()), "the stack running and its supervisor idle", split)
    return split


class MlflowWriter:
    """Runs with a metric and an artifact, and model versions, until stopped; what was acknowledged."""

    def __init__(self, tracking_uri: str, case: str):
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.case = case
        self.experiment_id = self.client.create_experiment(f"faults-{case}-{uuid.uuid4().hex[:8]}")
        self.model = f"faults-{case}-{uuid.uuid4().hex[:8]}"
        self.client.create_registered_model(self.model)
        self.runs: dict[str, str] = {}  # ledger id -> run id
        self.metrics: set[str] = set()
        self.artifacts: set[str] = set()
        self.versions: dict[str, str] = {}  # ledger id -> version
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> MlflowWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "the MLflow writer did not stop"

    @property
    def acknowledged(self) -> int:
        return len(self.runs) + len(self.metrics) + len(self.artifacts) + len(self.versions)

    def _loop(self) -> None:
        number = 0
        while not self._stop.is_set():
            ledger_id = f"{self.case}-{number}"
            number += 1
            try:
                run = self.client.create_run(self.experiment_id, tags={"faults.ledger": ledger_id})
                self.runs[ledger_id] = run.info.run_id
                self.client.log_metric(run.info.run_id, "step_value", float(number))
                self.metrics.add(ledger_id)
                self.client.log_text(run.info.run_id, ledger_id, "ledger.txt")
                self.artifacts.add(ledger_id)
                if number % 3 == 0:
                    version = self.client.create_model_version(
                        self.model, f"{run.info.artifact_uri}/ledger.txt", run_id=run.info.run_id
                    )
                    self.versions[ledger_id] = version.version
            except Exception:  # noqa: BLE001 - the component is down: not acknowledged, try the next one
                self.failures += 1
                time.sleep(0.2)

    def verify(self) -> tuple[int, int]:
        """(lost, duplicates) among the acknowledged writes, read back through the same tracking URI."""
        import mlflow

        runs = self.client.search_runs([self.experiment_id], max_results=5000)
        by_ledger: dict[str, list] = {}
        for run in runs:
            by_ledger.setdefault(run.data.tags.get("faults.ledger", ""), []).append(run)
        lost = duplicates = 0
        for ledger_id, run_id in self.runs.items():
            found = by_ledger.get(ledger_id, [])
            duplicates += max(0, len(found) - 1)
            if run_id not in {r.info.run_id for r in found}:
                lost += 1
                continue
            run = next(r for r in found if r.info.run_id == run_id)
            if ledger_id in self.metrics and run.data.metrics.get("step_value") is None:
                lost += 1
            if ledger_id in self.artifacts:
                text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/ledger.txt")
                lost += text != ledger_id
        versions = self.client.search_model_versions(f"name = '{self.model}'", max_results=5000)
        by_run: dict[str, int] = {}
        for version in versions:
            by_run[version.run_id] = by_run.get(version.run_id, 0) + 1
        numbers = {v.version for v in versions}
        for ledger_id, version in self.versions.items():
            lost += version not in numbers
            duplicates += max(0, by_run.get(self.runs[ledger_id], 0) - 1)
        return lost, duplicates


class RouterTraffic:
    """V1 requests through the split's router, each with a unique request id; what was answered."""

    def __init__(self, url: str, prefix: str, clients: int = 3, headers: dict[str, str] | None = None):
        self.url = url
        self.headers = headers or {}  # the serving token
        self.prefix = prefix
        self.answered: set[str] = set()
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rows = synthetic_data(rows=50, seed=5)[0].round(4).values.tolist()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> RouterTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _client(self, index: int) -> None:
        number = 0
        with httpx.Client(timeout=10, trust_env=False, headers=self.headers) as http:
            while not self._stop.is_set():
                request_id = f"{self.prefix}-{index}-{number}"
                row = self._rows[number % len(self._rows)]
                number += 1
                try:
                    response = http.post(self.url, json={"instances": [row]}, headers={"x-request-id": request_id})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                with self._lock:
                    if ok:
                        self.answered.add(request_id)
                    else:
                        self.failures += 1
                if not ok:
                    time.sleep(0.05)

    def verify(self, monitoring_db_url: str, timeout: float = 120) -> tuple[int, int]:
        """(lost, duplicates): answered requests without their row in the inference log, rows logged twice."""
        deadline = time.monotonic() + timeout
        while True:
            with psycopg.connect(monitoring_db_url) as conn:
                counts = dict(
                    conn.execute(
                        "SELECT request_id, count(*) FROM inference_log WHERE request_id LIKE %s GROUP BY request_id",
                        (self.prefix + "-%",),
                    ).fetchall()
                )
            lost = sum(1 for request_id in self.answered if request_id not in counts)
            if lost == 0 or time.monotonic() > deadline:  # the journals ship within seconds of recovery
                return lost, sum(count - 1 for count in counts.values() if count > 1)
            time.sleep(0.5)


def _component_pid(stack: Stack, component: str) -> int:
    status = stack.status()
    name = {"router": SPLIT, "model server": f"{SPLIT}-a"}.get(component, component)
    return recovery.pids(status)[name]


@pytest.mark.parametrize("component", ["postgres", "s3", "mlflow", "model server", "router"])
def test_kill_9_under_write_load_loses_nothing_acknowledged_and_heals_itself(stack, component, ledger):
    endpoints = stack.endpoints()  # what the clients hold, before the kill and after it
    router_url = endpoints.inference[SPLIT].v1_predict
    prefix = f"kill-{component.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"
    with (
        MlflowWriter(endpoints.mlflow_tracking_uri, prefix) as writer,
        RouterTraffic(router_url, prefix, headers=endpoints.serving_headers()) as traffic,
    ):
        recovery.wait_for(
            lambda: len(writer.runs) >= 5 and len(traffic.answered) >= 50, "writes before the kill", stack
        )
        victim = _component_pid(stack, component)
        killed_at = time.monotonic()
        recovery.kill(victim)
        # Healed by the supervisor, not by us: every component running again, the victim with a new pid.
        recovery.wait_for(
            lambda: recovery.settled(stack.status()) and _component_pid(stack, component) != victim,
            f"{component} back without `sandbox up`",
            stack,
        )
        recovery_s = time.monotonic() - killed_at
        acknowledged_before = writer.acknowledged + len(traffic.answered)
        # And the clients' URIs work again: writes and answers go on after the recovery.
        recovery.wait_for(
            lambda: writer.acknowledged + len(traffic.answered) >= acknowledged_before + 20,
            "writes acknowledged again after the recovery",
            stack,
        )
    assert stack.endpoints().mlflow_tracking_uri == endpoints.mlflow_tracking_uri
    assert stack.endpoints().inference[SPLIT].v1_predict == router_url
    mlflow_lost, mlflow_duplicates = writer.verify()
    log_lost, log_duplicates = traffic.verify(endpoints.monitoring_db_url)
    acknowledged = writer.acknowledged + len(traffic.answered)
    ledger.add(
        f"kill -9 {component} under load",
        acknowledged=acknowledged,
        lost=mlflow_lost + log_lost,
        duplicates=mlflow_duplicates + log_duplicates,
        recovery_s=recovery_s,
        recovered="by itself (supervisor)",
    )
    assert (mlflow_lost, log_lost) == (0, 0), f"acknowledged writes lost: MLflow {mlflow_lost}, inference {log_lost}"
    assert (mlflow_duplicates, log_duplicates) == (0, 0)
