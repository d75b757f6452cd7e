"""The local profile end to end: real PostgreSQL, SeaweedFS and MLflow, through real clients.

The tests share one stack and some stop, crash or purge it; the `stack` fixture
brings it back up for the next, so each runs alone or in any order.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
import uuid
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from minio import Minio
from minio.error import S3Error

from sandbox.errors import ExitCode
from sandbox.profiles.local.state import SandboxDir, exclusive_lock

pytestmark = pytest.mark.integration

ARTIFACT_TEXT = b"feature importances, v1\n"


def _stack_processes(stack) -> list[psutil.Process]:
    procs = []
    for pid in stack.pids().values():
        leader = psutil.Process(pid)
        procs += [leader, *leader.children(recursive=True)]
    return procs


def _listening(procs) -> list[tuple[int, str, int]]:
    pids = {p.pid for p in procs}
    return [
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]


def _minio(endpoints, access_key=None, secret_key=None) -> Minio:
    return Minio(
        endpoints.s3_endpoint_url.removeprefix("http://"),
        access_key=access_key or endpoints.s3_access_key,
        secret_key=secret_key or endpoints.s3_secret_key,
        secure=False,
    )


def test_every_service_is_running_and_reports_endpoints(stack):
    status = stack.status()
    assert status["state"] == "running"
    assert {s["name"]: s["state"] for s in status["services"]} == {
        "postgres": "running",
        "s3": "running",
        "mlflow": "running",
        "notebooks": "running",
        "supervisor": "running",
    }
    endpoints = status["endpoints"]
    assert endpoints["notebooks_url"].startswith("http://127.0.0.1:") and "/?token=" in endpoints["notebooks_url"]
    assert endpoints["mlflow_tracking_uri"].startswith("http://127.0.0.1:")
    assert endpoints["s3_endpoint_url"].startswith("http://127.0.0.1:")
    assert endpoints["postgres_url"].startswith("postgresql://mlflow:")
    assert set(endpoints["buckets"]) == {"mlflow-artifacts", "data"}
    env_out = stack.cli("env").stdout
    assert f"export MLFLOW_TRACKING_URI={endpoints['mlflow_tracking_uri']}" in env_out
    assert "export AWS_SECRET_ACCESS_KEY=" in env_out


def test_every_listening_socket_is_on_loopback(stack):
    listening = _listening(_stack_processes(stack))
    assert len(listening) >= 3, listening  # postgres, mlflow and weed's many ports
    assert {ip for _, ip, _ in listening} == {"127.0.0.1"}, listening


def test_no_default_or_missing_credentials(stack):
    endpoints = stack.endpoints()
    secrets_file = SandboxDir(stack.dir).secrets_file
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert "minioadmin" not in secrets_file.read_text()
    # S3 refuses the well-known default keys and wrong secrets.
    with pytest.raises(S3Error, match="InvalidAccessKeyId"):
        _minio(endpoints, "minioadmin", "minioadmin").list_buckets()
    with pytest.raises(S3Error):
        _minio(endpoints, endpoints.s3_access_key, "wrong-secret").list_buckets()
    # PostgreSQL over TCP demands the password: no trust auth.
    port = int(endpoints.postgres_url.rsplit(":", 1)[1].split("/")[0])
    for password in (None, "wrong"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(host="127.0.0.1", port=port, user="mlflow", dbname="mlflow", password=password)
    with psycopg.connect(endpoints.postgres_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("mlflow",)


def test_mlflow_rejects_foreign_host_headers(stack):
    endpoints = stack.endpoints()
    uri, login = endpoints.mlflow_tracking_uri, (endpoints.mlflow_username, endpoints.mlflow_password)
    ok = httpx.get(f"{uri}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, auth=login, trust_env=False)
    assert ok.status_code == 200
    rebinding = httpx.get(
        f"{uri}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        headers={"Host": "evil.example.com"},
        auth=login,
        trust_env=False,
    )
    assert rebinding.status_code in (400, 403)


def _tracked_run(tmp_path, *, experiment: str, model_name: str):
    """A run with params, a stepped metric, an artifact and a registered model; returns (run, model, features)."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment(experiment)
    artifact = tmp_path / "importances.txt"
    artifact.write_bytes(ARTIFACT_TEXT)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 4))
    labels = (features[:, 0] > 0).astype(int)
    with mlflow.start_run(run_name="persist-me") as run:
        mlflow.log_params({"C": 1.0, "penalty": "l2"})
        for step, loss in enumerate([0.9, 0.5, 0.3]):
            mlflow.log_metric("loss", loss, step=step)
        mlflow.log_artifact(str(artifact))
        model = LogisticRegression().fit(features, labels)
        mlflow.sklearn.log_model(model, name="model", registered_model_name=model_name)
    return run, model, features


def test_tracking_registry_and_artifacts_land_in_s3(mlflow_env, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    name = f"tracked-{uuid.uuid4().hex[:8]}"  # the scratch stack lives on: a model of this test's own
    run, model, features = _tracked_run(tmp_path, experiment="integration", model_name=name)
    client = MlflowClient()
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"C": "1.0", "penalty": "l2"}
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.9, 0.5, 0.3]
    versions = client.search_model_versions(f"name='{name}'")
    assert [v.run_id for v in versions] == [run.info.run_id]

    # The artifact's bytes are in the bucket, read with the generated keys through the minio SDK.
    endpoints = mlflow_env.endpoints()
    s3 = _minio(endpoints)
    key = f"{got.info.experiment_id}/{run.info.run_id}/artifacts/importances.txt"
    assert s3.get_object("mlflow-artifacts", key).read() == ARTIFACT_TEXT
    # And the registered model loads back and predicts.
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    assert list(loaded.predict(features[:5])) == list(model.predict(features[:5]))


# SeaweedFS chmods each volume's .vif file to 0644 itself (SaveVolumeInfo: f.Chmod(0644)), past any
# umask, when it creates a volume; its folder is 0700, so no other user reaches it, and `up` tightens it.
_SEAWEED_VOLUME_INFO = ".vif"


def _open_to_others(root, *, allow_volume_info: bool = False) -> list[str]:
    """Every file or folder under ``root`` that group or others may use, as 'mode path'.

    As root, the folders down to an in-tree PostgreSQL cluster may be searchable (x) by
    PostgreSQL's system user, never readable or writable.
    """
    searchable = set()
    data = root / "services" / "postgres" / "data"
    if os.geteuid() == 0 and not data.is_symlink():
        searchable = {root, root / "services", root / "services" / "postgres"}
    tops = [root] + ([data.resolve()] if data.is_symlink() else [])  # a cluster kept outside is ours too
    found = []
    for top in tops:
        for folder, _dirs, files in os.walk(top):  # each folder is checked as it is walked
            for path in [Path(folder), *(Path(folder) / name for name in files)]:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    continue
                mode = stat.S_IMODE(st.st_mode)
                allowed = 0o011 if path in searchable else 0
                if allow_volume_info and path.suffix == _SEAWEED_VOLUME_INFO and stat.S_ISREG(st.st_mode):
                    allowed = 0o044  # readable at most, and only inside the 0700 folders checked here
                if mode & 0o077 & ~allowed:
                    found.append(f"{oct(mode)} {path}")
    return sorted(found)


def _report(paths: list[str]) -> str:
    return f"{len(paths)} path(s) open to group or others:\n" + "\n".join(paths[:50])


def test_every_file_and_folder_in_the_sandbox_is_private(mlflow_env, tmp_path):
    import mlflow

    stack = mlflow_env
    # Activity first: an artifact through MLflow's proxy into S3, so SeaweedFS writes volume files.
    artifact = tmp_path / "private.txt"
    artifact.write_bytes(b"for the owner only\n")
    mlflow.set_experiment("private-files")
    with mlflow.start_run():
        mlflow.log_artifact(str(artifact))
    s3_data = stack.dir / "services" / "s3" / "data"
    assert [p for p in s3_data.iterdir() if p.suffix == ".dat"], "SeaweedFS wrote no volume files"
    # What the running stack wrote: the sandbox's umask, in every service.
    open_paths = _open_to_others(stack.dir, allow_volume_info=True)
    assert not open_paths, _report(open_paths)
    for service in ("postgres", "s3", "mlflow"):
        for name in ("service.log", "service.pid"):
            path = stack.dir / "services" / service / name
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    # What an older sandbox (or a careless chmod) left open, and SeaweedFS's .vif files, `up` tightens.
    (stack.dir / "ports.json").chmod(0o644)
    (stack.dir / "services" / "s3").chmod(0o755)
    assert _open_to_others(stack.dir)
    result = stack.cli("up")
    assert "private to their owner" in result.stderr
    open_paths = _open_to_others(stack.dir)
    assert not open_paths, _report(open_paths)
    assert stat.S_IMODE((stack.dir / "ports.json").stat().st_mode) == 0o600


def test_up_on_a_running_sandbox_changes_nothing(stack):
    before = stack.pids()
    result = stack.cli("up")
    assert "already running" in result.stderr
    assert stack.pids() == before


def test_a_second_command_is_refused_while_one_holds_the_lock(stack):
    with exclusive_lock(SandboxDir(stack.dir), "up"):
        result = stack.cli("up", check=False)
    assert result.returncode == ExitCode.LOCKED
    assert "another sandbox command is changing" in result.stderr and "sandbox up" in result.stderr


def test_down_stops_every_process_and_frees_every_port(stack):
    procs = _stack_processes(stack)
    ports = [port for _, _, port in _listening(procs)]
    assert procs and ports
    stack.cli("down")
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # raises if anything still listens
    assert stack.status()["state"] == "stopped"
    assert stack.cli("down").returncode == 0  # idempotent


def test_data_survives_down_and_up(mlflow_env, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    stack = mlflow_env
    run, _, _ = _tracked_run(tmp_path, experiment="persistence", model_name="persisted-model")
    stack.cli("down")
    assert stack.status()["state"] == "stopped"
    stack.cli("up")

    client = MlflowClient()
    runs = mlflow.search_runs(experiment_names=["persistence"], filter_string="attributes.run_name = 'persist-me'")
    assert runs["run_id"].tolist() == [run.info.run_id]
    assert client.get_run(run.info.run_id).data.params["C"] == "1.0"
    assert client.get_model_version("persisted-model", "1").run_id == run.info.run_id
    local = client.download_artifacts(run.info.run_id, "importances.txt")
    with open(local, "rb") as handle:
        assert handle.read() == ARTIFACT_TEXT


def test_a_warm_up_skips_the_one_time_set_up_and_redoes_it_when_its_marker_does_not_match(stack):
    postgres_dir = Path(stack.dir) / "services" / "postgres"
    markers = [postgres_dir / "provisioned.json", postgres_dir / "inference_log_schema.json"]
    stack.cli("down")
    warm = stack.cli("up")
    assert "table inference_log made by an earlier start" in warm.stderr
    made = [json.loads(marker.read_text()) for marker in markers]
    assert made[0]["databases"] == ["mlflow", "monitoring"] and made[1]["database"] == "monitoring"
    stack.cli("down")
    for marker in markers:
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "cluster": "another"}))
    redone = stack.cli("up")
    assert "table inference_log ready" in redone.stderr  # the schema made again, not skipped
    assert [json.loads(marker.read_text()) for marker in markers] == made  # each marker written anew
    with psycopg.connect(stack.endpoints().monitoring_db_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM inference_log").fetchone() is not None


def test_up_recovers_after_a_crash(stack):
    with stack.supervisor_paused():  # `up` is the manual path: it must recover alone
        _crash_and_recover_with_up(stack)


def _crash_and_recover_with_up(stack):
    pids = stack.pids()
    postgres_group = [psutil.Process(pids["postgres"]), *psutil.Process(pids["postgres"]).children(recursive=True)]
    assert len(postgres_group) >= 2  # the postmaster and its background processes
    os.kill(pids["mlflow"], signal.SIGKILL)
    os.kill(pids["postgres"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while stack.status()["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.status()["state"] == "degraded"

    result = stack.cli("up")
    assert "recovered from a crash" in result.stderr
    status = stack.status()
    assert status["state"] == "running"
    new = stack.pids()
    assert new["s3"] == pids["s3"]  # the healthy service was left alone
    assert new["mlflow"] != pids["mlflow"]
    # What the crashed postmaster left (its children) is gone, not left holding memory or ports.
    assert not [p for p in postgres_group[1:] if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_hung_service_is_unhealthy_and_up_restarts_it(stack):
    s3_pid = stack.pids()["s3"]
    os.kill(s3_pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        states = {s["name"]: s["state"] for s in stack.status()["services"]}
        assert states["s3"] == "unhealthy"
        assert stack.status()["state"] == "degraded"
        result = stack.cli("up")
    finally:
        if psutil.pid_exists(s3_pid):
            os.kill(s3_pid, signal.SIGCONT)
    assert "restarted an unhealthy process" in result.stderr
    assert stack.status()["state"] == "running"
    assert stack.pids()["s3"] != s3_pid


def test_logs_show_the_service_output(stack):
    result = stack.cli("logs", "mlflow", "-n", "200")
    assert "uvicorn" in result.stdout.lower() or "mlflow" in result.stdout.lower()
    assert "starting:" in result.stdout  # the line the sandbox writes before each start


def test_port_taken_fails_cleanly_on_a_new_dir(tmp_path):
    from tests.stacks import Stack

    fresh = Stack(tmp_path / "other")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = fresh.cli("up", "--mlflow-port", str(port), check=False)
    assert result.returncode == ExitCode.USAGE
    assert f"port {port} (mlflow) is already in use" in result.stderr
    assert "--mlflow-port" in result.stderr
    assert not fresh.dir.exists()  # nothing half-started, nothing left behind


def test_down_purge_removes_everything(stack):
    procs = _stack_processes(stack)
    external = (stack.dir / "services" / "postgres" / "data").resolve()
    stack.cli("down", "--purge")
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    assert not stack.dir.exists()
    assert not external.exists()
