"""The CLI's contract for bad input: one clear error, a non-zero exit, nothing left behind."""

import json
import shlex
import subprocess

from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.endpoints import Endpoints
from sandbox.errors import ExitCode

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
    endpoints = Endpoints(
        profile="local",
        mlflow_tracking_uri="http://127.0.0.1:1234",
        s3_endpoint_url="http://127.0.0.1:1235",
        s3_access_key="AK",
        s3_secret_key="s3cr$t 'quoted' \"x\"",
        buckets=["mlflow-artifacts", "data"],
        postgres_url="postgresql://u:p@127.0.0.1:1236/mlflow",
    )
    script = endpoints.shell_exports() + '\nprintf "%s" "$AWS_SECRET_ACCESS_KEY"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == endpoints.s3_secret_key
    assert f"export MLFLOW_TRACKING_URI={shlex.quote('http://127.0.0.1:1234')}" in endpoints.shell_exports()
