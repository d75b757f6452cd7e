"""One load test, a capacity search or a comparison: the options, the runs (open loop, or Locust in its own
process), the verdicts and the report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from sandbox import wire
from sandbox.errors import ConfigError, SandboxError
from sandbox.loadtest import openloop, report, slo
from sandbox.loadtest.shapes import Profile
from sandbox.loadtest.target import Target, payload_rows

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
SATURATION_PERCENT = 90.0


def parse_duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"bad duration {text!r}", hint="write it like 30s, 2m or 90")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


@dataclass
class LoadTestOptions:
    users: int = 10
    spawn_rate: float = 10
    duration_s: float = 30
    slo: str | None = None
    baseline: Path | None = None
    baseline_tolerance: float = 0.10
    processes: int = 1
    data: Path | None = None
    rows_per_request: int = 1
    rows: list[list[float]] | None = None  # explicit payload rows (API use), instead of --data or metadata
    # Closed loop (API use): each Locust user sends at most this many requests/s (Locust's constant_throughput);
    # None: each sends its next as soon as the last is answered. Traffic a check needs, not a load test's.
    user_rate: float | None = None
    # Closed loop (API use): go on past duration_s until this many requests were answered, for at most
    # max_duration_s in all: a check that needs so many rows gets them in one run, whatever the machine's load.
    min_requests: int = 0
    max_duration_s: float | None = None
    columns: list[str] = field(default_factory=list)  # feature names, for the mlflow protocol
    # Open loop: a rate profile in requests/s (from --rate, --rate-profile or --shape with --rate-profile's
    # units); closed loop: an optional users-over-time profile for Locust's LoadTestShape.
    rate_profile: Profile | None = None
    users_profile: Profile | None = None
    connections: int = 1000  # open loop, per process: most connections it may open
    timeout_s: float = 10.0
    max_late_percent: float = 1.0
    late_ms: float = openloop.LATE_MS
    # Locust distributed: wait for this many workers (`sandbox loadtest-worker`) instead of starting processes.
    master: bool = False
    expect_workers: int = 1
    master_bind_host: str = "127.0.0.1"
    master_port: int = 5557

    @property
    def open_loop(self) -> bool:
        return self.rate_profile is not None


def finalize(raw: dict, target: Target, options: LoadTestOptions, objectives: list, baseline: dict | None) -> dict:
    """Raw Locust figures plus the run's settings, environment, gate verdicts and the overall verdict."""
    summary = dict(raw)
    summary.setdefault("mode", "closed")
    summary.update(
        users=(options.users if not options.users_profile else round(options.users_profile.peak))
        if not options.open_loop
        else None,
        spawn_rate=options.spawn_rate if not options.open_loop else None,
        processes=options.processes,
        protocol=target.protocol,
        environment=report.environment_info(target.label),
        slo=slo.as_dicts(slo.evaluate(summary, objectives)),
        baseline=slo.as_dicts(slo.compare_baseline(summary, baseline, options.baseline_tolerance)) if baseline else [],
    )
    summary["generator_saturated"] = bool(summary.get("generator_saturated")) or (
        summary["generator_cpu_percent"]["max"] > SATURATION_PERCENT
    )
    gates = summary["slo"] + summary["baseline"]
    summary.setdefault("valid", True)
    summary["passed"] = summary["requests"] > 0 and summary["valid"] and all(v["passed"] for v in gates)
    return summary


def _check_options(options: LoadTestOptions) -> None:
    if options.users < 1 or options.spawn_rate <= 0 or options.duration_s <= 0 or options.processes < 1:
        raise ConfigError("users, spawn rate, duration and processes must be positive", hint="e.g. --users 10")
    if options.connections < 1 or options.timeout_s <= 0:
        raise ConfigError("--connections and the timeout must be positive", hint="e.g. --connections 1000")
    if not 0 <= options.max_late_percent <= 100:
        raise ConfigError("--max-late must be a percentage from 0 to 100", hint="e.g. --max-late 1")
    if options.late_ms <= 0:
        raise ConfigError("--late-after must be positive", hint="e.g. --late-after 50ms")
    if options.master and options.expect_workers < 1:
        raise ConfigError("--expect-workers must be at least 1", hint="e.g. --master --expect-workers 2")
    if options.master and options.open_loop:
        raise ConfigError(
            "--master runs Locust's closed-loop users on workers; the open-loop generator does not distribute",
            hint="drop --rate/--rate-profile, or use --processes N on one machine",
        )


def _read_baseline(options: LoadTestOptions) -> dict | None:
    if options.baseline is None:
        return None
    try:
        return json.loads(options.baseline.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read baseline {options.baseline}: {exc}", hint="give a summary.json") from None


def request_template(target: Target, rows: list[list[float]], options: LoadTestOptions) -> dict:
    """Path, prepared JSON bodies and the key a good answer has, in the target's protocol (open loop)."""
    call = wire.predict_call(target.wire_protocol, target.model_name, options.columns)
    per = options.rows_per_request
    groups = [rows[i : i + per] for i in range(0, max(1, len(rows) - per + 1), per)] or [rows[:per]]
    bodies = [json.dumps(call.body(group), separators=(",", ":")) for group in groups]
    return {"host": target.host, "path": call.path, "bodies": bodies, "expect": call.expect}


def run_once(target: Target, options: LoadTestOptions, rows: list[list[float]], report_dir: Path) -> dict:
    """One load run, open loop (our generator) or closed loop (Locust); its raw figures."""
    report_dir.mkdir(parents=True, exist_ok=True)
    if options.open_loop:
        profile = options.rate_profile
        settings = {
            **request_template(target, rows, options),
            "token": target.token,  # to the generator processes by their environment (`openloop.run`)
            "profile": [list(p) for p in profile.points],
            "connections": options.connections,
            "timeout_s": options.timeout_s,
            "late_ms": options.late_ms,
        }
        try:
            parts = openloop.run(settings, report_dir, processes=options.processes)
        except RuntimeError as exc:
            from sandbox.files import tail

            log = report_dir / "generator.log"
            raise SandboxError(f"the open-loop run failed: {exc}", details=tail(log, 20)) from None
        raw = openloop.summarize(
            parts,
            profile,
            name=f"{target.protocol} open loop",
            max_late_percent=options.max_late_percent,
            late_ms=options.late_ms,
        )
        raw["started"] = time.time() - profile.duration_s
        (report_dir / "raw.json").write_text(json.dumps(raw, indent=2, default=str))
        return raw
    settings = {
        "host": target.host,
        "model_name": target.model_name,
        "protocol": target.protocol,
        "rows": rows,
        "rows_per_request": options.rows_per_request,
        "columns": options.columns,
        "users": options.users,
        "user_rate": options.user_rate,
        "spawn_rate": options.spawn_rate,
        "duration_s": options.duration_s,
        "min_requests": options.min_requests,
        "max_duration_s": options.max_duration_s,
        "processes": options.processes,
        "users_profile": [list(p) for p in options.users_profile.points] if options.users_profile else None,
        "master": (
            {"bind_host": options.master_bind_host, "port": options.master_port, "workers": options.expect_workers}
            if options.master
            else None
        ),
        "report_dir": str(report_dir),
    }
    settings_file = report_dir / "settings.json"
    settings_file.write_text(json.dumps(settings))
    log = report_dir / "locust.log"
    # The serving token goes by the environment, not the settings file in the report folder.
    env = {key: value for key, value in os.environ.items() if key != wire.SERVING_TOKEN_ENV}
    if target.token:
        env[wire.SERVING_TOKEN_ENV] = target.token
    with log.open("w") as handle:
        code = subprocess.run(
            [sys.executable, "-m", "sandbox.loadtest.engine", str(settings_file)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        ).returncode
    raw_file = report_dir / "raw.json"
    if code != 0 or not raw_file.exists():
        from sandbox.files import tail

        raise SandboxError(f"the Locust run failed (exit {code})", hint=f"see {log}", details=tail(log, 20))
    return json.loads(raw_file.read_text())


def rows_for(target: Target, options: LoadTestOptions) -> list[list[float]]:
    return options.rows if options.rows is not None else payload_rows(target, options.data)


def run(target: Target, options: LoadTestOptions, report_dir: Path, *, echo=print) -> dict:
    """Run the test (open loop, or Locust in its own process); return the summary (with verdicts), write the report."""
    objectives = slo.parse_slo(options.slo) if options.slo else []
    baseline = _read_baseline(options)
    _check_options(options)
    rows = rows_for(target, options)
    raw = run_once(target, options, rows, report_dir)
    summary = finalize(raw, target, options, objectives, baseline)
    report.write_report(report_dir, summary)
    return summary


def find_capacity(target: Target, options: LoadTestOptions, report_dir: Path, search, *, echo=print) -> dict:
    """Open-loop steps to the highest rate that meets the SLO (`capacity.find`); the held rate's summary."""
    from sandbox.loadtest import capacity, shapes

    objectives = slo.parse_slo(options.slo) if options.slo else []
    search.check(objectives)
    _check_options(options)
    rows = rows_for(target, options)
    step_dir = report_dir / "steps"

    def run_step(rate: float, why: str) -> dict:
        step_options = replace(options, rate_profile=shapes.constant(rate, options.duration_s))
        folder = step_dir / f"{len(search.steps) + 1:02d}-{rate:g}rps"
        summary = finalize(run_once(target, step_options, rows, folder), target, step_options, objectives, None)
        if not summary["valid"] and summary.get("service_time"):  # did the target break the SLO by itself?
            alone = {**summary, **summary["service_time"]}
            summary["broke_on_service_time"] = not all(v.passed for v in slo.evaluate(alone, objectives))
        verdict = "held" if summary["passed"] else ("INVALID" if not summary["valid"] else "broke")
        failed = ", ".join(v["objective"] for v in summary["slo"] if not v["passed"])
        echo(
            f"  {rate:9.1f} req/s ({why}): p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, "
            f"errors {slo.observed(summary, 'error_rate'):.2f}%: {verdict}{f' ({failed})' if failed else ''}"
        )
        return summary

    result = capacity.find(search, run_step)
    held = result["sustainable_rps"]
    # The report's main figures are the last run at the sustainable rate (else the last step).
    chosen = next((s for s in reversed(result["steps"]) if held is not None and s["rate"] == held), result["steps"][-1])
    summary = dict(chosen["summary"])
    summary["capacity"] = {
        **{k: v for k, v in result.items() if k != "steps"},
        "slo": options.slo,
        "step_duration_s": options.duration_s,
        "curve": capacity.curve(result["steps"]),
        "steps": [{k: v for k, v in s.items() if k != "summary"} for s in result["steps"]],
    }
    summary["passed"] = held is not None and result["confirmed"] and result["stopped"] is None
    report.write_report(report_dir, summary)
    return summary


def compare_targets(
    a: Target, b: Target, options: LoadTestOptions, report_dir: Path, rounds: int, *, echo=print
) -> dict:
    """The same load against ``a`` and ``b`` in alternating rounds (`compare.compare`); a's last summary with it."""
    from sandbox.loadtest import compare

    objectives = slo.parse_slo(options.slo) if options.slo else []
    _check_options(options)
    compare.order(rounds)  # refuses too few rounds before anything runs
    rows = {"a": rows_for(a, options), "b": rows_for(b, options)}
    targets = {"a": a, "b": b}
    last: dict[str, dict] = {}

    def run_round(r: int, which: str) -> dict:
        target = targets[which]
        raw = run_once(target, options, rows[which], report_dir / "rounds" / f"{r + 1:02d}-{which}")
        summary = finalize(raw, target, options, objectives, None)
        last[which] = summary
        echo(
            f"  round {r + 1} {which} ({target.label}): {summary['rps']:.1f} req/s, p50 {summary['p50_ms']:.1f} ms, "
            f"p99 {summary['p99_ms']:.1f} ms, errors {summary['failures']}"
        )
        return summary

    result = compare.compare(rounds, run_round, (a.label, b.label))
    summary = dict(last["a"])
    summary["comparison"] = result
    # Both sides must have run cleanly; the SLO, if any, gates each round of both.
    summary["passed"] = all(side["passed"] for r in result["rounds"] for side in r.values())
    report.write_report(report_dir, summary)
    return summary
