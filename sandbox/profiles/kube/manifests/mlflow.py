"""MLflow: the project's image running the sandbox's tracking server (one uvicorn process) against PostgreSQL, its
artifacts in the S3 store, behind MLflow's basic-auth app (its user store in the same database, an admin with the
stack's generated password)."""

from __future__ import annotations

from typing import Any

from sandbox.profiles.kube.manifests.spec import (
    ARTIFACTS_BUCKET,
    LOOPBACK,
    MLFLOW,
    PORTS,
    REGION,
    S3,
    SECRET_MLFLOW,
    SECRET_S3,
    StackSpec,
    deployment,
    http_probe,
    pod_spec,
    resources,
    secret_ref,
    security_context,
    service,
)

TITLE = "MLflow"
MLFLOW_AUTH_CONFIG_KEY = "basic_auth.ini"  # in the Secret SECRET_MLFLOW, mounted as a file
_AUTH_DIR = "/etc/mlflow-auth"


def allowed_hosts(spec: StackSpec) -> list[str]:
    """What MLflow (>= 3.5 checks the Host header) accepts: its Service names, with and without the
    port, and the loopback forms the host reaches it by. MLflow matches entries with fnmatch, so
    without a known host port ``127.0.0.1:*`` stands for any (mlflow/server/security_utils.py)."""
    port = PORTS[MLFLOW]
    names = [MLFLOW, f"{MLFLOW}.{spec.namespace}", f"{MLFLOW}.{spec.namespace}.svc", spec.host(MLFLOW)]
    hosts = [form for name in names for form in (name, f"{name}:{port}")]
    host_port = spec.host_ports.get("mlflow")
    loopback = [f"{LOOPBACK}:{host_port}", f"localhost:{host_port}"] if host_port else [f"{LOOPBACK}:*", "localhost:*"]
    return hosts + loopback


def objects(spec: StackSpec) -> list[dict[str, Any]]:
    port = PORTS[MLFLOW]
    container = {
        "name": "mlflow",
        # The project's image: the MLflow (3.17.2) the local profile runs, with psycopg and boto3; built and
        # loaded by the plan, so no third-party tag without a digest is pulled.
        "image": spec.image,
        # `python -m sandbox.tracking_server`, as the local profile runs it: the app in one uvicorn process, without
        # `mlflow server`'s launcher waiting beside it (about 300 MiB).
        "command": ["python", "-m", "sandbox.tracking_server"],
        "args": [
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--workers",
            "1",
            "--artifacts-destination",
            f"s3://{ARTIFACTS_BUCKET}",
            "--allowed-hosts",
            ",".join(allowed_hosts(spec)),
        ],
        "env": [
            # From the Secret, not argv: the URL carries the password.
            secret_ref("MLFLOW_BACKEND_STORE_URI", SECRET_MLFLOW, "backend-store-uri"),
            {"name": "MLFLOW_S3_ENDPOINT_URL", "value": spec.url(S3)},
            secret_ref("AWS_ACCESS_KEY_ID", SECRET_S3, "access-key"),
            secret_ref("AWS_SECRET_ACCESS_KEY", SECRET_S3, "secret-key"),
            {"name": "AWS_DEFAULT_REGION", "value": REGION},
            # One process and no job runner: about 0.3 GB (`mlflow server`: 0.6 GB with one worker, 3.3 with its
            # defaults, ../shared/FACTS.md). The entry point refuses to start with job execution on.
            {"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"},
            {"name": "HOME", "value": "/tmp"},
            {"name": "MLFLOW_AUTH_CONFIG_PATH", "value": f"{_AUTH_DIR}/{MLFLOW_AUTH_CONFIG_KEY}"},
            {"name": "MLFLOW_AUTH_ADMIN_USERNAME", "value": spec.secrets.MLFLOW_ADMIN_USER},
            secret_ref("MLFLOW_AUTH_ADMIN_PASSWORD", SECRET_MLFLOW, "admin-password"),
            secret_ref("MLFLOW_FLASK_SERVER_SECRET_KEY", SECRET_MLFLOW, "flask-secret"),
        ],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        # /health skips the Host check; the first start migrates the schema (about 20 s).
        "readinessProbe": http_probe("/health", port, failures=36),
        "livenessProbe": http_probe("/health", port, period_s=20, failures=6, initial_delay_s=120),
        "resources": resources("100m", "512Mi", "2", "1536Mi"),
        "securityContext": security_context(1000),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "auth", "mountPath": _AUTH_DIR, "readOnly": True},
        ],
    }
    auth = {"secretName": SECRET_MLFLOW, "items": [{"key": MLFLOW_AUTH_CONFIG_KEY, "path": MLFLOW_AUTH_CONFIG_KEY}]}
    pod = pod_spec([container], volumes=[{"name": "tmp", "emptyDir": {}}, {"name": "auth", "secret": auth}])
    return [deployment(spec, MLFLOW, pod), service(spec, MLFLOW, port, port)]
