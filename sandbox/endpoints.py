"""The one object workloads get: where the stack is and how to log in.

Scenarios and load tests never know which profile runs the stack; they read
this and use the real clients (mlflow, minio/boto3, kfp, HTTP).
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Iterator

from pydantic import BaseModel, Field

from sandbox import wire


class InferenceEndpoint(BaseModel):
    """A served model (or A/B split) speaking KServe's V1 and V2 protocols."""

    name: str
    url: str
    v1_predict: str
    v2_infer: str
    kind: str = "model"  # "model" | "split"
    model_uri: str | None = None
    variants: list[str] = Field(default_factory=list)
    grpc: str | None = None  # host:port of the V2 gRPC endpoint (model servers; a split's router is REST only)
    model_name: str | None = None  # the model's name in its URLs, when it is not ``name`` (a listed remote endpoint)
    protocol: str | None = None  # "v1" or "v2" when only that protocol is known to be served; None: both


class Endpoints(BaseModel):
    profile: str
    mlflow_tracking_uri: str
    mlflow_token: str | None = Field(default=None, description="bearer token for MLflow, when it needs one")
    mlflow_username: str | None = Field(default=None, description="basic-auth user for MLflow, when it needs one")
    mlflow_password: str | None = None
    s3_endpoint_url: str
    s3_access_key: str
    s3_secret_key: str
    s3_region: str = "us-east-1"
    buckets: list[str] = Field(default_factory=list)
    artifacts_bucket: str = "mlflow-artifacts"
    data_bucket: str = "data"
    postgres_url: str = Field(description="the MLflow database, with its credentials")
    monitoring_db_url: str | None = Field(default=None, description="the inference log's database, if any")
    capabilities: list[str] = Field(default_factory=list)
    capability_fixes: dict[str, str] = Field(
        default_factory=dict, description="for a capability this stack lacks: what to configure to get it"
    )
    owned: bool = Field(
        default=True,
        description="the sandbox started this stack; False for a platform it only points at (the remote "
        "profile), where the checklist names what it makes per run and deletes it at the end of the run",
    )
    inference: dict[str, InferenceEndpoint] = Field(default_factory=dict)
    serving_token: str | None = Field(
        default=None,
        description="the bearer token the model servers and routers require; None: they need none "
        "(`serving.auth: none`)",
    )
    notebooks_url: str | None = Field(
        default=None, description="JupyterLab, with its token in the URL (as `jupyter server list` prints it)"
    )
    sandbox_env: dict[str, str] = Field(
        default_factory=dict,
        description="the SANDBOX_* variables with which `sandbox` (its CLI or `get_profile(load_config())`) in "
        "another process opens this same stack, e.g. from a notebook: SANDBOX_PROFILE and SANDBOX_DIR",
    )

    def mlflow_auth_env(self) -> dict[str, str]:
        """The variables MLflow's client (in this process or a child) reads its credentials from."""
        auth = {
            "MLFLOW_TRACKING_TOKEN": self.mlflow_token,
            "MLFLOW_TRACKING_USERNAME": self.mlflow_username,
            "MLFLOW_TRACKING_PASSWORD": self.mlflow_password,
        }
        return {key: value for key, value in auth.items() if value}

    def mlflow_client(self):
        """An `MlflowClient` of this stack's tracking server and registry, this process logged in to it."""
        from mlflow import MlflowClient

        log_in_to_mlflow(self.mlflow_auth_env())
        return MlflowClient(tracking_uri=self.mlflow_tracking_uri, registry_uri=self.mlflow_tracking_uri)

    def notebooks_started(self, *, timeout_s: float = 120.0) -> str:
        """Make sure JupyterLab answers, starting it if it starts on first use; its base URL (without the token).

        On the local profile (`notebooks.start: first-use`) the first connection to the URL starts the server:
        one request with the token waits for it (up to ``timeout_s``) instead of failing or polling."""
        import time

        import httpx

        from sandbox.errors import NotRunningError

        if not self.notebooks_url:
            raise NotRunningError("this stack runs no JupyterLab", hint="`sandbox up --notebooks` starts one")
        base, _, token = self.notebooks_url.partition("/?token=")
        deadline = time.monotonic() + timeout_s
        problem = ""
        while time.monotonic() < deadline:
            left = max(deadline - time.monotonic(), 1.0)
            try:
                with httpx.Client(trust_env=False, timeout=httpx.Timeout(10, read=left)) as client:
                    answer = client.get(f"{base}/api/status", headers={"Authorization": f"token {token}"})
                if answer.status_code == 200:
                    return base
                problem = f"HTTP {answer.status_code}"
            except httpx.TransportError as exc:  # nothing listens yet (the supervisor restarting): again
                problem = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise NotRunningError(
            f"JupyterLab at {base} did not answer within {timeout_s:g}s ({problem})",
            hint="see `sandbox logs notebooks` and `sandbox logs supervisor`",
        )

    def serving_headers(self) -> dict[str, str]:
        """The headers every request to a model server or router carries (its bearer token, if it needs one)."""
        return wire.bearer_headers(self.serving_token)

    def env(self) -> dict[str, str]:
        """Variables that point MLflow, boto3 and the AWS CLI at this stack."""
        variables = {
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            **self.mlflow_auth_env(),
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint_url,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_DEFAULT_REGION": self.s3_region,
            "ML_SANDBOX_POSTGRES_URL": self.postgres_url,
            "ML_SANDBOX_BUCKETS": ",".join(self.buckets),
            **({"ML_SANDBOX_MONITORING_DB_URL": self.monitoring_db_url} if self.monitoring_db_url else {}),
            **({wire.SERVING_TOKEN_ENV: self.serving_token} if self.serving_token else {}),
            **self.sandbox_env,
        }
        return {key: value for key, value in variables.items() if value}  # a remote may lack a part

    def shell_exports(self) -> str:
        return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in self.env().items())

    def minio_client(self):
        from urllib.parse import urlparse

        from minio import Minio

        parsed = urlparse(self.s3_endpoint_url)
        return Minio(
            parsed.netloc,
            access_key=self.s3_access_key,
            secret_key=self.s3_secret_key,
            secure=parsed.scheme == "https",
            region=self.s3_region,
        )


def log_in_to_mlflow(auth_env: dict[str, str]) -> None:
    """Make MLflow's client in this process send these credentials (`Endpoints.mlflow_auth_env`).

    MLflow's client takes credentials from the environment only, for every server it talks to; the sandbox's
    processes (the CLI, a test session, the checklist) talk to one stack's MLflow, so setting them for the
    process is what a user's `eval "$(sandbox env)"` does too.
    """
    os.environ.update(auth_env)


@contextlib.contextmanager
def patched_environ(settings: dict[str, str]) -> Iterator[None]:
    """``settings`` in this process's environment for the block; what was there before comes back after."""
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
