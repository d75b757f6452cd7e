"""MLflow tracking server and model registry.

Backend store in the sandbox's PostgreSQL, artifacts proxied by the server to
the S3 bucket `mlflow-artifacts`, bound to 127.0.0.1 with Host-header checks.
"""

from __future__ import annotations

import sys

import httpx

from sandbox.net import LOOPBACK
from sandbox.profiles.local.services.base import LocalService, ServiceContext
from sandbox.profiles.local.services.postgres import Postgres
from sandbox.profiles.local.services.seaweedfs import SeaweedS3

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
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
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
        secrets = self.ctx.secrets
        env = {
            # In the environment, not argv: a password on a command line is visible in `ps`.
            "MLFLOW_BACKEND_STORE_URI": self.postgres.connection_url("+psycopg"),
            "MLFLOW_S3_ENDPOINT_URL": self.s3.url() or "",
            "AWS_ACCESS_KEY_ID": secrets.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": secrets.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if cfg.job_execution else "false",
        }
        return argv, env

    def probe(self) -> None:
        base = self.url()
        with httpx.Client(base_url=base, timeout=5, trust_env=False) as client:
            health = client.get("/health")
            health.raise_for_status()
            # /health skips the Host check and the database; a REST call exercises both.
            search = client.get("/api/2.0/mlflow/experiments/search", params={"max_results": 1})
            search.raise_for_status()
            search.json()

    def url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.port}" if self.port else None
