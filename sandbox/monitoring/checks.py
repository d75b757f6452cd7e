"""One drift check: a model version's recent inferences against its training reference.

The live window comes from the inference log, the reference from the version's
MLflow run; the verdict is logged to MLflow (experiment `monitoring` unless the
caller names another, one run per check, metrics per feature, the full report
as `drift_report.json`) and, in `sandbox monitor watch`, exposed as Prometheus
gauges.

A window starts at an absolute time; `parse_since` reads the two ways a person
gives one: a duration back from now (`15m`, `90`) or a moment, ISO 8601
(`2026-01-31T14:00:00Z`), which is what a script or a test that knows when its
traffic began should pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from sandbox.endpoints import Endpoints
from sandbox.errors import ConfigError, NotRunningError, SandboxError
from sandbox.monitoring import experiment_id, quiet_mlflow
from sandbox.monitoring.config import MonitoringConfig
from sandbox.monitoring.drift import DriftReport, detect_drift
from sandbox.serving.inference_log import InferenceLogStore
from sandbox.serving.reference import ReferenceMissing, load_reference

EXPERIMENT = "monitoring"
PREDICTION = "prediction"  # the model's output, checked beside its input features


@dataclass
class DriftCheck:
    model_name: str
    model_version: str
    since: datetime
    live_rows: int
    reference_rows: int
    min_rows: int
    report: DriftReport | None  # None: too few live rows for a verdict
    checked_at: float = field(default_factory=time.time)
    mlflow_run_id: str | None = None

    @property
    def enough_data(self) -> bool:
        return self.report is not None

    @property
    def drifted_features(self) -> list[str]:
        return [name for name in (self.report.drifted if self.report else []) if name != PREDICTION]

    @property
    def prediction_drifted(self) -> bool:
        return bool(self.report) and PREDICTION in self.report.drifted

    @property
    def alarm(self) -> bool:
        return bool(self.drifted_features) or self.prediction_drifted

    @property
    def verdict(self) -> str:
        """ "insufficient-data", "drift" or "no-drift": the MLflow tag and the report's field."""
        if not self.enough_data:
            return "insufficient-data"
        return "drift" if self.alarm else "no-drift"

    def summary(self) -> str:
        head = f"{self.model_name} v{self.model_version}: {self.live_rows} live row(s) since {self.since:%H:%M:%S}Z"
        if self.report is None:
            return f"{head}; too few for a verdict (at least {self.min_rows})"
        if not self.alarm:
            return f"{head}; no drift"
        parts = [f"features {', '.join(self.drifted_features)}"] if self.drifted_features else []
        parts += ["the prediction distribution"] if self.prediction_drifted else []
        return f"{head}; DRIFT in {' and '.join(parts)}"


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """The start of a window, in UTC: a duration back from ``now`` (``15m``, ``2h``, ``90``) or an ISO 8601 time.

    An ISO time may carry an offset (``Z``, ``+02:00``); without one it is UTC. A date alone is its midnight.
    """
    from sandbox.loadtest import parse_duration

    text = text.strip()
    try:
        seconds = parse_duration(text)
    except ConfigError:
        pass
    else:
        return (now or datetime.now(UTC)).astimezone(UTC) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"bad window start {text!r}",
            hint="give a duration back from now (15m, 2h, 90) or an ISO 8601 time (2026-01-31T14:00:00Z)",
        ) from None
    return _utc(moment)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _numeric(values) -> np.ndarray | None:
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return None  # e.g. string class labels: the prediction is then not compared


def check_drift(
    endpoints: Endpoints,
    model_name: str,
    config: MonitoringConfig,
    *,
    version: str | None = None,
    since: datetime | str | None = None,
    log_to_mlflow: bool = True,
    experiment: str = EXPERIMENT,
) -> DriftCheck:
    """Check ``model_name`` (the latest answering version, or ``version``) and log the run in ``experiment``.

    ``since``: where the window of live rows starts: a datetime (naive: UTC), or text for `parse_since`
    (a duration back from now, or an ISO 8601 time); None: ``config.window_s`` back from now.
    """
    from mlflow.exceptions import MlflowException

    if isinstance(since, str):
        since = parse_since(since)  # a bad window is refused before anything is read
    if not endpoints.monitoring_db_url:
        raise NotRunningError(
            f"the {endpoints.profile} profile has no inference log", hint="use a profile with monitoring (local)"
        )
    store = InferenceLogStore(endpoints.monitoring_db_url)
    version = version or store.latest_version(model_name)
    if version is None:
        raise ConfigError(
            f"no logged inferences for model {model_name!r}",
            hint="serve it (`sandbox serve deploy`, inference log on) and send it traffic first",
        )
    client = endpoints.mlflow_client()
    try:
        with quiet_mlflow():
            reference = load_reference(client, model_name, version)
    except ReferenceMissing as exc:
        raise SandboxError(
            str(exc),
            hint="log one when training: sandbox.serving.reference.log_reference(features, predictions)",
        ) from None
    except MlflowException as exc:
        raise ConfigError(f"{model_name} v{version} is not in the registry ({exc.error_code})") from None
    since = _utc(since) if since is not None else datetime.now(UTC) - timedelta(seconds=config.window_s)
    matrix, predictions = store.window(model_name, version, since=since, limit=config.max_rows)
    check = DriftCheck(model_name, version, since, len(matrix), reference.rows, config.min_rows, report=None)
    if len(matrix) >= config.min_rows:
        if matrix.shape[1] != len(reference.features):
            raise SandboxError(
                f"live rows have {matrix.shape[1]} features, the reference {len(reference.features)}",
                hint="the reference must be logged with the model's input columns, in order",
            )
        reference_columns = dict(reference.features)
        live_columns = {name: matrix[:, i] for i, name in enumerate(reference.features)}
        ref_pred, live_pred = _numeric(reference.predictions), _numeric(predictions)
        if ref_pred is not None and live_pred is not None:
            reference_columns[PREDICTION], live_columns[PREDICTION] = ref_pred, live_pred
        check.report = detect_drift(
            reference_columns, live_columns, psi_threshold=config.psi_threshold, ks_alpha=config.ks_alpha
        )
    if log_to_mlflow:
        with quiet_mlflow():
            check.mlflow_run_id = _log_check(client, check, config, experiment)
    return check


def _log_check(client, check: DriftCheck, config: MonitoringConfig, experiment: str = EXPERIMENT) -> str:
    from mlflow.entities import Metric, Param, RunTag

    run = client.create_run(
        experiment_id(client, experiment), run_name=f"drift {check.model_name} v{check.model_version}"
    )
    now = int(check.checked_at * 1000)
    tags = {
        "kind": "drift-check",
        "model_name": check.model_name,
        "model_version": check.model_version,
        "drift.verdict": check.verdict,
        "drift.features": ",".join(check.drifted_features),
        "drift.prediction": str(check.prediction_drifted).lower(),
    }
    params = {
        "since": check.since.isoformat(),
        "psi_threshold": config.psi_threshold,
        "ks_alpha": config.ks_alpha,
        "min_rows": config.min_rows,
    }
    metrics = [Metric("live_rows", check.live_rows, now, 0), Metric("reference_rows", check.reference_rows, now, 0)]
    for feature in check.report.features if check.report else []:
        metrics += [
            Metric(f"psi.{feature.name}", feature.psi, now, 0),
            Metric(f"p_value.{feature.name}", feature.p_value, now, 0),
            Metric(f"drifted.{feature.name}", float(feature.drifted), now, 0),
        ]
    client.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.log_dict(run.info.run_id, report_dict(check), "drift_report.json")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def report_dict(check: DriftCheck) -> dict:
    return {
        "model_name": check.model_name,
        "model_version": check.model_version,
        "since": check.since.isoformat(),
        "live_rows": check.live_rows,
        "reference_rows": check.reference_rows,
        "verdict": check.verdict,
        "drifted_features": check.drifted_features,
        "prediction_drifted": check.prediction_drifted,
        "features": [
            {
                "name": f.name,
                "psi": f.psi,
                "test": f.test,
                "statistic": f.statistic,
                "p_value": f.p_value,
                "drifted": f.drifted,
            }
            for f in (check.report.features if check.report else [])
        ],
        "mlflow_run_id": check.mlflow_run_id,
    }


class DriftMetrics:
    """Prometheus gauges for the latest check of each model (served by `monitor watch`)."""

    def __init__(self, registry=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = registry or CollectorRegistry()
        labels = ["model", "version", "feature"]
        self.psi = Gauge("sandbox_drift_psi", "PSI of live vs training data", labels, registry=self.registry)
        self.p_value = Gauge("sandbox_drift_p_value", "KS or chi-squared p-value", labels, registry=self.registry)
        self.drifted = Gauge("sandbox_drift_detected", "1 when the feature is flagged", labels, registry=self.registry)
        self.alarm = Gauge(
            "sandbox_drift_alarm",
            "1 when any feature or the prediction drifted",
            ["model", "version"],
            registry=self.registry,
        )
        self.live_rows = Gauge(
            "sandbox_drift_live_rows", "Live rows in the last check", ["model", "version"], registry=self.registry
        )
        self.last_check = Gauge(
            "sandbox_drift_last_check_timestamp_seconds", "When the last check ran", ["model"], registry=self.registry
        )
        self.retrainings = Counter(
            "sandbox_retraining_decisions", "Retraining outcomes", ["model", "decision"], registry=self.registry
        )

    def update(self, check: DriftCheck) -> None:
        key = (check.model_name, check.model_version)
        self.live_rows.labels(*key).set(check.live_rows)
        self.last_check.labels(check.model_name).set(check.checked_at)
        if check.report is None:
            return
        self.alarm.labels(*key).set(float(check.alarm))
        for feature in check.report.features:
            self.psi.labels(*key, feature.name).set(feature.psi)
            self.p_value.labels(*key, feature.name).set(feature.p_value)
            self.drifted.labels(*key, feature.name).set(float(feature.drifted))
