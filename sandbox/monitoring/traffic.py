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
    fewer than ``min_requests`` were answered, Locust goes on past ``seconds``, up to `MAX_STRETCH` times
    ``seconds`` in all (one run: no second start of Locust, no second ``seconds`` of traffic beyond what is
    needed). ``rate``: at most this many requests/s in all (the users share it), so a check's traffic does not
    take every core from what runs beside it.
    """
    return run_loadtest(
        Target(endpoint.url, endpoint.name, "v1", endpoint.name, token),
        LoadTestOptions(
            users=users,
            spawn_rate=users,
            duration_s=seconds,
            rows=rows,
            user_rate=rate / users if rate else None,
            min_requests=min_requests,
            max_duration_s=seconds * MAX_STRETCH,
        ),
        report_dir,
    )


MAX_STRETCH = 6  # at most this many times ``seconds`` in all


def wait_logged(endpoints: Endpoints, model_name: str, expected: int, *, since: datetime, timeout: float = 30.0) -> int:
    """Block until ``expected`` rows of ``model_name`` logged since ``since`` are in the table."""
    store = InferenceLogStore(endpoints.monitoring_db_url)
    count = wait_for_rows(store, expected, timeout=timeout, model_name=model_name, since=since)
    if count < expected:
        raise SandboxError(
            f"the inference log holds {count} of {expected} rows sent to {model_name} after {timeout:g}s"
        )
    return count
