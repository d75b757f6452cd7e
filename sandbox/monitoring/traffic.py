"""Live traffic for monitoring checks: Locust replaying chosen rows, then waiting for the log.

The drift and retraining scenarios (and the logging benchmark) need traffic drawn
from a known distribution, sent the way production traffic arrives (concurrent
HTTP requests through the real server), and then need every row in the
inference log before they check it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sandbox.endpoints import Endpoints, InferenceEndpoint
from sandbox.errors import SandboxError
from sandbox.loadtest import LoadTestOptions, Target
from sandbox.loadtest import run as run_loadtest
from sandbox.serving.inference_log import InferenceLogStore, wait_for_rows


def replay(
    endpoint: InferenceEndpoint,
    rows: list[list[float]],
    *,
    seconds: float,
    report_dir: Path,
    users: int = 4,
    token: str | None = None,
    min_requests: int = 0,
    rate: float | None = None,
) -> dict:
    """Locust posts the rows (one per request, drawn at random) for ``seconds``, with the serving ``token``
    (`Endpoints.serving_token`) when there is one; returns its summary.

    A check needs enough rows whatever the machine's load (the checklist runs scenarios side by side): while
    fewer than ``min_requests`` were answered, Locust runs again, up to `MAX_ROUNDS` in all; the summary
    then counts every round (``rounds`` says how many). ``rate``: at most this many requests/s in all (the
    users share it), so a check's traffic does not take every core from what runs beside it.
    """
    summary: dict = {}
    for round_number in range(1, MAX_ROUNDS + 1):
        this = run_loadtest(
            Target(endpoint.url, endpoint.name, "v1", endpoint.name, token),
            LoadTestOptions(
                users=users, spawn_rate=users, duration_s=seconds, rows=rows, user_rate=rate / users if rate else None
            ),
            report_dir / f"round-{round_number}" if round_number > 1 else report_dir,
        )
        summary = _add_round(summary, this, seconds)
        if summary["requests"] >= min_requests or summary["failures"]:
            break
    return summary


MAX_ROUNDS = 6


def _add_round(summary: dict, this: dict, seconds: float) -> dict:
    if not summary:
        return {**this, "rounds": 1}
    rounds = summary["rounds"] + 1
    requests = summary["requests"] + this["requests"]
    return {
        **summary,
        "requests": requests,
        "failures": summary["failures"] + this["failures"],
        "errors": summary["errors"] or this["errors"],
        "rps": requests / (seconds * rounds),
        "rounds": rounds,
    }


def wait_logged(endpoints: Endpoints, model_name: str, expected: int, *, since: datetime, timeout: float = 30.0) -> int:
    """Block until ``expected`` rows of ``model_name`` logged since ``since`` are in the table."""
    store = InferenceLogStore(endpoints.monitoring_db_url)
    count = wait_for_rows(store, expected, timeout=timeout, model_name=model_name, since=since)
    if count < expected:
        raise SandboxError(
            f"the inference log holds {count} of {expected} rows sent to {model_name} after {timeout:g}s"
        )
    return count
