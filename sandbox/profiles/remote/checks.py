"""One real request to each endpoint of a remote platform; a verdict per endpoint naming the key to fix.

Every check reads only: MLflow's experiments/search with the configured credentials, an
S3 listing of each bucket signed with the keys, a query on the inference log's table, the
KFP API's healthz, each inference URL's readiness. Nothing is created or changed.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from sandbox.config import RemoteConfig, parse_inference_url
from sandbox.wire import bearer_headers


@dataclass
class EndpointCheck:
    """The verdict on one endpoint. ``key`` is the setting (and variable) to fix when it fails."""

    name: str  # what the user reads: "MLflow", "S3", "inference fraud"
    key: str
    url: str  # where, without credentials
    ok: bool
    detail: str  # what it found, or what is wrong
    seconds: float = 0.0
    config_error: bool = False  # the configuration is incomplete (a variable is not set): exit 2, not 5

    @property
    def line(self) -> str:
        return f"{self.key}: {self.detail}"


class MissingVariable(Exception):
    def __init__(self, key: str, variable: str):
        super().__init__(f"${variable} is not set")
        self.key = key
        self.variable = variable


def variable(environ: Mapping[str, str], name: str, key: str) -> str:
    """The value of environment variable ``name`` (named by config key ``key``); MissingVariable if unset."""
    value = environ.get(name)
    if not value:
        raise MissingVariable(key, name)
    return value


def reason(exc: BaseException, timeout: float) -> str:
    """A transport failure in a few words: 'connection refused', 'no answer within 5s', ..."""
    if isinstance(exc, httpx.TimeoutException) or "timed out" in str(exc).lower():
        return f"no answer within {timeout:g}s"
    text = str(getattr(exc, "reason", None) or exc)
    text = re.sub(r"^.*?: (?=\[Errno)", "", text)  # urllib3 puts the connection object first
    text = re.sub(r"\[Errno -?\d+\]\s*", "", text).strip().rstrip(")'\"") or type(exc).__name__
    return text[:1].lower() + text[1:]


# --------------------------------------------------------------------------- MLflow


def check_mlflow(
    uri: str,
    *,
    token: str | None = None,
    basic: tuple[str, str] | None = None,
    auth_key: str | None = None,
    timeout: float = 10.0,
) -> EndpointCheck:
    """``POST /api/2.0/mlflow/experiments/search`` with the credentials: the call every MLflow client makes first."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    auth = httpx.BasicAuth(*basic) if basic else None
    uri_key = "remote.mlflow.tracking_uri"
    started = time.monotonic()

    def verdict(ok: bool, detail: str, key: str = uri_key) -> EndpointCheck:
        return EndpointCheck("MLflow", key, uri, ok, detail, time.monotonic() - started)

    try:
        response = httpx.post(
            f"{uri}/api/2.0/mlflow/experiments/search",
            json={"max_results": 1},
            headers=headers,
            auth=auth,
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        return verdict(False, f"MLflow at {uri} is unreachable: {reason(exc, timeout)}")
    if response.status_code in (401, 403):
        if auth_key:
            return verdict(
                False,
                f"MLflow at {uri} refused the credentials (HTTP {response.status_code} on experiments/search)",
                auth_key,
            )
        return verdict(
            False,
            f"MLflow at {uri} asks for credentials (HTTP {response.status_code}): set remote.mlflow.token_env "
            "(or username_env and password_env) to the variable that holds them",
            "remote.mlflow.token_env",
        )
    try:
        body = response.json() if response.status_code == 200 else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or not set(body) <= {"experiments", "next_page_token"}:
        return verdict(
            False,
            f"{uri} is not an MLflow tracking server: experiments/search answered HTTP {response.status_code} "
            f"{response.text[:80]!r}",
        )
    version = ""
    try:
        answer = httpx.get(f"{uri}/version", headers=headers, auth=auth, timeout=timeout)
        if answer.status_code == 200 and len(answer.text) < 40:
            version = f" {answer.text.strip()}"
    except httpx.HTTPError:
        pass
    how = " with a bearer token" if token else " with basic auth" if basic else ""
    return verdict(True, f"MLflow{version}: experiments/search answered{how}")


# --------------------------------------------------------------------------- S3

_ACCESS_KEY_CODES = {"InvalidAccessKeyId", "InvalidClientTokenId"}
_SECRET_CODES = {"SignatureDoesNotMatch"}


def check_s3(
    endpoint_url: str,
    access_key: str,
    secret_key: str,
    buckets: list[str],
    *,
    region: str = "us-east-1",
    access_key_key: str = "remote.s3.access_key_env",
    secret_key_key: str = "remote.s3.secret_key_env",
    timeout: float = 10.0,
) -> EndpointCheck:
    """A signed listing of each bucket: the keys are right, and the buckets exist and may be read."""
    from urllib.parse import urlparse

    import certifi
    import urllib3
    from minio import Minio
    from minio.error import MinioException, S3Error

    started = time.monotonic()

    def verdict(ok: bool, detail: str, key: str = "remote.s3.endpoint_url") -> EndpointCheck:
        return EndpointCheck("S3", key, endpoint_url, ok, detail, time.monotonic() - started)

    parsed = urlparse(endpoint_url)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
        retries=urllib3.Retry(total=0),
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    client = Minio(
        parsed.netloc,
        access_key=access_key,
        secret_key=secret_key,
        secure=parsed.scheme == "https",
        region=region,
        http_client=http,
    )
    missing, listed = [], []
    for bucket in buckets:
        try:
            next(iter(client.list_objects(bucket)), None)
        except S3Error as exc:
            if exc.code in _ACCESS_KEY_CODES:
                return verdict(False, f"S3 at {endpoint_url} does not know the access key ({exc.code})", access_key_key)
            if exc.code in _SECRET_CODES:
                refused = f"S3 at {endpoint_url} refused the secret key for that access key ({exc.code})"
                return verdict(False, refused, secret_key_key)
            if exc.code == "AccessDenied":
                return verdict(
                    False,
                    f"S3 at {endpoint_url} denies these keys a listing of bucket {bucket!r} (AccessDenied)",
                    f"{access_key_key} / {secret_key_key}",
                )
            if exc.code == "NoSuchBucket":
                missing.append(bucket)
                continue
            return verdict(False, f"S3 at {endpoint_url} answered {exc.code} for bucket {bucket!r}: {exc.message}")
        except urllib3.exceptions.HTTPError as exc:
            return verdict(False, f"S3 at {endpoint_url} is unreachable: {reason(exc, timeout)}")
        except MinioException as exc:  # a server that does not answer like S3
            return verdict(False, f"{endpoint_url} does not answer like S3: {str(exc).splitlines()[0][:120]}")
        listed.append(bucket)
    if missing:
        return verdict(
            False,
            f"S3 at {endpoint_url} has no bucket {', '.join(repr(b) for b in missing)} (the keys are good)",
            "remote.s3.buckets",
        )
    return verdict(True, f"signed listings of {', '.join(listed)} answered")


# --------------------------------------------------------------------------- PostgreSQL (the inference log)


def postgres_where(url: str) -> str:
    """host:port/database of a PostgreSQL URL, without its credentials."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as nothing rather than leaking it
        return "(an unreadable URL)"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def check_postgres(url: str, *, key: str = "remote.monitoring.db_url_env", timeout: float = 10.0) -> EndpointCheck:
    """Connect and read the inference log's table (no row is read or written)."""
    import psycopg

    from sandbox.serving.inference_log import TABLE

    started = time.monotonic()
    where = postgres_where(url)

    def verdict(ok: bool, detail: str) -> EndpointCheck:
        return EndpointCheck("inference log (PostgreSQL)", key, where, ok, detail, time.monotonic() - started)

    try:
        with psycopg.connect(url, connect_timeout=max(1, math.ceil(timeout)), application_name="sandbox-check") as conn:
            conn.execute(f"SELECT 1 FROM {TABLE} LIMIT 0")
            version = conn.info.server_version
    except psycopg.errors.UndefinedTable:
        return verdict(False, f"the database at {where} has no {TABLE} table (the inference log's schema)")
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return verdict(False, f"cannot use PostgreSQL at {where}: {first[:200]}")
    major, minor = divmod(version, 10000)
    return verdict(True, f"PostgreSQL {major}.{minor}: the {TABLE} table answers")


# --------------------------------------------------------------------------- KFP


def check_kfp(host: str, *, timeout: float = 10.0) -> EndpointCheck:
    """The KFP API server's healthz (v2beta1, else v1beta1)."""
    started = time.monotonic()

    def verdict(ok: bool, detail: str) -> EndpointCheck:
        return EndpointCheck("KFP API", "remote.kfp.host", host, ok, detail, time.monotonic() - started)

    answers = []
    for path in ("/apis/v2beta1/healthz", "/apis/v1beta1/healthz"):
        try:
            response = httpx.get(f"{host}{path}", timeout=timeout)
        except httpx.HTTPError as exc:
            return verdict(False, f"the KFP API at {host} is unreachable: {reason(exc, timeout)}")
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                return verdict(True, f"{path} answered (pipelines still run here with kfp.local)")
        answers.append(f"{path} HTTP {response.status_code}")
    return verdict(False, f"{host} is not a KFP API server ({', '.join(answers)})")


# --------------------------------------------------------------------------- inference endpoints


def check_inference(name: str, url: str, *, timeout: float = 10.0, token: str | None = None) -> EndpointCheck:
    """The model's readiness: V2 ``GET /v2/models/NAME/ready``, or V1 ``GET /v1/models/NAME`` saying ready; with
    ``token`` (`remote.serving.token_env`) as `Authorization: Bearer`."""
    base, model, protocol = parse_inference_url(url)
    started = time.monotonic()
    key = f"remote.inference.{name}"

    def verdict(ok: bool, detail: str) -> EndpointCheck:
        return EndpointCheck(f"inference {name}", key, url, ok, detail, time.monotonic() - started)

    probes = [("V2", f"{base}/v2/models/{model}/ready"), ("V1", f"{base}/v1/models/{model}")]
    if protocol == "v1":
        probes.reverse()
    answers = []
    for label, probe in probes:
        try:
            response = httpx.get(probe, headers=bearer_headers(token), timeout=timeout)
        except httpx.HTTPError as exc:
            return verdict(False, f"{url} is unreachable: {reason(exc, timeout)}")
        if response.status_code == 401:
            refused = (
                "refused the token of remote.serving.token_env"
                if token
                else "needs a bearer token: set remote.serving.token_env to the variable holding it"
            )
            return verdict(False, f"model {model!r} at {base} answered HTTP 401: it {refused}")
        ready = response.status_code == 200
        if ready and label == "V1":
            try:
                ready = str(response.json().get("ready")).lower() == "true"
            except (ValueError, AttributeError):
                ready = False
        if ready:
            return verdict(True, f"model {model!r} is ready ({label} readiness)")
        answers.append(f"{label} HTTP {response.status_code}")
    return verdict(False, f"model {model!r} at {base} is not ready ({', '.join(answers)})")


# --------------------------------------------------------------------------- all of them


def run_checks(remote: RemoteConfig, environ: Mapping[str, str] | None = None) -> list[EndpointCheck]:
    """Check every endpoint ``remote`` configures, at once; results in the order of the section."""
    environ = os.environ if environ is None else environ
    timeout = remote.timeout_s
    planned: list[tuple[str, str, Callable[[], EndpointCheck]]] = []  # name, url, check

    if remote.mlflow:
        cfg = remote.mlflow

        def mlflow() -> EndpointCheck:
            if cfg.token_env:
                key = f"remote.mlflow.token_env (${cfg.token_env})"
                return check_mlflow(
                    cfg.tracking_uri, token=variable(environ, cfg.token_env, key), auth_key=key, timeout=timeout
                )
            if cfg.username_env and cfg.password_env:
                key = f"remote.mlflow.username_env / password_env (${cfg.username_env} / ${cfg.password_env})"
                basic = (
                    variable(environ, cfg.username_env, "remote.mlflow.username_env"),
                    variable(environ, cfg.password_env, "remote.mlflow.password_env"),
                )
                return check_mlflow(cfg.tracking_uri, basic=basic, auth_key=key, timeout=timeout)
            return check_mlflow(cfg.tracking_uri, timeout=timeout)

        planned.append(("MLflow", cfg.tracking_uri, mlflow))

    if remote.s3:
        s3 = remote.s3

        def s3_check() -> EndpointCheck:
            access_key = f"remote.s3.access_key_env (${s3.access_key_env})"
            secret_key = f"remote.s3.secret_key_env (${s3.secret_key_env})"
            return check_s3(
                s3.endpoint_url,
                variable(environ, s3.access_key_env, "remote.s3.access_key_env"),
                variable(environ, s3.secret_key_env, "remote.s3.secret_key_env"),
                s3.buckets,
                region=s3.region,
                access_key_key=access_key,
                secret_key_key=secret_key,
                timeout=timeout,
            )

        planned.append(("S3", s3.endpoint_url, s3_check))

    if remote.monitoring:
        name = remote.monitoring.db_url_env
        key = f"remote.monitoring.db_url_env (${name})"
        planned.append(
            (
                "inference log (PostgreSQL)",
                f"${name}",
                lambda: check_postgres(
                    variable(environ, name, "remote.monitoring.db_url_env"), key=key, timeout=timeout
                ),
            )
        )

    if remote.kfp:
        host = remote.kfp.host
        planned.append(("KFP API", host, lambda: check_kfp(host, timeout=timeout)))

    def serving_token() -> str | None:
        if remote.serving is None:
            return None
        return variable(environ, remote.serving.token_env, "remote.serving.token_env")

    for endpoint, url in remote.inference.items():
        planned.append(
            (
                f"inference {endpoint}",
                url,
                lambda endpoint=endpoint, url=url: check_inference(
                    endpoint, url, timeout=timeout, token=serving_token()
                ),
            )
        )

    def run(item) -> EndpointCheck:
        name, url, check = item
        try:
            return check()
        except MissingVariable as missing:
            return EndpointCheck(
                name,
                f"{missing.key} (${missing.variable})",
                url,
                False,
                f"the environment variable {missing.variable} is not set: export it with the credential",
                config_error=True,
            )

    if not planned:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(planned))) as pool:
        return list(pool.map(run, planned))
