"""MLflow tracking server and model registry.

Backend store in the sandbox's PostgreSQL, artifacts proxied by the server to
the S3 bucket `mlflow-artifacts`, bound to 127.0.0.1 with Host-header checks.
MLflow's own `basic-auth` app guards it: its user store is in the same database
(tables of its own), its one admin has a password generated per sandbox, and an
anonymous request gets 401 (only /health is open).
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from sandbox.files import write_private
from sandbox.net import LOOPBACK
from sandbox.profiles.local.services.base import LocalService, ServiceContext
from sandbox.profiles.local.services.postgres import Postgres
from sandbox.profiles.local.services.seaweedfs import SeaweedS3
from sandbox.tracking_server import APP_NAME as TRACKING_APP
from sandbox.tracking_server import auth_config

ARTIFACTS_BUCKET = "mlflow-artifacts"


class MLflowServer(LocalService):
    name = "mlflow"
    title = "MLflow tracking server + model registry"

    def __init__(self, ctx: ServiceContext, postgres: Postgres, s3: SeaweedS3):
        super().__init__(ctx)
        self.postgres = postgres
        self.s3 = s3

    def describe(self) -> str:
        from importlib.metadata import version

        return f"MLflow {version('mlflow')}"

    def port_keys(self) -> list[str]:
        return ["mlflow"]

    def claim_ports(self) -> None:
        self.ctx.ports.claim("mlflow", self.ctx.config.mlflow.port, setting="mlflow.port / --mlflow-port")

    def allowed_hosts(self) -> list[str]:
        return [f"{LOOPBACK}:{self.port}", f"localhost:{self.port}"]

    def command(self) -> tuple[list[str], dict[str, str]]:
        cfg = self.ctx.config.mlflow
        settings = [
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--workers",
            str(cfg.workers),
            "--artifacts-destination",
            f"s3://{ARTIFACTS_BUCKET}",
            "--allowed-hosts",
            ",".join(self.allowed_hosts()),
        ]
        if cfg.job_execution:
            # MLflow's job runner is a process `mlflow server` starts and wires to its workers (a shared token, a
            # queue folder): with jobs on, MLflow's launcher runs our app.
            argv = [sys.executable, "-m", "mlflow", "server", *settings, "--app-name", TRACKING_APP]
        else:
            # The app in one uvicorn process: no `mlflow server` launcher waiting beside it (~300 MiB), MLflow
            # imported and its stores checked once, not twice (tracking_server.main).
            argv = [sys.executable, "-m", "sandbox.tracking_server", *settings]
        secrets = self.ctx.secrets
        env = {
            "MLFLOW_AUTH_CONFIG_PATH": str(self._write_auth_config()),
            # Read when the admin is first made (the user store is empty); later starts leave the user as it is.
            "MLFLOW_AUTH_ADMIN_USERNAME": secrets.MLFLOW_ADMIN_USER,
            "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.mlflow_admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.mlflow_flask_secret,
            # In the environment, not argv: a password on a command line is visible in `ps`.
            "MLFLOW_BACKEND_STORE_URI": self.postgres.connection_url("+psycopg"),
            "MLFLOW_S3_ENDPOINT_URL": self.s3.url() or "",
            "AWS_ACCESS_KEY_ID": secrets.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": secrets.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if cfg.job_execution else "false",
        }
        return argv, env

    def _write_auth_config(self) -> Path:
        """The auth app's settings: its database URI holds a password, so the file is the owner's alone."""
        path = self.dir / "basic_auth.ini"
        write_private(path, auth_config(self.postgres.connection_url("+psycopg")))
        return path

    def credentials(self) -> tuple[str, str]:
        """The admin's user and password: what every client the sandbox hands out logs in with."""
        return self.ctx.secrets.MLFLOW_ADMIN_USER, self.ctx.secrets.mlflow_admin_password

    def probe(self) -> None:
        base = self.url()
        with httpx.Client(base_url=base, timeout=5, trust_env=False, auth=self.credentials()) as client:
            health = client.get("/health")
            health.raise_for_status()
            # /health skips the Host check and the database; a REST call exercises both.
            search = client.get("/api/2.0/mlflow/experiments/search", params={"max_results": 1})
            search.raise_for_status()
            search.json()

    def url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.port}" if self.port else None
