"""The training pipeline: `preprocess` (drop rows with missing values) then `train`.

The seed document's pipeline, as KFP components. `preprocess` reads a labelled
CSV from a URI (``s3://BUCKET/KEY``, or an MLflow artifact URI: ``runs:/``,
``models:/``, ``mlflow-artifacts:/``) and hands the clean rows to `train` as a
KFP dataset artifact. `train` fits a RandomForest, logs to MLflow (params,
accuracy, the pipeline spec's hash and the data version as tags), registers
the model, and logs the training reference that drift checks compare live
traffic with (`monitoring/reference.parquet`, the format
sandbox.serving.reference reads). The `pipelines` scenario runs it twice to
prove it reproduces; retraining (sandbox.monitoring.retraining) runs it on new
data. Both run it through the profile's pipeline runner (sandbox.pipelines.runner).

The components run anywhere: they take URIs, never local paths; each imports
only what its image has (mlflow, scikit-learn, skops, pandas, pyarrow, boto3),
inside its body, and nothing from this package (a KFP component is its
function's source alone). `build(image)` makes the pipeline for an image (the
`pipelines:` config section, sandbox.pipelines.config); `compile_spec` writes
it as pipeline YAML with KFP's compiler. Credentials are never parameters: the
components read them from the environment (MLflow's ``MLFLOW_TRACKING_TOKEN``
or username and password, S3's ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
and ``AWS_ENDPOINT_URL_S3``), which the runner sets.
"""

# No `from __future__ import annotations`: KFP reads the component signatures' real types.
import hashlib
from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl

from sandbox.pipelines.config import LOCAL, PipelinesConfig

PIPELINE_NAME = "ml-training-pipeline"
EXPERIMENT = "pipelines"


def preprocess(
    data_uri: str,
    tracking_uri: str,
    cleaned: dsl.Output[dsl.Dataset],
) -> NamedTuple("PreprocessOutput", [("rows", int)]):
    """Read the labelled CSV at ``data_uri``, drop rows with a missing value; returns how many rows are kept."""
    import io
    import os
    import tempfile
    from collections import namedtuple

    import pandas as pd

    scheme = data_uri.split(":", 1)[0]
    if scheme == "s3":
        import boto3
        from botocore.config import Config

        bucket, _, key = data_uri[len("s3://") :].partition("/")
        s3 = boto3.client(
            "s3",
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None,
            config=Config(s3={"addressing_style": "path"}),
        )
        frame = pd.read_csv(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    elif scheme in ("runs", "models", "mlflow-artifacts"):
        import mlflow

        with tempfile.TemporaryDirectory() as folder:
            local_copy = mlflow.artifacts.download_artifacts(
                artifact_uri=data_uri, dst_path=folder, tracking_uri=tracking_uri or None
            )
            frame = pd.read_csv(local_copy)
    else:
        raise ValueError(
            f"data_uri must be s3://BUCKET/KEY or an MLflow artifact URI (runs:/, models:/, mlflow-artifacts:/), "
            f"not {data_uri!r}: a component reads no local path"
        )
    processed = frame.dropna().reset_index(drop=True)
    processed.to_csv(cleaned.path, index=False)
    return namedtuple("PreprocessOutput", ["rows"])(len(processed))


def train(
    cleaned: dsl.Input[dsl.Dataset],
    model_name: str,
    seed: int,
    tracking_uri: str,
    spec_sha256: str,
    data_version: str,
    experiment: str,
    label_column: str,
    trigger: str,
) -> NamedTuple("TrainOutput", [("run_id", str), ("accuracy", float), ("model_sha256", str), ("version", str)]):
    """Fit, log and register a RandomForest, with the training reference drift checks read."""
    import hashlib
    import os
    import pickle
    import tempfile
    from collections import namedtuple

    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    # The training reference's format: sandbox.serving.reference (REFERENCE_ARTIFACT, PREDICTION_COLUMN,
    # MAX_REFERENCE_ROWS); tests/unit/test_pipelines.py holds the two to the same values.
    reference_artifact, prediction_column, max_reference_rows = "monitoring/reference.parquet", "__prediction__", 5000

    frame = pd.read_csv(cleaned.path)
    features, labels = frame.drop(columns=[label_column]), frame[label_column]
    x_train, x_test, y_train, y_test = train_test_split(features, labels, test_size=0.25, random_state=seed)
    model = RandomForestClassifier(n_estimators=50, random_state=seed).fit(x_train, y_train)
    accuracy = float((model.predict(x_test) == y_test).mean())
    model_sha256 = hashlib.sha256(pickle.dumps(model, protocol=5)).hexdigest()

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.set_tags(
            {
                "pipeline_spec_sha256": spec_sha256,
                "data_version": data_version,
                "model_sha256": model_sha256,
                "trigger": trigger,
            }
        )
        mlflow.log_params({"seed": seed, "n_estimators": 50, "rows": len(frame)})
        mlflow.log_metric("accuracy", accuracy)
        predictions = model.predict(x_train)
        reference = x_train.reset_index(drop=True).copy()
        reference[prediction_column] = predictions
        if len(reference) > max_reference_rows:
            reference = reference.sample(n=max_reference_rows, random_state=seed)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, os.path.basename(reference_artifact))
            reference.to_parquet(path, index=False)
            mlflow.log_artifact(path, artifact_path=os.path.dirname(reference_artifact))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=model_name,
            signature=infer_signature(x_train, predictions),
            serialization_format="skops",  # not pickle; the tree type is trusted
            skops_trusted_types=["sklearn.tree._tree.Tree"],
            pip_requirements=["scikit-learn", "skops"],  # skips MLflow's slow requirement inference
        )
    output = namedtuple("TrainOutput", ["run_id", "accuracy", "model_sha256", "version"])
    return output(run.info.run_id, accuracy, model_sha256, str(info.registered_model_version))


class PipelineOutput(NamedTuple):
    run_id: str
    accuracy: float
    model_sha256: str
    version: str
    rows: int


def build(image: PipelinesConfig = LOCAL):
    """The training pipeline with its components on ``image`` (base image, packages to install)."""
    options = image.component_options()
    preprocess_step = dsl.component(preprocess, **options)
    train_step = dsl.component(train, **options)

    @dsl.pipeline(name=PIPELINE_NAME, description="preprocess (drop rows with NA) then train a RandomForest")
    def training_pipeline(
        data_uri: str,
        model_name: str,
        seed: int,
        tracking_uri: str,
        spec_sha256: str,
        data_version: str,
        experiment: str = EXPERIMENT,
        label_column: str = "label",
        trigger: str = "manual",
    ) -> PipelineOutput:
        cleaned = preprocess_step(data_uri=data_uri, tracking_uri=tracking_uri)
        trained = train_step(
            cleaned=cleaned.outputs["cleaned"],
            model_name=model_name,
            seed=seed,
            tracking_uri=tracking_uri,
            spec_sha256=spec_sha256,
            data_version=data_version,
            experiment=experiment,
            label_column=label_column,
            trigger=trigger,
        )
        # Each run must train and register again (KFP caches identical steps by default).
        cleaned.set_caching_options(False)
        trained.set_caching_options(False)
        return PipelineOutput(
            run_id=trained.outputs["run_id"],
            accuracy=trained.outputs["accuracy"],
            model_sha256=trained.outputs["model_sha256"],
            version=trained.outputs["version"],
            rows=cleaned.outputs["rows"],
        )

    return training_pipeline


def pipeline_arguments(
    *,
    data_uri: str,
    model_name: str,
    seed: int,
    tracking_uri: str,
    spec_sha256: str,
    data_version: str,
    experiment: str = EXPERIMENT,
    label_column: str = "label",
    trigger: str = "manual",
) -> dict:
    """The pipeline's arguments, checked by name (a runner takes them as a mapping)."""
    if not data_uri.startswith(("s3://", "runs:/", "models:/", "mlflow-artifacts:/")):
        raise ValueError(f"data_uri must be s3://BUCKET/KEY or an MLflow artifact URI, not {data_uri!r}")
    return {
        "data_uri": data_uri,
        "model_name": model_name,
        "seed": seed,
        "tracking_uri": tracking_uri,
        "spec_sha256": spec_sha256,
        "data_version": data_version,
        "experiment": experiment,
        "label_column": label_column,
        "trigger": trigger,
    }


def compile_spec(path: Path, image: PipelinesConfig = LOCAL) -> str:
    """Compile the pipeline for ``image`` to YAML with KFP's compiler; returns the spec's sha256."""
    compiler.Compiler().compile(build(image), str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_version(path: Path) -> str:
    """A dataset's version as DVC names it: md5 of the bytes."""
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()
