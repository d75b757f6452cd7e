from pathlib import Path

import pytest

from sandbox.config import SandboxConfig, fallback_config, load_config
from sandbox.errors import ConfigError, ExitCode


def test_defaults():
    cfg = load_config()
    assert cfg.profile == "local"
    assert cfg.dir == Path(".sandbox")
    assert cfg.mlflow.port == 0 and cfg.mlflow.workers == 1
    assert cfg.s3.buckets == ["mlflow-artifacts", "data"]
    assert cfg.config is None


def test_precedence_yaml_then_env_then_flags(tmp_path, monkeypatch):
    (tmp_path / "sandbox.yaml").write_text("mlflow:\n  port: 5001\n  workers: 2\ns3:\n  port: 9001\n")
    cfg = load_config()
    assert (cfg.mlflow.port, cfg.mlflow.workers, cfg.s3.port) == (5001, 2, 9001)
    assert cfg.config == (tmp_path / "sandbox.yaml").resolve()

    monkeypatch.setenv("SANDBOX_MLFLOW__PORT", "5002")
    cfg = load_config()
    assert cfg.mlflow.port == 5002
    assert cfg.mlflow.workers == 2  # the YAML's other keys in the section survive

    cfg = load_config(**{"mlflow.port": 5003, "s3.port": None})
    assert cfg.mlflow.port == 5003
    assert cfg.s3.port == 9001  # an unset flag does not override

    # SandboxConfig itself: arguments, then the variables, then the file its `config` names; no file unless named.
    named = SandboxConfig(config=tmp_path / "sandbox.yaml", s3={"port": 9002})
    assert (named.mlflow.port, named.mlflow.workers, named.s3.port) == (5002, 2, 9002)
    assert (SandboxConfig().mlflow.port, SandboxConfig().mlflow.workers) == (5002, 1)


def test_bad_value_names_the_key(tmp_path):
    (tmp_path / "sandbox.yaml").write_text("mlflow:\n  port: 70000\n")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "mlflow.port" in info.value.message
    assert "70000" in info.value.message
    assert info.value.exit_code == ExitCode.USAGE


def test_bad_env_value_names_the_key(monkeypatch):
    monkeypatch.setenv("SANDBOX_MLFLOW__WORKERS", "many")
    with pytest.raises(ConfigError, match=r"mlflow\.workers"):
        load_config()


def test_unknown_key_is_rejected(tmp_path):
    (tmp_path / "sandbox.yaml").write_text("mlfow:\n  port: 5000\n")
    with pytest.raises(ConfigError, match="unknown config key 'mlfow'"):
        load_config()


def test_invalid_yaml_names_the_file(tmp_path):
    (tmp_path / "sandbox.yaml").write_text("mlflow: [port\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config()


def test_yaml_must_be_a_mapping(tmp_path):
    (tmp_path / "sandbox.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config()


def test_missing_explicit_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "buckets, problem",
    [(["UPPER", "mlflow-artifacts"], "not a valid S3 bucket name"), (["data"], "must include 'mlflow-artifacts'")],
)
def test_bucket_validation(tmp_path, buckets, problem):
    (tmp_path / "sandbox.yaml").write_text(f"s3:\n  buckets: {buckets}\n")
    with pytest.raises(ConfigError, match=problem):
        load_config()


def test_example_config_is_valid():
    example = Path(__file__).resolve().parents[2] / "sandbox.example.yaml"
    cfg = load_config(example)
    assert cfg.profile == "local"


# --------------------------------------------------------------------------- one spelling: no `local:` section


@pytest.mark.parametrize(
    "text",
    [
        "local:\n  mlflow: {port: 5001}\n",
        "local:\n  notebooks: {enabled: false}\nmlflow: {port: 5001}\n",
        "local: {}\n",
    ],
)
def test_a_local_section_is_refused_with_the_fix(tmp_path, text):
    (tmp_path / "sandbox.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert info.value.exit_code == ExitCode.USAGE
    assert "`local:` in sandbox.yaml" in info.value.message and "top-level keys" in info.value.message
    assert "`mlflow: {port: 5000}`" in info.value.hint


def test_a_local_variable_is_refused_not_ignored(monkeypatch):
    monkeypatch.setenv("SANDBOX_LOCAL__MLFLOW__PORT", "5002")
    with pytest.raises(ConfigError, match="SANDBOX_LOCAL__MLFLOW__PORT: there is no `local:` section") as info:
        load_config()
    assert "SANDBOX_MLFLOW__PORT" in info.value.hint


def test_the_cli_exits_2_on_a_local_section_and_says_how_to_fix_it(tmp_path):
    from typer.testing import CliRunner

    from sandbox.cli import app

    (tmp_path / "sandbox.yaml").write_text("local:\n  mlflow: {port: 5001}\n")
    result = CliRunner().invoke(app, ["env"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "no `local:` section" in result.output and "becomes `mlflow: {port: 5000}`" in result.output


def test_fallback_config_reads_only_where_the_sandbox_is(tmp_path, monkeypatch):
    (tmp_path / "sandbox.yaml").write_text("dir: from-file\nprofile: kind\nmlflow: {workers: 0}\nlocal: {}\n")
    monkeypatch.setenv("SANDBOX_MLFLOW__PORT", "not-a-port")
    cfg = fallback_config(None, dir=None, profile=None)
    assert (cfg.profile, cfg.dir, cfg.mlflow.port, cfg.mlflow.workers) == ("kind", Path("from-file"), 0, 1)
    monkeypatch.setenv("SANDBOX_DIR", "from-env")
    assert fallback_config(None).dir == Path("from-env")
    assert fallback_config(None, dir=tmp_path / "flag").root == tmp_path / "flag"
