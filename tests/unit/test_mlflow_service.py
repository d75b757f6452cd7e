"""How MLflow is started: `python -m sandbox.tracking_server`, the app in one uvicorn process, by the local profile
as the kube Deployment does (tests/unit/test_kube_manifests.py); `mlflow server` (its launcher and a worker) only when
MLflow's job runner is on. The server itself, started that way, is tests/integration/test_mlflow_front_door.py's.
"""

from __future__ import annotations

import sys

import pytest

from sandbox import tracking_server
from sandbox.config import MLflowConfig, SandboxConfig
from sandbox.profiles.local.services.base import ServiceContext
from sandbox.profiles.local.services.mlflow_server import MLflowServer
from sandbox.profiles.local.services.postgres import Postgres
from sandbox.profiles.local.services.seaweedfs import SeaweedS3
from sandbox.profiles.local.state import PortMap, SandboxDir, Secrets


def _service(tmp_path, **mlflow) -> MLflowServer:
    sandbox = SandboxDir(tmp_path / "sbx")
    sandbox.create()
    config = SandboxConfig(dir=sandbox.root, mlflow=MLflowConfig(**mlflow))
    ctx = ServiceContext(config, sandbox, Secrets.generate(), PortMap(sandbox))
    postgres, s3 = Postgres(ctx), SeaweedS3(ctx)
    service = MLflowServer(ctx, postgres, s3)
    for each in (postgres, s3, service):
        each.claim_ports()
    service.dir.mkdir(mode=0o700, parents=True)  # as `start` does before `command`
    return service


def test_the_local_service_runs_the_app_in_one_process(tmp_path):
    service = _service(tmp_path)
    argv, env = service.command()
    assert argv[:3] == [sys.executable, "-m", "sandbox.tracking_server"]
    args = tracking_server._parser().parse_args(argv[3:])  # what the service passes, the entry point takes
    assert (args.host, args.port, args.workers) == ("127.0.0.1", service.port, 1)
    assert args.artifacts_destination == "s3://mlflow-artifacts"
    assert args.allowed_hosts.split(",") == [f"127.0.0.1:{service.port}", f"localhost:{service.port}"]
    # The database's password is in the environment only, never on the command line.
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://")
    assert not [arg for arg in argv if service.ctx.secrets.mlflow_db_password in arg]
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_more_workers_are_uvicorns_and_jobs_need_mlflows_launcher(tmp_path):
    argv, _ = _service(tmp_path / "workers", workers=3).command()
    assert argv[2] == "sandbox.tracking_server" and argv[argv.index("--workers") + 1] == "3"
    argv, env = _service(tmp_path / "jobs", job_execution=True).command()
    assert argv[2:4] == ["mlflow", "server"]
    assert argv[argv.index("--app-name") + 1] == tracking_server.APP_NAME
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


@pytest.mark.parametrize(
    ("environment", "argv", "reason"),
    [
        ({}, [], "MLFLOW_BACKEND_STORE_URI is not set"),
        ({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}, [], "needs `mlflow server --app-name sandbox-basic-auth`"),
        ({}, ["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_the_entry_point_refuses_what_it_cannot_run(monkeypatch, environment, argv, reason):
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    if "MLFLOW_BACKEND_STORE_URI is not set" not in reason:
        monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "sqlite:///unused.db")
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    common = ["--host", "127.0.0.1", "--port", "1", "--artifacts-destination", "s3://b", "--allowed-hosts", "h"]
    with pytest.raises(SystemExit) as refused:
        tracking_server.main([*common, *argv])
    assert reason in str(refused.value.code)
