from pathlib import Path

import pytest

from sandbox.config import load_config
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
