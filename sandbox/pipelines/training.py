"""The training pipeline: `preprocess` (drop rows with missing values) then `train`.

The seed document's pipeline, as KFP components. `train` fits a RandomForest,
logs to MLflow (params, accuracy, the pipeline spec's hash and the data
version as tags), registers the model, and logs the training reference that
drift checks compare live traffic with (sandbox.monitoring.reference). The
`pipelines` scenario runs it twice to prove it reproduces; retraining
(sandbox.monitoring.retraining) runs it on new data.

On the local profile it runs with `kfp.local` (subprocesses of this Python,
so the components import what this environment has). On a cluster the same
compiled YAML is submitted to the KFP API; its image then needs the same
packages (mlflow, scikit-learn, skops, this package).
"""

# No `from __future__ import annotations`: KFP reads the component signatures' real types.
import contextlib
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl

EXPERIMENT = "pipelines"


@dsl.component(base_image="python:3.11")
def preprocess(data_path: str, out_path: str) -> str:
    import pandas as pd

    frame = pd.read_csv(data_path)
    processed = frame.dropna().reset_index(drop=True)
    processed.to_csv(out_path, index=False)
    return out_path


@dsl.component(base_image="python:3.11")
def train(
    data_path: str,
    model_name: str,
    seed: int,
    tracking_uri: str,
    spec_sha256: str,
    data_version: str,
    experiment: str,
    label_column: str,
    trigger: str,
) -> NamedTuple("TrainOutput", [("run_id", str), ("accuracy", float), ("model_sha256", str), ("version", str)]):
    import hashlib
    import pickle
    from collections import namedtuple

    import mlflow
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    from sandbox.serving.reference_model import log_forest

    frame = pd.read_csv(data_path)
    features, labels = frame.drop(columns=[label_column]), frame[label_column]
    x_train, x_test, y_train, y_test = train_test_split(features, labels, test_size=0.25, random_state=seed)
    model = RandomForestClassifier(n_estimators=50, random_state=seed).fit(x_train, y_train)
    accuracy = float((model.predict(x_test) == y_test).mean())
    model_sha256 = hashlib.sha256(pickle.dumps(model, protocol=5)).hexdigest()

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
        info = log_forest(model, x_train, registered_model_name=model_name, seed=seed)
    output = namedtuple("TrainOutput", ["run_id", "accuracy", "model_sha256", "version"])
    return output(run.info.run_id, accuracy, model_sha256, str(info.registered_model_version))


class PipelineOutput(NamedTuple):
    run_id: str
    accuracy: float
    model_sha256: str
    version: str


@dsl.pipeline(name="ml-training-pipeline")
def training_pipeline(
    data_path: str,
    processed_path: str,
    model_name: str,
    seed: int,
    tracking_uri: str,
    spec_sha256: str,
    data_version: str,
    experiment: str = EXPERIMENT,
    label_column: str = "label",
    trigger: str = "manual",
) -> PipelineOutput:
    cleaned = preprocess(data_path=data_path, out_path=processed_path)
    trained = train(
        data_path=cleaned.output,
        model_name=model_name,
        seed=seed,
        tracking_uri=tracking_uri,
        spec_sha256=spec_sha256,
        data_version=data_version,
        experiment=experiment,
        label_column=label_column,
        trigger=trigger,
    )
    return PipelineOutput(
        run_id=trained.outputs["run_id"],
        accuracy=trained.outputs["accuracy"],
        model_sha256=trained.outputs["model_sha256"],
        version=trained.outputs["version"],
    )


def compile_spec(path: Path) -> str:
    """Compile the pipeline to YAML with KFP's compiler; returns the spec's sha256."""
    compiler.Compiler().compile(training_pipeline, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_version(path: Path) -> str:
    """A dataset's version as DVC names it: md5 of the bytes."""
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def run_locally(workdir: Path, *, log_file: Path | None = None, **arguments) -> dict:
    """One run with kfp.local's subprocess runner; returns the pipeline's outputs.

    With ``log_file``, the runner's output (it streams every component's log to
    this process's stdout) goes to that file instead of the terminal.
    """
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir / "kfp-root"))
    if log_file is None:
        return dict(training_pipeline(**arguments).outputs)
    with _output_to(log_file):
        return dict(training_pipeline(**arguments).outputs)


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``path`` (child processes inherit them), then restore them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("ab") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
