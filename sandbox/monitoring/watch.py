"""Watching models: a drift check each round, its Prometheus gauges, and retraining when the policy asks.

`Watcher` is what `sandbox monitor watch [--retrain]` runs and what the
`retraining` scenario drives step by step: `assess` checks one model and asks
the policy (`retraining.decide`) whether to retrain; `retrain` runs the
`Retrainer` and counts the outcome; `step` is both; `round` steps every model,
reporting a model that cannot be checked (no traffic yet, a failed pipeline)
and going on with the others; `run` repeats rounds. It prints nothing: a
`WatchListener` hears what happens. The clock and the sleep are injectable.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sandbox.endpoints import Endpoints
from sandbox.errors import SandboxError
from sandbox.monitoring import checks
from sandbox.monitoring.checks import DriftCheck, DriftMetrics
from sandbox.monitoring.config import MonitoringConfig, RetrainingConfig
from sandbox.monitoring.retraining import PromotionDecision, Retrainer, Trigger, decide
from sandbox.net import LOOPBACK

# The /metrics port, as `Profile.claim_port` keeps it (the local profile: in the sandbox's ports.json).
METRICS_PORT_KEY = "monitor.metrics"
METRICS_PORT_SETTING = "monitoring.metrics_port or --metrics-port"


class WatchListener:
    """What a watch reports; every method does nothing here (override the ones you need)."""

    def checked(self, check: DriftCheck) -> None:
        """A drift check finished (its gauges are updated)."""

    def retraining(self, model: str, trigger: Trigger) -> None:
        """The policy asked for a retraining; it starts now."""

    def decided(self, decision: PromotionDecision) -> None:
        """A retraining ended with a decision (promoted or not)."""

    def failed(self, model: str, error: SandboxError) -> None:
        """``model`` could not be checked or retrained this round; the watch goes on."""


@dataclass
class Assessment:
    """One model's check, what the policy made of it, and (after `Watcher.step`) the retraining's decision."""

    check: DriftCheck
    trigger: Trigger | None
    at: float  # the watcher's clock when the policy was asked
    decision: PromotionDecision | None = None


class Watcher:
    """Drift checks of models, their gauges, and (given a policy and a retrainer) retraining when due."""

    def __init__(
        self,
        endpoints: Endpoints,
        settings: MonitoringConfig,
        *,
        policy: RetrainingConfig | None = None,
        retrainer: Retrainer | None = None,
        metrics: DriftMetrics | None = None,
        experiment: str = checks.EXPERIMENT,
        listener: WatchListener | None = None,
        last_retrained: dict[str, float] | None = None,
        check_drift: Callable[..., DriftCheck] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """``policy`` None: check only. ``experiment``: the MLflow experiment of the drift checks.

        ``last_retrained``: when each model was last retrained (clock seconds), for the policy's cooldown.
        ``check_drift`` (default `checks.check_drift`), ``clock`` and ``sleep`` are there for tests.
        """
        if policy is not None and retrainer is None:
            raise ValueError("a retraining policy needs a retrainer")
        self.endpoints = endpoints
        self.settings = settings
        self.policy = policy
        self.retrainer = retrainer
        self.metrics = metrics or DriftMetrics()
        self.experiment = experiment
        self.listener = listener or WatchListener()
        self.last_retrained: dict[str, float] = dict(last_retrained or {})
        self._check_drift = check_drift or checks.check_drift
        self._clock = clock
        self._sleep = sleep

    def assess(self, model: str, *, since: datetime | None = None) -> Assessment:
        """Check ``model`` (live rows since ``since``, default: the configured window) and ask the policy."""
        check = self._check_drift(self.endpoints, model, self.settings, since=since, experiment=self.experiment)
        self.metrics.update(check)
        self.listener.checked(check)
        now = self._clock()
        if self.policy is None:
            return Assessment(check, None, now)
        policy, retrainer = self.policy, self.retrainer
        trigger = decide(
            policy,
            now=now,
            drift=check,
            last_retrained_at=self.last_retrained.get(model),
            data_version=retrainer.data_version(policy.training_data) if policy.training_data else None,
            champion_data_version=retrainer.champion_data_version(model),
        )
        return Assessment(check, trigger, now)

    def retrain(self, model: str, trigger: Trigger, *, at: float | None = None) -> PromotionDecision:
        """Retrain ``model`` under the policy; the cooldown counts from ``at`` (default: now), even on failure."""
        if self.policy is None or self.retrainer is None:
            raise ValueError("this watcher has no retraining policy")
        self.listener.retraining(model, trigger)
        self.last_retrained[model] = self._clock() if at is None else at  # first: a failure waits out the cooldown
        decision = self.retrainer.run(model, trigger, self.policy)
        self.metrics.retrainings.labels(model, "promoted" if decision.promoted else "rejected").inc()
        self.listener.decided(decision)
        return decision

    def step(self, model: str, *, since: datetime | None = None) -> Assessment:
        """`assess`, then `retrain` if the policy asked for it."""
        assessment = self.assess(model, since=since)
        if assessment.trigger is not None:
            assessment.decision = self.retrain(model, assessment.trigger, at=assessment.at)
        return assessment

    def round(self, models: Iterable[str]) -> list[Assessment]:
        """A step for each model; one that fails is reported to the listener and the others go on."""
        done = []
        for model in models:
            try:
                done.append(self.step(model))
            except SandboxError as exc:  # no traffic yet, a restarting stack, a failed pipeline: keep watching
                self.listener.failed(model, exc)
        return done

    def run(self, models: list[str], *, interval: float, iterations: int = 0) -> int:
        """Rounds ``interval`` seconds apart: ``iterations`` of them, or until interrupted (0); returns the count."""
        rounds = 0
        while True:
            self.round(models)
            rounds += 1
            if iterations and rounds >= iterations:
                return rounds
            self._sleep(interval)


@contextlib.contextmanager
def metrics_server(metrics: DriftMetrics, port: int) -> Iterator[str]:
    """Serve ``metrics`` at http://127.0.0.1:PORT/metrics while the block runs; yields the URL.

    ``port`` comes from the profile (`Profile.claim_port(METRICS_PORT_KEY, ...)`), which keeps it
    where it can, so the next watch serves on the same one.
    """
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=LOOPBACK, registry=metrics.registry)
    try:
        yield f"http://{LOOPBACK}:{server.server_port}/metrics"
    finally:
        server.shutdown()
