"""Comparing two variants' prediction quality: a two-proportion z-test.

Each variant's accuracy is a proportion of labelled predictions that were
right. The test asks whether the difference is larger than chance would give;
below `alpha` it names the winner with its confidence, otherwise it says
plainly that there is no significant difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm


@dataclass(frozen=True)
class ABVerdict:
    accuracy: dict[str, float]
    labelled: dict[str, int]
    z: float
    p_value: float
    alpha: float
    winner: str | None

    @property
    def confidence(self) -> float:
        return 1.0 - self.p_value

    def describe(self) -> str:
        (a, acc_a), (b, acc_b) = self.accuracy.items()
        figures = f"accuracy {a} {acc_a:.3f} (n={self.labelled[a]}) vs {b} {acc_b:.3f} (n={self.labelled[b]})"
        if self.winner:
            return f"{self.winner} wins: {figures}, p={self.p_value:.2g}, confidence {self.confidence:.1%}"
        return f"no significant difference: {figures}, p={self.p_value:.2f} (alpha {self.alpha})"


def compare_proportions(
    correct_a: int, total_a: int, correct_b: int, total_b: int, *, labels: tuple[str, str] = ("a", "b"), alpha=0.05
) -> ABVerdict:
    if min(total_a, total_b) <= 0:
        raise ValueError("each variant needs at least one labelled prediction")
    p_a, p_b = correct_a / total_a, correct_b / total_b
    pooled = (correct_a + correct_b) / (total_a + total_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / total_a + 1 / total_b))
    z = (p_a - p_b) / spread if spread > 0 else 0.0
    p_value = float(2 * norm.sf(abs(z)))
    winner = None
    if p_value < alpha:
        winner = labels[0] if p_a > p_b else labels[1]
    return ABVerdict(
        accuracy={labels[0]: p_a, labels[1]: p_b},
        labelled={labels[0]: total_a, labels[1]: total_b},
        z=z,
        p_value=p_value,
        alpha=alpha,
        winner=winner,
    )
