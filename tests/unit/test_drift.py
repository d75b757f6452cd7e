"""Detection quality on synthetic shifts of known size (issue #5's acceptance 3)."""

import numpy as np
import pytest

from sandbox.monitoring.drift import detect_drift, psi

FEATURES = [f"f{i}" for i in range(8)]
REFERENCE_ROWS, LIVE_ROWS, SEEDS = 2000, 500, range(20)


def _frames(seed: int, shift: float, shifted=("f2",)):
    rng = np.random.default_rng(seed)
    reference = {name: rng.normal(size=REFERENCE_ROWS) for name in FEATURES}
    live = {name: rng.normal(loc=shift if name in shifted else 0.0, size=LIVE_ROWS) for name in FEATURES}
    return reference, live


def test_no_alarm_without_a_shift_over_20_seeds():
    alarms = [seed for seed in SEEDS if detect_drift(*_frames(seed, 0.0)).alarm]
    assert alarms == []


def test_half_a_standard_deviation_is_caught_in_at_least_19_of_20_seeds():
    caught = sum(detect_drift(*_frames(seed, 0.5)).drifted == ["f2"] for seed in SEEDS)
    assert caught >= 19


def test_only_the_shifted_features_are_flagged():
    report = detect_drift(*_frames(7, 1.0, shifted=("f1", "f5")))
    assert report.drifted == ["f1", "f5"]
    by_name = {f.name: f for f in report.features}
    assert by_name["f1"].psi > 0.5 and by_name["f0"].psi < 0.1


def test_psi_of_identical_distributions_is_near_zero_and_grows_with_the_shift():
    rng = np.random.default_rng(0)
    base = rng.normal(size=5000)
    small, large = psi(base, rng.normal(0.2, size=5000)), psi(base, rng.normal(1.0, size=5000))
    assert psi(base, base) == pytest.approx(0.0, abs=1e-9)
    assert 0 < small < large


def test_constant_features_and_missing_columns():
    assert psi(np.ones(100), np.ones(50)) == pytest.approx(0.0, abs=1e-6)
    assert psi(np.ones(100), np.zeros(50)) > 1
    with pytest.raises(ValueError, match="lacks feature"):
        detect_drift({"a": np.zeros(3)}, {"b": np.zeros(3)})


def test_class_predictions_are_compared_as_categories():
    from sandbox.monitoring.drift import is_categorical

    rng = np.random.default_rng(3)
    reference = {"prediction": rng.binomial(1, 0.5, size=2000).astype(float)}
    same = {"prediction": rng.binomial(1, 0.5, size=500).astype(float)}
    moved = {"prediction": rng.binomial(1, 0.8, size=500).astype(float)}
    assert is_categorical(reference["prediction"]) and not is_categorical(rng.normal(size=100))
    assert not detect_drift(reference, same).alarm
    report = detect_drift(reference, moved)
    assert report.drifted == ["prediction"] and report.features[0].test == "chi2"
