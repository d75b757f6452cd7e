"""What running a scenario gives: its outcome, its steps with their timings, and how an error reads in a report."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field


class Outcome(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class ScenarioFailed(AssertionError):
    """A checked expectation did not hold; the message is the reason in the report."""


@dataclass
class StepResult:
    name: str
    seconds: float
    ok: bool
    error: str = ""


@dataclass
class ScenarioResult:
    name: str
    title: str
    checklist: str
    outcome: Outcome
    reason: str = ""
    evidence: list[str] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    output: str = ""  # what the scenario printed, kept for the JUnit report
    attachments: dict[str, bytes] = field(default_factory=dict)  # file name -> content, written beside the report

    @property
    def error(self) -> str:
        """Why it failed (the failing step and its error); empty unless it failed."""
        return self.reason if self.outcome == Outcome.FAILED else ""

    def attachment_path(self, name: str) -> str:
        """Where the report folder keeps an attachment (relative to it)."""
        return f"attachments/{self.name}/{name}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe_error(exc: BaseException) -> str:
    """An error as a report line: a `ScenarioFailed`'s message, else ``Type: first line`` (colours removed)."""
    text = _ANSI.sub("", str(exc)).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, ScenarioFailed):
        return first
    return f"{type(exc).__name__}: {first}"[:500]
