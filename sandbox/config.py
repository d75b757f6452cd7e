"""Sandbox configuration.

Precedence, lowest first: built-in defaults, ``sandbox.yaml``, ``SANDBOX_*``
environment variables (nested keys joined by ``__``, e.g. ``SANDBOX_MLFLOW__PORT``),
then command-line flags. Every value is validated; a bad one is reported with
the key that holds it.

The local profile's sections are top-level keys: its services (``postgres``, ``s3``,
``mlflow``, ``notebooks``), its ``supervisor`` and its ``logs`` (rotation); there is no
``local:`` section, and a file or variable that writes one is refused with the fix.
``remote:`` says where a platform the sandbox did not start is, and which
environment variables hold its credentials (never the secrets themselves);
``kind:`` names the kind profile's cluster, namespace and host ports, ``cluster:``
the context, namespace and allowances of the cluster profile, ``kube:`` what both share (``timeouts``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from sandbox import wire
from sandbox.errors import ConfigError
from sandbox.gpu.inventory import GpuConfig
from sandbox.monitoring.config import MonitoringConfig
from sandbox.pipelines.config import PipelinesConfig

DEFAULT_CONFIG_FILE = Path("sandbox.yaml")
ENV_PREFIX = "SANDBOX_"

# 0 means "pick a free port on first start and keep it".
Port = Annotated[int, Field(ge=0, le=65535, description="0: a free port, chosen on the first start and kept")]

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _bucket_names(buckets: list[str]) -> list[str]:
    for name in buckets:
        if not _BUCKET_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid S3 bucket name (3-63 chars: a-z, 0-9, '.', '-')")
    return buckets


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PostgresConfig(_Section):
    """PostgreSQL, a service of the local profile: MLflow's backend store and the inference log."""

    port: Port = 0
    source: Literal["auto", "system", "bundled"] = Field(
        "auto",
        description="system: the machine's PostgreSQL; bundled: the pgserver wheel; auto: system, else bundled",
    )
    bin_dir: Path | None = Field(None, description="folder holding initdb and postgres (overrides search)")
    database: str = Field("mlflow", description="the database MLflow uses")


class S3Config(_Section):
    """The S3 object store (SeaweedFS), a service of the local profile."""

    port: Port = 0
    buckets: list[str] = Field(
        default_factory=lambda: ["mlflow-artifacts", "data"],
        description="made on `up`; MLflow's artifacts go to the first",
    )

    @field_validator("buckets")
    @classmethod
    def _valid_bucket_names(cls, buckets: list[str]) -> list[str]:
        _bucket_names(buckets)
        if "mlflow-artifacts" not in buckets:
            raise ValueError("must include 'mlflow-artifacts' (MLflow stores its artifacts there)")
        return buckets


class MLflowConfig(_Section):
    """The MLflow tracking server and model registry, a service of the local profile."""

    port: Port = 0
    workers: int = Field(1, ge=1, le=16, description="uvicorn workers; 1: MLflow is one process (~0.3 GB)")
    job_execution: bool = Field(False, description="MLflow's huey job workers (GenAI jobs); off saves ~1 GB")


class NotebooksConfig(_Section):
    """JupyterLab, a service of the local profile: the stack's notebooks, on 127.0.0.1 with a token."""

    enabled: bool = Field(True, description="false: `up` does not start JupyterLab (and stops a running one)")
    port: Port = 0
    start: Literal["first-use", "up"] = Field(
        "first-use",
        description="first-use: `up` prepares JupyterLab and the supervisor listens on its port, starting it on the "
        "first connection (the URL works at once; about 100 MiB saved until then). up: `up` starts it. Without the "
        "supervisor (`supervisor.enabled: false`) `up` starts it either way",
    )


class ServingConfig(_Section):
    """Model servers and A/B routers, on every profile that starts them."""

    auth: Literal["token", "none"] = Field(
        "token",
        description="token: every request but the health checks needs `Authorization: Bearer $ML_SANDBOX_SERVING_"
        "TOKEN` (generated per sandbox; `sandbox env` exports it). none: KServe's bare behaviour, where anyone who "
        "reaches a port (any local user) reads the models' answers and metadata and fills the inference log",
    )


class SupervisorConfig(_Section):
    """The supervisor `sandbox up` starts: it restarts a crashed service or deployment on its ports."""

    enabled: bool = Field(
        True,
        description="false: `up` does not start it (crashed processes stay down) and each model server ships its "
        "own inference journal (true: the supervisor ships them all)",
    )
    max_restarts: int = Field(5, ge=1, le=1000, description="restarts within window_s; one more: crash-looping")
    window_s: float = Field(300.0, gt=0, le=86400, description="seconds over which max_restarts counts")
    backoff_initial_s: float = Field(1.0, gt=0, le=600, description="wait before the first restart; doubles")
    backoff_max_s: float = Field(30.0, gt=0, le=3600, description="longest wait between restarts")
    interval_s: float = Field(1.0, gt=0, le=60, description="seconds between two checks")

    @model_validator(mode="after")
    def _backoff_order(self) -> SupervisorConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self


class LogsConfig(_Section):
    """Each service's, deployment's and the supervisor's `service.log` rotates at a size (by the supervisor)."""

    max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="rotate a log once it is larger than this")
    keep: int = Field(3, ge=0, le=100, description="rotated files kept (service.log.1 newest); 0: just truncate")


# --------------------------------------------------------------------------- remote:

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_ENDPOINT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(
            "must be the NAME of an environment variable that holds the secret (upper case letters, digits "
            "and '_', e.g. MLFLOW_TRACKING_TOKEN), never the secret itself"
        )
    return value


def _http_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def parse_inference_url(url: str) -> tuple[str, str, str]:
    """``(base, model, protocol)`` of a V1 predict or V2 infer URL; ValueError for anything else."""
    for pattern, protocol in ((wire.V1_PREDICT_URL, "v1"), (wire.V2_INFER_URL, "v2")):
        match = pattern.match(url.strip().rstrip("/"))
        if match:
            return match["base"], match["model"], protocol
    raise ValueError(
        "must be a model's inference URL: http(s)://HOST:PORT/v1/models/NAME:predict (V1) "
        "or http(s)://HOST:PORT/v2/models/NAME/infer (V2)"
    )


def _inference_url(value: str) -> str:
    parse_inference_url(value)
    return value.strip().rstrip("/")


def _endpoint_name(value: str) -> str:
    if not _ENDPOINT_NAME.match(value):
        raise ValueError(f"endpoint name {value!r}: use lower-case letters, digits and '-'")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
InferenceUrl = Annotated[str, AfterValidator(_inference_url)]
EndpointName = Annotated[str, AfterValidator(_endpoint_name)]


class RemoteMLflowConfig(_Section):
    """MLflow tracking and registry; auth (optional) from environment variables."""

    tracking_uri: HttpUrl = Field(description="the tracking server, e.g. https://mlflow.staging.example.com")
    token_env: EnvName | None = Field(None, description="variable holding a bearer token (MLFLOW_TRACKING_TOKEN)")
    username_env: EnvName | None = Field(None, description="variable holding the basic-auth user name")
    password_env: EnvName | None = Field(None, description="variable holding the basic-auth password")

    @model_validator(mode="after")
    def _one_kind_of_auth(self) -> RemoteMLflowConfig:
        basic = (self.username_env, self.password_env)
        if self.token_env and any(basic):
            raise ValueError("give token_env (a bearer token) or username_env and password_env (basic auth), not both")
        if any(basic) and not all(basic):
            raise ValueError("basic auth needs both username_env and password_env")
        return self


class RemoteS3Config(_Section):
    """The object store; its keys from environment variables."""

    endpoint_url: HttpUrl = Field(description="the S3 API, e.g. https://s3.staging.example.com")
    access_key_env: EnvName = Field(description="variable holding the access key id")
    secret_key_env: EnvName = Field(description="variable holding the secret access key")
    region: str = Field("us-east-1", description="the region requests are signed for")
    buckets: list[str] = Field(
        default_factory=lambda: ["mlflow-artifacts", "data"],
        min_length=1,
        description="buckets that must exist (each is listed)",
    )
    artifacts_bucket: str = Field("mlflow-artifacts", description="where MLflow stores artifacts (one of buckets)")
    data_bucket: str = Field("data", description="where the checklist writes data (one of buckets)")

    @field_validator("buckets")
    @classmethod
    def _valid_bucket_names(cls, buckets: list[str]) -> list[str]:
        return _bucket_names(buckets)

    @model_validator(mode="after")
    def _named_buckets_are_listed(self) -> RemoteS3Config:
        for key in ("artifacts_bucket", "data_bucket"):
            if getattr(self, key) not in self.buckets:
                raise ValueError(f"{key} {getattr(self, key)!r} must be one of buckets {self.buckets}")
        return self


class RemoteMonitoringConfig(_Section):
    """The inference log (a PostgreSQL table) that drift checks read; its URL from an environment variable."""

    db_url_env: EnvName = Field(description="variable holding the inference log's PostgreSQL URL")


class RemoteServingConfig(_Section):
    """The listed inference endpoints' auth (optional): a bearer token from an environment variable."""

    token_env: EnvName = Field(
        description="variable holding the bearer token the inference endpoints require (Authorization: Bearer); "
        "for a sandbox's own servers, its ML_SANDBOX_SERVING_TOKEN"
    )


class RemoteKfpConfig(_Section):
    """Kubeflow Pipelines' API server."""

    host: HttpUrl = Field(description="the KFP API server, e.g. https://kfp.staging.example.com")


class RemoteConfig(_Section):
    """The `remote:` section: a platform the sandbox did not start, by URLs; credentials by variable name."""

    mlflow: RemoteMLflowConfig | None = None
    s3: RemoteS3Config | None = None
    monitoring: RemoteMonitoringConfig | None = None
    kfp: RemoteKfpConfig | None = None
    serving: RemoteServingConfig | None = None
    inference: dict[EndpointName, InferenceUrl] = Field(
        default_factory=dict, description="endpoint name -> its V1 predict or V2 infer URL (models already served)"
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="seconds each check of an endpoint may take")

    @property
    def configured(self) -> bool:
        return any((self.mlflow, self.s3, self.monitoring, self.kfp, self.inference))


# --------------------------------------------------------------------------- kind: and cluster:

_KUBE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class KindHostPorts(_Section):
    """Loopback host ports kind maps to the stack's NodePorts (0: a free one, chosen on the first `up` and kept)."""

    postgres: Port = 0
    s3: Port = 0
    mlflow: Port = 0
    notebooks: Port = 0
    kfp: Port = 0


class KindConfig(_Section):
    """The `kind:` section: the kind profile's cluster and the stack in it."""

    cluster_name: str = Field("ml-sandbox", pattern=_KUBE_NAME, max_length=40, description="kubectl context kind-NAME")
    namespace: str = Field("ml-sandbox", pattern=_KUBE_NAME, max_length=63, description="where the stack goes")
    object_store: Literal["seaweedfs", "minio"] = Field("seaweedfs", description="the S3 server in the cluster")
    host_ports: KindHostPorts = Field(default_factory=KindHostPorts)


class ClusterConfig(_Section):
    """The `cluster:` section: a cluster the sandbox did not create, on a context the user names."""

    context: str | None = Field(None, description="the kube context (--context); required")
    namespace: str = Field("ml-sandbox", pattern=_KUBE_NAME, max_length=63, description="where the stack goes")
    allowed_contexts: list[str] = Field(
        default_factory=list, description="contexts that are not a known local one (kind-*, minikube, ...) to allow"
    )
    install_operators: bool = Field(
        False, description="install cert-manager, KServe and KFP; false: check that their CRDs exist"
    )
    image: str | None = Field(None, description="the project's image as the cluster pulls it (your registry)")
    object_store: Literal["seaweedfs", "minio"] = Field("seaweedfs", description="the S3 server in the cluster")


Seconds = Annotated[int, Field(gt=0, le=86400)]


class KubeTimeouts(_Section):
    """Seconds each wait of the kind and cluster profiles may take. Image pulls on a slow line are what makes
    a first `up` slow (KServe's, KFP's and the project's images are several GB): raise these there."""

    cluster: Seconds = Field(300, description="`kind create cluster --wait`: the control plane Ready")
    image_build: Seconds = Field(1800, description="`docker build` of the project's image")
    image_load: Seconds = Field(600, description="`kind load docker-image` of the project's image")
    rollout: Seconds = Field(600, description="each of the stack's workloads rolled out; the stack's pods Ready")
    job: Seconds = Field(300, description="the bucket-creating Job Complete")
    crd: Seconds = Field(60, description="a CRD Established (KFP's Application CRD)")
    helm: Seconds = Field(600, description="each Helm release's --wait (cert-manager, KServe, the device plugin)")
    kfp_apply: Seconds = Field(600, description="`kubectl apply -k` of KFP's manifests (fetched from GitHub)")
    kfp_pods: Seconds = Field(900, description="every KFP pod Ready (KFP's own CI allows 900)")
    gpu_setup: Seconds = Field(900, description="real GPUs: the NVIDIA toolkit in a node; the GPUs advertised")
    inference_service: Seconds = Field(600, description="an InferenceService Ready after `serve deploy` (KServe's)")


class KubeConfig(_Section):
    """The `kube:` section: what the kind and cluster profiles share."""

    timeouts: KubeTimeouts = Field(default_factory=KubeTimeouts)


class SandboxConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    profile: str = Field("local", description="where the stack runs: local, remote, kind or cluster")
    dir: Path = Field(Path(".sandbox"), description="the sandbox's state: data, logs, pid files, secrets (0600)")
    config: Path | None = Field(None, description="the YAML file read (--config; ./sandbox.yaml if present)")
    startup_timeout: float = Field(180.0, gt=0, description="seconds each service may take to become ready")
    postgres: PostgresConfig = Field(default_factory=PostgresConfig)
    s3: S3Config = Field(default_factory=S3Config)
    mlflow: MLflowConfig = Field(default_factory=MLflowConfig)
    notebooks: NotebooksConfig = Field(default_factory=NotebooksConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    gpu: GpuConfig = Field(default_factory=GpuConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    pipelines: PipelinesConfig = Field(default_factory=PipelinesConfig)
    remote: RemoteConfig = Field(default_factory=RemoteConfig)
    kind: KindConfig = Field(default_factory=KindConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    kube: KubeConfig = Field(default_factory=KubeConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``SANDBOX_*`` variables, then the YAML file that the ``config`` argument names."""
        yaml_file = getattr(init_settings, "init_kwargs", {}).get("config")
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))

    @property
    def root(self) -> Path:
        """The sandbox directory, absolute."""
        return self.dir.expanduser().resolve()


def _read_yaml(path: Path) -> dict[str, Any]:
    """The file's mapping; fails early, with the file and line, on YAML that is not one."""
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
    return data or {}


def _refuse_local_section(data: dict[str, Any], path: Path | None) -> None:
    """The local profile's sections are top-level keys: a `local:` section would otherwise be an unknown key,
    and a ``SANDBOX_LOCAL__*`` variable silently ignored; both are refused with the fix."""
    found = [f"`local:` in {path}"] if "local" in data else []
    found += sorted(key for key in os.environ if key.upper().startswith(f"{ENV_PREFIX}LOCAL__"))
    if found:
        raise ConfigError(
            f"{', '.join(found)}: there is no `local:` section; the local profile's sections "
            "(postgres, s3, mlflow, notebooks, supervisor, logs) are top-level keys",
            hint="move each one up a level: `local: {mlflow: {port: 5000}}` becomes `mlflow: {port: 5000}`, "
            "SANDBOX_LOCAL__MLFLOW__PORT becomes SANDBOX_MLFLOW__PORT",
        )


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    env = ENV_PREFIX + "__".join(str(part) for part in error["loc"]).upper()
    if error["type"] == "extra_forbidden":
        return f"unknown config key '{key}' (from sandbox.yaml or {env})"
    value = error.get("input")
    # A *_env key should hold a variable's name; if a secret was put there by mistake, it is not echoed.
    secret_slot = str(error["loc"][-1]).endswith("_env") if error["loc"] else False
    shown = f" (got {value!r})" if not isinstance(value, dict | list) and not secret_slot else ""
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
    _refuse_local_section(_read_yaml(yaml_path) if yaml_path is not None else {}, yaml_path)

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
        init["config"] = yaml_path.resolve()  # SandboxConfig reads the file `config` names
    try:
        return SandboxConfig(**init)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()]
        raise ConfigError(
            problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint="fix the value in sandbox.yaml, the SANDBOX_* variable or the flag; see sandbox.example.yaml",
            details="\n".join(problems) if len(problems) > 1 else None,
        ) from exc


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
    found: dict[str, str] = {}
    for key in _LOCATING_KEYS:
        for value in (flags.get(key), environment.get(ENV_PREFIX + key.upper()), from_file.get(key)):
            if isinstance(value, str | Path) and str(value).strip():
                found[key] = str(value)
                break
    # Built without reading any source (a bad variable or file is what brought us here): the defaults are valid.
    return SandboxConfig.model_construct(**{key: Path(v) if key == "dir" else v for key, v in found.items()})
