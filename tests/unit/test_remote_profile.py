"""The remote profile without a platform: its config section, and its endpoint checks against real local HTTP servers.

The servers are small Starlette apps on 127.0.0.1 that answer the way MLflow, S3,
KFP and a KServe model server answer (including their refusals); the checks make
real HTTP requests to them. tests/integration/test_remote.py points the profile at a
real second sandbox.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sandbox.config import load_config
from sandbox.errors import ConfigError, ExitCode, PreflightError
from sandbox.loadtest import resolve_target
from sandbox.profiles import get_profile
from sandbox.profiles.remote import checks
from sandbox.profiles.remote.profile import RemoteProfile
from sandbox.serving.specs import DeploymentSpec
from tests.servers import ThreadedServer, free_port

TOKEN = "s3cr3t-token"
ACCESS_KEY, SECRET_KEY = "GOODKEY", "good-secret"

# --------------------------------------------------------------------------- servers


def _mlflow_app(*, basic: tuple[str, str] | None = None) -> Starlette:
    """Answers experiments/search as MLflow does, behind a bearer token (or basic auth)."""
    import base64

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if basic:
            return header == "Basic " + base64.b64encode(":".join(basic).encode()).decode()
        return header == f"Bearer {TOKEN}"

    async def search(request: Request):
        if not authorised(request):
            return JSONResponse({"error_code": "UNAUTHENTICATED"}, status_code=401)
        return JSONResponse({"experiments": [{"experiment_id": "0", "name": "Default"}]})

    async def version(request: Request):
        return PlainTextResponse("3.17.2") if authorised(request) else Response(status_code=401)

    return Starlette(
        routes=[
            Route("/api/2.0/mlflow/experiments/search", search, methods=["POST"]),
            Route("/version", version),
        ]
    )


def _s3_error(code: str, status: int, bucket: str) -> Response:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{code}</Message>'
        f"<BucketName>{bucket}</BucketName><Resource>/{bucket}</Resource><RequestId>1</RequestId></Error>"
    )
    return Response(body, status_code=status, media_type="application/xml")


def _s3_app(buckets: set[str]) -> Starlette:
    """Answers ListObjects as S3 does: the access key from the signature, a fixed secret, known buckets."""

    async def list_objects(request: Request):
        bucket = request.path_params["bucket"]
        credential = request.headers.get("authorization", "").split("Credential=")[-1].split("/")[0]
        if credential != ACCESS_KEY:
            return _s3_error("InvalidAccessKeyId", 403, bucket)
        if request.app.state.secret_ok is False:  # a server that finds the signature wrong
            return _s3_error("SignatureDoesNotMatch", 403, bucket)
        if bucket not in buckets:
            return _s3_error("NoSuchBucket", 404, bucket)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>'
            f"{bucket}</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>"
            "<IsTruncated>false</IsTruncated></ListBucketResult>"
        )
        return Response(body, media_type="application/xml")

    app = Starlette(routes=[Route("/{bucket}", list_objects), Route("/{bucket}/", list_objects)])
    app.state.secret_ok = True
    return app


def _model_server_app(*, ready: bool = True, v1_only: bool = False) -> Starlette:
    async def v2_ready(request: Request):
        if v1_only:
            return Response(status_code=404)
        return Response(status_code=200 if ready else 503)

    async def v1_model(request: Request):
        return JSONResponse({"name": request.path_params["model"], "ready": ready})

    async def healthz(request: Request):
        return JSONResponse({"commit_sha": "abc", "multi_user": False})

    return Starlette(
        routes=[
            Route("/v2/models/{model}/ready", v2_ready),
            Route("/v1/models/{model}", v1_model),
            Route("/apis/v2beta1/healthz", healthz),
        ]
    )


@pytest.fixture(scope="module")
def mlflow_server():
    with ThreadedServer(_mlflow_app()) as server:
        yield server


@pytest.fixture(scope="module")
def s3_server():
    with ThreadedServer(_s3_app({"mlflow-artifacts", "data"})) as server:
        yield server


@pytest.fixture(scope="module")
def model_server():
    with ThreadedServer(_model_server_app()) as server:
        yield server


@pytest.fixture
def closed_port() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


# --------------------------------------------------------------------------- config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sandbox.yaml"
    path.write_text(text)
    return path


FULL = """
profile: remote
remote:
  mlflow: {tracking_uri: "https://mlflow.staging.example.com/", token_env: STAGING_MLFLOW_TOKEN}
  s3:
    endpoint_url: https://s3.staging.example.com
    access_key_env: STAGING_S3_KEY
    secret_key_env: STAGING_S3_SECRET
    buckets: [ml-artifacts, ml-data]
    artifacts_bucket: ml-artifacts
    data_bucket: ml-data
  monitoring: {db_url_env: STAGING_MONITORING_DB}
  kfp: {host: https://kfp.staging.example.com}
  inference:
    fraud: https://serving.staging.example.com/v1/models/fraud-detector:predict
    churn: http://10.0.0.7:8080/v2/models/churn/infer
"""


def test_a_full_remote_section_loads(tmp_path):
    _write(tmp_path, FULL)
    remote = load_config().remote
    assert remote.mlflow.tracking_uri == "https://mlflow.staging.example.com"  # no trailing slash
    assert remote.mlflow.token_env == "STAGING_MLFLOW_TOKEN"
    assert (remote.s3.access_key_env, remote.s3.secret_key_env) == ("STAGING_S3_KEY", "STAGING_S3_SECRET")
    assert remote.s3.data_bucket == "ml-data" and remote.monitoring.db_url_env == "STAGING_MONITORING_DB"
    assert remote.kfp.host == "https://kfp.staging.example.com"
    assert set(remote.inference) == {"fraud", "churn"}
    assert load_config(profile="local").remote == remote  # validated whatever the profile


def test_remote_settings_come_from_sandbox_variables_too(monkeypatch):
    monkeypatch.setenv("SANDBOX_REMOTE__MLFLOW__TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("SANDBOX_REMOTE__S3__ENDPOINT_URL", "http://s3:9000")
    monkeypatch.setenv("SANDBOX_REMOTE__S3__ACCESS_KEY_ENV", "K")
    monkeypatch.setenv("SANDBOX_REMOTE__S3__SECRET_KEY_ENV", "S")
    remote = load_config().remote
    assert remote.mlflow.tracking_uri == "http://mlflow:5000" and remote.s3.access_key_env == "K"


@pytest.mark.parametrize(
    "section, key, problem",
    [
        ('mlflow: {tracking_uri: "http://x", tokn_env: A}', "unknown config key 'remote.mlflow.tokn_env'", None),
        ("monitoring: {db_url: postgresql://u:p@h/db}", "unknown config key 'remote.monitoring.db_url'", "db_url_env"),
        ("mlflow: {token_env: A}", "config key 'remote.mlflow.tracking_uri'", "Field required"),
        ('mlflow: {tracking_uri: "ftp://x"}', "config key 'remote.mlflow.tracking_uri'", "http:// or https://"),
        (
            'mlflow: {tracking_uri: "http://x", token_env: A, username_env: U, password_env: P}',
            "config key 'remote.mlflow'",
            "not both",
        ),
        ('mlflow: {tracking_uri: "http://x", username_env: U}', "config key 'remote.mlflow'", "needs both"),
        ("s3: {endpoint_url: http://s3, access_key_env: K}", "config key 'remote.s3.secret_key_env'", "required"),
        (
            "s3: {endpoint_url: http://s3, access_key_env: K, secret_key_env: S, buckets: [data]}",
            "config key 'remote.s3'",
            "artifacts_bucket 'mlflow-artifacts' must be one of buckets",
        ),
        (
            "s3: {endpoint_url: http://s3, access_key_env: K, secret_key_env: S, buckets: [Bad_Name]}",
            "config key 'remote.s3.buckets'",
            "not a valid S3 bucket name",
        ),
        ('inference: {fraud: "http://h:1/predict"}', "config key 'remote.inference.fraud'", "V1"),
        ('inference: {Fraud_1: "http://h:1/v1/models/f:predict"}', "config key 'remote.inference.Fraud_1", "lower"),
        ("kfp: {host: kfp.example.com}", "config key 'remote.kfp.host'", "http://"),
        ("timeout_s: 0", "config key 'remote.timeout_s'", "greater than 0"),
    ],
)
def test_a_bad_remote_setting_names_its_key(tmp_path, section, key, problem):
    _write(tmp_path, "remote:\n  " + section + "\n")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert info.value.exit_code == ExitCode.USAGE
    said = f"{info.value.message}\n{info.value.details or ''}"
    assert key in said, said
    if problem:
        assert problem in said, said


def test_a_secret_where_a_variable_name_belongs_is_refused_and_not_echoed(tmp_path):
    _write(tmp_path, 'remote:\n  mlflow: {tracking_uri: "http://x", token_env: "ghp_AbC123-secret"}\n')
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "remote.mlflow.token_env" in info.value.message and "NAME of an environment variable" in info.value.message
    assert "ghp_AbC123-secret" not in f"{info.value.message} {info.value.details} {info.value.hint}"


# --------------------------------------------------------------------------- endpoint checks


def test_mlflow_with_the_right_token_passes(mlflow_server):
    check = checks.check_mlflow(mlflow_server.url, token=TOKEN, auth_key="remote.mlflow.token_env ($T)")
    assert check.ok, check.detail
    assert "MLflow 3.17.2" in check.detail and "bearer token" in check.detail


def test_mlflow_with_a_wrong_token_names_the_token_variable(mlflow_server):
    check = checks.check_mlflow(mlflow_server.url, token="wrong", auth_key="remote.mlflow.token_env ($T)")
    assert not check.ok and not check.config_error
    assert check.line.startswith("remote.mlflow.token_env ($T): ") and "refused the credentials" in check.line
    assert "HTTP 401" in check.line and "wrong" not in check.line  # never the secret


def test_mlflow_that_wants_a_token_and_gets_none_says_which_key_to_set(mlflow_server):
    check = checks.check_mlflow(mlflow_server.url)
    assert not check.ok and check.key == "remote.mlflow.token_env" and "asks for credentials" in check.detail


def test_mlflow_with_basic_auth():
    with ThreadedServer(_mlflow_app(basic=("ann", "pw"))) as server:
        assert checks.check_mlflow(server.url, basic=("ann", "pw"), auth_key="k").ok
        refused = checks.check_mlflow(server.url, basic=("ann", "nope"), auth_key="remote.mlflow.username_env")
        assert not refused.ok and refused.key == "remote.mlflow.username_env"


def test_mlflow_unreachable_or_not_mlflow_names_the_uri(closed_port, model_server):
    unreachable = checks.check_mlflow(closed_port, timeout=2)
    assert not unreachable.ok and unreachable.key == "remote.mlflow.tracking_uri"
    assert "unreachable: connection refused" in unreachable.detail
    other = checks.check_mlflow(model_server.url)  # something answers, but not MLflow
    assert not other.ok and other.key == "remote.mlflow.tracking_uri" and "not an MLflow" in other.detail


def test_s3_checks_each_bucket_with_the_keys(s3_server, closed_port):
    good = checks.check_s3(s3_server.url, ACCESS_KEY, SECRET_KEY, ["mlflow-artifacts", "data"])
    assert good.ok, good.detail
    wrong_key = checks.check_s3(
        s3_server.url, "NOPE", SECRET_KEY, ["data"], access_key_key="remote.s3.access_key_env ($K)"
    )
    assert not wrong_key.ok and wrong_key.key == "remote.s3.access_key_env ($K)"
    assert "InvalidAccessKeyId" in wrong_key.detail and "NOPE" not in wrong_key.line
    missing = checks.check_s3(s3_server.url, ACCESS_KEY, SECRET_KEY, ["data", "gone", "lost"])
    assert not missing.ok and missing.key == "remote.s3.buckets" and "'gone', 'lost'" in missing.detail
    unreachable = checks.check_s3(closed_port, ACCESS_KEY, SECRET_KEY, ["data"], timeout=2)
    assert not unreachable.ok and unreachable.key == "remote.s3.endpoint_url" and "unreachable" in unreachable.detail


def test_s3_wrong_secret_names_the_secret_variable():
    app = _s3_app({"data"})
    app.state.secret_ok = False
    with ThreadedServer(app) as server:
        check = checks.check_s3(server.url, ACCESS_KEY, "bad", ["data"], secret_key_key="remote.s3.secret_key_env ($S)")
    assert not check.ok and check.key == "remote.s3.secret_key_env ($S)" and "SignatureDoesNotMatch" in check.detail


def test_inference_readiness_v2_then_v1(model_server, closed_port):
    v2 = checks.check_inference("fraud", f"{model_server.url}/v2/models/fraud/infer")
    assert v2.ok and "V2" in v2.detail
    with ThreadedServer(_model_server_app(v1_only=True)) as server:
        v1 = checks.check_inference("old", f"{server.url}/v1/models/old:predict")
        assert v1.ok and "V1" in v1.detail
    with ThreadedServer(_model_server_app(ready=False)) as server:
        loading = checks.check_inference("slow", f"{server.url}/v2/models/slow/infer")
        assert not loading.ok and loading.key == "remote.inference.slow" and "not ready" in loading.detail
    gone = checks.check_inference("gone", f"{closed_port}/v1/models/gone:predict", timeout=2)
    assert not gone.ok and gone.line.startswith("remote.inference.gone: ") and "unreachable" in gone.detail


def test_inference_endpoints_behind_a_bearer_token(monkeypatch):
    """A remote whose model servers require a token (a sandbox's own, say): `remote.serving.token_env` names the
    variable; readiness checks, the Endpoints and load tests by name send it."""
    from sandbox.config import RemoteConfig
    from sandbox.profiles.remote.profile import build_endpoints
    from sandbox.serving.asgi import guarded

    with ThreadedServer(guarded(_model_server_app(), token="remote-token")) as server:
        url = f"{server.url}/v2/models/fraud/infer"
        refused = checks.check_inference("fraud", url)
        assert not refused.ok and "remote.serving.token_env" in refused.detail and "401" in refused.detail
        assert not checks.check_inference("fraud", url, token="wrong").ok
        assert checks.check_inference("fraud", url, token="remote-token").ok
        remote = RemoteConfig.model_validate({"serving": {"token_env": "FRAUD_TOKEN"}, "inference": {"fraud": url}})
        (missing,) = checks.run_checks(remote, {})
        assert missing.config_error and "FRAUD_TOKEN" in missing.detail
        (check,) = checks.run_checks(remote, {"FRAUD_TOKEN": "remote-token"})
        assert check.ok, check.detail
        endpoints = build_endpoints(remote, {"FRAUD_TOKEN": "remote-token"})
        assert endpoints.serving_token == "remote-token"
        assert endpoints.serving_headers() == {"Authorization": "Bearer remote-token"}
        assert resolve_target("fraud", endpoints, None).token == "remote-token"
        assert resolve_target(url, endpoints, None).token == "remote-token"  # its own URL: the same server
        assert resolve_target("http://elsewhere:1/v2/models/m/infer", endpoints, None).token is None  # never sent on
    assert build_endpoints(RemoteConfig.model_validate({"inference": {"fraud": url}}), {}).serving_token is None


def test_kfp_healthz(model_server, mlflow_server, closed_port):
    assert checks.check_kfp(model_server.url).ok  # the test app answers /apis/v2beta1/healthz
    not_kfp = checks.check_kfp(mlflow_server.url)
    assert not not_kfp.ok and not_kfp.key == "remote.kfp.host" and "not a KFP API server" in not_kfp.detail
    assert "unreachable" in checks.check_kfp(closed_port, timeout=2).detail


def test_postgres_unreachable_names_the_variable_not_the_password():
    url = f"postgresql://app:hunter2@127.0.0.1:{free_port()}/monitoring"
    check = checks.check_postgres(url, key="remote.monitoring.db_url_env ($DB)", timeout=2)
    assert not check.ok and check.line.startswith("remote.monitoring.db_url_env ($DB): ")
    assert "hunter2" not in check.line and f"{url.split('@')[1]}" in check.line


# --------------------------------------------------------------------------- the profile


def _remote_yaml(tmp_path, mlflow, s3, model, *, token_env="T_TOKEN", extra="") -> None:
    _write(
        tmp_path,
        f"""
profile: remote
dir: {tmp_path / "state"}
remote:
  timeout_s: 3
  mlflow: {{tracking_uri: "{mlflow}", token_env: {token_env}}}
  s3: {{endpoint_url: "{s3}", access_key_env: T_KEY, secret_key_env: T_SECRET}}
  inference: {{fraud: "{model}/v1/models/fraud-detector:predict"}}
{extra}""",
    )


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("T_TOKEN", TOKEN)
    monkeypatch.setenv("T_KEY", ACCESS_KEY)
    monkeypatch.setenv("T_SECRET", SECRET_KEY)


def test_up_checks_every_endpoint_and_lists_what_the_platform_offers(
    tmp_path, credentials, mlflow_server, s3_server, model_server, capsys
):
    _remote_yaml(tmp_path, mlflow_server.url, s3_server.url, model_server.url)
    profile = get_profile(load_config())
    assert isinstance(profile, RemoteProfile)
    endpoints = profile.up()
    err = capsys.readouterr().err
    assert "✓ MLflow" in err and "✓ S3" in err and "✓ inference fraud" in err
    assert "offers: mlflow, s3, kfp, inference" in err and "not offered: serving" in err
    assert endpoints.capabilities == ["mlflow", "s3", "kfp", "inference"]
    assert not endpoints.owned and endpoints.mlflow_token == TOKEN
    assert endpoints.mlflow_auth_env() == {"MLFLOW_TRACKING_TOKEN": TOKEN}
    assert "remote.monitoring.db_url_env" in endpoints.capability_fixes["monitoring"]
    assert "profile: local" in endpoints.capability_fixes["serving"]
    fraud = endpoints.inference["fraud"]
    assert (fraud.url, fraud.model_name, fraud.protocol) == (model_server.url, "fraud-detector", "v1")
    assert not (tmp_path / "state").exists()  # up wrote nothing, not even the sandbox dir
    # Load tests by the listed name go to the model's own name in its URL.
    target = resolve_target("fraud", endpoints, None)
    assert (target.host, target.model_name, target.protocol) == (model_server.url, "fraud-detector", "v1")


def test_bad_settings_fail_up_with_one_line_per_endpoint(
    tmp_path, credentials, monkeypatch, mlflow_server, s3_server, closed_port
):
    _remote_yaml(tmp_path, mlflow_server.url, s3_server.url, closed_port, extra=f'  kfp: {{host: "{closed_port}"}}\n')
    monkeypatch.setenv("T_TOKEN", "expired")
    monkeypatch.setenv("T_KEY", "NOPE")
    with pytest.raises(PreflightError) as info:
        get_profile(load_config()).up()
    assert info.value.exit_code == ExitCode.PREFLIGHT
    lines = info.value.details.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "remote.mlflow.token_env ($T_TOKEN)",
        "remote.s3.access_key_env ($T_KEY)",
        "remote.kfp.host",
        "remote.inference.fraud",
    ]
    assert "4 of 4" in info.value.message and "nothing on the platform was changed" in info.value.message
    assert "expired" not in info.value.details and "NOPE" not in info.value.details


def test_an_unset_credential_variable_is_bad_config(tmp_path, credentials, monkeypatch, mlflow_server, s3_server):
    _remote_yaml(tmp_path, mlflow_server.url, s3_server.url, "http://127.0.0.1:1")
    monkeypatch.delenv("T_SECRET")
    profile = get_profile(load_config())
    with pytest.raises(ConfigError) as info:
        profile.up()
    assert info.value.exit_code == ExitCode.USAGE
    assert "remote.s3.secret_key_env ($T_SECRET): the environment variable T_SECRET is not set" in info.value.details
    with pytest.raises(ConfigError, match="T_SECRET"):
        profile.endpoints()
    status = profile.status()  # status still reports, with the credential empty
    assert status.overall == "degraded" and status.endpoints.s3_secret_key == ""


def test_an_empty_remote_section_says_what_to_set(tmp_path):
    _write(tmp_path, "profile: remote\n")
    with pytest.raises(ConfigError, match="nothing to point at") as info:
        get_profile(load_config()).up()
    assert "remote.mlflow.tracking_uri" in info.value.hint


def test_down_stops_nothing_and_serving_and_gpu_are_refused(tmp_path, credentials, capsys):
    _remote_yaml(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3")
    profile = get_profile(load_config())
    profile.down(purge=True)
    assert "stops nothing" in capsys.readouterr().err and not (tmp_path / "state").exists()
    serving = profile.serving()
    # A listed endpoint is a record the sandbox knows no model of: it serves it, it did not deploy it.
    assert serving.get("fraud").model_uri is None and set(serving.inference_endpoints()) == {"fraud"}
    with pytest.raises(ConfigError, match="deploys nothing") as info:
        serving.deploy(DeploymentSpec.model("x", "models:/m/1"))
    assert "remote.inference" in info.value.hint
    with pytest.raises(ConfigError, match="no GPU scheduler"):
        profile.scheduler()
    with pytest.raises(ConfigError, match="no logs"):
        next(iter(profile.logs("mlflow")))
