"""Sandbox configuration.

Precedence, lowest first: built-in defaults, ``sandbox.yaml``, ``SANDBOX_*``
environment variables (nested keys joined by ``__``, e.g. ``SANDBOX_MLFLOW__PORT``),
then command-line flags. Every value is validated; a bad one is reported with
the key that holds it.
"""

from __future__ import annotations

import contextvars
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from sandbox.errors import ConfigError
from sandbox.gpu.inventory import GpuConfig
from sandbox.monitoring.config import MonitoringConfig

DEFAULT_CONFIG_FILE = Path("sandbox.yaml")
ENV_PREFIX = "SANDBOX_"

# 0 means "pick a free port on first start and keep it".
Port = Annotated[int, Field(ge=0, le=65535)]

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PostgresConfig(_Section):
    port: Port = 0
    source: Literal["auto", "system", "bundled"] = Field(
        "auto",
        description="system: the machine's PostgreSQL; bundled: the pgserver wheel; auto: system, else bundled",
    )
    bin_dir: Path | None = Field(None, description="folder holding initdb and postgres (overrides search)")
    database: str = "mlflow"


class S3Config(_Section):
    port: Port = 0
    buckets: list[str] = Field(default_factory=lambda: ["mlflow-artifacts", "data"])

    @field_validator("buckets")
    @classmethod
    def _valid_bucket_names(cls, buckets: list[str]) -> list[str]:
        for name in buckets:
            if not _BUCKET_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid S3 bucket name (3-63 chars: a-z, 0-9, '.', '-')")
        if "mlflow-artifacts" not in buckets:
            raise ValueError("must include 'mlflow-artifacts' (MLflow stores its artifacts there)")
        return buckets


class MLflowConfig(_Section):
    port: Port = 0
    workers: int = Field(1, ge=1, le=16, description="uvicorn workers; 1 keeps memory near 0.6 GB")
    job_execution: bool = Field(False, description="MLflow's huey job workers (GenAI jobs); off saves ~1 GB")


class SandboxConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    profile: str = "local"
    dir: Path = Path(".sandbox")
    config: Path | None = Field(None, description="the YAML file these settings came from")
    startup_timeout: float = Field(180.0, gt=0, description="seconds each service may take to become ready")
    postgres: PostgresConfig = Field(default_factory=PostgresConfig)
    s3: S3Config = Field(default_factory=S3Config)
    mlflow: MLflowConfig = Field(default_factory=MLflowConfig)
    gpu: GpuConfig = Field(default_factory=GpuConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not _read_sources.get():
            return (init_settings,)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = _yaml_file.get()
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @property
    def root(self) -> Path:
        """The sandbox directory, absolute."""
        return self.dir.expanduser().resolve()


_yaml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_yaml_file", default=None)
# False while building the fallback configuration: only the given values, no environment, no file.
_read_sources: contextvars.ContextVar[bool] = contextvars.ContextVar("_read_sources", default=True)


def _check_yaml(path: Path) -> None:
    """Fail early, with the file and line, on YAML that is not a mapping."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path}: not valid YAML ({exc.__class__.__name__}: {getattr(exc, 'problem', exc)})",
            hint="fix the syntax of the file; see sandbox.example.yaml",
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", hint="check the path") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys", hint="see sandbox.example.yaml")


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    env = ENV_PREFIX + "__".join(str(part) for part in error["loc"]).upper()
    if error["type"] == "extra_forbidden":
        return f"unknown config key '{key}' (from sandbox.yaml or {env})"
    value = error.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict | list) else ""
    return f"config key '{key}': {error['msg']}{shown}"


def load_config(config_file: Path | None = None, **overrides: Any) -> SandboxConfig:
    """Build the configuration from every source; flags come in as ``overrides``.

    Nested flag values use dotted keys: ``load_config(**{"mlflow.port": 5000})``.
    """
    explicit = config_file is not None
    path = config_file or DEFAULT_CONFIG_FILE
    if explicit and not path.exists():
        raise ConfigError(f"config file {path} does not exist", hint="check the --config path")
    yaml_path = path if path.exists() else None
    if yaml_path is not None:
        _check_yaml(yaml_path)

    init: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.partition(".")
        if name:
            init.setdefault(section, {})[name] = value
        else:
            init[key] = value
    if yaml_path is not None:
        init["config"] = yaml_path.resolve()

    token = _yaml_file.set(yaml_path)
    try:
        return SandboxConfig(**init)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()]
        raise ConfigError(
            problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint="fix the value in sandbox.yaml, the SANDBOX_* variable or the flag; see sandbox.example.yaml",
            details="\n".join(problems) if len(problems) > 1 else None,
        ) from exc
    finally:
        _yaml_file.reset(token)


# The settings that say which sandbox a command is about; everything else it recorded in its directory.
_LOCATING_KEYS = ("profile", "dir")


def fallback_config(config_file: Path | None = None, **flags: Any) -> SandboxConfig:
    """Defaults plus where the sandbox is, for commands that must work when the configuration is broken.

    `status`, `down` and `logs` use it after ``load_config`` fails, so a running sandbox can
    always be inspected and stopped: ports, credentials and deployments come from its directory
    (ports.json, secrets.json, deployments.json), not from the configuration. ``profile`` and
    ``dir`` keep their usual precedence (flag, then ``SANDBOX_*`` variable, then the file's
    top-level key), each taken from the first source that gives a usable value.
    """
    path = config_file or DEFAULT_CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        data = None
    from_file = data if isinstance(data, dict) else {}
    environment = {key.upper(): value for key, value in os.environ.items()}
    init: dict[str, Any] = {}
    for key in _LOCATING_KEYS:
        for value in (flags.get(key), environment.get(ENV_PREFIX + key.upper()), from_file.get(key)):
            if isinstance(value, str | Path) and str(value).strip():
                init[key] = value
                break
    token = _read_sources.set(False)
    try:
        return SandboxConfig(**init)
    finally:
        _read_sources.reset(token)
