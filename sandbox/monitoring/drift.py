"""Feature and prediction drift: Population Stability Index and the two-sample KS test.

Numeric columns use quantile-binned PSI and KS; a column of a few whole-number
values (class predictions) uses PSI over its categories and a chi-squared test.
A feature is flagged only when both agree: the PSI (how much the binned
distribution moved, an effect size) is at or above its threshold, and the KS
test's p-value is below alpha divided by the number of features (Bonferroni),
so checking many features at once does not multiply false alarms. With the
defaults, a 0.5-standard-deviation shift in 500 live rows against 2,000
reference rows is caught, and no shift is not (tests/unit/test_drift.py runs
20 seeds of each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2_contingency, ks_2samp

# The defaults live with the config, so reading sandbox.yaml does not import numpy and scipy.
from sandbox.monitoring.config import KS_ALPHA, PSI_THRESHOLD

BINS = 10
_EPSILON = 1e-4  # keeps empty bins from turning the PSI infinite
# A column with at most this many distinct whole-number values (class predictions) is
# categorical: PSI over its categories and a chi-squared test, since quantile bins and
# KS make little sense for it.
MAX_CATEGORIES = 20


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    psi: float
    statistic: float  # KS D, or chi-squared for a categorical column
    p_value: float
    drifted: bool
    test: str = "ks"  # "ks" | "chi2"


@dataclass
class DriftReport:
    features: list[FeatureDrift] = field(default_factory=list)
    reference_rows: int = 0
    current_rows: int = 0

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def alarm(self) -> bool:
        return bool(self.drifted)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> float:
    """PSI over bins cut at the reference's quantiles (equal-mass bins)."""
    reference = np.asarray(reference, dtype=float)
    current = np.asarray(current, dtype=float)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant feature: compare the share of that value
        same_ref = 1.0
        same_cur = float(np.mean(current == reference[0])) if len(reference) else 0.0
        expected, actual = np.array([same_ref, 1 - same_ref]), np.array([same_cur, 1 - same_cur])
    else:
        edges[0], edges[-1] = -np.inf, np.inf
        expected = np.histogram(reference, edges)[0] / len(reference)
        actual = np.histogram(current, edges)[0] / len(current)
    expected = np.clip(expected, _EPSILON, None)
    actual = np.clip(actual, _EPSILON, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def is_categorical(values: np.ndarray) -> bool:
    values = np.asarray(values, dtype=float)
    return bool(np.all(np.mod(values, 1) == 0)) and len(np.unique(values)) <= MAX_CATEGORIES


def categorical_drift(reference: np.ndarray, current: np.ndarray) -> tuple[float, float, float]:
    """(PSI over the categories, chi-squared statistic, p-value)."""
    reference, current = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    categories = np.union1d(np.unique(reference), np.unique(current))
    ref_counts = np.array([np.sum(reference == c) for c in categories], dtype=float)
    cur_counts = np.array([np.sum(current == c) for c in categories], dtype=float)
    expected = np.clip(ref_counts / ref_counts.sum(), _EPSILON, None)
    actual = np.clip(cur_counts / cur_counts.sum(), _EPSILON, None)
    score = float(np.sum((actual - expected) * np.log(actual / expected)))
    if len(categories) < 2:
        return score, 0.0, 1.0
    statistic, p_value, _, _ = chi2_contingency(np.vstack([ref_counts, cur_counts]))
    return score, float(statistic), float(p_value)


def detect_drift(
    reference: dict[str, np.ndarray],
    current: dict[str, np.ndarray],
    *,
    psi_threshold: float = PSI_THRESHOLD,
    ks_alpha: float = KS_ALPHA,
) -> DriftReport:
    """Compare each column of ``current`` with the same column of ``reference``."""
    missing = sorted(set(reference) - set(current))
    if missing:
        raise ValueError(f"live data lacks feature(s) {', '.join(missing)}")
    corrected_alpha = ks_alpha / max(len(reference), 1)
    report = DriftReport(
        reference_rows=len(next(iter(reference.values()), [])), current_rows=len(next(iter(current.values()), []))
    )
    for name, ref_values in reference.items():
        cur_values = np.asarray(current[name], dtype=float)
        if len(cur_values) == 0:
            raise ValueError(f"no live values for {name}")
        if is_categorical(ref_values):
            score, statistic, p_value = categorical_drift(ref_values, cur_values)
            test = "chi2"
        else:
            statistic, p_value = ks_2samp(np.asarray(ref_values, dtype=float), cur_values)
            score, test = psi(ref_values, cur_values), "ks"
        drifted = bool(score >= psi_threshold and p_value < corrected_alpha)
        report.features.append(FeatureDrift(name, score, float(statistic), float(p_value), drifted, test))
    return report
