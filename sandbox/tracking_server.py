"""The MLflow server app the sandbox runs: MLflow's own basic-auth app, behind a guard for three upstream defects.

`python -m sandbox.tracking_server` (`main`) runs it in one uvicorn process, as the local profile and the kube
Deployment do: `mlflow server` would start a launcher that only waits (~300 MiB) and a uvicorn worker that imports
MLflow and checks its stores again. `main` sets the environment `mlflow server` gives its workers and makes the
checks it makes before starting them (mlflow/server/__init__.py `_run_server`), for the settings the sandbox uses.
`mlflow server --app-name sandbox-basic-auth` still finds `create_app` through the `mlflow.app` entry point (as
MLflow's own `basic-auth` is found): the local profile runs that when MLflow's job runner is on, since only
`mlflow server` starts it. Nothing of MLflow is patched; the guard only answers what MLflow 3.17 answers badly
(docs/reliability.md, "MLflow's answers"):

- an artifact path with a backslash or an empty segment (`..%5c..%5cetc%5cpasswd`, `....//....//etc/passwd`):
  MLflow's proxy passes it on to S3 and answers 500; the guard answers a logged-in client 400 before it gets
  there (anyone else gets MLflow's 401);
- a download through the artifact proxy of a file that is not there: MLflow answers 500 (S3's 404 is "a failure
  while downloading"); the guard answers 404;
- a value the database refuses (a 400 whose message is psycopg's, with the SQL and its parameters): the guard
  keeps the 400 and the database's reason, and drops the SQL and the parameters.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, unquote

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

APP_NAME = "sandbox-basic-auth"  # the entry point's name (pyproject.toml), for `mlflow server --app-name`
ADMIN_USER = "sandbox-admin"  # the one user every profile makes, with a password generated per sandbox


def auth_config(database_uri: str) -> str:
    """The basic-auth app's settings file (MLFLOW_AUTH_CONFIG_PATH): its user store in ``database_uri``."""
    return (
        "[mlflow]\n"
        # A user the admin makes sees nothing until granted it.
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {database_uri}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each check of a password is a deliberately slow hash (~0.25 s of CPU on 2 cores): remember a good login
        # for a while, as MLflow offers. Its staleness is per worker, and the sandbox's MLflow runs one.
        "auth_cache_ttl_seconds = 600\n"
    )


# The artifact proxy (the path after it is the artifact's), on the REST and the UI's prefix.
_PROXY = re.compile(r"^/(?:ajax-)?api/2\.0/mlflow-artifacts/artifacts(?:/(?P<path>.*))?$")
# Endpoints that take an artifact path as the `path` query parameter.
_PATH_PARAMETER = frozenset(
    {
        "/get-artifact",
        "/model-versions/get-artifact",
        *(f"/{api}/2.0/mlflow/artifacts/list" for api in ("api", "ajax-api")),
        *(f"/{api}/2.0/mlflow-artifacts/artifacts" for api in ("api", "ajax-api")),
    }
)
_SQL_DETAIL = re.compile(r"\n\[SQL: .*", re.DOTALL)
_DRIVER_PREFIX = re.compile(r"^\((?:psycopg|sqlalchemy)[\w.]*\) ")


def bad_artifact_path(path: str) -> str | None:
    """Why ``path`` (as the client sent it, %-escaped or not) is no artifact path; None when it is one."""
    text = unquote(path)
    if "\\" in text:
        return f"artifact path {text!r} has a backslash; artifact paths use '/'"
    if "//" in text.strip("/") or any(part in (".", "..") for part in text.split("/")):
        return f"artifact path {text!r} has an empty, '.' or '..' segment; name the artifact from its run's root"
    return None


def _refusal(path: str, query: bytes) -> str | None:
    proxied = _PROXY.match(path)
    if proxied and proxied["path"]:
        problem = bad_artifact_path(proxied["path"])
        if problem:
            return problem
    if path in _PATH_PARAMETER:
        for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if key == "path" and value:
                problem = bad_artifact_path(value)
                if problem:
                    return problem
    return None


def _json(status: int, body: dict[str, Any]) -> tuple[Message, Message]:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    return {"type": "http.response.start", "status": status, "headers": headers}, {
        "type": "http.response.body",
        "body": payload,
    }


def rewritten_error(status: int, body: bytes, *, proxy_download: bool) -> tuple[int, dict[str, Any]] | None:
    """The answer for an error MLflow gave, when it is one of the defects above; None: MLflow's answer stands."""
    try:
        error = json.loads(body)
    except ValueError:
        return None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    message = error["message"]
    if status == 500 and proxy_download and "An error occurred (404)" in message:
        file = re.search(r"##### File (.*?) #####", message)
        missing = file.group(1) if file else "the path"
        return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"no artifact at {missing}"}
    if 400 <= status < 500 and "[SQL: " in message:
        reason = _DRIVER_PREFIX.sub("", _SQL_DETAIL.sub("", message)).strip()
        return status, {**error, "message": f"the database refused a value: {reason}"}
    return None


async def _logged_in(scope: Scope) -> bool:
    """The request carries basic-auth credentials MLflow's user store accepts."""
    header = dict(scope.get("headers") or []).get(b"authorization", b"")
    if not header[:6].lower() == b"basic ":
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except ValueError:
        return False
    import anyio
    from mlflow.server.auth import store

    return bool(await anyio.to_thread.run_sync(store.authenticate_user, user, password))


class MLflowGuard:
    """ASGI middleware around MLflow's app; passes every other request and answer through untouched."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        problem = _refusal(path, scope.get("query_string", b""))
        # Refused only for a client who has logged in: anyone else gets MLflow's own 401 first.
        if problem and await _logged_in(scope):
            start, body = _json(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": problem})
            await send(start)
            await send(body)
            return
        proxy_download = scope.get("method") == "GET" and bool(_PROXY.match(path))
        held: dict[str, Any] = {}

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held["start"], held["body"] = message, b""  # an error: read it whole before deciding
                return
            if "start" not in held or message["type"] != "http.response.body":
                await send(message)
                return
            held["body"] += message.get("body", b"")
            if message.get("more_body"):
                return
            start, body = held.pop("start"), held.pop("body")
            rewritten = rewritten_error(start["status"], body, proxy_download=proxy_download)
            for part in _json(*rewritten) if rewritten else (start, {"type": "http.response.body", "body": body}):
                await send(part)

        await self.app(scope, receive, guarded_send)


def create_app() -> ASGIApp:
    """The `mlflow.app` entry point: MLflow's basic-auth app (its FastAPI app under uvicorn), guarded."""
    from mlflow.server.auth import create_app as basic_auth_app

    return MLflowGuard(basic_auth_app())


def _settings(args: argparse.Namespace, backend_store_uri: str) -> dict[str, str]:
    """The environment `mlflow server` gives its uvicorn workers (mlflow/cli `server`, mlflow/server `_run_server`),
    for the settings the sandbox uses: artifacts proxied to ``--artifacts-destination``, the Host check, no
    workspaces, no job runner."""
    from mlflow.environment_variables import _MLFLOW_IN_JOB_EXECUTOR, _MLFLOW_SERVER_BOOT_ID, _MLFLOW_SGI_NAME
    from mlflow.server.constants import (
        ARTIFACT_ROOT_ENV_VAR,
        ARTIFACTS_DESTINATION_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        REGISTRY_STORE_URI_ENV_VAR,
        SERVE_ARTIFACTS_ENV_VAR,
    )
    from mlflow.store.tracking import DEFAULT_ARTIFACTS_URI

    return {
        BACKEND_STORE_URI_ENV_VAR: backend_store_uri,
        REGISTRY_STORE_URI_ENV_VAR: backend_store_uri,
        # `--serve-artifacts` (MLflow's default): new experiments get `mlflow-artifacts:/`, the server proxies it.
        ARTIFACT_ROOT_ENV_VAR: DEFAULT_ARTIFACTS_URI,
        SERVE_ARTIFACTS_ENV_VAR: "true",
        ARTIFACTS_DESTINATION_ENV_VAR: args.artifacts_destination,
        "MLFLOW_SERVER_ALLOWED_HOSTS": args.allowed_hosts,
        "MLFLOW_ENABLE_WORKSPACES": "false",
        _MLFLOW_SERVER_BOOT_ID.name: uuid.uuid4().hex,
        _MLFLOW_IN_JOB_EXECUTOR.name: "false",
        _MLFLOW_SGI_NAME.name: "uvicorn",
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.tracking_server",
        description="MLflow's tracking server with the sandbox's app, in one uvicorn process (no `mlflow server` "
        "launcher). The backend store's URI comes from MLFLOW_BACKEND_STORE_URI (it holds a password: not argv); "
        "the auth app's settings from MLFLOW_AUTH_CONFIG_PATH and MLFLOW_FLASK_SERVER_SECRET_KEY, as for "
        "`mlflow server`. No job runner: MLFLOW_SERVER_ENABLE_JOB_EXECUTION must be unset or false.",
    )
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--artifacts-destination", required=True, help="e.g. s3://mlflow-artifacts")
    parser.add_argument("--allowed-hosts", required=True, help="comma-separated Host values (MLflow's fnmatch)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn workers; 1 (the default): the server is this one process; more: uvicorn's supervisor "
        "and N worker processes",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.workers < 1:
        sys.exit(f"--workers must be at least 1, not {args.workers}")
    backend_store_uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    if not backend_store_uri:
        sys.exit("MLFLOW_BACKEND_STORE_URI is not set: the tracking server needs its database's URI")
    # MLflow's job runner is a separate process that `mlflow server` starts and wires up (a shared token, a queue
    # folder): this entry point runs none, so the app is told so (MLflow's default is on), and asking for one fails.
    if os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false").lower() in ("true", "1"):
        sys.exit(
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION is on: MLflow's job runner needs `mlflow server --app-name "
            f"{APP_NAME}` (the local profile runs that with mlflow.job_execution: true)"
        )
    # Before MLflow's server modules are imported: they read some of these when imported.
    os.environ.update(_settings(args, backend_store_uri))
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"

    import uvicorn
    from mlflow.server import _UVICORN_LOG_CONFIG
    from mlflow.server.handlers import initialize_backend_stores
    from mlflow.store.tracking import DEFAULT_ARTIFACTS_URI
    from mlflow.tracing.trace_rollup_service import validate_sql_trace_rollup_startup

    # What `mlflow server` checks before it starts uvicorn; in one process the stores it makes are the app's.
    validate_sql_trace_rollup_startup(backend_store_uri)
    initialize_backend_stores(backend_store_uri, backend_store_uri, DEFAULT_ARTIFACTS_URI)
    uvicorn.run(
        "sandbox.tracking_server:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=str(_UVICORN_LOG_CONFIG),
    )


if __name__ == "__main__":
    main()
