"""Checklist: monitoring for model drift.

A model registered with its training reference, served with the inference log
on. Locust traffic drawn from the training distribution: the drift check must
stay quiet. Then traffic with two features moved by one standard deviation:
the check must flag exactly those two. Each check is an MLflow run and sets
the Prometheus gauges `sandbox monitor watch` serves.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sandbox.monitoring.checks import DriftMetrics, check_drift
from sandbox.monitoring.config import MonitoringConfig
from sandbox.monitoring.traffic import replay, wait_logged
from sandbox.scenarios import ScenarioContext, scenario, scenario_name
from sandbox.serving.reference_model import register_reference_model, synthetic_data

MODEL = scenario_name("drift")  # the registered model, and the deployment that serves it
EXPERIMENT = scenario_name("drift")  # its training run
CHECKS_EXPERIMENT = scenario_name("drift", "monitoring")  # the drift checks' runs
SHIFTED = {"f2": 1.0, "f5": 1.0}  # in standard deviations; the label does not depend on these
SECONDS = 5


def _phase(ctx: ScenarioContext, name: str, *, seed: int, shifts: dict[str, float] | None = None):
    """Traffic from one distribution, all of it logged, then one drift check over just that traffic."""
    frame, _ = synthetic_data(rows=3000, seed=seed, shifts=shifts)
    since = datetime.now(UTC)
    endpoint = ctx.serving.inference_endpoints()[MODEL]
    summary = replay(endpoint, frame.round(4).values.tolist(), seconds=SECONDS, report_dir=ctx.workdir / name)
    ctx.check(summary["failures"] == 0, f"{summary['failures']} Locust requests failed: {summary['errors']}")
    logged = wait_logged(ctx.endpoints, MODEL, summary["requests"], since=since)
    check = check_drift(ctx.endpoints, MODEL, MonitoringConfig(), since=since, experiment=CHECKS_EXPERIMENT)
    ctx.check(check.enough_data, f"too few rows for a verdict: {check.summary()}")
    return summary, logged, check


@scenario(
    "drift",
    title="Drift monitoring",
    checklist="Monitoring for model drift",
    needs=["mlflow", "serving", "monitoring"],
    order=65,
)
def drift(ctx: ScenarioContext) -> None:
    with ctx.step("register a model with its training reference, serve it with the inference log on"):
        model = register_reference_model(
            ctx.endpoints.mlflow_tracking_uri, MODEL, n_estimators=30, experiment=EXPERIMENT
        )
        ctx.serving.deploy(MODEL, model.uri)
    try:
        with ctx.step(f"{SECONDS}s of Locust traffic from the training distribution: no alarm"):
            quiet_summary, quiet_rows, quiet = _phase(ctx, "in-distribution", seed=101)
            ctx.check(not quiet.alarm, f"in-distribution traffic raised an alarm: {quiet.summary()}")
        with ctx.step(f"{SECONDS}s with {', '.join(SHIFTED)} shifted by 1 SD: an alarm on exactly those"):
            _, shifted_rows, shifted = _phase(ctx, "shifted", seed=102, shifts=SHIFTED)
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
            flagged = f'sandbox_drift_detected{{feature="f2",model="{MODEL}",version="{model.version}"}} 1.0'
            ctx.check(flagged in exposed, "the Prometheus exposition lacks the f2 drift gauge")
    finally:
        ctx.remove_deployments(MODEL)

    psi = {f.name: f.psi for f in shifted.report.features}
    quiet_max = max(f.psi for f in quiet.report.features)
    ctx.evidence(
        f"{MODEL} v{model.version}: in-distribution {quiet_rows} logged rows "
        f"({quiet_summary['rps']:.0f} req/s), max PSI {quiet_max:.3f}, no alarm; shifted {shifted_rows} rows: "
        f"flagged {', '.join(shifted.drifted_features)} (PSI "
        + ", ".join(f"{name} {psi[name]:.2f}" for name in sorted(SHIFTED))
        + f"), others ≤ {max(v for k, v in psi.items() if k not in SHIFTED and k != 'prediction'):.3f}"
    )
    experiment_id = client.get_run(shifted.mlflow_run_id).info.experiment_id
    ctx.link("MLflow drift check", ctx.mlflow_run_url(experiment_id, shifted.mlflow_run_id))
