"""Checklist: monitoring for model drift.

A model registered with its training reference, served with the inference log
on. Locust traffic drawn from the training distribution: the drift check must
stay quiet. Then traffic with two features moved by one standard deviation:
the check must flag exactly those two. Each check is an MLflow run and sets
the Prometheus gauges `sandbox monitor watch` serves.

Where nothing deploys models (the remote profile), the same rows go to the
inference log directly: the registered model predicts them here and
`InferenceLogWriter`, the model server's own writer, logs them with the model's
name and version, so the checks read exactly what a server would have written.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sandbox.monitoring.checks import DriftMetrics, check_drift
from sandbox.monitoring.config import MonitoringConfig
from sandbox.monitoring.traffic import replay, wait_logged
from sandbox.scenarios import ScenarioContext, scenario
from sandbox.serving.reference_model import register_reference_model, synthetic_data
from sandbox.serving.specs import DeploymentSpec

SHIFTED = {"f2": 1.0, "f5": 1.0}  # in standard deviations; the label does not depend on these
SECONDS = 3
# Rows a verdict is drawn from, at the least (a busy machine answers fewer in SECONDS: Locust runs again).
MIN_REQUESTS = 600
RATE = 300  # requests/s: SECONDS of it give the verdict its rows without taking every core
DIRECT_ROWS = 2000  # rows logged per phase where no model is served


def _served(ctx: ScenarioContext, model_name: str, frame, name: str) -> tuple[int, str]:
    """SECONDS of Locust traffic through the deployment; returns what was sent."""
    endpoint = ctx.serving.inference_endpoints()[model_name]
    summary = replay(
        endpoint,
        frame.round(4).values.tolist(),
        seconds=SECONDS,
        report_dir=ctx.workdir / name,
        token=ctx.endpoints.serving_token,
        min_requests=MIN_REQUESTS,
        rate=RATE,
    )
    ctx.check(summary["failures"] == 0, f"{summary['failures']} Locust requests failed: {summary['errors']}")
    ctx.check(summary["requests"] > 0, "Locust sent no request")
    return summary["requests"], f"{summary['rps']:.0f} req/s through the model server"


def _logged_directly(ctx: ScenarioContext, model_name: str, model, frame, name: str) -> tuple[int, str]:
    """The model predicts the rows here; the inference log's own writer logs them (no server, no deployment)."""
    import mlflow.pyfunc
    from prometheus_client import CollectorRegistry

    from sandbox.serving.inference_log import InferenceLogWriter, LoggedModel

    rows = frame.round(4).head(DIRECT_ROWS)
    predictions = mlflow.pyfunc.load_model(model.uri).predict(rows)
    writer = InferenceLogWriter(
        ctx.endpoints.monitoring_db_url,
        LoggedModel(deployment=model_name, model_name=model_name, model_version=model.version),
        spool_dir=ctx.workdir / name,
        metrics_registry=CollectorRegistry(),
    ).start()
    for start in range(0, len(rows), 20):  # as requests of 20 rows each
        writer.log(
            rows.values[start : start + 20], predictions[start : start + 20], request_id=f"{name}-{start}", variant=None
        )
    writer.close()
    left = writer.pending_rows
    ctx.check(left == 0, f"the inference log did not take the rows ({left} left in {writer.journal.folder})")
    return len(rows), f"{len(rows)} rows predicted here and written by the inference log's writer"


def _phase(ctx: ScenarioContext, model_name: str, model, name: str, checks_experiment: str, *, seed: int, shifts=None):
    """Traffic from one distribution, all of it logged, then one drift check over just that traffic."""
    frame, _ = synthetic_data(rows=3000, seed=seed, shifts=shifts)
    since = datetime.now(UTC)
    if ctx.has("serving"):
        sent, how = _served(ctx, model_name, frame, name)
    else:
        sent, how = _logged_directly(ctx, model_name, model, frame, name)
    logged = wait_logged(ctx.endpoints, model_name, sent, since=since)
    check = check_drift(ctx.endpoints, model_name, MonitoringConfig(), since=since, experiment=checks_experiment)
    ctx.check(check.enough_data, f"too few rows for a verdict: {check.summary()}")
    return how, logged, check


@scenario(
    "drift",
    title="Drift monitoring",
    checklist="Monitoring for model drift",
    needs=["mlflow", "monitoring"],
    order=65,
    expected_s=14,
)
def drift(ctx: ScenarioContext) -> None:
    served = ctx.has("serving")
    model_name = ctx.scenario_name("drift")  # the registered model, and the deployment that serves it
    experiment = ctx.scenario_name("drift")  # its training run
    checks_experiment = ctx.scenario_name("drift", "monitoring")  # the drift checks' runs
    traffic = f"{SECONDS}s of Locust traffic" if served else f"{DIRECT_ROWS} logged rows"
    with ctx.step(
        "register a model with its training reference, "
        + ("serve it with the inference log on" if served else "no deployment: its rows are logged directly")
    ):
        ctx.experiment(experiment)
        ctx.experiment(checks_experiment)
        ctx.registered_model(model_name)
        model = register_reference_model(
            ctx.endpoints.mlflow_tracking_uri, model_name, n_estimators=30, experiment=experiment
        )
        if served:
            ctx.serving.deploy(DeploymentSpec.model(model_name, model.uri))
    try:
        with ctx.step(f"{traffic} from the training distribution: no alarm"):
            quiet_how, quiet_rows, quiet = _phase(
                ctx, model_name, model, "in-distribution", checks_experiment, seed=101
            )
            ctx.check(not quiet.alarm, f"in-distribution traffic raised an alarm: {quiet.summary()}")
        with ctx.step(f"{traffic} with {', '.join(SHIFTED)} shifted by 1 SD: an alarm on exactly those"):
            _, shifted_rows, shifted = _phase(
                ctx, model_name, model, "shifted", checks_experiment, seed=102, shifts=SHIFTED
            )
            ctx.check(
                shifted.drifted_features == sorted(SHIFTED),
                f"flagged {shifted.drifted_features or 'nothing'}, expected {sorted(SHIFTED)}: {shifted.summary()}",
            )
        with ctx.step("the checks are in MLflow and on the Prometheus gauges"):
            client = ctx.mlflow_client()
            tags = client.get_run(shifted.mlflow_run_id).data.tags
            ctx.check(tags.get("drift.verdict") == "drift", f"the MLflow run says {tags.get('drift.verdict')}")
            ctx.check(tags.get("drift.features") == ",".join(sorted(SHIFTED)), f"MLflow tags {tags}")
            ctx.check(
                client.get_run(quiet.mlflow_run_id).data.tags.get("drift.verdict") == "no-drift",
                "the quiet check is not recorded as no-drift",
            )
            from prometheus_client import generate_latest

            metrics = DriftMetrics()
            metrics.update(shifted)
            exposed = generate_latest(metrics.registry).decode()
            flagged = f'sandbox_drift_detected{{feature="f2",model="{model_name}",version="{model.version}"}} 1.0'
            ctx.check(flagged in exposed, "the Prometheus exposition lacks the f2 drift gauge")
    finally:
        ctx.remove_deployments(model_name)

    psi = {f.name: f.psi for f in shifted.report.features}
    quiet_max = max(f.psi for f in quiet.report.features)
    ctx.evidence(
        f"{model_name} v{model.version}: in-distribution {quiet_rows} logged rows "
        f"({quiet_how}), max PSI {quiet_max:.3f}, no alarm; shifted {shifted_rows} rows: "
        f"flagged {', '.join(shifted.drifted_features)} (PSI "
        + ", ".join(f"{name} {psi[name]:.2f}" for name in sorted(SHIFTED))
        + f"), others ≤ {max(v for k, v in psi.items() if k not in SHIFTED and k != 'prediction'):.3f}"
    )
    experiment_id = client.get_run(shifted.mlflow_run_id).info.experiment_id
    ctx.link("MLflow drift check", ctx.mlflow_run_url(experiment_id, shifted.mlflow_run_id))
