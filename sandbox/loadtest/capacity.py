"""Capacity search: the highest constant arrival rate at which a target still meets its SLO.

`sandbox loadtest TARGET --find-capacity --slo 'p99<100ms,error_rate<0.1%'` runs
open-loop steps of `--duration` each:

1. up: from `--start-rate`, doubling the rate while the SLO holds (halving from
   the start when even the first step breaks it), until a step breaks it or
   `--max-rate` holds;
2. bisect between the highest rate that held and the lowest that broke until
   they are within `--precision` (5% by default) of each other.
   In both, a break is run again, and a third time when the two disagree: most
   runs decide. One passing stall (the first heavy step, a noisy neighbour)
   would otherwise set the upper bracket, and the whole search, below the
   knee, where no rate 20% above what it reports would break;
3. confirm: the highest rate that held is run again, until it has held
   `--confirm-runs` times (2 by default); if a repeat breaks the SLO, that
   rate counts as broken (a rate that breaks now and then is over capacity)
   and the search goes on below it, from the highest rate that held every
   time it ran. So the rate reported held every run: near the knee one run
   is a coin toss, and on a machine whose speed wanders the knee moves.
4. headroom: the edge found is a cliff on many servers (in open loop a queue,
   once formed, only grows: p99 goes from tens of ms to seconds between two
   rates 4% apart), so a rate that held three times may break the fourth. The
   search reports, besides that edge, the *sustainable* rate: `--headroom`
   (10% by default) below it, run `--confirm-runs` times, and lowered by the
   headroom again each time one of its runs breaks. That is the rate to plan
   on; the edge is where it stops holding.

A step whose generator fell behind (`valid` false: too many requests sent
late) says nothing about the server; it is run again once, and if it is still
invalid the search stops there and says that the generator, not the target,
was the limit (more `--processes`, or another machine). Unless the step broke
the SLO on its service time alone (latency from each actual send, which the
generator's lag can only hide, never add): then the target broke it whatever
the generator did, and the step counts as broken. On one small machine the two
go together: a saturated server takes the generator's CPU too. Every step's rate,
latency percentiles, error rate and verdict go into `summary.json`'s
`capacity.steps`, and the latency-against-rate curve into the report's chart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sandbox.errors import ConfigError
from sandbox.loadtest import slo

GROWTH = 2.0
MIN_RATE = 0.5
MAX_STEPS = 40


@dataclass
class Search:
    start_rate: float = 10.0
    max_rate: float = 10_000.0
    precision: float = 0.05  # stop bisecting when (broke - held) / held is at most this
    confirm_runs: int = 2  # runs the reported rate must have held, every one
    headroom: float = 0.10  # the sustainable rate: this far below the edge, confirmed too (0: report the edge)
    steps: list[dict] = field(default_factory=list)

    def check(self, objectives: list[slo.Objective]) -> None:
        if not objectives:
            raise ConfigError("--find-capacity needs an SLO to hold", hint="e.g. --slo 'p99<100ms,error_rate<0.1%'")
        if any(o.metric == "rps" for o in objectives):
            raise ConfigError(
                "an rps term means nothing in a capacity search (the rate is what the search sets)",
                hint="drop the rps term; keep latency and error_rate terms",
            )
        if not 0 < self.start_rate <= self.max_rate:
            raise ConfigError(
                f"--start-rate {self.start_rate:g} and --max-rate {self.max_rate:g} are out of order",
                hint="e.g. --start-rate 10 --max-rate 5000",
            )
        if not 0.001 <= self.precision <= 0.5:
            raise ConfigError(f"--precision {self.precision:g}% is out of range", hint="use 0.1 to 50 (percent)")
        if not 1 <= self.confirm_runs <= 10:
            raise ConfigError(f"--confirm-runs {self.confirm_runs} is out of range", hint="use 1 to 10 (2 by default)")
        if not 0 <= self.headroom <= 0.5:
            raise ConfigError(
                f"--headroom {self.headroom:.0%} is out of range", hint="use 0 to 50 (percent; 10 by default)"
            )


def find(search: Search, run_step: Callable[[float, str], dict]) -> dict:
    """Drive ``run_step(rate, why)`` (which returns a finalized summary) to the capacity; the search's record."""

    stopped = None  # why the search ended early

    def step(rate: float, why: str) -> dict | None:
        """One run at ``rate``, recorded; None when the search cannot go on (``stopped`` then says why)."""
        nonlocal stopped
        if len(search.steps) >= MAX_STEPS:
            stopped = "too many steps"
            return None
        summary = run_step(rate, why)
        if not summary.get("valid", True) and not summary.get("broke_on_service_time"):
            summary = run_step(rate, why + ", again: the generator fell behind")
        valid = bool(summary.get("valid", True))
        if not valid and summary.get("broke_on_service_time"):
            valid, why = True, why + " (broke on service time alone; the generator fell behind too)"
        record = {
            "rate": rate,
            "why": why,
            "passed": bool(summary["passed"]),
            "valid": valid,
            "achieved_rps": summary["rps"],
            "requests": summary["requests"],
            "error_rate": slo.observed(summary, "error_rate"),
            "late_percent": summary.get("late_percent", 0.0),
            **{key: summary.get(key) for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p99_9_ms", "max_ms")},
            "failed_gates": [v["objective"] for v in summary["slo"] if not v["passed"]],
            "summary": summary,
        }
        search.steps.append(record)
        if not valid:
            stopped = f"the generator fell behind at {rate:g} req/s"
            return None
        return record

    held: float | None = None
    broke: float | None = None

    def verdict(rate: float, why: str) -> bool | None:
        """Whether ``rate`` holds: a hold is taken at its word (the rate reported is confirmed later), a break
        is run again, and most of up to three runs decide. None: the search cannot go on (``stopped`` says why)."""
        runs: list[bool] = []
        while runs.count(True) < 2 and runs.count(False) < 2 and runs != [True]:
            record = step(rate, why if not runs else f"{why}, again: does it break every time?")
            if record is None:
                return None
            runs.append(record["passed"])
        return runs.count(True) > runs.count(False)

    rate = search.start_rate
    # 1. up (or down, when the start already breaks the SLO)
    while True:
        passed = verdict(rate, "step up" if broke is None else "step down")
        if passed is None:
            break
        if passed:
            held = rate
            if broke is not None or rate >= search.max_rate:
                break
            rate = min(rate * GROWTH, search.max_rate)
        else:
            broke = rate
            if held is not None:
                break
            rate = rate / GROWTH
            if rate < MIN_RATE:
                stopped = f"the SLO breaks even at {broke:g} req/s"
                break
    # 2. bisect; 3. confirm: the rate that held runs again, and holds only if it held every time.
    while stopped is None and held is not None and broke is not None:
        while broke - held > search.precision * held:
            middle = round((held + broke) / 2, 3)
            passed = verdict(middle, "bisect")
            if passed is None:
                break
            if passed:
                held = middle
            else:
                broke = middle
        if stopped is not None:
            break
        while _runs(search.steps, held, passed=True) < search.confirm_runs and _always(search.steps, held):
            if step(held, "confirm") is None:
                break
        if stopped is not None:
            break
        if not _runs(search.steps, held, passed=False):
            break
        broke = held  # it held, then broke: a rate that breaks now and then is over capacity
        held = max(
            (rate for rate in _rates(search.steps) if rate < broke and _always(search.steps, rate)), default=None
        )
        if held is None:
            stopped = f"no rate held every time below {broke:g} req/s"
    confirmed = held is not None and _runs(search.steps, held, passed=True) >= search.confirm_runs
    # 4. headroom: below an edge that was found (a knee, not the top of the search), a rate that holds every run.
    sustainable = held if search.headroom == 0 or broke is None else None
    if stopped is None and confirmed and broke is not None and search.headroom > 0:
        rate = round(held * (1 - search.headroom), 3)
        while sustainable is None and stopped is None and rate >= MIN_RATE:
            while _runs(search.steps, rate, passed=True) < search.confirm_runs and not _runs(
                search.steps, rate, passed=False
            ):
                if step(rate, f"headroom {search.headroom:.0%}") is None:
                    break
            if stopped is None and _always(search.steps, rate):
                sustainable = rate
            rate = round(rate * (1 - search.headroom), 3)
        if sustainable is None and stopped is None:
            stopped = f"no rate held every time below {held:g} req/s"
    return {
        "sustainable_rps": sustainable,
        "headroom": search.headroom,
        "held_rps": held,
        "broke_rps": broke,
        # The top of the knee: above the edge, the lowest rate at which every run broke. Between the two, a
        # run holds or breaks by chance; the wider that band, the less one run near it says.
        "always_broke_rps": min(
            (r for r in _rates(search.steps) if (held is None or r > held) and _never(search.steps, r)), default=None
        ),
        "confirmed": confirmed or (held is not None and broke is None),  # max_rate held: no bisect to confirm
        "reached_max_rate": broke is None and held is not None and held >= search.max_rate,
        "stopped": stopped,
        "precision": search.precision,
        "steps": search.steps,
    }


def _runs(steps: list[dict], rate: float, *, passed: bool) -> int:
    return _outcomes(steps, rate).count(passed)


def _rates(steps: list[dict]) -> set[float]:
    return {s["rate"] for s in steps}


def _outcomes(steps: list[dict], rate: float) -> list[bool]:
    """Whether each valid run at ``rate`` met the SLO."""
    return [s["passed"] for s in steps if s["rate"] == rate and s["valid"]]


def _always(steps: list[dict], rate: float) -> bool:
    """Every valid run at ``rate`` met the SLO."""
    runs = _outcomes(steps, rate)
    return bool(runs) and all(runs)


def _never(steps: list[dict], rate: float) -> bool:
    """Every valid run at ``rate`` broke the SLO."""
    runs = _outcomes(steps, rate)
    return bool(runs) and not any(runs)


def curve(steps: list[dict]) -> list[dict]:
    """Latency against rate: one point per rate (its last run), sorted by rate."""
    by_rate: dict[float, dict] = {}
    for s in steps:
        by_rate[s["rate"]] = s
    keys = ("rate", "achieved_rps", "p50_ms", "p95_ms", "p99_ms", "error_rate", "passed", "valid")
    return [{key: by_rate[rate].get(key) for key in keys} for rate in sorted(by_rate)]
