"""`--compare OTHER`: the same load against two targets, alternately, and the differences with confidence.

One sample per target says little on a machine whose speed wanders. The
comparison runs `--rounds` pairs of runs, alternating in an A B B A A B ...
order (so neither target is always the one that runs first, after the other
has warmed the caches or while a neighbour's job is still running), and for
each metric (p50, p99 and throughput) takes the per-round differences B - A.
Their mean and a Student-t 95% interval say how far B is from A and how sure
that is; an interval that excludes 0 is called a difference, one that spans
0 is called "no clear difference". With open-loop load (`--rate`) throughput
is what was offered, so the latency metrics carry the comparison.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from sandbox.errors import ConfigError

METRICS = (("p50_ms", "ms", "lower"), ("p99_ms", "ms", "lower"), ("rps", "req/s", "higher"))
CONFIDENCE = 0.95


def order(rounds: int) -> list[tuple[int, str]]:
    """(round, target) in the order they run: A B, B A, A B, ..."""
    if rounds < 2:
        raise ConfigError(f"--rounds {rounds}: a comparison needs at least 2 rounds", hint="e.g. --rounds 5")
    sequence = []
    for r in range(rounds):
        pair = ("a", "b") if r % 2 == 0 else ("b", "a")
        sequence += [(r, pair[0]), (r, pair[1])]
    return sequence


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    from scipy import stats

    return float(stats.t.ppf((1 + confidence) / 2, df))


def interval(differences: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of the paired differences and its t-interval (low, high)."""
    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return mean, float("-inf"), float("inf")
    half = t_quantile(n - 1, confidence) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def analyse(rounds: list[dict[str, dict]], labels: tuple[str, str]) -> list[dict]:
    """Per metric: each target's mean, B - A with its interval, relative change, and the verdict in words."""
    results = []
    for key, unit, better in METRICS:
        a = [r["a"][key] for r in rounds]
        b = [r["b"][key] for r in rounds]
        mean, low, high = interval([y - x for x, y in zip(a, b, strict=True)])
        base = statistics.fmean(a)
        if low > 0 or high < 0:
            direction = "higher" if mean > 0 else "lower"
            verdict = f"B is {direction} ({'better' if direction == better else 'worse'})"
        else:
            verdict = "no clear difference"
        results.append(
            {
                "metric": key,
                "unit": unit,
                "a_mean": base,
                "b_mean": statistics.fmean(b),
                "difference": mean,
                "ci_low": low,
                "ci_high": high,
                "relative": mean / base if base else None,
                "confidence": CONFIDENCE,
                "significant": low > 0 or high < 0,
                "verdict": verdict,
                "a_rounds": a,
                "b_rounds": b,
            }
        )
    return results


def compare(rounds: int, run_round: Callable[[int, str], dict], labels: tuple[str, str]) -> dict:
    """Run every round through ``run_round(round, "a"|"b")`` (a finalized summary back); the comparison."""
    per_round: list[dict[str, dict]] = [{} for _ in range(rounds)]
    for r, which in order(rounds):
        per_round[r][which] = run_round(r, which)
    slim = [{w: {k: s[k] for k, _, _ in METRICS} | {"passed": s["passed"]} for w, s in r.items()} for r in per_round]
    return {
        "labels": {"a": labels[0], "b": labels[1]},
        "rounds": slim,
        "metrics": analyse(per_round, labels),
        "order": [f"{r}{w}" for r, w in order(rounds)],
    }
