"""The CLI's contract for bad input: one clear error, a non-zero exit, nothing left behind."""

import json
import shlex
import subprocess

from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.errors import ExitCode
from tests.factories import make_endpoints

runner = CliRunner()


def _run(*args, env=None):
    return runner.invoke(app, list(args), env=env)


def test_unknown_profile(tmp_path):
    result = _run("up", "--profile", "nope", "--dir", str(tmp_path / "s"))
    assert result.exit_code == ExitCode.USAGE
    assert "unknown profile 'nope'" in result.output
    assert "Fix:" in result.output
    assert not (tmp_path / "s").exists()


def test_bad_config_value(tmp_path):
    (tmp_path / "sandbox.yaml").write_text("mlflow:\n  workers: 0\n")
    result = _run("up", "--dir", str(tmp_path / "s"))
    assert result.exit_code == ExitCode.USAGE
    assert "mlflow.workers" in result.output
    assert not (tmp_path / "s").exists()


def test_no_postgres_found_leaves_nothing(tmp_path):
    result = _run("up", "--dir", str(tmp_path / "s"), env={"SANDBOX_POSTGRES__BIN_DIR": str(tmp_path)})
    assert result.exit_code == ExitCode.PREFLIGHT
    assert "no PostgreSQL server" in result.output
    assert not (tmp_path / "s").exists()


def test_env_without_a_sandbox(tmp_path):
    result = _run("env", "--dir", str(tmp_path / "s"))
    assert result.exit_code == ExitCode.NOT_RUNNING
    assert "sandbox up" in result.output


def test_status_json_without_a_sandbox(tmp_path):
    result = _run("status", "--json", "--dir", str(tmp_path / "s"))
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["state"] == "stopped" and payload["endpoints"] is None


def test_down_without_a_sandbox_is_a_no_op(tmp_path):
    result = _run("down", "--dir", str(tmp_path / "s"))
    assert result.exit_code == 0
    assert "nothing to stop" in result.output


def test_logs_of_unknown_service(tmp_path):
    result = _run("logs", "nginx", "--dir", str(tmp_path / "s"))
    assert result.exit_code == ExitCode.USAGE
    assert "postgres, s3, mlflow" in result.output


def test_doctor_fails_with_the_fix_when_postgres_is_missing(tmp_path):
    result = _run("doctor", "--dir", str(tmp_path / "s"), env={"SANDBOX_POSTGRES__BIN_DIR": str(tmp_path)})
    assert result.exit_code == ExitCode.PREFLIGHT
    assert "PostgreSQL server" in result.output


def test_doctor_passes_on_this_machine(tmp_path):
    result = _run("doctor", "--dir", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output


def test_shell_exports_survive_a_shell_round_trip():
    endpoints = make_endpoints(
        mlflow_tracking_uri="http://127.0.0.1:1234",
        s3_secret_key="s3cr$t 'quoted' \"x\"",
        buckets=["mlflow-artifacts", "data"],
    )
    script = endpoints.shell_exports() + '\nprintf "%s" "$AWS_SECRET_ACCESS_KEY"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == endpoints.s3_secret_key
    assert f"export MLFLOW_TRACKING_URI={shlex.quote('http://127.0.0.1:1234')}" in endpoints.shell_exports()


# --------------------------------------------------------------------------- a broken config


def _recorded_sandbox(root):
    """A stopped sandbox as `up` leaves it on disk: secrets, ports, a service log."""
    from sandbox.profiles.local.state import PortMap, SandboxDir, load_or_create_secrets

    sandbox = SandboxDir(root)
    load_or_create_secrets(sandbox)
    ports = PortMap(sandbox)
    for key, port in (("postgres", 15401), ("s3", 15402), ("mlflow", 15403)):
        ports.claim(key, port, setting=key)
    ports.save()
    log = sandbox.service_dir("mlflow") / "service.log"
    log.parent.mkdir(parents=True)
    log.write_text("--- starting: mlflow server\nListening at: http://127.0.0.1:15403\n")
    return sandbox


def test_status_down_and_logs_survive_a_typo_in_the_config(tmp_path):
    _recorded_sandbox(tmp_path / "sbx")
    (tmp_path / "sandbox.yaml").write_text(f"dir: {tmp_path / 'sbx'}\nmlfow:\n  port: 5000\n")

    status = _run("status", "--json")
    assert status.exit_code == 0, status.output
    payload = json.loads(status.stdout)
    assert payload["dir"] == str(tmp_path / "sbx")  # the dir from the broken file is still honoured
    assert payload["endpoints"]["mlflow_tracking_uri"] == "http://127.0.0.1:15403"  # from ports.json
    assert "warning:" in status.stderr and "unknown config key 'mlfow'" in status.stderr

    table = _run("status")
    assert table.exit_code == ExitCode.NOT_RUNNING  # stopped, but shown
    assert "mlflow" in table.stdout and "stopped" in table.stdout

    logs = _run("logs", "mlflow")
    assert logs.exit_code == 0, logs.output
    assert "Listening at: http://127.0.0.1:15403" in logs.stdout
    assert "unknown config key 'mlfow'" in logs.stderr

    down = _run("down")
    assert down.exit_code == 0, down.output
    assert "was not running" in down.output and "unknown config key 'mlfow'" in down.stderr


def test_up_and_other_commands_still_refuse_a_bad_config(tmp_path):
    (tmp_path / "sandbox.yaml").write_text(f"dir: {tmp_path / 'sbx'}\nmlfow:\n  port: 5000\n")
    for args in (["up"], ["env"], ["serve", "list"]):
        result = _run(*args)
        assert result.exit_code == ExitCode.USAGE, (args, result.output)
        assert "unknown config key 'mlfow'" in result.output
        assert "warning:" not in result.output
    assert not (tmp_path / "sbx").exists()


def test_status_with_invalid_yaml_or_a_missing_config_file_uses_the_flags(tmp_path):
    _recorded_sandbox(tmp_path / "sbx")
    (tmp_path / "bad.yaml").write_text("mlflow: [port: 1\n")
    for config, problem in (("bad.yaml", "not valid YAML"), ("missing.yaml", "does not exist")):
        result = _run("status", "--json", "--config", config, "--dir", str(tmp_path / "sbx"))
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["dir"] == str(tmp_path / "sbx")
        assert problem in result.stderr
        assert _run("up", "--config", config, "--dir", str(tmp_path / "sbx")).exit_code == ExitCode.USAGE


def test_status_with_a_bad_environment_variable_keeps_sandbox_dir(tmp_path):
    _recorded_sandbox(tmp_path / "sbx")
    env = {"SANDBOX_DIR": str(tmp_path / "sbx"), "SANDBOX_MLFLOW__WORKERS": "0"}
    result = _run("status", "--json", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dir"] == str(tmp_path / "sbx")
    assert "mlflow.workers" in result.stderr


# --------------------------------------------------------------------------- load test target


def test_loadtest_of_an_unreachable_url_says_so(tmp_path):
    import socket

    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/v1/models/x:predict"
        result = _run("loadtest", url, "--duration", "1s", "--report", str(tmp_path / "report"))
    assert result.exit_code == ExitCode.NOT_RUNNING, result.output
    assert f"the target {url} is unreachable: connection refused" in result.output
    assert "input shape" not in result.output
    assert not (tmp_path / "report").exists()


# --------------------------------------------------------------------------- serve url


def _fake_endpoints(monkeypatch, **overrides):
    from sandbox.endpoints import InferenceEndpoint
    from sandbox.profiles.local import LocalProfile

    def endpoint(name, port, kind="model"):
        base = f"http://127.0.0.1:{port}"
        return InferenceEndpoint(
            name=name,
            url=base,
            v1_predict=f"{base}/v1/models/{name}:predict",
            v2_infer=f"{base}/v2/models/{name}/infer",
            kind=kind,
            grpc=f"127.0.0.1:{port + 100}" if kind == "model" else None,
        )

    endpoints = make_endpoints(
        inference={"fraud": endpoint("fraud", 17001), "fraud-ab": endpoint("fraud-ab", 17002, "split")},
        **overrides,
    )
    monkeypatch.setattr(LocalProfile, "endpoints", lambda self: endpoints)


def test_serve_url_prints_the_predict_url(monkeypatch):
    _fake_endpoints(monkeypatch)
    result = _run("serve", "url", "fraud")
    assert result.exit_code == 0, result.output
    assert result.stdout == "http://127.0.0.1:17001/v1/models/fraud:predict\n"
    v2 = _run("serve", "url", "fraud-ab", "--protocol", "v2")
    assert v2.stdout == "http://127.0.0.1:17002/v2/models/fraud-ab/infer\n"
    every = _run("serve", "url", "fraud", "--all")
    assert every.stdout.splitlines() == [
        "url http://127.0.0.1:17001",
        "v1 http://127.0.0.1:17001/v1/models/fraud:predict",
        "v2 http://127.0.0.1:17001/v2/models/fraud/infer",
        "grpc 127.0.0.1:17101",
        "metrics http://127.0.0.1:17001/metrics",
    ]
    assert _run("serve", "url", "fraud", "--protocol", "grpc").stdout == "127.0.0.1:17101\n"
    split_grpc = _run("serve", "url", "fraud-ab", "--protocol", "grpc")
    assert split_grpc.exit_code == ExitCode.USAGE and "REST only" in split_grpc.output


def test_serve_url_hands_over_the_token_on_stderr_and_with_token_alone(monkeypatch):
    _fake_endpoints(monkeypatch, serving_token="tok-123")
    monkeypatch.delenv("ML_SANDBOX_SERVING_TOKEN", raising=False)
    result = _run("serve", "url", "fraud")
    assert result.exit_code == 0, result.output
    assert result.stdout == "http://127.0.0.1:17001/v1/models/fraud:predict\n"  # `curl "$(...)"` still works
    assert "Authorization: Bearer $ML_SANDBOX_SERVING_TOKEN" in result.stderr and "--token" in result.stderr
    assert "tok-123" not in result.stderr
    printed = _run("serve", "url", "fraud", "--token")
    assert printed.exit_code == 0 and printed.stdout == "tok-123\n"
    monkeypatch.setenv("ML_SANDBOX_SERVING_TOKEN", "tok-123")  # `eval "$(sandbox env)"` ran: nothing to say
    assert _run("serve", "url", "fraud").stderr == ""
    monkeypatch.setenv("ML_SANDBOX_SERVING_TOKEN", "another-sandboxs")
    assert "Authorization" in _run("serve", "url", "fraud").stderr


def test_serve_url_with_serving_auth_none_needs_no_token(monkeypatch):
    _fake_endpoints(monkeypatch)  # serving_token None: `serving.auth: none`
    result = _run("serve", "url", "fraud")
    assert "Authorization" not in result.stderr
    printed = _run("serve", "url", "fraud", "--token")
    assert printed.exit_code == 0 and printed.stdout == "" and "serving.auth is none" in printed.stderr


def test_serve_url_of_an_unknown_name_lists_the_deployments(monkeypatch):
    _fake_endpoints(monkeypatch)
    result = _run("serve", "url", "fruad")
    assert result.exit_code == ExitCode.USAGE
    assert "no deployment named 'fruad' (deployed: fraud, fraud-ab)" in result.output
    assert result.stdout == ""  # nothing a `curl "$(...)"` could mistake for a URL
    assert _run("serve", "url", "fraud", "--protocol", "v3").exit_code == ExitCode.USAGE


def test_serve_url_without_a_sandbox(tmp_path):
    result = _run("serve", "url", "fraud", "--dir", str(tmp_path / "s"))
    assert result.exit_code == ExitCode.NOT_RUNNING
    assert result.stdout == ""


# --------------------------------------------------------------------------- private files


def test_the_cli_makes_new_files_private():
    import os

    assert _run("status", "--json").exit_code == 0
    current = os.umask(0o022)  # the conftest fixture restores the test's own afterwards
    assert current == 0o077


def test_gpu_release_of_an_unknown_workload_is_a_usage_error_naming_the_fix(tmp_path):
    result = _run("gpu", "release", "ghost", "--namespace", "team-a", "--dir", str(tmp_path / "s"))
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "no workload team-a/ghost" in result.output
    assert "sandbox gpu status" in result.output and "--namespace" in result.output
