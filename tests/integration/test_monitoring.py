"""The inference log, drift checks, retraining and their CLI on a real stack; restarts lose no logged inference.

The `platform` session stack. Tests of the log share `fraud-detector` served as `fd`;
tests of drift and retraining each get a model of their own (`own_model`), so
no test sees another's traffic, versions or aliases, and drift windows are
either the whole life of that model or start at an absolute time.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import httpx
import numpy as np
import psutil
import pytest

from sandbox.errors import ExitCode
from sandbox.net import port_is_free
from sandbox.serving.inference_log import (
    JOURNAL_DIR,
    SERVER_APPLICATION,
    SHIPPER_ENV,
    SHIPPING_NICE,
    SUPERVISOR_APPLICATION,
    InferenceLogStore,
    wait_for_rows,
)
from sandbox.serving.journal import unshipped_rows
from sandbox.serving.reference_model import synthetic_data
from tests.stacks import Stack, local_pid

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
# The world after the champion was trained: f0 moved up one SD, and a case is positive only above a higher
# boundary (as in the `retraining` scenario). A model trained on it beats the champion on fresh rows from it.
NEW_WORLD = {"shifts": {"f0": 1.0}, "boundary": 1.0}


@pytest.fixture(scope="module")
def _fd(_platform):
    """The platform stack with the reference model (v1, with its training reference) served as `fd`."""
    _platform.running().with_reference_model(1).cli("serve", "deploy", "fd", "--model", f"models:/{MODEL}/1")
    yield _platform
    _platform.running().cli("serve", "undeploy", "fd", check=False)  # the platform stack goes on


@pytest.fixture
def monitored(_fd, platform):
    """The stack serving `fd` (deployed again by `up` if a test before stopped it)."""
    return platform


def _store(stack) -> InferenceLogStore:
    return InferenceLogStore(stack.endpoints().monitoring_db_url)


def _send(stack, rows, *, per_request: int = 10, deployment: str = "fd") -> int:
    endpoints = stack.endpoints()
    url = endpoints.inference[deployment].v1_predict
    with httpx.Client(timeout=30, trust_env=False, headers=endpoints.serving_headers()) as client:
        for start in range(0, len(rows), per_request):
            response = client.post(url, json={"instances": rows[start : start + per_request]})
            assert response.status_code == 200, response.text
    return len(rows)


def _rows(count: int, seed: int, **shift) -> list[list[float]]:
    return synthetic_data(count, seed=seed, **shift)[0].round(4).values.tolist()


def _deployment_pid(stack, name: str) -> int:
    return next(local_pid(d) for d in stack.status()["deployments"] if d["name"] == name)


@dataclass
class OwnModel:
    """A registered model only one test uses: v1 is the reference model, aliased champion, served as `deployment`."""

    stack: Stack
    name: str
    deployment: str

    def send(self, rows, *, per_request: int = 50) -> int:
        """Send rows and wait until the inference log holds them all; returns how many."""
        store, since = _store(self.stack), datetime.now(UTC)
        sent = _send(self.stack, rows, per_request=per_request, deployment=self.deployment)
        assert wait_for_rows(store, sent, model_name=self.name, since=since) == sent
        return sent

    def served(self, frame) -> list:
        """What the deployment answers for these rows."""
        endpoints = self.stack.endpoints()
        url = endpoints.inference[self.deployment].v1_predict
        response = httpx.post(
            url,
            json={"instances": frame.values.tolist()},
            headers=endpoints.serving_headers(),
            timeout=30,
            trust_env=False,
        )
        assert response.status_code == 200, response.text
        return response.json()["predictions"]

    def predicted_by(self, version: str, frame) -> list:
        """What the registered version itself predicts for these rows, in this process."""
        import mlflow

        mlflow.set_tracking_uri(self.stack.endpoints().mlflow_tracking_uri)
        return np.asarray(mlflow.pyfunc.load_model(f"models:/{self.name}/{version}").predict(frame)).tolist()

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.stack.endpoints().mlflow_tracking_uri)

    def aliases(self) -> dict[str, str]:
        return {alias: str(version) for alias, version in self.client().get_registered_model(self.name).aliases.items()}

    def deployment_record(self) -> dict:
        return next(d for d in self.stack.status()["deployments"] if d["name"] == self.deployment)

    def decisions(self) -> list[dict]:
        """This model's lines in the stack's decision log (`sandbox monitor` writes it under the sandbox dir)."""
        log = self.stack.dir / "monitoring" / "decisions.log"
        lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [line for line in lines if line["model_name"] == self.name]


@pytest.fixture
def own_model(monitored, request):
    """A fresh model (reference v1, champion) served as a deployment of its own; undeployed afterwards."""
    from mlflow import MlflowClient

    from sandbox.serving.reference_model import register_reference_model

    name = f"{request.node.name[5:][:20].rstrip('_').replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    uri = monitored.endpoints().mlflow_tracking_uri
    first = register_reference_model(uri, name, n_estimators=20, seed=0)
    MlflowClient(uri).set_registered_model_alias(name, "champion", first.version)
    monitored.cli("serve", "deploy", name, "--model", f"models:/{name}@champion")
    try:
        yield OwnModel(monitored, name, name)
    finally:
        monitored.cli("serve", "undeploy", name, check=False)


@pytest.fixture
def new_world_data(monitored):
    """Labelled CSVs in the stack's S3 `data` bucket, under a folder of this test's: s3:// URIs by role."""
    s3, folder = monitored.endpoints().minio_client(), f"retraining-test-{uuid.uuid4().hex[:8]}"
    frame, labels = synthetic_data(1500, seed=25, **NEW_WORLD)
    files = {
        "train": synthetic_data(1500, seed=23, **NEW_WORLD),  # what the world looks like now
        "eval": synthetic_data(600, seed=24, **NEW_WORLD),  # fresh labelled rows to score both on
        "shuffled": (frame, np.random.default_rng(0).permutation(labels)),  # a bad data version: labels shuffled
    }
    uris = {}
    for role, (features, labels) in files.items():
        body = features.assign(label=labels).round(5).to_csv(index=False).encode()
        s3.put_object("data", f"{folder}/{role}.csv", io.BytesIO(body), len(body))
        uris[role] = f"s3://data/{folder}/{role}.csv"
    return uris


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
    endpoints = monitored.endpoints()
    metrics = httpx.get(
        f"{endpoints.inference['fd'].url}/metrics", headers=endpoints.serving_headers(), trust_env=False
    )
    metrics = metrics.text
    assert "inference_log_rows_spooled_total" in metrics and "inference_log_pending_rows" in metrics


def _supervisor_pid(stack) -> int:
    return next(local_pid(s) for s in stack.status()["services"] if s["name"] == "supervisor")


def test_the_supervisor_ships_the_journal_and_the_model_server_spends_nothing_on_it(monitored):
    """The local profile's model server only appends; the supervisor's process ships (one connection for all)."""
    server = psutil.Process(_deployment_pid(monitored, "fd"))
    assert server.environ().get(SHIPPER_ENV) == "supervisor"
    store = _store(monitored)
    since = datetime.now(UTC)
    sent = _send(monitored, _rows(20, seed=7), per_request=2)
    assert wait_for_rows(store, sent, deployment="fd", since=since) == sent
    url = monitored.endpoints().monitoring_db_url
    import psycopg

    postgres_port = int(psycopg.conninfo.conninfo_to_dict(url)["port"])
    to_postgres = [c for c in server.connections(kind="tcp") if c.raddr and c.raddr.port == postgres_port]
    assert to_postgres == [], "the model server holds a connection to PostgreSQL"
    with psycopg.connect(url) as conn:
        activity = conn.execute("SELECT application_name, pid FROM pg_stat_activity").fetchall()
    names = {name for name, _ in activity}
    assert SUPERVISOR_APPLICATION in names and SERVER_APPLICATION not in names
    supervisor = psutil.Process(_supervisor_pid(monitored))
    assert any(c.raddr and c.raddr.port == postgres_port for c in supervisor.connections(kind="tcp"))
    # Shipping yields the cores to the servers: its thread and its PostgreSQL backend run at a lower priority.
    shipping_backend = next(pid for name, pid in activity if name == SUPERVISOR_APPLICATION)
    assert psutil.Process(shipping_backend).nice() == SHIPPING_NICE
    threads = {thread.id: psutil.Process(thread.id).nice() for thread in supervisor.threads()}
    assert SHIPPING_NICE in threads.values() and threads[supervisor.pid] == supervisor.nice() < SHIPPING_NICE


def test_a_kill_9_of_the_supervisor_loses_no_row_and_its_journal_ships_when_up_brings_it_back(monitored):
    store = _store(monitored)
    before = store.count(deployment="fd")
    journal = monitored.dir / "deployments" / "fd" / JOURNAL_DIR
    try:
        sent = _send(monitored, _rows(60, seed=8), per_request=2)
        os.kill(_supervisor_pid(monitored), signal.SIGKILL)  # maybe in the middle of shipping these
        # Nobody ships now: the server still answers, and its rows wait on disk.
        sent += _send(monitored, _rows(40, seed=9), per_request=2)
        on_disk = unshipped_rows(journal)
        in_table = store.count(deployment="fd") - before
        assert on_disk + in_table >= sent and on_disk >= 40  # the last 40 rows, at least, were not shipped
    finally:
        monitored.cli("up")  # the supervisor back: it ships what waited
    assert wait_for_rows(store, before + sent, timeout=30, deployment="fd") == before + sent
    deadline = time.monotonic() + 30
    while unshipped_rows(journal) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert unshipped_rows(journal) == 0
    assert store.count(deployment="fd") == before + sent  # nothing twice


def test_a_split_logs_the_variant_and_version_that_answered(monitored):
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
    before = store.count(deployment="fd")
    sent = _send(monitored, _rows(100, seed=3))
    total = wait_for_rows(store, before + sent, timeout=30, deployment="fd")  # all written before the restarts
    assert total == before + sent
    for service in ("postgres", "s3", "mlflow"):
        _terminate(monitored.pids()[service], postgres=service == "postgres")
        monitored.cli("up")
        assert _store(monitored).count(deployment="fd") == total, f"after restarting {service}"
    _terminate(_deployment_pid(monitored, "fd"))
    monitored.cli("up")
    assert _store(monitored).count(deployment="fd") == total, "after restarting the model server"


def test_rows_logged_while_postgres_is_down_arrive_after_it_returns(monitored):
    """Rows wait in the server's journal on disk, whether or not the server stops too; none is lost or doubled."""
    store = _store(monitored)
    before = store.count(deployment="fd")
    _terminate(monitored.pids()["postgres"], postgres=True)
    journal = monitored.dir / "deployments" / "fd" / JOURNAL_DIR
    try:
        # PostgreSQL is away: the model server still answers, and keeps what it logs on disk.
        sent = _send(monitored, _rows(40, seed=4))
        _terminate(_deployment_pid(monitored, "fd"))  # stops with the rows the database did not take on disk
        on_disk = unshipped_rows(journal)
        in_table = _count_if_up(store, otherwise=before) - before  # PostgreSQL may be back (the supervisor)
    finally:
        monitored.cli("up")  # PostgreSQL back, the server restarted: it ships its journal
    assert on_disk + in_table >= sent  # with the server stopped, every row was on its disk or in the table
    sent += _send(monitored, _rows(20, seed=5))  # and rows sent after the restart
    assert wait_for_rows(store, before + sent, timeout=30, deployment="fd") == before + sent
    deadline = time.monotonic() + 30  # the shipped position is saved just after the rows are committed
    while unshipped_rows(journal) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert unshipped_rows(journal) == 0
    assert len(list(journal.glob("*.journal"))) <= 2  # shipped segments deleted
    assert store.count(deployment="fd") == before + sent  # and nothing written twice


def _count_if_up(store: InferenceLogStore, *, otherwise: int) -> int:
    """The table's row count, or ``otherwise`` while PostgreSQL is down."""
    import psycopg

    try:
        return store.count(deployment="fd")
    except psycopg.OperationalError:
        return otherwise


def test_monitor_check_cli_no_drift_then_drift_on_the_shifted_features(own_model):
    # The model is this test's own, so its default window (the last hour) holds exactly the rows sent here.
    own_model.send(_rows(600, seed=6))
    quiet = own_model.stack.cli("monitor", "check", own_model.name, check=False)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "no drift" in quiet.stdout and "f7" in quiet.stdout  # the per-feature table

    own_model.send(_rows(600, seed=7, shifts={"f3": 1.5}))
    drifted = own_model.stack.cli("monitor", "check", own_model.name, "--json", check=False)
    assert drifted.returncode == ExitCode.DRIFT, drifted.stdout + drifted.stderr
    report = json.loads(drifted.stdout)
    assert report["live_rows"] == 1200 and report["model_version"] == "1"
    assert report["verdict"] == "drift" and report["drifted_features"] == ["f3"]
    assert report["mlflow_run_id"]  # logged to MLflow
    tags = own_model.client().get_run(report["mlflow_run_id"]).data.tags
    assert tags["drift.verdict"] == "drift" and tags["drift.features"] == "f3"

    unknown = own_model.stack.cli("monitor", "check", "no-such-model", check=False)
    assert unknown.returncode == ExitCode.USAGE and "no logged inferences" in unknown.stderr


def test_a_drift_window_given_as_an_absolute_time_holds_exactly_the_rows_after_it(monitored):
    """On the shared `fd`: rows other tests sent before are outside these windows, whatever they were."""
    from sandbox.monitoring.checks import check_drift
    from sandbox.monitoring.config import MonitoringConfig

    endpoints, config, store = monitored.endpoints(), MonitoringConfig(), _store(monitored)
    quiet_from = datetime.now(UTC)
    sent = _send(monitored, _rows(300, seed=8), per_request=50)
    assert wait_for_rows(store, sent, model_name=MODEL, since=quiet_from) == sent
    # Every quiet row is in the table, so each was stamped before this moment; every shifted row after it.
    shifted_from = datetime.now(UTC)
    sent = _send(monitored, _rows(600, seed=7, shifts={"f3": 1.5}), per_request=50)
    assert wait_for_rows(store, sent, model_name=MODEL, since=shifted_from) == sent

    # ISO 8601 as a person or a script writes it: with Z, or with another offset for the same instant.
    shifted = check_drift(
        endpoints, MODEL, config, since=shifted_from.isoformat().replace("+00:00", "Z"), log_to_mlflow=False
    )
    assert shifted.since == shifted_from and shifted.live_rows == 600
    assert shifted.drifted_features == ["f3"]
    east = timezone(timedelta(hours=2))
    both = check_drift(endpoints, MODEL, config, since=quiet_from.astimezone(east).isoformat(), log_to_mlflow=False)
    assert both.since == quiet_from and both.live_rows == 900
    # A datetime works as well, and a window starting after the last row holds none.
    after = check_drift(endpoints, MODEL, config, since=datetime.now(UTC), log_to_mlflow=False)
    assert after.live_rows == 0 and not after.enough_data


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


# ------------------------------------------------------------------ retraining through the CLI


def _retrain_options(model: OwnModel, data: dict[str, str], training: str) -> list[str]:
    return ["--training-data", data[training], "--eval-data", data["eval"], "--deployment", model.deployment]


def test_monitor_retrain_promotes_a_better_challenger_then_refuses_a_worse_one(own_model, new_world_data, tmp_path):
    """The policy both ways in one model's life (one set-up, two pipeline runs): promoted, then refused."""
    probe, _ = synthetic_data(40, seed=26, **NEW_WORLD)
    v1_answers = own_model.served(probe)
    pid_before = local_pid(own_model.deployment_record())
    # The commands' temporary folder, to see that they leave nothing there (it is /tmp for a user).
    temporary = tmp_path / "tmp"
    temporary.mkdir()

    # New data from the world as it is now: the challenger beats the champion on fresh rows and replaces it.
    won = own_model.stack.cli(
        "monitor",
        "retrain",
        own_model.name,
        *_retrain_options(own_model, new_world_data, "train"),
        env={"TMPDIR": str(temporary)},
    )
    assert "promoted" in won.stdout and "not promoted" not in won.stdout, won.stdout + won.stderr
    assert not list(temporary.iterdir()), f"the retraining left {list(temporary.iterdir())}"
    # The registry: the pipeline registered v2, which is now the champion; v1 steps aside.
    assert own_model.aliases() == {"champion": "2", "previous-champion": "1"}
    # The decision, in the decision log and as an MLflow run.
    [promoted] = own_model.decisions()
    assert promoted["trigger"] == "manual" and promoted["promoted"] is True
    assert (promoted["challenger_version"], promoted["champion_version"]) == ("2", "1")
    assert promoted["challenger_accuracy"] >= promoted["champion_accuracy"] + promoted["margin"]
    tags = own_model.client().get_run(promoted["mlflow_run_id"]).data.tags
    assert tags["decision"] == "promoted" and tags["trigger"] == "manual" and tags["challenger_version"] == "2"
    assert tags["redeployed"] == f"{own_model.deployment} ← models:/{own_model.name}@champion"
    # The deployment was restarted from the champion alias and answers as v2 does, not as v1.
    record = own_model.deployment_record()
    assert record["state"] == "running" and local_pid(record) != pid_before
    assert record["model_uri"] == f"models:/{own_model.name}@champion"
    since = datetime.now(UTC)
    v2_answers = own_model.served(probe)
    assert v2_answers == own_model.predicted_by("2", probe) != v1_answers
    wait_for_rows(_store(own_model.stack), len(probe), model_name=own_model.name, since=since)
    assert _store(own_model.stack).latest_version(own_model.name) == "2"  # the log says v2 answered

    # A bad data version (labels shuffled): its challenger loses, is registered but not promoted.
    options = _retrain_options(own_model, new_world_data, "shuffled")
    lost = own_model.stack.cli("monitor", "retrain", own_model.name, *options, env={"TMPDIR": str(temporary)})
    assert "not promoted" in lost.stdout, lost.stdout + lost.stderr
    assert not list(temporary.iterdir()), f"the retraining left {list(temporary.iterdir())}"
    assert own_model.aliases() == {"champion": "2", "previous-champion": "1", "challenger": "3"}
    rejected = own_model.decisions()[-1]
    assert (rejected["challenger_version"], rejected["champion_version"]) == ("3", "2")
    assert rejected["promoted"] is False and rejected["redeployed"] is None
    assert rejected["challenger_accuracy"] < rejected["champion_accuracy"] + rejected["margin"]
    tags = own_model.client().get_run(rejected["mlflow_run_id"]).data.tags
    assert tags["decision"] == "rejected" and tags["redeployed"] == ""
    # The deployment was left alone: the same process, still answering as the champion.
    assert local_pid(own_model.deployment_record()) == local_pid(record)
    assert own_model.served(probe) == v2_answers


def test_monitor_watch_retrain_retrains_once_on_drift_and_serves_the_new_champion(own_model, new_world_data):
    probe, _ = synthetic_data(40, seed=26, **NEW_WORLD)
    pid_before = local_pid(own_model.deployment_record())
    own_model.send(synthetic_data(600, seed=27, **NEW_WORLD)[0].round(4).values.tolist())

    port = next(p for p in range(23200, 23300) if port_is_free(p))
    # Two rounds a second apart, then the watch stops by itself; the timeout only guards against a hang.
    watch = own_model.stack.cli(
        "monitor",
        "watch",
        own_model.name,
        "--retrain",
        "--iterations",
        "2",
        "--interval",
        "1",
        "--metrics-port",
        str(port),
        *_retrain_options(own_model, new_world_data, "train"),
        timeout=300,
    )
    output = watch.stdout + watch.stderr

    # Round one: the check alarms on f0, the policy retrains, the challenger wins and is promoted.
    # Round two: the same drift, but the cooldown holds: no second retraining.
    decisions = own_model.decisions()
    assert [d["trigger"] for d in decisions] == ["drift"], output
    decision = decisions[0]
    assert "f0" in decision["trigger_detail"], decision
    assert decision["promoted"] is True and decision["challenger_version"] == "2"
    assert own_model.aliases() == {"champion": "2", "previous-champion": "1"}
    tags = own_model.client().get_run(decision["mlflow_run_id"]).data.tags
    assert tags["decision"] == "promoted" and tags["trigger"] == "drift"
    # Each round's drift check is an MLflow run of its own in `monitoring`: two rounds, the first alarmed.
    checks = own_model.client().search_runs(
        [own_model.client().get_experiment_by_name("monitoring").experiment_id],
        filter_string=f"tags.model_name = '{own_model.name}'",
        order_by=["attributes.start_time ASC"],
    )
    assert len(checks) == 2 and checks[0].data.tags["drift.verdict"] == "drift", output
    # The deployment now serves the new champion.
    record = own_model.deployment_record()
    assert record["state"] == "running" and local_pid(record) != pid_before
    assert own_model.served(probe) == own_model.predicted_by("2", probe)
