"""`sandbox loadtest`: Locust against a deployment or any inference URL, with SLO and baseline gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sandbox import ui
from sandbox.cli import render
from sandbox.cli.common import command
from sandbox.cli.options import Stack
from sandbox.errors import ConfigError, ExitCode


@command()
def loadtest(
    target: Annotated[str, typer.Argument(help="A deployed name, or a V1/V2 inference URL (e.g. a staging endpoint)")],
    users: Annotated[int, typer.Option("--users", "-u", help="Concurrent users (closed loop)")] = 10,
    spawn_rate: Annotated[float, typer.Option("--spawn-rate", "-r", help="Users started per second")] = 10,
    duration: Annotated[str, typer.Option("--duration", "-t", help="How long, e.g. 30s, 2m")] = "30s",
    slo: Annotated[str | None, typer.Option(help="Gates, e.g. 'p95<200ms,p99<500ms,error_rate<1%,rps>50'")] = None,
    baseline: Annotated[Path | None, typer.Option(help="A previous summary.json to compare with")] = None,
    baseline_tolerance: Annotated[float, typer.Option(help="Allowed regression against the baseline, in %")] = 10,
    report: Annotated[Path | None, typer.Option(help="Report folder [default: reports/loadtest-TARGET-TIME]")] = None,
    processes: Annotated[int, typer.Option(help="Locust worker processes (more load per machine)")] = 1,
    protocol: Annotated[str | None, typer.Option(help="v1 or v2 [default: v1, or the URL's]")] = None,
    data: Annotated[Path | None, typer.Option(help="Sample dataset (CSV of feature columns) for payloads")] = None,
    rows_per_request: Annotated[int, typer.Option(help="Rows in each request")] = 1,
    stack: Stack = Stack(),
) -> None:
    """Load-test an inference endpoint with Locust; SLO and baseline gates set the exit code."""
    from sandbox import loadtest as lt

    if protocol not in (None, "v1", "v2"):
        raise ConfigError(f"unknown protocol {protocol!r}", hint="use v1 or v2")
    if rows_per_request < 1 or rows_per_request > 256:
        raise ConfigError("--rows-per-request must be between 1 and 256", hint="e.g. --rows-per-request 1")
    endpoints = None
    if not target.startswith(("http://", "https://")):
        endpoints = stack.open().endpoints()
    resolved = lt.resolve_target(target, endpoints, protocol)
    options = lt.LoadTestOptions(
        users=users,
        spawn_rate=spawn_rate,
        duration_s=lt.parse_duration(duration),
        slo=slo,
        baseline=baseline,
        baseline_tolerance=baseline_tolerance / 100,
        processes=processes,
        data=data,
        rows_per_request=rows_per_request,
    )
    if slo:
        from sandbox.loadtest.slo import parse_slo

        parse_slo(slo)  # a typo fails now, not after the run
    report_dir = report or lt.default_report_dir(resolved)
    title = (
        f"Load test: {users} users on {resolved.host} ({resolved.protocol}, model {resolved.model_name}) for {duration}"
    )
    with ui.step(title) as step:
        summary = lt.run(resolved, options, report_dir)
        step.note = f"{summary['requests']} requests"
    render.loadtest(summary, report_dir)
    if not summary["passed"]:
        raise typer.Exit(int(ExitCode.SLO_FAILED))
