"""Checklist: reproducible pipelines (Kubeflow Pipelines).

The seed document's pipeline (sandbox.pipelines.training): `preprocess` (read
a CSV, drop rows with NA) then `train` (RandomForest, logs to MLflow, registers
the model), as KFP components, compiled to pipeline YAML with KFP's compiler
for the image the profile's pipeline runner needs, and that YAML run twice
with the same inputs and seed through the runner (`ctx.pipelines`: `kfp.local`
on the local and remote profiles, against the stack's MLflow). The components
take URIs, not paths: the training data is an artifact of an MLflow run of the
scenario's, read by its `runs:/` URI. The model it registers and its
experiment are the scenario's own (`checklist-pipelines`): a user's
`fraud-detector` is never touched.
"""

from __future__ import annotations

from sandbox.pipelines import training
from sandbox.scenarios import ScenarioContext, scenario


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
    expected_s=10,
)
def pipelines(ctx: ScenarioContext) -> None:
    model_name = experiment = ctx.scenario_name("pipelines")
    data = ctx.workdir / "train.csv"
    data_version = write_training_csv(data)
    runner = ctx.pipelines
    spec = ctx.workdir / "pipeline.yaml"
    with ctx.step("compile the pipeline to YAML with KFP's compiler"):
        spec_sha256 = training.compile_spec(spec, runner.image)
        ctx.check("preprocess" in spec.read_text() and "train" in spec.read_text(), "the compiled spec lacks a step")

    experiment_id = ctx.experiment(experiment)  # with the run's tag; the pipeline's runs get it from the environment
    ctx.registered_model(model_name)
    client = ctx.mlflow_client()
    with ctx.step("the training data, an MLflow artifact the pipeline reads by its runs:/ URI"):
        data_run = client.create_run(
            experiment_id, run_name="training data", tags={**ctx.tags, "data_version": data_version}
        )
        client.log_artifact(data_run.info.run_id, str(data), "data")
        client.set_terminated(data_run.info.run_id)
        data_uri = f"runs:/{data_run.info.run_id}/data/{data.name}"

    outcomes = []
    for attempt in (1, 2):
        with ctx.step(f"run {attempt}: preprocess → train through the profile's pipeline runner (same inputs, seed 7)"):
            outcome = runner.run(
                spec,
                training.pipeline_arguments(
                    data_uri=data_uri,
                    model_name=model_name,
                    experiment=experiment,
                    seed=7,
                    tracking_uri=ctx.endpoints.mlflow_tracking_uri,
                    spec_sha256=spec_sha256,
                    data_version=data_version,
                ),
            )
            if not outcome.succeeded and outcome.log_tail:
                ctx.evidence("pipeline log (last lines): " + " | ".join(outcome.log_tail.splitlines()[-8:]))
            ctx.check(outcome.succeeded, outcome.describe())
            outcomes.append(outcome)

    first, second = (outcome.outputs for outcome in outcomes)
    with ctx.step("both runs agree: metrics and model hash"):
        ctx.check(first["accuracy"] == second["accuracy"], f"accuracy {first['accuracy']} vs {second['accuracy']}")
        ctx.check(first["model_sha256"] == second["model_sha256"], "the two runs produced different models")
        ctx.check(first["run_id"] != second["run_id"], "both runs reused one MLflow run")

    with ctx.step("the MLflow runs carry the spec hash and the data version; the model is registered"):
        for outcome in outcomes:
            output = outcome.outputs
            ctx.check(
                outcome.mlflow_run_ids == [output["run_id"]],
                f"the runner found MLflow runs {outcome.mlflow_run_ids}; the pipeline says it made {output['run_id']}",
            )
            run = client.get_run(output["run_id"])
            tags = run.data.tags
            ctx.check(
                tags.get("pipeline_spec_sha256") == spec_sha256, f"spec hash tag is {tags.get('pipeline_spec_sha256')}"
            )
            ctx.check(tags.get("data_version") == data_version, f"data version tag is {tags.get('data_version')}")
            ctx.check(run.data.params.get("rows") == "570", f"train saw {run.data.params.get('rows')} rows, not 570")
            version = client.get_model_version(model_name, output["version"])
            ctx.check(version.run_id == output["run_id"], "the registered version points at another run")
        ctx.check(first["rows"] == 600 - 30, f"preprocess kept {first['rows']} rows, expected 570")

    ctx.evidence(
        f"2 runs of {outcomes[0].pipeline} from {data_uri} (spec sha256 {spec_sha256[:10]}…, "
        f"data {data_version[:14]}…): accuracy {first['accuracy']:.4f} both, model sha256 "
        f"{first['model_sha256'][:10]}… both; {model_name} v{first['version']} and v{second['version']} registered"
    )
    ctx.link("MLflow run 1", ctx.mlflow_run_url(experiment_id, first["run_id"]))
    ctx.link("MLflow run 2", ctx.mlflow_run_url(experiment_id, second["run_id"]))
