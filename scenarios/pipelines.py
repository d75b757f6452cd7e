"""Checklist: reproducible pipelines (Kubeflow Pipelines).

The seed document's pipeline: `preprocess` (read a CSV, drop rows with NA) then
`train` (RandomForest, logs to MLflow, registers `fraud-detector`), as KFP
components, compiled to pipeline YAML with KFP's compiler and run twice with
the same inputs and seed. On the local profile it runs with `kfp.local`
(subprocesses, no cluster).
"""

# No `from __future__ import annotations`: KFP reads the component signatures' real types.
import hashlib
from typing import NamedTuple

from kfp import compiler, dsl

from sandbox.scenarios import ScenarioContext, scenario

MODEL_NAME = "fraud-detector"


@dsl.component(base_image="python:3.11")
def preprocess(data_path: str, out_path: str) -> str:
    import pandas as pd

    frame = pd.read_csv(data_path)
    processed = frame.dropna().reset_index(drop=True)
    processed.to_csv(out_path, index=False)
    return out_path


@dsl.component(base_image="python:3.11")
def train(
    data_path: str, model_name: str, seed: int, tracking_uri: str, spec_sha256: str, data_version: str
) -> NamedTuple("TrainOutput", [("run_id", str), ("accuracy", float), ("model_sha256", str), ("version", str)]):
    import hashlib
    import pickle
    from collections import namedtuple

    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(data_path)
    features, labels = frame.drop(columns=["label"]), frame["label"]
    x_train, x_test, y_train, y_test = train_test_split(features, labels, test_size=0.25, random_state=seed)
    model = RandomForestClassifier(n_estimators=50, random_state=seed).fit(x_train, y_train)
    accuracy = float((model.predict(x_test) == y_test).mean())
    model_sha256 = hashlib.sha256(pickle.dumps(model, protocol=5)).hexdigest()

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("pipelines")
    with mlflow.start_run() as run:
        mlflow.set_tags(
            {"pipeline_spec_sha256": spec_sha256, "data_version": data_version, "model_sha256": model_sha256}
        )
        mlflow.log_params({"seed": seed, "n_estimators": 50, "rows": len(frame)})
        mlflow.log_metric("accuracy", accuracy)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=model_name,
            signature=infer_signature(x_train, model.predict(x_train)),
            serialization_format="skops",
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


@dsl.pipeline(name="ml-training-pipeline")
def training_pipeline(
    data_path: str,
    processed_path: str,
    model_name: str,
    seed: int,
    tracking_uri: str,
    spec_sha256: str,
    data_version: str,
) -> PipelineOutput:
    cleaned = preprocess(data_path=data_path, out_path=processed_path)
    trained = train(
        data_path=cleaned.output,
        model_name=model_name,
        seed=seed,
        tracking_uri=tracking_uri,
        spec_sha256=spec_sha256,
        data_version=data_version,
    )
    return PipelineOutput(
        run_id=trained.outputs["run_id"],
        accuracy=trained.outputs["accuracy"],
        model_sha256=trained.outputs["model_sha256"],
        version=trained.outputs["version"],
    )


def write_training_csv(path, *, rows: int = 600, seed: int = 11) -> str:
    """A labelled dataset with some missing values; returns its data version (md5, as DVC computes it)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 8)).round(5), columns=[f"f{i}" for i in range(8)])
    frame["label"] = ((frame["f0"] + 0.5 * frame["f1"]) > 0).astype(int)
    frame.loc[rng.choice(rows, size=rows // 20, replace=False), "f3"] = np.nan
    frame.to_csv(path, index=False)
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


@scenario(
    "pipelines",
    title="Reproducible pipelines",
    checklist="Reproducible pipelines (Kubeflow Pipelines)",
    needs=["kfp", "mlflow"],
    order=20,
)
def pipelines(ctx: ScenarioContext) -> None:
    from kfp import local

    data = ctx.workdir / "train.csv"
    data_version = write_training_csv(data)
    spec = ctx.workdir / "pipeline.yaml"
    with ctx.step("compile the pipeline to YAML with KFP's compiler"):
        compiler.Compiler().compile(training_pipeline, str(spec))
        spec_sha256 = hashlib.sha256(spec.read_bytes()).hexdigest()
        ctx.check("preprocess" in spec.read_text() and "train" in spec.read_text(), "the compiled spec lacks a step")

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(ctx.workdir / "kfp-root"))
    outputs = []
    for attempt in (1, 2):
        with ctx.step(f"run {attempt}: preprocess → train with kfp.local (same inputs, seed 7)"):
            task = training_pipeline(
                data_path=str(data),
                processed_path=str(ctx.workdir / f"processed-{attempt}.csv"),
                model_name=MODEL_NAME,
                seed=7,
                tracking_uri=ctx.endpoints.mlflow_tracking_uri,
                spec_sha256=spec_sha256,
                data_version=data_version,
            )
            outputs.append(task.outputs)

    first, second = outputs
    with ctx.step("both runs agree: metrics and model hash"):
        ctx.check(first["accuracy"] == second["accuracy"], f"accuracy {first['accuracy']} vs {second['accuracy']}")
        ctx.check(first["model_sha256"] == second["model_sha256"], "the two runs produced different models")
        ctx.check(first["run_id"] != second["run_id"], "both runs reused one MLflow run")

    with ctx.step("the MLflow runs carry the spec hash and the data version; the model is registered"):
        client = ctx.mlflow_client()
        for output in outputs:
            tags = client.get_run(output["run_id"]).data.tags
            ctx.check(
                tags.get("pipeline_spec_sha256") == spec_sha256, f"spec hash tag is {tags.get('pipeline_spec_sha256')}"
            )
            ctx.check(tags.get("data_version") == data_version, f"data version tag is {tags.get('data_version')}")
            version = client.get_model_version(MODEL_NAME, output["version"])
            ctx.check(version.run_id == output["run_id"], "the registered version points at another run")
        processed_rows = sum(1 for _ in (ctx.workdir / "processed-1.csv").open()) - 1
        ctx.check(processed_rows == 600 - 30, f"preprocess kept {processed_rows} rows, expected 570")

    experiment_id = client.get_run(first["run_id"]).info.experiment_id
    ctx.evidence(
        f"2 runs of ml-training-pipeline (spec sha256 {spec_sha256[:10]}…, data {data_version[:14]}…): "
        f"accuracy {first['accuracy']:.4f} both, model sha256 {first['model_sha256'][:10]}… both; "
        f"{MODEL_NAME} v{first['version']} and v{second['version']} registered"
    )
    ctx.link("MLflow run 1", ctx.mlflow_run_url(experiment_id, first["run_id"]))
    ctx.link("MLflow run 2", ctx.mlflow_run_url(experiment_id, second["run_id"]))
