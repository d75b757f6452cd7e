"""Load tests against inference endpoints: payloads, the Locust engine, SLO gates, reports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from sandbox.endpoints import Endpoints
from sandbox.errors import ConfigError, NotRunningError, SandboxError
from sandbox.loadtest import report, slo

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_V1_URL = re.compile(r"^(?P<base>https?://[^/]+)/v1/models/(?P<model>[^/:]+):predict$")
_V2_URL = re.compile(r"^(?P<base>https?://[^/]+)/v2/models/(?P<model>[^/]+)/infer$")
_MLFLOW_URL = re.compile(r"^(?P<base>https?://[^/]+)/invocations$")
SATURATION_PERCENT = 90.0


def parse_duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"bad duration {text!r}", hint="write it like 30s, 2m or 90")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


@dataclass
class Target:
    host: str  # http://host:port
    model_name: str
    protocol: str  # v1 | v2 | ab | mlflow (`mlflow models serve`, for comparisons)
    label: str  # what the user named


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
    columns: list[str] = field(default_factory=list)  # feature names, for the mlflow protocol


def default_report_dir(target: Target) -> Path:
    """reports/loadtest-MODEL-YYYYmmdd-HHMMSS, with the model name made safe for a file name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("reports") / f"loadtest-{re.sub(r'[^A-Za-z0-9_.-]+', '_', target.model_name)}-{stamp}"


def resolve_target(target: str, endpoints: Endpoints | None, protocol: str | None) -> Target:
    """A deployed name (from the sandbox's endpoints) or a V1/V2 URL."""
    if target.startswith(("http://", "https://")):
        for pattern, proto in ((_V1_URL, "v1"), (_V2_URL, "v2")):
            match = pattern.match(target.rstrip("/"))
            if match:
                return Target(match["base"], match["model"], protocol or proto, target)
        match = _MLFLOW_URL.match(target.rstrip("/"))
        if match:
            return Target(match["base"], "invocations", "mlflow", target)
        raise ConfigError(
            f"cannot tell the model from URL {target}",
            hint="give the full inference URL: http://HOST:PORT/v1/models/NAME:predict or .../v2/models/NAME/infer",
        )
    if endpoints is None or target not in endpoints.inference:
        known = ", ".join(endpoints.inference) if endpoints and endpoints.inference else "none"
        raise ConfigError(
            f"no deployment named {target!r} (deployed: {known})",
            hint="deploy it with `sandbox serve deploy`, or give a URL",
        )
    endpoint = endpoints.inference[target]
    if endpoint.kind == "split":
        if protocol == "v2":
            raise ConfigError("A/B load tests use the V1 protocol", hint="drop --protocol v2 for a split")
        return Target(endpoint.url, target, "ab", target)
    # A listed remote endpoint may be named apart from its model, and known to speak only one protocol.
    return Target(endpoint.url, endpoint.model_name or target, protocol or endpoint.protocol or "v1", target)


def payload_rows(target: Target, data: Path | None, *, count: int = 256, seed: int = 0) -> list[list[float]]:
    """Rows from a sample dataset, or random rows shaped by the model's V2 metadata (its signature)."""
    if data is not None:
        import pandas as pd

        try:
            frame = pd.read_csv(data)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read sample data {data}: {exc}", hint="give a CSV with a header row") from None
        numeric = frame.select_dtypes("number")
        if numeric.empty:
            raise ConfigError(f"{data} has no numeric columns", hint="give the model's feature columns")
        width = _model_width(target)
        if width is not None and numeric.shape[1] != width:
            raise ConfigError(
                f"{data} has {numeric.shape[1]} numeric columns; the model expects {width}",
                hint="drop the label and id columns",
            )
        return numeric.head(count).to_numpy(dtype=float).tolist()
    width = _model_width(target)
    if width is None:
        raise ConfigError(
            f"cannot learn the input shape of {target.label} from its metadata",
            hint="pass a sample dataset with --data FILE.csv",
        )
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, width)).round(4).tolist()


_METADATA_TIMEOUT_S = 10


def _unreachable(target: Target, exc: httpx.TransportError) -> NotRunningError:
    if isinstance(exc, httpx.TimeoutException):
        reason = f"no answer within {_METADATA_TIMEOUT_S}s"
    else:  # "[Errno 111] Connection refused" -> "connection refused"
        text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)) or type(exc).__name__
        reason = text[:1].lower() + text[1:]
    where = target.label if target.label.startswith(("http://", "https://")) else f"{target.label} at {target.host}"
    return NotRunningError(
        f"the target {where} is unreachable: {reason}",
        hint="check the URL and that the server runs (`sandbox serve list` shows the sandbox's deployments)",
    )


def _model_width(target: Target) -> int | None:
    """Feature count from V2 model metadata (an A/B router answers with its variants' metadata).

    None when the server answers without usable metadata; a server that cannot be reached at
    all is an error, not a shape problem.
    """
    try:
        response = httpx.get(
            f"{target.host}/v2/models/{target.model_name}", timeout=_METADATA_TIMEOUT_S, trust_env=False
        )
    except httpx.TransportError as exc:
        raise _unreachable(target, exc) from None
    try:
        response.raise_for_status()
        inputs = response.json().get("inputs") or []
    except (httpx.HTTPError, ValueError):
        return None
    if len(inputs) == 1 and len(inputs[0].get("shape", [])) == 2:
        return int(inputs[0]["shape"][1])
    return len(inputs) or None


def finalize(raw: dict, target: Target, options: LoadTestOptions, objectives: list, baseline: dict | None) -> dict:
    """Raw Locust figures plus the run's settings, environment, gate verdicts and the overall verdict."""
    summary = dict(raw)
    summary.update(
        users=options.users,
        spawn_rate=options.spawn_rate,
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
    summary["passed"] = summary["requests"] > 0 and all(v["passed"] for v in gates)
    return summary


def run(target: Target, options: LoadTestOptions, report_dir: Path, *, echo=print) -> dict:
    """Run the test in a Locust process; return the summary (with verdicts) and write the report."""
    objectives = slo.parse_slo(options.slo) if options.slo else []
    baseline = None
    if options.baseline is not None:
        try:
            baseline = json.loads(options.baseline.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read baseline {options.baseline}: {exc}", hint="give a summary.json") from None
    if options.users < 1 or options.spawn_rate <= 0 or options.duration_s <= 0 or options.processes < 1:
        raise ConfigError("users, spawn rate, duration and processes must be positive", hint="e.g. --users 10")
    rows = options.rows if options.rows is not None else payload_rows(target, options.data)
    report_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "host": target.host,
        "model_name": target.model_name,
        "protocol": target.protocol,
        "rows": rows,
        "rows_per_request": options.rows_per_request,
        "columns": options.columns,
        "users": options.users,
        "spawn_rate": options.spawn_rate,
        "duration_s": options.duration_s,
        "processes": options.processes,
        "report_dir": str(report_dir),
    }
    spec_file = report_dir / "spec.json"
    spec_file.write_text(json.dumps(spec))
    log = report_dir / "locust.log"
    with log.open("w") as handle:
        code = subprocess.run(
            [sys.executable, "-m", "sandbox.loadtest.engine", str(spec_file)], stdout=handle, stderr=subprocess.STDOUT
        ).returncode
    raw_file = report_dir / "raw.json"
    if code != 0 or not raw_file.exists():
        from sandbox.files import tail

        raise SandboxError(f"the Locust run failed (exit {code})", hint=f"see {log}", details=tail(log, 20))
    summary = finalize(json.loads(raw_file.read_text()), target, options, objectives, baseline)
    report.write_report(report_dir, summary)
    return summary
