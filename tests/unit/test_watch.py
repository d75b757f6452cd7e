"""The watch loop (`sandbox.monitoring.watch`) with fakes: a fake drift check, retrainer, clock and sleep.

Nothing here waits in real time or talks to a stack; `monitor watch --retrain` and `monitor retrain`
are driven through the CLI with the same fakes at the end.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from sandbox.endpoints import Endpoints
from sandbox.errors import ConfigError, SandboxError
from sandbox.monitoring.checks import PREDICTION, DriftCheck, DriftMetrics
from sandbox.monitoring.config import MonitoringConfig, RetrainingConfig
from sandbox.monitoring.drift import DriftReport, FeatureDrift
from sandbox.monitoring.retraining import PromotionDecision, Retrainer, Trigger
from sandbox.monitoring.watch import METRICS_PORT_KEY, METRICS_PORT_SETTING, Watcher, WatchListener, metrics_server

# Only what the code under test reads (the fakes take the rest); nothing talks to this URL.
ENDPOINTS = Endpoints.model_construct(profile="local", mlflow_tracking_uri="http://127.0.0.1:9")


def _check(model: str = "m", *drifted: str, rows: int = 500, version: str = "3") -> DriftCheck:
    names = ["f0", "f1", PREDICTION]
    report = DriftReport(
        features=[
            FeatureDrift(n, 0.5 if n in drifted else 0.01, 0.2, 1e-9 if n in drifted else 0.5, n in drifted)
            for n in names
        ],
        reference_rows=2000,
        current_rows=rows,
    )
    return DriftCheck(model, version, datetime(2026, 1, 1, tzinfo=UTC), rows, 2000, 200, report=report)


class FakeChecks:
    """check_drift's stand-in: answers from a script per model (a DriftCheck, or an error to raise)."""

    def __init__(self, **script):
        self.script = script
        self.calls: list[dict] = []

    def __call__(self, endpoints, model, settings, *, since=None, experiment="monitoring"):
        self.calls.append({"model": model, "since": since, "experiment": experiment})
        answer = self.script[model]
        answer = answer.pop(0) if isinstance(answer, list) else answer
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeRetrainer:
    def __init__(self, *, promote: bool = True, data_version: str | None = None, champion: str | None = None):
        self.promote, self.version, self.champion = promote, data_version, champion
        self.runs: list[tuple[str, str, str | None]] = []
        self.fail: SandboxError | None = None

    def data_version(self, location: str) -> str | None:
        return self.version

    def champion_data_version(self, model: str) -> str | None:
        return self.champion

    def run(self, model: str, trigger: Trigger, policy: RetrainingConfig) -> PromotionDecision:
        self.runs.append((model, trigger.kind, policy.training_data))
        if self.fail is not None:
            raise self.fail
        return PromotionDecision(
            model_name=model,
            trigger=trigger.kind,
            trigger_detail=trigger.detail,
            data_version="md5:new",
            challenger_version="4",
            champion_version="3",
            challenger_accuracy=0.9,
            champion_accuracy=0.8,
            margin=policy.margin,
            eval_rows=100,
            promoted=self.promote,
            reason="challenger v4 wins" if self.promote else "challenger v4 loses",
            mlflow_run_id="run-1",
        )


class Clock:
    """A clock that moves only when the watch sleeps."""

    def __init__(self, now: float = 1000.0):
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Events(WatchListener):
    def __init__(self):
        self.seen: list[tuple] = []

    def checked(self, check):
        self.seen.append(("checked", check.model_name, check.alarm))

    def retraining(self, model, trigger):
        self.seen.append(("retraining", model, trigger.kind))

    def decided(self, decision):
        self.seen.append(("decided", decision.model_name, decision.promoted))

    def failed(self, model, error):
        self.seen.append(("failed", model, error.message))


def _watcher(checks, *, retrainer=None, policy=None, clock=None, **kwargs) -> tuple[Watcher, Events]:
    events, clock = Events(), clock or Clock()
    watcher = Watcher(
        ENDPOINTS,
        MonitoringConfig(),
        policy=policy,
        retrainer=retrainer,
        listener=events,
        check_drift=checks,
        clock=clock,
        sleep=clock.sleep,
        **kwargs,
    )
    return watcher, events


def _gauge(metrics: DriftMetrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_without_a_policy_the_watch_only_checks_and_sets_the_gauges():
    checks = FakeChecks(m=_check("m", "f1"), n=_check("n"))
    watcher, events = _watcher(checks)
    done = watcher.round(["m", "n"])
    assert [(a.check.model_name, a.trigger, a.decision) for a in done] == [("m", None, None), ("n", None, None)]
    assert events.seen == [("checked", "m", True), ("checked", "n", False)]
    assert _gauge(watcher.metrics, "sandbox_drift_alarm", model="m", version="3") == 1.0
    assert _gauge(watcher.metrics, "sandbox_drift_alarm", model="n", version="3") == 0.0
    assert _gauge(watcher.metrics, "sandbox_drift_detected", model="m", version="3", feature="f1") == 1.0
    assert [c["experiment"] for c in checks.calls] == ["monitoring", "monitoring"]
    assert [c["since"] for c in checks.calls] == [None, None]  # the configured window


def test_a_policy_needs_a_retrainer():
    with pytest.raises(ValueError, match="needs a retrainer"):
        Watcher(ENDPOINTS, MonitoringConfig(), policy=RetrainingConfig())


def test_a_drift_alarm_retrains_records_the_decision_and_counts_it():
    retrainer = FakeRetrainer()
    clock = Clock(5000.0)
    watcher, events = _watcher(
        FakeChecks(m=_check("m", "f0")), retrainer=retrainer, policy=RetrainingConfig(), clock=clock
    )
    [assessment] = watcher.round(["m"])
    assert assessment.trigger.kind == "drift" and "DRIFT in features f0" in assessment.trigger.detail
    assert assessment.decision.promoted and assessment.at == 5000.0
    assert events.seen == [("checked", "m", True), ("retraining", "m", "drift"), ("decided", "m", True)]
    assert retrainer.runs == [("m", "drift", None)]
    assert watcher.last_retrained == {"m": 5000.0}
    assert _gauge(watcher.metrics, "sandbox_retraining_decisions_total", model="m", decision="promoted") == 1.0


def test_a_rejected_challenger_is_counted_as_rejected():
    watcher, events = _watcher(
        FakeChecks(m=_check("m", "f0")), retrainer=FakeRetrainer(promote=False), policy=RetrainingConfig()
    )
    watcher.round(["m"])
    assert events.seen[-1] == ("decided", "m", False)
    assert _gauge(watcher.metrics, "sandbox_retraining_decisions_total", model="m", decision="rejected") == 1.0


def test_the_cooldown_holds_back_the_next_retraining_until_it_has_passed():
    retrainer, clock = FakeRetrainer(), Clock(0.0)
    watcher, _ = _watcher(
        FakeChecks(m=_check("m", "f0")),  # drifting every round
        retrainer=retrainer,
        policy=RetrainingConfig(cooldown_s=250),
        clock=clock,
    )
    assert watcher.run(["m"], interval=100, iterations=5) == 5  # rounds at t = 0, 100, 200, 300, 400
    assert len(retrainer.runs) == 2  # t = 0, then t = 300 (250 s after)
    assert watcher.last_retrained == {"m": 300.0}


def test_run_sleeps_the_interval_between_rounds_and_not_after_the_last():
    clock = Clock(0.0)
    checks = FakeChecks(m=_check("m"))
    watcher, _ = _watcher(checks, clock=clock)
    assert watcher.run(["m"], interval=60, iterations=3) == 3
    assert clock.slept == [60, 60]
    assert len(checks.calls) == 3


def test_a_model_that_cannot_be_checked_is_reported_and_the_others_are_still_checked():
    checks = FakeChecks(
        quiet=ConfigError("no logged inferences for model 'quiet'", hint="send it traffic first"),
        m=[_check("m"), _check("m", "f1")],
    )
    watcher, events = _watcher(checks)
    watcher.run(["quiet", "m"], interval=1, iterations=2)
    assert events.seen == [
        ("failed", "quiet", "no logged inferences for model 'quiet'"),
        ("checked", "m", False),
        ("failed", "quiet", "no logged inferences for model 'quiet'"),
        ("checked", "m", True),
    ]


def test_a_failed_retraining_is_reported_and_still_waits_out_the_cooldown():
    retrainer, clock = FakeRetrainer(), Clock(0.0)
    retrainer.fail = SandboxError("the training pipeline failed: boom")
    watcher, events = _watcher(
        FakeChecks(m=_check("m", "f0")), retrainer=retrainer, policy=RetrainingConfig(cooldown_s=150), clock=clock
    )
    watcher.run(["m"], interval=100, iterations=3)  # t = 0 (fails), 100 (cooling down), 200 (fails again)
    assert [run[1] for run in retrainer.runs] == ["drift", "drift"]
    assert events.seen.count(("failed", "m", "the training pipeline failed: boom")) == 2
    assert watcher.last_retrained == {"m": 200.0}
    assert _gauge(watcher.metrics, "sandbox_retraining_decisions_total", model="m", decision="promoted") is None


def test_a_new_training_data_version_retrains_on_that_data():
    retrainer = FakeRetrainer(data_version="md5:b", champion="md5:a")
    policy = RetrainingConfig(training_data="s3://data/train.csv", eval_data="s3://data/eval.csv")
    watcher, _ = _watcher(FakeChecks(m=_check("m")), retrainer=retrainer, policy=policy)
    [assessment] = watcher.round(["m"])
    assert assessment.trigger.kind == "new-data"
    assert retrainer.runs == [("m", "new-data", "s3://data/train.csv")]


def test_a_step_by_step_caller_gives_the_window_and_experiment_and_seeds_the_cooldown():
    checks = FakeChecks(m=_check("m", "f0"))
    since = datetime(2026, 1, 1, 12, tzinfo=UTC)
    retrainer = FakeRetrainer()
    watcher, _ = _watcher(
        checks,
        retrainer=retrainer,
        policy=RetrainingConfig(cooldown_s=300),
        experiment="checklist-x-monitoring",
        last_retrained={"m": 900.0},  # retrained 100 s before the clock's 1000
    )
    assessment = watcher.assess("m", since=since)
    assert checks.calls == [{"model": "m", "since": since, "experiment": "checklist-x-monitoring"}]
    assert assessment.check.alarm and assessment.trigger is None  # cooling down
    watcher.policy = RetrainingConfig(cooldown_s=0)  # a caller may change the policy between steps
    trigger = watcher.assess("m").trigger
    decision = watcher.retrain("m", trigger, at=assessment.at)
    assert decision.promoted and watcher.last_retrained == {"m": 1000.0}
    assert retrainer.runs == [("m", "drift", None)]


def test_retrain_without_a_policy_is_refused():
    watcher, _ = _watcher(FakeChecks())
    with pytest.raises(ValueError, match="no retraining policy"):
        watcher.retrain("m", Trigger("manual", "x"))


def test_the_metrics_server_serves_the_gauges_and_keeps_its_port(tmp_path):
    import httpx

    metrics = DriftMetrics()
    metrics.update(_check("m", "f0"))
    from sandbox.config import load_config
    from sandbox.profiles.local import LocalProfile

    profile = LocalProfile(load_config(None, dir=tmp_path))
    with metrics_server(metrics, profile.claim_port(METRICS_PORT_KEY, 0, setting=METRICS_PORT_SETTING)) as url:
        body = httpx.get(url, timeout=5, trust_env=False).text
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    assert 'sandbox_drift_alarm{model="m",version="3"} 1.0' in body
    assert f'"monitor.metrics": {port}' in (tmp_path / "ports.json").read_text()


def test_retraining_flags_override_only_what_they_give():
    policy = RetrainingConfig(margin=0.05, training_data="s3://data/a.csv")
    changed = policy.overridden(training_data=None, eval_data="s3://data/e.csv", deployment=None, margin=0.1)
    assert (changed.training_data, changed.eval_data, changed.margin) == ("s3://data/a.csv", "s3://data/e.csv", 0.1)
    assert policy.margin == 0.05 and policy.eval_data is None  # the configured policy is left as it was


def test_the_sandbox_retrainer_works_under_the_sandbox_dir(tmp_path):
    retrainer = Retrainer.in_sandbox(ENDPOINTS, tmp_path, serving=None)
    assert retrainer.workdir == tmp_path / "monitoring" / "retraining"
    assert retrainer.decision_log == tmp_path / "monitoring" / "decisions.log"
    assert retrainer.experiment == "retraining"


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture
def fake_stack(monkeypatch, tmp_path):
    """`sandbox monitor` on a sandbox dir whose endpoints, drift checks and retraining runs are fakes."""
    from sandbox.monitoring import checks
    from sandbox.profiles.local import LocalProfile

    monkeypatch.setattr(LocalProfile, "endpoints", lambda self: ENDPOINTS)
    monkeypatch.setattr(LocalProfile, "serving", lambda self: None)
    fake = FakeChecks(m=_check("m", "f0"), quiet=ConfigError("no logged inferences for model 'quiet'"))
    monkeypatch.setattr(checks, "check_drift", fake)
    retrainer = FakeRetrainer()
    monkeypatch.setattr(Retrainer, "run", lambda self, *args: retrainer.run(*args))
    monkeypatch.setattr(Retrainer, "champion_data_version", lambda self, model: None)
    monkeypatch.setattr(Retrainer, "data_version", lambda self, location: "md5:new")
    (tmp_path / "sbx").mkdir()
    return tmp_path / "sbx", retrainer


def test_monitor_watch_retrain_through_the_cli(fake_stack):
    from sandbox.cli import app

    root, retrainer = fake_stack
    args = ["monitor", "watch", "quiet", "m", "--retrain", "--iterations", "1", "--dir", str(root)]
    result = CliRunner().invoke(app, [*args, "--margin", "0.2", "--training-data", "s3://data/t.csv"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].endswith("m v3: 500 live row(s) since 00:00:00Z; DRIFT in features f0")
    assert lines[1].startswith("  retraining m: drift (m v3:")
    assert lines[2] == "✓ promoted m v4: challenger v4 wins"
    assert "ERROR: no logged inferences for model 'quiet'." in result.stderr
    assert "Watching quiet, m every 60s; metrics at http://127.0.0.1:" in result.stderr
    assert retrainer.runs == [("m", "drift", "s3://data/t.csv")]
    assert '"monitor.metrics"' in (root / "ports.json").read_text()


def test_monitor_retrain_through_the_cli(fake_stack):
    from sandbox.cli import app

    root, retrainer = fake_stack
    result = CliRunner().invoke(app, ["monitor", "retrain", "m", "--eval-data", "s3://data/e.csv", "--dir", str(root)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["✓ promoted m v4: challenger v4 wins"]
    assert "recorded: MLflow experiment 'retraining', run run-1" in result.stderr
    assert retrainer.runs == [("m", "manual", None)]
