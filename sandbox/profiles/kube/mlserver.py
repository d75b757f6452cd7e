"""KServe's stock MLflow runtime (`--runtime kserve-mlserver`): the `s3://` storageUri a registered model is kept
at, and whether the runtime's MLflow can load it at all (docs/kind.md, "Upstream facts")."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sandbox.errors import ConfigError
from sandbox.profiles.kube.manifests.spec import ARTIFACTS_BUCKET
from sandbox.serving.specs import registry_errors, registry_version


def artifact_s3_uri(location: str, bucket: str = ARTIFACTS_BUCKET) -> str:
    """The `s3://` form of an artifact location of the stack's MLflow (`mlflow-artifacts:/P` is kept at
    `s3://<artifacts bucket>/P`: the server runs with `--artifacts-destination s3://mlflow-artifacts`)."""
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        return location.rstrip("/")
    if parsed.scheme == "mlflow-artifacts":
        return f"s3://{bucket}/{parsed.path.lstrip('/')}".rstrip("/")
    raise ConfigError(
        f"the model's artifacts are at {location}, not in the stack's S3",
        hint="the kserve-mlserver runtime loads from s3:// only: register a model logged to this sandbox's MLflow",
    )


def resolve_storage_uri(model_uri: str, tracking_uri: str) -> str:
    """`models:/NAME/VERSION` or `models:/NAME@ALIAS` (or an `s3://` folder, as is) -> the model's `s3://`
    artifact folder, from the registry (MLflow 3: the logged model's `<exp>/models/<id>/artifacts`)."""
    from mlflow import MlflowClient

    if model_uri.startswith("s3://"):
        return model_uri.rstrip("/")
    if not model_uri.startswith("models:/"):
        raise ConfigError(
            f"the kserve-mlserver runtime needs a registry URI, not {model_uri}",
            hint="use models:/NAME/VERSION or models:/NAME@ALIAS (KServe does not understand models:/ itself; "
            "the sandbox resolves it to the model's s3:// folder)",
        )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with registry_errors(model_uri):
        name, version = registry_version(client, model_uri)
        if version is None:
            raise ConfigError(
                f"{model_uri}: name a version or an alias for --runtime kserve-mlserver",
                hint=f"e.g. models:/{name}/1 or models:/{name}@champion",
            )
        location = client.get_model_version_download_uri(name, version)
        refuse_unloadable_by_mlserver(_mlmodel(location, tracking_uri), model_uri)
    return artifact_s3_uri(location)


# KServe v0.20.0's `kserve-mlserver` runtime runs MLServer 1.5.0 (kserve-runtime-configs' values), whose mlflow
# runtime leaves MLflow unpinned: its image carries the MLflow of its build date, older than the `skops`
# serialization format of `mlflow.sklearn` (docs/kind.md, "Upstream facts"). Such a model cannot load there.
MLSERVER_SKLEARN_FORMATS = ("pickle", "cloudpickle")


def refuse_unloadable_by_mlserver(mlmodel: dict[str, Any], model_uri: str) -> None:
    """ConfigError when the model's MLmodel names a serialization the runtime's MLflow cannot read."""
    sklearn = (mlmodel.get("flavors") or {}).get("sklearn") or {}
    serialization = sklearn.get("serialization_format")
    if serialization and serialization not in MLSERVER_SKLEARN_FORMATS:
        raise ConfigError(
            f"{model_uri} is a scikit-learn model serialized with {serialization!r}, which KServe's "
            f"kserve-mlserver runtime (MLServer 1.5.0, an MLflow older than that format) cannot load",
            hint="serve it with the sandbox's own runtime (drop --runtime), or log it with "
            "serialization_format='cloudpickle' and register that version",
        )


def _mlmodel(location: str, tracking_uri: str) -> dict[str, Any]:
    """The model version's MLmodel file, read through the tracking server."""
    import mlflow.artifacts
    import yaml

    with tempfile.TemporaryDirectory() as folder:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location.rstrip('/')}/MLmodel", tracking_uri=tracking_uri, dst_path=folder
        )
        return yaml.safe_load(Path(path).read_text()) or {}
