"""Retraining policy, drift-check verdicts, monitoring config, and the inference log writer without a database."""

from __future__ import annotations

import shutil
import socket
import tempfile
from datetime import UTC, datetime

import numpy as np
import pytest

from sandbox.errors import ConfigError
from sandbox.monitoring.checks import PREDICTION, DriftCheck
from sandbox.monitoring.config import RetrainingConfig
from sandbox.monitoring.drift import DriftReport, FeatureDrift
from sandbox.monitoring.retraining import decide
from sandbox.serving.inference_log import InferenceLogWriter, LoggedModel
from tests.factories import make_endpoints


def _check(*drifted: str, rows: int = 500) -> DriftCheck:
    names = ["f0", "f1", "f2", PREDICTION]
    report = DriftReport(
        features=[
            FeatureDrift(n, 0.5 if n in drifted else 0.01, 0.2, 1e-9 if n in drifted else 0.5, n in drifted)
            for n in names
        ],
        reference_rows=2000,
        current_rows=rows,
    )
    return DriftCheck("m", "3", datetime(2026, 1, 1, tzinfo=UTC), rows, 2000, 200, report=report)


# ------------------------------------------------------------------ drift-check verdicts


def test_a_check_names_drifted_features_apart_from_the_prediction():
    check = _check("f1", PREDICTION)
    assert check.alarm and check.drifted_features == ["f1"] and check.prediction_drifted
    assert "DRIFT in features f1 and the prediction distribution" in check.summary()
    assert not _check().alarm and "no drift" in _check().summary()


def test_too_few_rows_is_no_verdict_and_no_alarm():
    check = DriftCheck("m", "3", datetime(2026, 1, 1, tzinfo=UTC), 12, 2000, 200, report=None)
    assert not check.alarm and not check.enough_data
    assert "too few for a verdict (at least 200)" in check.summary()


NOW = datetime(2026, 1, 31, 14, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("15m", datetime(2026, 1, 31, 13, 45, tzinfo=UTC)),  # durations count back from now
        ("90", datetime(2026, 1, 31, 13, 58, 30, tzinfo=UTC)),
        ("2h", datetime(2026, 1, 31, 12, 0, tzinfo=UTC)),
        ("2026-01-31T12:30:00Z", datetime(2026, 1, 31, 12, 30, tzinfo=UTC)),  # absolute: now plays no part
        ("2026-01-31T14:30:00+02:00", datetime(2026, 1, 31, 12, 30, tzinfo=UTC)),
        ("2026-01-31T12:30:00.250000", datetime(2026, 1, 31, 12, 30, 0, 250000, tzinfo=UTC)),  # no offset: UTC
        ("2026-01-30", datetime(2026, 1, 30, tzinfo=UTC)),
    ],
)
def test_a_window_starts_a_duration_back_or_at_an_iso_time(text, start):
    from sandbox.monitoring.checks import parse_since

    since = parse_since(text, now=NOW)
    assert since == start and since.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("text", ["soon", "yesterday", "-5m", "2026-13-01T00:00:00Z", ""])
def test_a_window_start_that_is_neither_is_refused_with_both_forms_named(text):
    from sandbox.monitoring.checks import parse_since

    with pytest.raises(ConfigError, match="bad window start") as caught:
        parse_since(text, now=NOW)
    assert "15m" in caught.value.hint and "2026-01-31T14:00:00Z" in caught.value.hint


def test_check_drift_refuses_a_bad_window_before_reading_anything():
    from sandbox.monitoring.checks import check_drift
    from sandbox.monitoring.config import MonitoringConfig

    endpoints = make_endpoints(monitoring_db_url=f"postgresql://u:p@127.0.0.1:{_closed_port()}/monitoring")
    with pytest.raises(ConfigError, match="bad window start 'soon'"):
        check_drift(endpoints, "m", MonitoringConfig(), since="soon")


# ------------------------------------------------------------------ retraining policy


def test_a_drift_alarm_triggers_retraining():
    trigger = decide(RetrainingConfig(), now=1000.0, drift=_check("f2"))
    assert trigger is not None and trigger.kind == "drift" and "f2" in trigger.detail


def test_no_alarm_no_new_data_no_schedule_means_no_retraining():
    assert decide(RetrainingConfig(), now=1000.0, drift=_check()) is None


def test_drift_is_ignored_when_the_policy_turns_it_off():
    assert decide(RetrainingConfig(on_drift=False), now=1000.0, drift=_check("f2")) is None


def test_the_cooldown_holds_back_every_trigger():
    policy = RetrainingConfig(cooldown_s=300, every_s=10)
    assert decide(policy, now=1000.0, drift=_check("f2"), last_retrained_at=900.0) is None
    assert decide(policy, now=1300.0, drift=_check("f2"), last_retrained_at=900.0).kind == "drift"


def test_a_new_data_version_triggers_retraining():
    trigger = decide(RetrainingConfig(), now=1000.0, data_version="md5:b", champion_data_version="md5:a")
    assert trigger.kind == "new-data" and "md5:b" in trigger.detail
    assert decide(RetrainingConfig(), now=1000.0, data_version="md5:a", champion_data_version="md5:a") is None
    assert (
        decide(RetrainingConfig(on_new_data=False), now=1000.0, data_version="md5:b", champion_data_version="md5:a")
        is None
    )


def test_the_schedule_triggers_when_due():
    policy = RetrainingConfig(every_s=3600, cooldown_s=0)
    assert decide(policy, now=5000.0).kind == "schedule"  # never retrained: due now
    assert decide(policy, now=5000.0, last_retrained_at=2000.0) is None
    assert decide(policy, now=5600.0, last_retrained_at=2000.0).kind == "schedule"


# ------------------------------------------------------------------ config


def test_monitoring_config_is_validated_with_the_key_named(tmp_path):
    from sandbox.config import load_config

    (tmp_path / "sandbox.yaml").write_text("monitoring:\n  retraining:\n    training_data: https://x/y.csv\n")
    with pytest.raises(ConfigError, match=r"monitoring\.retraining\.training_data"):
        load_config(tmp_path / "sandbox.yaml")
    (tmp_path / "sandbox.yaml").write_text("monitoring:\n  psi_threshold: 0.2\n  retraining:\n    margin: 0.05\n")
    config = load_config(tmp_path / "sandbox.yaml")
    assert config.monitoring.psi_threshold == 0.2 and config.monitoring.retraining.margin == 0.05


# ------------------------------------------------------------------ the writer, with no database


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on return: connections are refused


def test_rows_the_database_never_took_stay_in_the_journal_on_close_not_lost(tmp_path):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    writer = InferenceLogWriter(
        f"postgresql://u:p@127.0.0.1:{_closed_port()}/monitoring",
        LoggedModel("dep", "model", "7"),
        spool_dir=tmp_path,
        flush_interval=0.05,
        metrics_registry=registry,
    ).start()
    for index in range(5):
        writer.log(np.full((3, 2), float(index)), np.array([0, 1, 0]), request_id=f"r{index}", variant="a")
    writer.close(timeout=10)
    assert writer.pending_rows == 15  # on disk, not shipped
    assert registry.get_sample_value("inference_log_rows_spooled_total") == 15
    assert registry.get_sample_value("inference_log_write_errors_total") >= 1

    # The next start ships them: each row keeps its own event id (writes are idempotent).
    restarted = InferenceLogWriter(
        "postgresql://unused",
        LoggedModel("dep", "model", "8"),
        spool_dir=tmp_path,
        metrics_registry=CollectorRegistry(),
    )
    written = []
    restarted._write = written.extend  # the database, taking everything
    restarted._shipper.drain()
    restarted.close()
    assert len(written) == 15 and len({row[0] for row in written}) == 15
    assert written[0][2:7] == ("dep", "model", "7", "a", "r0") and written[0][7] == [0.0, 0.0]
    assert restarted.pending_rows == 0


def test_log_never_waits_on_the_database(tmp_path):
    """Requests are queued while a write hangs; they are written once it returns. No clock involved."""
    import threading

    writer = InferenceLogWriter(
        f"postgresql://u:p@127.0.0.1:{_closed_port()}/monitoring",
        LoggedModel("dep", "model", "7"),
        spool_dir=tmp_path,
        batch_rows=1,  # the first logged row wakes the writer thread at once
        metrics_registry=__import__("prometheus_client").CollectorRegistry(),
    )
    writing, release, written = threading.Event(), threading.Event(), []

    def hanging_database(rows):  # a database that takes the first batch and does not answer
        writing.set()
        assert release.wait(30), "the test never released the write"
        written.extend(rows)

    writer._write = hanging_database
    writer.start()
    writer.log(np.zeros((1, 8)), np.zeros(1), request_id="first", variant=None)
    assert writing.wait(30), "the writer thread never started writing"

    # The write hangs: 1,000 requests are queued all the same, on another thread so that a log()
    # that waited on the database would show as a thread still running, not as a hung test run.
    def serve_requests():
        for n in range(1000):
            writer.log(np.zeros((1, 8)), np.zeros(1), request_id=str(n), variant=None)

    requests = threading.Thread(target=serve_requests)
    requests.start()
    try:
        requests.join(30)
        assert not requests.is_alive(), "log() waited on the database"
        assert writer.pending_rows == 1001 and written == []  # all on disk, none written: the write still hangs
    finally:
        release.set()
    writer.close(timeout=30)
    assert [row[6] for row in written] == ["first", *map(str, range(1000))]  # every row, once, in order
    assert writer.pending_rows == 0


def test_local_training_data_is_copied_and_versioned_by_md5(tmp_path):
    import hashlib

    from sandbox.monitoring.retraining import Retrainer

    retrainer = Retrainer(make_endpoints(), tmp_path / "work")
    data = tmp_path / "train.csv"
    data.write_text("f0,label\n1.0,1\n")
    assert retrainer.data_version(str(data)) == "md5:" + hashlib.md5(data.read_bytes()).hexdigest()
    assert retrainer.fetch(str(data), "copy.csv").read_bytes() == data.read_bytes()
    with pytest.raises(ConfigError, match="no data file"):
        retrainer.data_version(str(tmp_path / "missing.csv"))


def test_scoring_a_model_leaves_no_copy_of_it_in_the_temporary_folder(tmp_path, monkeypatch):
    """`sandbox monitor retrain` scores two models; MLflow copies each from the registry's store into a new folder
    in the temporary folder unless it is given one, and never removes it."""
    from urllib.parse import urlparse

    import mlflow
    import pandas as pd
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.tracking._tracking_service import utils as tracking
    from sklearn.linear_model import LogisticRegression

    from sandbox.monitoring.retraining import _score

    class CopyingRepository(LocalArtifactRepository):
        """Local files fetched as from S3 or a tracking server: copied, never read in place."""

        def __init__(self, artifact_uri, tracking_uri=None, registry_uri=None):
            super().__init__(artifact_uri, tracking_uri, registry_uri)
            self._artifact_dir = urlparse(artifact_uri).path

        def download_artifacts(self, artifact_path, dst_path=None):
            return ArtifactRepository.download_artifacts(self, artifact_path, dst_path)

    monkeypatch.setitem(_artifact_repository_registry._registry, "copying", CopyingRepository)
    features, labels = pd.DataFrame({"f0": [0.0, 1.0, 2.0, 3.0]}), pd.Series([0, 0, 1, 1])
    mlflow.sklearn.save_model(LogisticRegression().fit(features, labels), tmp_path / "model")
    uri = f"copying://{tmp_path / 'model'}"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    mlflow.pyfunc.load_model(uri)
    assert len(list(temporary.iterdir())) == 1  # the control: MLflow alone leaves its copy there
    shutil.rmtree(next(temporary.iterdir()))

    work = tmp_path / "work"
    monkeypatch.setattr(tracking, "_tracking_uri", tracking._tracking_uri)  # _score sets MLflow's; put back after
    assert _score((tmp_path / "mlruns").as_uri(), uri, features, labels, scratch=work) == 1.0
    assert not list(temporary.iterdir()) and not list(work.iterdir())
