"""The `monitoring:` section of sandbox.yaml: drift thresholds and the retraining policy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The drift check's defaults (sandbox.monitoring.drift uses them); here, not there, so the config stays
# light: every process that reads sandbox.yaml (the supervisor, the model servers) would import scipy.
PSI_THRESHOLD = 0.1
KS_ALPHA = 0.01


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrainingConfig(_Section):
    """When to retrain, on what, and when a challenger replaces the champion."""

    on_drift: bool = Field(True, description="retrain when a drift check alarms")
    every_s: float = Field(0, ge=0, description="retrain on a schedule, every this many seconds (0: off)")
    on_new_data: bool = Field(True, description="retrain when the training data's version changes")
    training_data: str | None = Field(None, description="labelled CSV to train on: s3://BUCKET/KEY or a path")
    eval_data: str | None = Field(None, description="fresh labelled CSV the challenger and champion are scored on")
    label_column: str = "label"
    margin: float = Field(0.01, ge=0, description="the challenger must beat the champion's accuracy by this much")
    cooldown_s: float = Field(300, ge=0, description="at least this long between two retrainings of a model")
    deployment: str | None = Field(None, description="the deployment to redeploy on promotion (default: the model)")

    def overridden(self, **values) -> RetrainingConfig:
        """A copy with the given settings replaced; a None value keeps the configured one (flags not given)."""
        return self.model_copy(update={key: value for key, value in values.items() if value is not None})

    @field_validator("training_data", "eval_data")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(("http://", "https://")):
            raise ValueError("give s3://BUCKET/KEY or a file path, not a URL")
        return value


class MonitoringConfig(_Section):
    psi_threshold: float = Field(PSI_THRESHOLD, gt=0, description="PSI at or above which a feature may be drifting")
    ks_alpha: float = Field(KS_ALPHA, gt=0, lt=1, description="family-wise significance (Bonferroni-split)")
    window_s: float = Field(3600, gt=0, description="live rows from this far back are compared")
    max_rows: int = Field(20_000, ge=10, description="at most this many (the most recent) live rows")
    min_rows: int = Field(200, ge=10, description="no verdict on fewer live rows than this")
    interval_s: float = Field(60, gt=0, description="`monitor watch`: seconds between checks")
    metrics_port: int = Field(0, ge=0, le=65535, description="`monitor watch`: /metrics port (0: a free one)")
    retraining: RetrainingConfig = Field(default_factory=RetrainingConfig)
