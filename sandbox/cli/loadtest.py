"""`sandbox loadtest`: closed-loop Locust users or open-loop arrival rates against a deployment or any
inference URL, with SLO and baseline gates, load shapes, a capacity search, comparisons of two targets,
and Locust's distributed mode (`--master` here, `sandbox loadtest-worker` elsewhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sandbox import ui
from sandbox.cli import render_loadtest
from sandbox.cli.common import command
from sandbox.cli.options import Stack
from sandbox.errors import ConfigError, ExitCode

DEFAULT_DURATION = "30s"
DEFAULT_STEP = "10s"


@command()
def loadtest(
    target: Annotated[str, typer.Argument(help="A deployed name, or a V1/V2 inference URL (e.g. a staging endpoint)")],
    users: Annotated[int, typer.Option("--users", "-u", help="Concurrent users (closed loop)")] = 10,
    spawn_rate: Annotated[float, typer.Option("--spawn-rate", "-r", help="Users started per second")] = 10,
    duration: Annotated[
        str | None,
        typer.Option("--duration", "-t", help="How long, e.g. 30s, 2m [default: 30s; each capacity step 10s]"),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(help="Open loop: requests/s sent on schedule, answered or not (latency from schedule)"),
    ] = None,
    rate_profile: Annotated[
        str | None, typer.Option(help="Open loop: TIME:RATE points, linear between, e.g. '0s:10,30s:100,60s:100'")
    ] = None,
    shape: Annotated[
        str | None,
        typer.Option(
            help="ramp|step|spike|soak with parameters, e.g. 'ramp:from=0,to=100,over=60s' (users; req/s with --open)"
        ),
    ] = None,
    open_loop: Annotated[bool, typer.Option("--open", help="--shape levels are req/s, sent open loop")] = False,
    connections: Annotated[int, typer.Option(help="Open loop: most connections per generator process")] = 1000,
    timeout: Annotated[str, typer.Option(help="Open loop: a request unanswered this long fails")] = "10s",
    max_late: Annotated[
        float, typer.Option(help="Open loop: % of requests sent late past which the run is invalid")
    ] = 1.0,
    late_after: Annotated[
        str, typer.Option(help="Open loop: a request sent this long after its time is late")
    ] = "50ms",
    find_capacity: Annotated[
        bool, typer.Option("--find-capacity", help="Raise the rate, then bisect, to the highest that meets --slo")
    ] = False,
    start_rate: Annotated[float, typer.Option(help="Capacity search: the first rate (req/s)")] = 10,
    max_rate: Annotated[float, typer.Option(help="Capacity search: stop raising here (req/s)")] = 10_000,
    precision: Annotated[float, typer.Option(help="Capacity search: bisect until within this %")] = 5,
    confirm_runs: Annotated[int, typer.Option(help="Capacity search: runs the rate found must hold, every one")] = 2,
    headroom: Annotated[
        float, typer.Option(help="Capacity search: the sustainable rate reported is this % below the edge found")
    ] = 10,
    compare: Annotated[
        str | None,
        typer.Option(help="A second target: the same load alternately against both, differences with 95% CI"),
    ] = None,
    rounds: Annotated[int, typer.Option(help="--compare: rounds (each runs both targets once)")] = 5,
    slo: Annotated[str | None, typer.Option(help="Gates, e.g. 'p95<200ms,p99<500ms,error_rate<1%,rps>50'")] = None,
    baseline: Annotated[Path | None, typer.Option(help="A previous summary.json to compare with")] = None,
    baseline_tolerance: Annotated[float, typer.Option(help="Allowed regression against the baseline, in %")] = 10,
    report: Annotated[Path | None, typer.Option(help="Report folder [default: reports/loadtest-TARGET-TIME]")] = None,
    processes: Annotated[
        int, typer.Option(help="Generator processes on this machine (Locust workers, or open loop)")
    ] = 1,
    master: Annotated[
        bool, typer.Option("--master", help="Locust master: wait for `sandbox loadtest-worker` processes to join")
    ] = False,
    expect_workers: Annotated[int, typer.Option(help="--master: start when this many workers have joined")] = 1,
    master_bind_host: Annotated[
        str, typer.Option(help="--master: the address to listen on (0.0.0.0 for workers on other machines)")
    ] = "127.0.0.1",
    master_port: Annotated[int, typer.Option(help="--master: the port workers connect to")] = 5557,
    protocol: Annotated[str | None, typer.Option(help="v1 or v2 [default: v1, or the URL's]")] = None,
    data: Annotated[Path | None, typer.Option(help="Sample dataset (CSV of feature columns) for payloads")] = None,
    rows_per_request: Annotated[int, typer.Option(help="Rows in each request")] = 1,
    stack: Stack = Stack(),
) -> None:
    """Load-test an inference endpoint (Locust users, or open-loop rates); SLO and baseline gates set the exit code."""
    from sandbox import loadtest as lt
    from sandbox.loadtest import shapes

    if protocol not in (None, "v1", "v2"):
        raise ConfigError(f"unknown protocol {protocol!r}", hint="use v1 or v2")
    if rows_per_request < 1 or rows_per_request > 256:
        raise ConfigError("--rows-per-request must be between 1 and 256", hint="e.g. --rows-per-request 1")
    given = [name for name, value in (("--rate", rate), ("--rate-profile", rate_profile), ("--shape", shape)) if value]
    if len(given) > 1:
        raise ConfigError(
            f"{' and '.join(given)} both set the load", hint="give one of --rate, --rate-profile, --shape"
        )
    if open_loop and not shape:
        raise ConfigError("--open goes with --shape", hint="--rate and --rate-profile are open loop already")
    if find_capacity and (given or compare or master):
        raise ConfigError(
            "--find-capacity sets the rate itself", hint="drop --rate/--rate-profile/--shape/--compare/--master"
        )
    if slo:
        from sandbox.loadtest.slo import parse_slo

        parse_slo(slo)  # a typo fails now, not after the run
    profile = users_profile = None
    if rate is not None:
        profile = shapes.constant(rate, lt.parse_duration(duration or DEFAULT_DURATION))
    elif rate_profile or shape:
        if duration is not None:
            raise ConfigError("--duration and a profile or shape both set the length", hint="drop --duration")
        parsed = shapes.parse_profile(rate_profile) if rate_profile else shapes.parse_shape(shape)
        if rate_profile or open_loop:
            profile = parsed
        else:
            users_profile = parsed
    length = lt.parse_duration(duration or (DEFAULT_STEP if find_capacity else DEFAULT_DURATION))
    if users_profile is not None:
        length = users_profile.duration_s
    elif profile is not None:
        length = profile.duration_s
    options = lt.LoadTestOptions(
        users=users,
        spawn_rate=spawn_rate,
        duration_s=length,
        slo=slo,
        baseline=baseline,
        baseline_tolerance=baseline_tolerance / 100,
        processes=processes,
        data=data,
        rows_per_request=rows_per_request,
        rate_profile=profile,
        users_profile=users_profile,
        connections=connections,
        timeout_s=lt.parse_duration(timeout),
        max_late_percent=max_late,
        late_ms=lt.parse_duration(late_after) * 1000,
        master=master,
        expect_workers=expect_workers,
        master_bind_host=master_bind_host,
        master_port=master_port,
    )
    endpoints = None
    if not target.startswith(("http://", "https://")) or (compare and not compare.startswith(("http://", "https://"))):
        endpoints = stack.open().endpoints()
    resolved = lt.resolve_target(target, endpoints, protocol)
    report_dir = report or lt.default_report_dir(resolved)
    where = f"{resolved.host} ({resolved.protocol}, model {resolved.model_name})"
    if find_capacity:
        from sandbox.loadtest.capacity import Search

        search = Search(
            start_rate=start_rate,
            max_rate=max_rate,
            precision=precision / 100,
            confirm_runs=confirm_runs,
            headroom=headroom / 100,
        )
        with ui.step(f"Capacity search on {where} against {slo}, {length:g} s steps") as step:
            summary = lt.find_capacity(resolved, options, report_dir, search, echo=ui.err.print)
            held = summary["capacity"]["sustainable_rps"]
            step.note = f"{held:g} req/s sustainable" if held is not None else "no rate held"
    elif compare:
        other = lt.resolve_target(compare, endpoints, protocol)
        with ui.step(f"Comparison: {resolved.label} (A) and {other.label} (B), {rounds} rounds") as step:
            summary = lt.compare_targets(resolved, other, options, report_dir, rounds, echo=ui.err.print)
            step.note = f"{rounds} rounds"
    else:
        if profile is not None:
            load = f"open loop {profile.as_text()} req/s"
        elif users_profile is not None:
            load = f"users {users_profile.as_text()}"
        else:
            load = f"{users} users for {length:g}s"
        workers = f", waiting for {expect_workers} worker(s) on {master_bind_host}:{master_port}" if master else ""
        with ui.step(f"Load test: {load} on {where}{workers}") as step:
            summary = lt.run(resolved, options, report_dir)
            step.note = f"{summary['requests']} requests"
    render_loadtest.loadtest(summary, report_dir)
    if not summary["passed"]:
        raise typer.Exit(int(ExitCode.SLO_FAILED))


@command()
def loadtest_worker(
    master_host: Annotated[str, typer.Option(help="The host running `sandbox loadtest --master`")],
    master_port: Annotated[int, typer.Option(help="Its --master-port")] = 5557,
) -> None:
    """Join a `sandbox loadtest --master` run as a Locust worker; exits when the master ends the run."""
    import subprocess
    import sys

    if not 0 < master_port < 65536:
        raise ConfigError(f"--master-port {master_port} is not a port", hint="e.g. --master-port 5557")
    ui.err.print(f"joining the load test master at {master_host}:{master_port} (Ctrl-C leaves)")
    code = subprocess.run(
        [sys.executable, "-m", "sandbox.loadtest.engine", "--connect", f"{master_host}:{master_port}"]
    ).returncode
    if code != 0:
        raise typer.Exit(code)
