"""Checklist: model versioning and registry (versions, aliases, tags, lineage, deploy by alias).

Deploying by alias needs a profile that deploys models (`serving`); where there is
none (the remote profile) the registry is still checked and the report says why
the deployment step was left out.
"""

from __future__ import annotations

import hashlib

import httpx
import numpy as np

from sandbox.scenarios import ScenarioContext, scenario
from sandbox.serving.specs import DeploymentSpec


def _train_and_register(
    ctx: ScenarioContext, model_name: str, experiment: str, *, invert: bool, seed: int
) -> tuple[str, str, str, object]:
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
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.set_tag("data_version", data_version)
        mlflow.log_metric("train_accuracy", float((model.predict(frame) == labels).mean()))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=model_name,
            signature=infer_signature(frame, model.predict(frame)),
            pip_requirements=["scikit-learn"],  # skips MLflow's slow requirement inference
        )
    return str(info.registered_model_version), run.info.run_id, data_version, model


@scenario(
    "registry",
    title="Model versioning and registry",
    checklist="Model versioning and registry",
    needs=["mlflow"],
    order=30,
    expected_s=11,
)
def registry(ctx: ScenarioContext) -> None:
    import pandas as pd

    # checklist-registry (checklist-registry-RUNID where the sandbox does not own the platform)
    model_name = experiment = deployment = ctx.scenario_name("registry")
    client = ctx.mlflow_client()
    with ctx.step("train and register two versions"):
        ctx.experiment(experiment)
        ctx.registered_model(model_name)
        version_a, run_a, data_a, model_a = _train_and_register(ctx, model_name, experiment, invert=False, seed=1)
        version_b, run_b, data_b, model_b = _train_and_register(ctx, model_name, experiment, invert=True, seed=2)
        ctx.check(int(version_b) == int(version_a) + 1, f"versions {version_a} and {version_b} are not consecutive")

    with ctx.step("set aliases champion and challenger, and tags"):
        client.set_registered_model_tag(model_name, "owner", "ml-platform")
        client.set_registered_model_alias(model_name, "champion", version_a)
        client.set_registered_model_alias(model_name, "challenger", version_b)
        client.set_model_version_tag(model_name, version_a, "validation", "approved")
        client.set_model_version_tag(model_name, version_b, "validation", "pending")
        champion = client.get_model_version_by_alias(model_name, "champion")
        challenger = client.get_model_version_by_alias(model_name, "challenger")
        ctx.check(champion.version == version_a, f"champion resolves to v{champion.version}")
        ctx.check(challenger.version == version_b, f"challenger resolves to v{challenger.version}")
        ctx.check(champion.tags.get("validation") == "approved", f"champion tags: {champion.tags}")
        ctx.check(client.get_registered_model(model_name).tags.get("owner") == "ml-platform", "model tag lost")

    with ctx.step("lineage: version → run → data version"):
        for version, run_id, data_version in ((champion, run_a, data_a), (challenger, run_b, data_b)):
            ctx.check(version.run_id == run_id, f"v{version.version} points at run {version.run_id}")
            tagged = client.get_run(version.run_id).data.tags.get("data_version")
            ctx.check(tagged == data_version, f"run {run_id[:8]} carries data version {tagged}")

    probe = pd.DataFrame(np.random.default_rng(99).normal(size=(16, 4)).round(4), columns=model_a.feature_names_in_)
    expected_a = model_a.predict(probe).tolist()
    expected_b = model_b.predict(probe).tolist()

    def served() -> list:
        url = ctx.serving.inference_endpoints()[deployment].v1_predict
        response = httpx.post(
            url,
            json={"instances": probe.to_dict(orient="records")},
            headers=ctx.endpoints.serving_headers(),
            timeout=30,
            trust_env=False,
        )
        ctx.check(response.status_code == 200, f"predict answered {response.status_code}: {response.text[:200]}")
        return response.json()["predictions"]

    if not ctx.has("serving"):
        with ctx.step("move champion to the other version (no deployment: nothing here deploys models)"):
            client.set_registered_model_alias(model_name, "champion", version_b)
            moved = client.get_model_version_by_alias(model_name, "champion").version
            ctx.check(moved == version_b, f"champion resolves to v{moved} after the move")
        ctx.evidence(
            f"{model_name} v{version_a}, v{version_b}; champion v{version_a}→v{version_b}, challenger v{version_b}; "
            f"lineage v{version_a}→run {run_a[:8]}…→data {data_a[:14]}…"
        )
        ctx.evidence(f"deploying by alias not checked: {ctx.lacks('serving')}")
        ctx.link("MLflow model", f"{ctx.endpoints.mlflow_tracking_uri}/#/models/{model_name}")
        return

    try:
        with ctx.step(f"deploy models:/{model_name}@champion and predict"):
            ctx.serving.deploy(DeploymentSpec.model(deployment, f"models:/{model_name}@champion"))
            ctx.check(served() == expected_a, f"the deployment does not answer like the champion (v{version_a})")
        with ctx.step("move champion to the other version, redeploy: the deployment follows the alias"):
            client.set_registered_model_alias(model_name, "champion", version_b)
            ctx.serving.deploy(DeploymentSpec.model(deployment, f"models:/{model_name}@champion"))
            ctx.check(served() == expected_b, f"after the move the deployment does not answer like v{version_b}")
    finally:
        ctx.remove_deployments(deployment)

    ctx.evidence(
        f"{model_name} v{version_a}, v{version_b}; champion v{version_a}→v{version_b}, challenger v{version_b}; "
        f"lineage v{version_a}→run {run_a[:8]}…→data {data_a[:14]}…; the deployment by alias answered "
        f"{sum(a != b for a, b in zip(expected_a, expected_b, strict=True))}/16 probe rows differently after the move"
    )
    ctx.link("MLflow model", f"{ctx.endpoints.mlflow_tracking_uri}/#/models/{model_name}")
