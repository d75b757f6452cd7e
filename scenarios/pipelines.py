"""Checklist: reproducible pipelines (Kubeflow Pipelines).

The seed document's pipeline (sandbox.pipelines.training): `preprocess` (read
a CSV, drop rows with NA) then `train` (RandomForest, logs to MLflow, registers
the model), as KFP components, compiled to pipeline YAML with KFP's compiler
and run twice with the same inputs and seed. On the local profile it runs with
`kfp.local` (subprocesses, no cluster). The model it registers and its
experiment are the scenario's own (`checklist-pipelines`): a user's
`fraud-detector` is never touched.
"""

from __future__ import annotations

from sandbox.pipelines import training
from sandbox.scenarios import ScenarioContext, scenario, scenario_name

MODEL_NAME = scenario_name("pipelines")
EXPERIMENT = scenario_name("pipelines")


def write_training_csv(path, *, rows: int = 600, seed: int = 11) -> str:
    """A labelled dataset with some missing values; returns its data version (md5, as DVC computes it)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 8)).round(5), columns=[f"f{i}" for i in range(8)])
    frame["label"] = ((frame["f0"] + 0.5 * frame["f1"]) > 0).astype(int)
    frame.loc[rng.choice(rows, size=rows // 20, replace=False), "f3"] = np.nan
    frame.to_csv(path, index=False)
    return training.data_version(path)


@scenario(
    "pipelines",
    title="Reproducible pipelines",
    checklist="Reproducible pipelines (Kubeflow Pipelines)",
    needs=["kfp", "mlflow"],
    order=20,
)
def pipelines(ctx: ScenarioContext) -> None:
    data = ctx.workdir / "train.csv"
    data_version = write_training_csv(data)
    spec = ctx.workdir / "pipeline.yaml"
    with ctx.step("compile the pipeline to YAML with KFP's compiler"):
        spec_sha256 = training.compile_spec(spec)
        ctx.check("preprocess" in spec.read_text() and "train" in spec.read_text(), "the compiled spec lacks a step")

    outputs = []
    for attempt in (1, 2):
        with ctx.step(f"run {attempt}: preprocess → train with kfp.local (same inputs, seed 7)"):
            output = training.run_locally(
                ctx.workdir,
                data_path=str(data),
                processed_path=str(ctx.workdir / f"processed-{attempt}.csv"),
                model_name=MODEL_NAME,
                experiment=EXPERIMENT,
                seed=7,
                tracking_uri=ctx.endpoints.mlflow_tracking_uri,
                spec_sha256=spec_sha256,
                data_version=data_version,
            )
            outputs.append(output)

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
