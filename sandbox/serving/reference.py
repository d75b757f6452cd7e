"""The training reference: a sample of the features a model was trained on, kept with it.

Logged when the model is trained, as an artifact of the MLflow run that
registered the version (`monitoring/reference.parquet`: the feature columns
in the model's input order, plus the model's predictions on them), so a drift
check always compares live traffic with what *that* version learned from.

It lives beside the models it describes: the training side (`reference_model.log_forest`,
the training pipeline) logs it, monitoring's drift checks load it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_ARTIFACT = "monitoring/reference.parquet"
PREDICTION_COLUMN = "__prediction__"
MAX_REFERENCE_ROWS = 5000


def log_reference(features, predictions, *, max_rows: int = MAX_REFERENCE_ROWS, seed: int = 0) -> None:
    """Log a sample of training features (a DataFrame) and predictions to the active MLflow run."""
    import mlflow

    frame = features.reset_index(drop=True).copy()
    frame[PREDICTION_COLUMN] = np.asarray(predictions)
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))


@dataclass
class Reference:
    model_name: str
    model_version: str
    run_id: str
    features: dict[str, np.ndarray]  # in the model's input order
    predictions: np.ndarray

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)

    @property
    def rows(self) -> int:
        return len(self.predictions)


class ReferenceMissing(LookupError):
    pass


def load_reference(client, model_name: str, model_version: str) -> Reference:
    """The reference logged with a registered version (via the run that produced it)."""
    import pandas as pd
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    version = client.get_model_version(model_name, model_version)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = download_artifacts(
                run_id=version.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp, tracking_uri=client.tracking_uri
            )
            frame = pd.read_parquet(path)
    except (MlflowException, OSError) as exc:
        raise ReferenceMissing(
            f"{model_name} v{model_version} has no training reference ({REFERENCE_ARTIFACT} in run {version.run_id}): "
            f"{type(exc).__name__}"
        ) from None
    predictions = frame.pop(PREDICTION_COLUMN).to_numpy()
    return Reference(
        model_name=model_name,
        model_version=str(model_version),
        run_id=version.run_id,
        features={name: frame[name].to_numpy(dtype=float) for name in frame.columns},
        predictions=predictions,
    )
