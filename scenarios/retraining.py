"""Checklist: automated retraining triggers.

A champion trained by the KFP training pipeline (through the profile's
pipeline runner, `ctx.pipelines`) and served from `models:/NAME@champion`.
The world moves: a feature shifts and the label's boundary with it. Shifted
Locust traffic makes the drift check alarm, the policy turns the alarm into a
retraining on the new data (on the sandbox's S3),
the challenger beats the champion on fresh labelled data and is promoted, and
the endpoint then answers from it. Then a bad data version (labels shuffled)
trains a challenger that loses: it is not promoted, and the endpoint keeps
the champion. Every decision is an MLflow run and a line in the decision log.
The drift check, the policy and the retraining run through `Watcher`, the code
`sandbox monitor watch --retrain` runs. The model, deployment, experiments and
S3 keys are the scenario's own (`checklist-retraining…`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import numpy as np

from sandbox.monitoring.config import MonitoringConfig, RetrainingConfig
from sandbox.monitoring.retraining import CHALLENGER, CHAMPION, Retrainer, Trigger
from sandbox.monitoring.traffic import replay, wait_logged
from sandbox.monitoring.watch import Watcher
from sandbox.scenarios import ScenarioContext, scenario, scenario_name
from sandbox.serving.inference_log import InferenceLogStore
from sandbox.serving.reference_model import synthetic_data
from sandbox.serving.specs import DeploymentSpec

MODEL = scenario_name("retraining")  # the registered model, and the deployment that serves it
EXPERIMENT = scenario_name("retraining")  # training pipeline runs and decisions
CHECKS_EXPERIMENT = scenario_name("retraining", "monitoring")  # the drift check's run
# The new world: f0 moves up one SD and a case is now positive only above a higher boundary.
NEW_WORLD = {"shifts": {"f0": 1.0}, "boundary": 1.0}


def _upload(ctx: ScenarioContext, key: str, frame, labels) -> str:
    path = ctx.workdir / key.replace("/", "-")
    frame.assign(label=labels).round(5).to_csv(path, index=False)
    ctx.endpoints.minio_client().fput_object("data", key, str(path))
    return f"s3://data/{key}"


def _served(ctx: ScenarioContext, probe) -> list:
    url = ctx.serving.inference_endpoints()[MODEL].v1_predict
    response = httpx.post(
        url,
        json={"instances": probe.values.tolist()},
        headers=ctx.endpoints.serving_headers(),
        timeout=30,
        trust_env=False,
    )
    ctx.check(response.status_code == 200, f"predict answered {response.status_code}: {response.text[:200]}")
    return response.json()["predictions"]


def _predicted_by(version: str, probe) -> list:
    import mlflow

    return np.asarray(mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}").predict(probe)).tolist()


@scenario(
    "retraining",
    title="Automated retraining",
    checklist="Automated retraining triggers",
    needs=["mlflow", "serving", "kfp", "monitoring", "s3"],
    order=75,
    expected_s=36,
)
def retraining(ctx: ScenarioContext) -> None:
    import mlflow

    mlflow.set_tracking_uri(ctx.endpoints.mlflow_tracking_uri)
    folder = ctx.unique("retraining")  # this run's own folder in the data bucket
    old_train = _upload(ctx, f"{folder}/train-v1.csv", *synthetic_data(1500, seed=21))
    old_eval = _upload(ctx, f"{folder}/eval-v1.csv", *synthetic_data(600, seed=22))
    new_train = _upload(ctx, f"{folder}/train-v2.csv", *synthetic_data(1500, seed=23, **NEW_WORLD))
    new_eval = _upload(ctx, f"{folder}/eval-v2.csv", *synthetic_data(600, seed=24, **NEW_WORLD))
    frame, labels = synthetic_data(1500, seed=25, **NEW_WORLD)
    bad_train = _upload(ctx, f"{folder}/train-v3.csv", frame, np.random.default_rng(0).permutation(labels))
    probe, _ = synthetic_data(40, seed=26, **NEW_WORLD)

    decision_log = ctx.workdir / "decisions.log"
    retrainer = Retrainer(
        ctx.endpoints,
        ctx.workdir / "retraining",
        serving=ctx.serving,
        pipelines=ctx.pipelines,
        decision_log=decision_log,
        experiment=EXPERIMENT,
    )
    policy = RetrainingConfig(cooldown_s=0, margin=0.02, deployment=MODEL)

    with ctx.step("train the first champion with the KFP pipeline and serve models:/…@champion"):
        first = retrainer.run(
            MODEL,
            Trigger("manual", "initial training"),
            policy.model_copy(update={"training_data": old_train, "eval_data": old_eval}),
        )
        ctx.check(first.promoted, f"the first version was not made champion: {first.reason}")
        ctx.serving.deploy(DeploymentSpec.model(MODEL, f"models:/{MODEL}@{CHAMPION}"))
    # What `sandbox monitor watch --retrain` runs, here one step at a time; the new data is now the training data.
    watcher = Watcher(
        ctx.endpoints,
        MonitoringConfig(),
        policy=policy.model_copy(update={"training_data": new_train, "eval_data": new_eval}),
        retrainer=retrainer,
        experiment=CHECKS_EXPERIMENT,
        last_retrained={MODEL: first.decided_at},
    )
    try:
        with ctx.step("shifted Locust traffic; the drift check alarms and the policy triggers retraining"):
            rows = synthetic_data(3000, seed=27, **NEW_WORLD)[0].round(4).values.tolist()
            since = datetime.now(UTC)
            summary = replay(
                ctx.serving.inference_endpoints()[MODEL],
                rows,
                seconds=3,
                report_dir=ctx.workdir / "lt",
                token=ctx.endpoints.serving_token,
                min_requests=400,  # the drift check wants 200 live rows at least; a busy machine sends fewer in 3 s
                rate=250,  # requests/s: enough rows, without taking every core from what runs beside it
            )
            wait_logged(ctx.endpoints, MODEL, summary["requests"], since=since)
            assessment = watcher.assess(MODEL, since=since)
            drift, trigger = assessment.check, assessment.trigger
            ctx.check("f0" in drift.drifted_features, f"the shift of f0 was not flagged: {drift.summary()}")
            ctx.check(trigger is not None and trigger.kind == "drift", f"the policy answered {trigger}")

        with ctx.step("retrain on the new data: the challenger wins on fresh labelled data and is promoted"):
            won = watcher.retrain(MODEL, trigger, at=assessment.at)
            ctx.check(won.promoted, f"the better challenger was not promoted: {won.reason}")
            ctx.check(won.redeployed, "the deployment was not redeployed")
            alias = ctx.mlflow_client().get_model_version_by_alias(MODEL, CHAMPION).version
            ctx.check(str(alias) == won.challenger_version, f"champion is v{alias}, not v{won.challenger_version}")

        with ctx.step("the served endpoint now answers from the new version"):
            since = datetime.now(UTC)
            served_now = _served(ctx, probe)
            wait_logged(ctx.endpoints, MODEL, len(probe), since=since)
            new_answers, old_answers = (
                _predicted_by(won.challenger_version, probe),
                _predicted_by(first.challenger_version, probe),
            )
            ctx.check(served_now == new_answers, "the endpoint does not answer like the promoted version")
            ctx.check(new_answers != old_answers, "the probe cannot tell the versions apart")
            latest = InferenceLogStore(ctx.endpoints.monitoring_db_url).latest_version(MODEL)
            ctx.check(latest == won.challenger_version, f"the inference log says v{latest} answered")

        with ctx.step("a new data version with shuffled labels: its challenger loses and is not promoted"):
            watcher.policy = policy.model_copy(update={"training_data": bad_train, "eval_data": new_eval})
            # A watch step with no traffic since (no drift verdict): the new data version is the trigger.
            bad = watcher.step(MODEL, since=datetime.now(UTC))
            trigger, lost = bad.trigger, bad.decision
            ctx.check(trigger is not None and trigger.kind == "new-data", f"the policy answered {trigger}")
            ctx.check(not lost.promoted, f"a worse challenger was promoted: {lost.reason}")
            client = ctx.mlflow_client()
            ctx.check(
                str(client.get_model_version_by_alias(MODEL, CHAMPION).version) == won.challenger_version,
                "the champion alias moved",
            )
            ctx.check(
                str(client.get_model_version_by_alias(MODEL, CHALLENGER).version) == lost.challenger_version,
                "the losing version is not left as challenger",
            )
            ctx.check(_served(ctx, probe) == new_answers, "the endpoint changed after a rejected challenger")

        with ctx.step("every decision is audited: MLflow runs with tags, and the decision log"):
            decisions = [first, won, lost]
            for decision in decisions:
                tags = client.get_run(decision.mlflow_run_id).data.tags
                expected = "promoted" if decision.promoted else "rejected"
                ctx.check(tags.get("decision") == expected, f"run {decision.mlflow_run_id} says {tags.get('decision')}")
                ctx.check(tags.get("trigger") == decision.trigger, f"trigger tag {tags.get('trigger')}")
            logged = [json.loads(line) for line in decision_log.read_text().splitlines()]
            ctx.check(
                [(d["trigger"], d["promoted"]) for d in logged]
                == [("manual", True), ("drift", True), ("new-data", False)],
                f"the decision log holds {[(d['trigger'], d['promoted']) for d in logged]}",
            )
            counted = {
                outcome: watcher.metrics.registry.get_sample_value(
                    "sandbox_retraining_decisions_total", {"model": MODEL, "decision": outcome}
                )
                for outcome in ("promoted", "rejected")
            }
            ctx.check(counted == {"promoted": 1, "rejected": 1}, f"the watch's metrics counted {counted}")
    finally:
        ctx.remove_deployments(MODEL)

    ctx.evidence(
        f"drift on {', '.join(drift.drifted_features)} → retrained v{won.challenger_version}: {won.reason}; promoted, "
        f"endpoint answers from it. Shuffled-label data → v{lost.challenger_version}: {lost.reason}; not promoted"
    )
    experiment_id = client.get_run(won.mlflow_run_id).info.experiment_id
    ctx.link("MLflow decision (promoted)", ctx.mlflow_run_url(experiment_id, won.mlflow_run_id))
    ctx.link("MLflow decision (rejected)", ctx.mlflow_run_url(experiment_id, lost.mlflow_run_id))
