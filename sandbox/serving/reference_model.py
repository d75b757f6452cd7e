"""The reference model the serving tests and benchmarks use.

A RandomForest (100 trees by default) on 8 synthetic features, the shape the
project's serving figures are quoted for. Registered in the sandbox's MLflow
with a signature, saved with skops (not pickle) with the tree type trusted,
and with its training reference for drift checks (sandbox.serving.reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRUSTED_SKOPS_TYPES = ["sklearn.tree._tree.Tree"]


@dataclass(frozen=True)
class ReferenceModel:
    name: str
    version: str
    run_id: str
    accuracy: float

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def synthetic_data(
    rows: int = 2000,
    features: int = 8,
    seed: int = 0,
    shift: float = 0.0,
    *,
    shifts: dict[str, float] | None = None,
    boundary: float = 0.0,
):
    """Features ~ N(shift, 1), some moved further by ``shifts``; label = f0 + 0.5 f1 + noise > boundary.

    ``shifts`` makes covariate drift on named features; a different ``boundary``
    makes concept drift (the same features now mean another label).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(loc=shift, size=(rows, features)), columns=[f"f{i}" for i in range(features)])
    for name, delta in (shifts or {}).items():
        frame[name] += delta
    labels = ((frame["f0"] + 0.5 * frame["f1"] + rng.normal(scale=0.3, size=rows)) > boundary).astype(int)
    return frame, labels


def log_forest(model, features, *, registered_model_name: str, seed: int = 0, serialization: str = "skops"):
    """Log a fitted tree ensemble to the active run and register it, with its drift reference.

    Saved with skops (not pickle) by default, the tree type trusted; `serialization="cloudpickle"` for a
    runtime whose MLflow predates skops (KServe's kserve-mlserver: docs/kind.md); a signature from the
    features; the training reference (sandbox.serving.reference) beside it. Returns MLflow's ModelInfo.
    """
    import mlflow
    from mlflow.models import infer_signature

    from sandbox.serving.reference import log_reference

    if serialization not in ("skops", "cloudpickle"):
        raise ValueError(f"serialization must be skops or cloudpickle, not {serialization!r}")
    predictions = model.predict(features)
    log_reference(features, predictions, seed=seed)
    skops = {"skops_trusted_types": TRUSTED_SKOPS_TYPES} if serialization == "skops" else {}
    return mlflow.sklearn.log_model(
        model,
        name="model",
        registered_model_name=registered_model_name,
        signature=infer_signature(features, predictions),
        serialization_format=serialization,
        pip_requirements=["scikit-learn", serialization],  # skips MLflow's slow requirement inference
        **skops,
    )


def register_reference_model(
    tracking_uri: str,
    name: str = "fraud-detector",
    *,
    n_estimators: int = 100,
    features: int = 8,
    seed: int = 0,
    experiment: str = "reference-model",
    serialization: str = "skops",
) -> ReferenceModel:
    import mlflow
    from sklearn.ensemble import RandomForestClassifier

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    frame, labels = synthetic_data(features=features, seed=seed)
    model = RandomForestClassifier(n_estimators=n_estimators, random_state=seed).fit(frame, labels)
    accuracy = float((model.predict(frame) == labels).mean())
    with mlflow.start_run() as run:
        mlflow.log_params({"n_estimators": n_estimators, "features": features, "seed": seed})
        mlflow.log_metric("train_accuracy", accuracy)
        info = log_forest(model, frame, registered_model_name=name, seed=seed, serialization=serialization)
    return ReferenceModel(
        name=name, version=str(info.registered_model_version), run_id=run.info.run_id, accuracy=accuracy
    )
