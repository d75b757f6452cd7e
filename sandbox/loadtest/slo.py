"""Service-level objectives for a load test, and the baseline comparison.

`--slo 'p95<200ms,p99<500ms,error_rate<1%,rps>50'`: each term is a metric, an
operator and a threshold with an optional unit (ms, s, %). Locust buckets
response times (1 ms below 100 ms, 10 ms to 1 s, 100 ms above), so latency
verdicts are only as precise as those buckets.
"""

from __future__ import annotations

import operator
import re
from dataclasses import asdict, dataclass

from sandbox.errors import ConfigError

METRICS = {
    "p50": ("p50_ms", "ms"),
    "p90": ("p90_ms", "ms"),
    "p95": ("p95_ms", "ms"),
    "p99": ("p99_ms", "ms"),
    "avg": ("avg_ms", "ms"),
    "max": ("max_ms", "ms"),
    "rps": ("rps", ""),
    "error_rate": ("error_rate", "%"),
}
OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_TERM = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+)\s*(ms|s|%)?\s*$")


@dataclass(frozen=True)
class Objective:
    metric: str
    op: str
    threshold: float  # in the metric's unit: ms for latency, percent for error_rate, req/s for rps
    text: str


@dataclass(frozen=True)
class Verdict:
    objective: str
    observed: float
    threshold: float
    unit: str
    passed: bool
    margin: str  # how far from the threshold, in words


def parse_slo(spec: str) -> list[Objective]:
    objectives = []
    for term in filter(None, (t.strip() for t in spec.split(","))):
        match = _TERM.match(term)
        if not match:
            raise ConfigError(
                f"cannot read SLO term {term!r}",
                hint="write terms like p95<200ms, p99<=1s, error_rate<1%, rps>50, joined by commas",
            )
        metric, op, value, unit = match.groups()
        if metric not in METRICS:
            raise ConfigError(f"unknown SLO metric {metric!r}", hint=f"use one of: {', '.join(METRICS)}")
        number = float(value)
        expected_unit = METRICS[metric][1]
        if expected_unit == "ms":
            if unit not in (None, "ms", "s"):
                raise ConfigError(f"{term!r}: latency takes ms or s", hint="e.g. p95<200ms")
            number = number * 1000 if unit == "s" else number
        elif expected_unit == "%":
            if unit not in (None, "%"):
                raise ConfigError(f"{term!r}: error_rate is a percentage", hint="e.g. error_rate<1%")
        elif unit is not None:
            raise ConfigError(f"{term!r}: rps takes no unit", hint="e.g. rps>50")
        objectives.append(Objective(metric, op, number, term))
    if not objectives:
        raise ConfigError("the SLO is empty", hint="e.g. --slo 'p95<200ms,error_rate<1%'")
    return objectives


def observed(summary: dict, metric: str) -> float:
    key, _ = METRICS[metric]
    if key == "error_rate":
        return 100.0 * summary["failures"] / summary["requests"] if summary["requests"] else 100.0
    value = summary.get(key)
    return float(value) if value is not None else float("nan")


def evaluate(summary: dict, objectives: list[Objective]) -> list[Verdict]:
    verdicts = []
    for objective in objectives:
        value = observed(summary, objective.metric)
        unit = METRICS[objective.metric][1]
        passed = bool(OPERATORS[objective.op](value, objective.threshold)) if summary["requests"] else False
        verdicts.append(
            Verdict(objective.text, value, objective.threshold, unit, passed, _margin(value, objective.threshold, unit))
        )
    return verdicts


def _margin(value: float, threshold: float, unit: str) -> str:
    diff = value - threshold
    relative = f" ({diff / threshold:+.0%})" if threshold else ""
    return f"{diff:+.1f}{unit}{relative}"


# --------------------------------------------------------------------------- baseline

# What "worse" means per metric: latency and errors up, throughput down.
BASELINE_METRICS = {"p50": "up", "p95": "up", "p99": "up", "rps": "down", "error_rate": "up"}


def compare_baseline(summary: dict, baseline: dict, tolerance: float) -> list[Verdict]:
    """Fail a metric that got worse than the baseline by more than ``tolerance`` (a fraction)."""
    verdicts = []
    for metric, worse in BASELINE_METRICS.items():
        now, before = observed(summary, metric), observed(baseline, metric)
        unit = METRICS[metric][1]
        if metric == "error_rate":
            limit = before + tolerance * 100  # percentage points
            passed = now <= limit
        elif worse == "up":
            limit = before * (1 + tolerance)
            passed = now <= limit
        else:
            limit = before * (1 - tolerance)
            passed = now >= limit
        verdicts.append(
            Verdict(f"{metric} vs baseline {before:.1f}{unit}", now, limit, unit, passed, _margin(now, before, unit))
        )
    return verdicts


def as_dicts(verdicts: list[Verdict]) -> list[dict]:
    return [asdict(v) for v in verdicts]
