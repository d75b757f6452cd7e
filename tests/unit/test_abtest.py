import pytest

from sandbox.serving.abtest import compare_proportions


def test_a_clear_difference_names_the_winner():
    verdict = compare_proportions(270, 300, 210, 300)
    assert verdict.winner == "a"
    assert verdict.p_value < 1e-6
    assert "a wins" in verdict.describe() and "confidence" in verdict.describe()


def test_equal_accuracy_is_no_significant_difference():
    verdict = compare_proportions(240, 300, 243, 300)
    assert verdict.winner is None
    assert verdict.p_value > 0.5
    assert verdict.describe().startswith("no significant difference")


def test_known_z_value():
    # 60/100 vs 50/100: pooled 0.55, z = 0.1 / sqrt(0.55*0.45*0.02) = 1.4213
    verdict = compare_proportions(60, 100, 50, 100)
    assert verdict.z == pytest.approx(1.4213, abs=1e-3)
    assert verdict.p_value == pytest.approx(0.1552, abs=1e-3)


def test_needs_labels():
    with pytest.raises(ValueError):
        compare_proportions(0, 0, 1, 1)
