"""Checklist: centralized experiment tracking (MLflow), with artifacts in object storage."""

from __future__ import annotations

import hashlib

from sandbox.scenarios import ScenarioContext, scenario

ARTIFACT = "feature-importances.txt"


@scenario(
    "tracking",
    title="Centralized experiment tracking",
    checklist="Centralized experiment tracking (MLflow)",
    needs=["mlflow", "s3"],
    order=10,
    expected_s=2,
)
def tracking(ctx: ScenarioContext) -> None:
    from mlflow.exceptions import MlflowException

    client = ctx.mlflow_client()
    experiment = ctx.unique("tracking")  # checklist-tracking-<time>-<n>: one experiment per run
    content = f"importances for {experiment}\nf0 0.41\nf1 0.22\n".encode()

    with ctx.step("create an experiment and log three runs (params, stepped metrics, tags)"):
        experiment_id = client.create_experiment(experiment, tags=ctx.tags)
        runs = {}
        for lr, final_accuracy in ((0.1, 0.81), (0.05, 0.93), (0.01, 0.77)):
            run = client.create_run(experiment_id, tags={"team": "platform", "scenario": "tracking", **ctx.tags})
            run_id = run.info.run_id
            client.log_param(run_id, "learning_rate", lr)
            client.log_param(run_id, "n_estimators", 100)
            client.log_param(run_id, "seed", 7)
            for step in range(5):
                client.log_metric(run_id, "loss", round(1.0 / (step + 1 + lr), 4), step=step)
            client.log_metric(run_id, "accuracy", final_accuracy)
            runs[run_id] = final_accuracy
        best_run = max(runs, key=runs.get)

    artifact_path = ctx.workdir / ARTIFACT
    artifact_path.write_bytes(content)
    with ctx.step("upload an artifact through MLflow's artifact proxy to S3"):
        try:
            client.log_artifact(best_run, str(artifact_path))
        except MlflowException as exc:
            # MLflow only says its proxy failed; ask the object store itself what is wrong.
            ctx.check(False, f"{ctx.s3_problem() or 'S3 answers, yet'}; MLflow's artifact upload failed: {exc}")
        for run_id in runs:
            client.set_terminated(run_id)

    with ctx.step("read everything back through the MLflow API"):
        got = client.get_run(best_run)
        ctx.check(
            got.data.params == {"learning_rate": "0.05", "n_estimators": "100", "seed": "7"},
            f"params came back as {got.data.params}",
        )
        history = client.get_metric_history(best_run, "loss")
        ctx.check([m.step for m in history] == [0, 1, 2, 3, 4], f"loss steps came back as {[m.step for m in history]}")
        ctx.check(got.data.tags.get("team") == "platform", "the tag 'team' did not come back")
        listed = [f.path for f in client.list_artifacts(best_run)]
        ctx.check(listed == [ARTIFACT], f"artifacts listed: {listed}")

    with ctx.step("find the artifact's bytes in the S3 bucket with the minio SDK"):
        key = f"{experiment_id}/{best_run}/artifacts/{ARTIFACT}"
        stored = ctx.endpoints.minio_client().get_object(ctx.endpoints.artifacts_bucket, key).read()
        ctx.check(stored == content, "the bytes in S3 differ from the uploaded artifact")

    with ctx.step("search by metric finds the right run"):
        found = client.search_runs(experiment_ids=[experiment_id], filter_string="metrics.accuracy > 0.9")
        ctx.check([r.info.run_id for r in found] == [best_run], f"search found {[r.info.run_id for r in found]}")

    digest = hashlib.sha256(content).hexdigest()[:12]
    ctx.evidence(
        f"run {best_run[:8]}… logged 3 params, 2 metrics (5 steps of loss), 2 tags; "
        f"artifact at s3://{ctx.endpoints.artifacts_bucket}/{key} (sha256 {digest}…); "
        "search 'accuracy > 0.9' found it alone among 3 runs"
    )
    ctx.link("MLflow run", ctx.mlflow_run_url(experiment_id, best_run))
