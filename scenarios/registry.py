"""Checklist: model versioning and registry (versions, aliases, tags, lineage, deploy by alias)."""

from __future__ import annotations

import hashlib

import httpx
import numpy as np

from sandbox.scenarios import ScenarioContext, scenario, scenario_name

MODEL = scenario_name("registry")
EXPERIMENT = scenario_name("registry")
DEPLOYMENT = scenario_name("registry")


def _train_and_register(ctx: ScenarioContext, *, invert: bool, seed: int) -> tuple[str, str, str, object]:
    """Register one version; `invert` flips the labels so the two versions disagree on every row."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(400, 4)).round(5), columns=["amount", "age", "hour", "merchant_risk"])
    labels = ((frame["amount"] + frame["merchant_risk"]) > 0).astype(int)
    if invert:
        labels = 1 - labels
    data_path = ctx.workdir / f"train-{seed}.csv"
    frame.assign(label=labels).to_csv(data_path, index=False)
    data_version = "md5:" + hashlib.md5(data_path.read_bytes()).hexdigest()
    model = LogisticRegression().fit(frame, labels)
    mlflow.set_tracking_uri(ctx.endpoints.mlflow_tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run() as run:
        mlflow.set_tag("data_version", data_version)
        mlflow.log_metric("train_accuracy", float((model.predict(frame) == labels).mean()))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=MODEL,
            signature=infer_signature(frame, model.predict(frame)),
            pip_requirements=["scikit-learn"],  # skips MLflow's slow requirement inference
        )
    return str(info.registered_model_version), run.info.run_id, data_version, model


@scenario(
    "registry",
    title="Model versioning and registry",
    checklist="Model versioning and registry",
    needs=["mlflow", "serving"],
    order=30,
)
def registry(ctx: ScenarioContext) -> None:
    import pandas as pd

    client = ctx.mlflow_client()
    with ctx.step("train and register two versions"):
        version_a, run_a, data_a, model_a = _train_and_register(ctx, invert=False, seed=1)
        version_b, run_b, data_b, model_b = _train_and_register(ctx, invert=True, seed=2)
        ctx.check(int(version_b) == int(version_a) + 1, f"versions {version_a} and {version_b} are not consecutive")

    with ctx.step("set aliases champion and challenger, and tags"):
        client.set_registered_model_tag(MODEL, "owner", "ml-platform")
        client.set_registered_model_alias(MODEL, "champion", version_a)
        client.set_registered_model_alias(MODEL, "challenger", version_b)
        client.set_model_version_tag(MODEL, version_a, "validation", "approved")
        client.set_model_version_tag(MODEL, version_b, "validation", "pending")
        champion = client.get_model_version_by_alias(MODEL, "champion")
        challenger = client.get_model_version_by_alias(MODEL, "challenger")
        ctx.check(champion.version == version_a, f"champion resolves to v{champion.version}")
        ctx.check(challenger.version == version_b, f"challenger resolves to v{challenger.version}")
        ctx.check(champion.tags.get("validation") == "approved", f"champion tags: {champion.tags}")
        ctx.check(client.get_registered_model(MODEL).tags.get("owner") == "ml-platform", "model tag lost")

    with ctx.step("lineage: version → run → data version"):
        for version, run_id, data_version in ((champion, run_a, data_a), (challenger, run_b, data_b)):
            ctx.check(version.run_id == run_id, f"v{version.version} points at run {version.run_id}")
            tagged = client.get_run(version.run_id).data.tags.get("data_version")
            ctx.check(tagged == data_version, f"run {run_id[:8]} carries data version {tagged}")

    probe = pd.DataFrame(np.random.default_rng(99).normal(size=(16, 4)).round(4), columns=model_a.feature_names_in_)
    expected_a = model_a.predict(probe).tolist()
    expected_b = model_b.predict(probe).tolist()

    def served() -> list:
        url = ctx.serving.inference_endpoints()[DEPLOYMENT].v1_predict
        response = httpx.post(url, json={"instances": probe.to_dict(orient="records")}, timeout=30, trust_env=False)
        ctx.check(response.status_code == 200, f"predict answered {response.status_code}: {response.text[:200]}")
        return response.json()["predictions"]

    try:
        with ctx.step(f"deploy models:/{MODEL}@champion and predict"):
            ctx.serving.deploy(DEPLOYMENT, f"models:/{MODEL}@champion")
            ctx.check(served() == expected_a, f"the deployment does not answer like the champion (v{version_a})")
        with ctx.step("move champion to the other version, redeploy: the deployment follows the alias"):
            client.set_registered_model_alias(MODEL, "champion", version_b)
            ctx.serving.deploy(DEPLOYMENT, f"models:/{MODEL}@champion")
            ctx.check(served() == expected_b, f"after the move the deployment does not answer like v{version_b}")
    finally:
        ctx.remove_deployments(DEPLOYMENT)

    ctx.evidence(
        f"{MODEL} v{version_a}, v{version_b}; champion v{version_a}→v{version_b}, challenger v{version_b}; "
        f"lineage v{version_a}→run {run_a[:8]}…→data {data_a[:14]}…; the deployment by alias answered "
        f"{sum(a != b for a, b in zip(expected_a, expected_b, strict=True))}/16 probe rows differently after the move"
    )
    ctx.link("MLflow model", f"{ctx.endpoints.mlflow_tracking_uri}/#/models/{MODEL}")
