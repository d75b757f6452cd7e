"""Automated retraining: trigger → train → challenger → evaluate → promote (or not) → redeploy.

A policy (`decide`) says whether to retrain now: a drift alarm, a schedule, or
a new version of the training data. `Retrainer.run` then runs the training
pipeline (KFP, sandbox.pipelines.training) through the pipeline runner it is
given (the profile's `pipelines()`) on the training data's URI (a local file is
first put on the stack's S3), aliases the new version `challenger`, scores it and the
`champion` on fresh labelled data, promotes it when it wins by the configured
margin, and redeploys the served model from `models:/NAME@champion`.

Every decision, promoted or not, is recorded twice: an MLflow run in the
`retraining` experiment (or the one the `Retrainer` is given; tags: trigger,
versions, scores, margin, decision, reason) and a JSON line in the decision
log, so a person can audit why the served model changed.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sandbox.endpoints import Endpoints
from sandbox.errors import ConfigError, SandboxError
from sandbox.monitoring import experiment_id, quiet_mlflow
from sandbox.monitoring.checks import DriftCheck
from sandbox.monitoring.config import RetrainingConfig
from sandbox.pipelines.runner import LocalPipelineRunner, PipelineRunner

logger = logging.getLogger("sandbox.retraining")

EXPERIMENT = "retraining"
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"


@dataclass(frozen=True)
class Trigger:
    kind: str  # "drift" | "schedule" | "new-data" | "manual"
    detail: str


def decide(
    policy: RetrainingConfig,
    *,
    now: float,
    drift: DriftCheck | None = None,
    last_retrained_at: float | None = None,
    data_version: str | None = None,
    champion_data_version: str | None = None,
) -> Trigger | None:
    """Whether the policy asks for a retraining now, and why (None: it does not)."""
    if last_retrained_at is not None and now - last_retrained_at < policy.cooldown_s:
        return None
    if policy.on_drift and drift is not None and drift.alarm:
        return Trigger("drift", drift.summary())
    if policy.on_new_data and data_version and champion_data_version and data_version != champion_data_version:
        return Trigger(
            "new-data", f"training data is {data_version}; the champion was trained on {champion_data_version}"
        )
    if policy.every_s and (last_retrained_at is None or now - last_retrained_at >= policy.every_s):
        return Trigger("schedule", f"every {policy.every_s:g}s")
    return None


@dataclass
class PromotionDecision:
    """What one retraining run decided: whether the challenger replaces the champion, on what evidence, and why."""

    model_name: str
    trigger: str
    trigger_detail: str
    data_version: str
    challenger_version: str
    champion_version: str | None
    challenger_accuracy: float
    champion_accuracy: float | None
    margin: float
    eval_rows: int
    promoted: bool
    reason: str
    redeployed: str | None = None
    pipeline_log: str | None = None
    decided_at: float = field(default_factory=time.time)
    mlflow_run_id: str | None = None

    def line(self) -> str:
        verdict = "PROMOTED" if self.promoted else "kept the champion"
        return f"{self.model_name}: {verdict} ({self.trigger}): {self.reason}"


def _score(tracking_uri: str, model_uri: str, features, labels, *, scratch: Path) -> float:
    """The model's accuracy on ``labels``; its files are copied into a folder under ``scratch``, removed after."""
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(tracking_uri)  # models:/ URIs resolve through the global tracking URI
    scratch.mkdir(parents=True, exist_ok=True)
    # Without a folder, MLflow copies the model into a new one in the system's temporary folder and never
    # removes it: every `sandbox monitor retrain` would leave two copies in /tmp.
    with tempfile.TemporaryDirectory(prefix="score-", dir=scratch) as folder:
        predictions = np.asarray(mlflow.pyfunc.load_model(model_uri, dst_path=folder).predict(features))
    return float((predictions.reshape(len(labels)) == np.asarray(labels)).mean())


def _local(location: str) -> Path:
    path = Path(location).expanduser()
    if not path.is_file():
        raise ConfigError(f"no data file at {location}", hint="give s3://BUCKET/KEY or an existing CSV path")
    return path


class Retrainer:
    """Runs one retraining cycle for a model against a stack's endpoints."""

    def __init__(
        self,
        endpoints: Endpoints,
        workdir: Path,
        *,
        serving=None,
        pipelines: PipelineRunner | None = None,
        decision_log: Path | None = None,
        experiment: str = EXPERIMENT,
    ):
        """``experiment``: the MLflow experiment of the training runs and the decision runs.

        ``pipelines``: the profile's pipeline runner; None: kfp.local against ``endpoints``, each
        run's log under ``workdir``/pipelines.
        """
        self.endpoints = endpoints
        self.experiment = experiment
        self.workdir = workdir
        self.serving = serving
        self.pipelines = pipelines or LocalPipelineRunner(endpoints, workdir / "pipelines")
        self.decision_log = decision_log
        self.client = endpoints.mlflow_client()

    @classmethod
    def in_sandbox(cls, endpoints: Endpoints, root: Path, *, serving=None, pipelines=None) -> Retrainer:
        """The retrainer `sandbox monitor` uses: work files and the decision log under ``root``/monitoring."""
        folder = root / "monitoring"
        return cls(
            endpoints,
            folder / "retraining",
            serving=serving,
            pipelines=pipelines,
            decision_log=folder / "decisions.log",
        )

    # ---------------------------------------------------------------- data

    def fetch(self, location: str, name: str) -> Path:
        """A local copy of s3://BUCKET/KEY (the sandbox's S3) or of a file path."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        target = self.workdir / name
        if location.startswith("s3://"):
            self._s3(location, lambda client, bucket, key: client.fget_object(bucket, key, str(target)))
        else:
            target.write_bytes(_local(location).read_bytes())
        return target

    def data_version(self, location: str) -> str:
        """The current version of a dataset without downloading it (S3's ETag is the md5 of a plain upload)."""
        if location.startswith("s3://"):
            stat = self._s3(location, lambda client, bucket, key: client.stat_object(bucket, key))
            return "md5:" + stat.etag.strip('"')
        from sandbox.pipelines.training import data_version

        return data_version(_local(location))

    def stage(self, location: str, copy: Path, model_name: str) -> str:
        """The URI the pipeline reads the training data from: ``location`` itself when it is on S3, else
        s3://DATA_BUCKET/retraining/MODEL/FILE, where ``copy`` (a local copy of it) is put first."""
        if location.startswith("s3://"):
            return location
        if not self.endpoints.s3_endpoint_url:
            raise ConfigError(
                f"the training pipeline reads its data by URI, and {location} is a local file with no S3 to put it on",
                hint="give the training data as s3://BUCKET/KEY (or configure the stack's S3)",
            )
        bucket, key = self.endpoints.data_bucket, f"retraining/{model_name}/{copy.name}"
        self.endpoints.minio_client().fput_object(bucket, key, str(copy))
        return f"s3://{bucket}/{key}"

    def _s3(self, location: str, action):
        from minio.error import S3Error

        bucket, _, key = location.removeprefix("s3://").partition("/")
        try:
            return action(self.endpoints.minio_client(), bucket, key)
        except S3Error as exc:
            raise ConfigError(f"cannot read {location}: {exc.code}", hint="check the bucket and key") from None

    def champion_data_version(self, model_name: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version_by_alias(model_name, CHAMPION)
        except MlflowException:
            return None
        return self.client.get_run(version.run_id).data.tags.get("data_version")

    # ---------------------------------------------------------------- the cycle

    def run(self, model_name: str, trigger: Trigger, policy: RetrainingConfig, *, seed: int = 7) -> PromotionDecision:
        import pandas as pd
        from mlflow.exceptions import MlflowException

        from sandbox.pipelines import training

        if not policy.training_data or not policy.eval_data:
            raise ConfigError(
                "retraining needs training data and fresh evaluation data",
                hint="set monitoring.retraining.training_data and eval_data (s3://BUCKET/KEY or a path), "
                "or pass --training-data and --eval-data",
            )
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        data = self.fetch(policy.training_data, f"train-{stamp}.csv")
        eval_file = self.fetch(policy.eval_data, f"eval-{stamp}.csv")
        evaluation = pd.read_csv(eval_file)
        if policy.label_column not in evaluation.columns:
            raise ConfigError(
                f"{policy.eval_data} has no {policy.label_column!r} column",
                hint="evaluation data must be labelled; set monitoring.retraining.label_column",
            )
        if policy.label_column not in pd.read_csv(data, nrows=1).columns:
            raise ConfigError(
                f"{policy.training_data} has no {policy.label_column!r} column",
                hint="training data must be labelled; set monitoring.retraining.label_column",
            )
        features, labels = evaluation.drop(columns=[policy.label_column]), evaluation[policy.label_column]
        version_of_data = training.data_version(data)

        logger.info("retraining %s (%s): training pipeline on %s", model_name, trigger.kind, version_of_data)
        pipeline_file = self.workdir / "pipeline.yaml"
        spec_sha256 = training.compile_spec(pipeline_file, self.pipelines.image)
        outcome = self.pipelines.run(
            pipeline_file,
            training.pipeline_arguments(
                data_uri=self.stage(policy.training_data, data, model_name),
                model_name=model_name,
                seed=seed,
                tracking_uri=self.endpoints.mlflow_tracking_uri,
                spec_sha256=spec_sha256,
                data_version=version_of_data,
                experiment=self.experiment,
                label_column=policy.label_column,
                trigger=trigger.kind,
            ),
        )
        if not outcome.succeeded:
            raise SandboxError(
                f"the training pipeline failed: {outcome.error or outcome.state.value}",
                hint=f"see {outcome.log}" if outcome.log else "see the pipeline's log",
                details=outcome.log_tail or None,
            )
        output = outcome.outputs
        challenger = str(output["version"])
        self.client.set_registered_model_alias(model_name, CHALLENGER, challenger)

        try:
            champion = str(self.client.get_model_version_by_alias(model_name, CHAMPION).version)
        except MlflowException:
            champion = None
        with quiet_mlflow():
            uri = self.endpoints.mlflow_tracking_uri
            challenger_accuracy = _score(
                uri, f"models:/{model_name}/{challenger}", features, labels, scratch=self.workdir
            )
            champion_accuracy = (
                _score(uri, f"models:/{model_name}/{champion}", features, labels, scratch=self.workdir)
                if champion
                else None
            )

        if champion is None:
            promoted, reason = True, f"no champion yet; v{challenger} scores {challenger_accuracy:.3f}"
        else:
            gain = challenger_accuracy - champion_accuracy
            promoted = gain >= policy.margin
            reason = (
                f"challenger v{challenger} accuracy {challenger_accuracy:.3f} vs champion v{champion} "
                f"{champion_accuracy:.3f} on {len(labels)} fresh labelled rows: "
                f"{'+' if gain >= 0 else ''}{gain:.3f} {'≥' if promoted else '<'} margin {policy.margin:g}"
            )
        decision = PromotionDecision(
            model_name=model_name,
            trigger=trigger.kind,
            trigger_detail=trigger.detail,
            data_version=version_of_data,
            challenger_version=challenger,
            champion_version=champion,
            challenger_accuracy=challenger_accuracy,
            champion_accuracy=champion_accuracy,
            margin=policy.margin,
            eval_rows=len(labels),
            promoted=promoted,
            reason=reason,
            pipeline_log=outcome.log,
        )
        if promoted:
            if champion is not None:
                self.client.set_registered_model_alias(model_name, PREVIOUS, champion)
            self.client.set_registered_model_alias(model_name, CHAMPION, challenger)
            self.client.delete_registered_model_alias(model_name, CHALLENGER)
            decision.redeployed = self._redeploy(model_name, policy.deployment or model_name)
        with quiet_mlflow():
            self._record(decision, output["run_id"])
        return decision

    def _redeploy(self, model_name: str, deployment: str) -> str | None:
        """Restart the served model from the champion alias (it now names the new version)."""
        if self.serving is None:
            return None
        record = self.serving.get(deployment)
        if record is None:
            logger.warning("no deployment %r to redeploy; the champion alias moved all the same", deployment)
            return None
        if record.kind != "model":
            raise SandboxError(
                f"{deployment!r} is an A/B split; retraining redeploys single-model deployments",
                hint="point monitoring.retraining.deployment at the deployment that serves the champion",
            )
        uri = f"models:/{model_name}@{CHAMPION}"
        self.serving.deploy(record.model_copy(update={"model_uri": uri}))  # every other option as it was
        return f"{deployment} ← {uri}"

    def _record(self, decision: PromotionDecision, training_run_id: str) -> None:
        """The audit trail: an MLflow run with the decision as tags, and a JSON line."""
        run = self.client.create_run(
            experiment_id(self.client, self.experiment),
            run_name=f"decision {decision.model_name} v{decision.challenger_version}",
            tags={
                "kind": "retraining-decision",
                "model_name": decision.model_name,
                "trigger": decision.trigger,
                "trigger_detail": decision.trigger_detail[:5000],
                "data_version": decision.data_version,
                "challenger_version": decision.challenger_version,
                "champion_version": decision.champion_version or "",
                "decision": "promoted" if decision.promoted else "rejected",
                "reason": decision.reason,
                "redeployed": decision.redeployed or "",
                "training_run_id": training_run_id,
            },
        )
        self.client.log_metric(run.info.run_id, "challenger_accuracy", decision.challenger_accuracy)
        if decision.champion_accuracy is not None:
            self.client.log_metric(run.info.run_id, "champion_accuracy", decision.champion_accuracy)
        self.client.log_param(run.info.run_id, "margin", decision.margin)
        self.client.set_terminated(run.info.run_id)
        decision.mlflow_run_id = run.info.run_id
        logger.info("retraining decision: %s", decision.line())
        if self.decision_log is not None:
            self.decision_log.parent.mkdir(parents=True, exist_ok=True)
            with self.decision_log.open("a") as handle:
                handle.write(json.dumps(asdict(decision)) + "\n")
