"""Load over time: a piecewise-linear profile of (seconds, level), from named shapes or written out.

The level is requests per second in open loop (`--rate-profile`, `--shape` with
`--rate`-style levels) and users in closed loop (`--shape` alone, through
Locust's `LoadTestShape`). One representation serves both:

    --rate-profile '0s:10,30s:100,60s:100'   ramp 10 → 100 req/s over 30 s, hold 30 s
    --rate-profile '0s:50,20s:50,20s:200,30s:200,30s:50,50s:50'   a step up and back (equal times: a jump)
    --shape ramp:from=0,to=100,over=60s[,hold=30s]
    --shape step:from=10,by=10,every=10s,steps=5
    --shape spike:base=20,peak=200,at=10s,for=5s[,total=30s]
    --shape soak:level=50,for=30m[,rampup=1m]

Open-loop arrivals follow the profile exactly: the k-th request is sent when
the integral of the rate reaches k + 1/2, solved per segment in closed form,
so a ramp is a ramp and not a staircase, and N processes that each take every
N-th arrival send the profile between them.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from sandbox.errors import ConfigError

_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?"
_POINT = re.compile(rf"^\s*({_NUMBER})\s*(ms|s|m|h)?\s*:\s*({_NUMBER})\s*$")
_DURATION = re.compile(rf"^\s*({_NUMBER})\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_LEVEL = 1_000_000  # req/s or users: past this a typo is likelier than a plan
MAX_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Profile:
    """Levels at times; linear between points, a jump where two points share a time."""

    points: tuple[tuple[float, float], ...]
    source: str = ""

    @property
    def duration_s(self) -> float:
        return self.points[-1][0]

    @property
    def peak(self) -> float:
        return max(level for _, level in self.points)

    def level_at(self, t: float) -> float:
        points = self.points
        if t <= points[0][0]:
            return points[0][1]
        for (t0, l0), (t1, l1) in itertools.pairwise(points):
            if t0 <= t < t1:
                return l0 + (l1 - l0) * (t - t0) / (t1 - t0)
        return points[-1][1]

    def expected_requests(self) -> float:
        return sum((l0 + l1) / 2 * (t1 - t0) for (t0, l0), (t1, l1) in itertools.pairwise(self.points))

    def as_text(self) -> str:
        return ",".join(f"{_fmt(t)}s:{_fmt(level)}" for t, level in self.points)

    def arrivals(self, part: int = 0, parts: int = 1) -> Iterator[float]:
        """Send times (seconds from the start) of this part's share: arrivals part, part+parts, part+2*parts, ..."""
        k = part
        done = 0.0  # requests due before the current segment
        for (t0, r0), (t1, r1) in itertools.pairwise(self.points):
            span = t1 - t0
            if span <= 0:
                continue
            slope = (r1 - r0) / span
            area = (r0 + r1) / 2 * span
            while k + 0.5 <= done + area:
                need = k + 0.5 - done
                root = math.sqrt(max(0.0, r0 * r0 + 2 * slope * need))
                x = 2 * need / (r0 + root) if r0 + root > 0 else 0.0
                yield t0 + min(max(x, 0.0), span)
                k += parts
            done += area


def _fmt(value: float) -> str:
    return f"{value:g}"


def parse_duration(text: str, what: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{what}: {text!r} is not a duration", hint="write it like 500ms, 30s, 2m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _check_level(value: float, where: str) -> float:
    if not math.isfinite(value) or value < 0 or value > MAX_LEVEL:
        raise ConfigError(f"{where}: level {value:g} is out of range", hint=f"use a level from 0 to {MAX_LEVEL:,}")
    return value


def _validated(points: list[tuple[float, float]], source: str) -> Profile:
    if len(points) < 2:
        raise ConfigError(
            f"{source!r}: a profile needs at least two points", hint="e.g. '0s:10,60s:10' (10 req/s for a minute)"
        )
    if points[0][0] != 0:
        raise ConfigError(f"{source!r}: the first point must be at 0s", hint="start it with '0s:LEVEL,'")
    for (t0, _), (t1, _) in itertools.pairwise(points):
        if t1 < t0:
            raise ConfigError(
                f"{source!r}: time goes backwards ({_fmt(t1)}s after {_fmt(t0)}s)",
                hint="list the points in time order; two points at one time make a jump",
            )
    if points[-1][0] <= 0 or points[-1][0] > MAX_SECONDS:
        raise ConfigError(
            f"{source!r}: the profile must last between 0 and 7 days", hint="end it with e.g. '60s:LEVEL'"
        )
    if all(level == 0 for _, level in points):
        raise ConfigError(f"{source!r}: every level is 0, so nothing would be sent", hint="give a positive level")
    return Profile(tuple(points), source)


def parse_profile(text: str) -> Profile:
    """`--rate-profile '0s:10,30s:100,60s:100'`: TIME:LEVEL points joined by commas."""
    points = []
    for term in (t for t in text.split(",")):
        match = _POINT.match(term)
        if not match:
            raise ConfigError(
                f"cannot read profile point {term.strip()!r} in {text!r}",
                hint="write TIME:LEVEL points joined by commas, e.g. '0s:10,30s:100,60s:100'",
            )
        t = float(match.group(1)) * _UNITS[match.group(2) or "s"]
        points.append((t, _check_level(float(match.group(3)), f"point {term.strip()!r}")))
    return _validated(points, text)


# --------------------------------------------------------------------------- named shapes

# name -> (parameter -> required?, durations among them, the usage line)
SHAPES: dict[str, tuple[dict[str, bool], set[str], str]] = {
    "ramp": ({"from": False, "to": True, "over": True, "hold": False}, {"over", "hold"}, "ramp:from=0,to=100,over=60s"),
    "step": (
        {"from": False, "by": True, "every": True, "steps": True},
        {"every"},
        "step:from=10,by=10,every=10s,steps=5",
    ),
    "spike": (
        {"base": True, "peak": True, "at": True, "for": True, "total": False},
        {"at", "for", "total"},
        "spike:base=20,peak=200,at=10s,for=5s",
    ),
    "soak": ({"level": True, "for": True, "rampup": False}, {"for", "rampup"}, "soak:level=50,for=30m"),
}


def shape_usage() -> str:
    return "; ".join(usage for _, _, usage in SHAPES.values())


def parse_shape(text: str) -> Profile:
    """`--shape NAME:key=value,...` into a profile (see the module's docstring for each shape)."""
    name, _, rest = text.strip().partition(":")
    name = name.strip().lower()
    if name not in SHAPES:
        raise ConfigError(f"unknown load shape {name!r}", hint=f"use one of: {shape_usage()}")
    spec, durations, usage = SHAPES[name]
    values: dict[str, float] = {}
    for term in filter(None, (t.strip() for t in rest.split(","))):
        key, eq, raw = term.partition("=")
        key = key.strip().lower()
        if not eq or key not in spec:
            raise ConfigError(
                f"{name} shape: cannot read {term!r}", hint=f"{name} takes {', '.join(spec)}; e.g. {usage}"
            )
        if key in values:
            raise ConfigError(f"{name} shape: {key} is given twice", hint=f"e.g. {usage}")
        if key in durations:
            values[key] = parse_duration(raw, f"{name} shape's {key}")
        else:
            match = _DURATION.match(raw)
            if not match or match.group(2):
                raise ConfigError(f"{name} shape: {key}={raw.strip()!r} is not a number", hint=f"e.g. {usage}")
            values[key] = float(match.group(1))
    missing = [key for key, required in spec.items() if required and key not in values]
    if missing:
        raise ConfigError(f"{name} shape: {', '.join(missing)} missing", hint=f"e.g. {usage}")
    points = _SHAPE_POINTS[name](values)
    for _, level in points:
        _check_level(level, f"{name} shape")
    return _validated(points, text.strip())


def _ramp(v: dict[str, float]) -> list[tuple[float, float]]:
    start, over, hold = v.get("from", 0.0), v["over"], v.get("hold", 0.0)
    points = [(0.0, start), (over, v["to"])]
    return [*points, (over + hold, v["to"])] if hold else points


def _step(v: dict[str, float]) -> list[tuple[float, float]]:
    steps = v["steps"]
    if steps != int(steps) or not 1 <= steps <= 1000:
        raise ConfigError(f"step shape: steps={steps:g} must be a whole number from 1 to 1000", hint="e.g. steps=5")
    start, by, every = v.get("from", v["by"]), v["by"], v["every"]
    points: list[tuple[float, float]] = []
    for i in range(int(steps)):
        level = start + i * by
        points += [(i * every, level), ((i + 1) * every, level)]
    return points


def _spike(v: dict[str, float]) -> list[tuple[float, float]]:
    at, width = v["at"], v["for"]
    end = at + width
    total = v.get("total", end + at)
    if total < end:
        raise ConfigError(
            f"spike shape: total={_fmt(total)}s ends before the spike does ({_fmt(end)}s)", hint="raise total"
        )
    base, peak = v["base"], v["peak"]
    return [(0.0, base), (at, base), (at, peak), (end, peak), (end, base), (total, base)]


def _soak(v: dict[str, float]) -> list[tuple[float, float]]:
    rampup, level = v.get("rampup", 0.0), v["level"]
    start = 0.0 if rampup else level
    return [(0.0, start), (rampup, level), (rampup + v["for"], level)]


_SHAPE_POINTS = {"ramp": _ramp, "step": _step, "spike": _spike, "soak": _soak}


def constant(level: float, duration_s: float) -> Profile:
    _check_level(level, "--rate")
    if level <= 0:
        raise ConfigError(f"--rate {level:g}: the rate must be positive", hint="e.g. --rate 100 (requests per second)")
    return _validated([(0.0, level), (duration_s, level)], f"{level:g}/s for {duration_s:g}s")
