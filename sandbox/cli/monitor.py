"""`sandbox monitor`: drift checks over the inference log, retraining, and the watch that does both."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from sandbox import ui
from sandbox.cli import render
from sandbox.cli.common import command
from sandbox.cli.options import RetrainingOverrides, Stack
from sandbox.errors import ExitCode
from sandbox.profiles import Profile

app = typer.Typer(help="Drift monitoring over the inference log, and automated retraining.", no_args_is_help=True)

SinceOpt = Annotated[
    str | None,
    typer.Option(
        help="Live rows since this time, ISO 8601 (2026-01-31T14:00:00Z), or from this far back (15m)"
        " [default: monitoring.window_s]"
    ),
]


@command(app, "check")
def monitor_check(
    model: Annotated[str, typer.Argument(help="Registered model name, as its inferences are logged")],
    version: Annotated[
        str | None, typer.Option(help="Model version [default: the one that answered most recently]")
    ] = None,
    since: SinceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    log_mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the check as an MLflow run")] = True,
    stack: Stack = Stack(),
) -> None:
    """One drift check: recent inferences against the training reference, per feature (exit 7 on drift)."""
    from sandbox.monitoring.checks import check_drift, report_dict

    prof = stack.open()
    check = check_drift(
        prof.endpoints(), model, prof.config.monitoring, version=version, since=since, log_to_mlflow=log_mlflow
    )
    if as_json:
        ui.out.print_json(json.dumps(report_dict(check)))
    else:
        render.drift(check)
    if check.alarm:
        raise typer.Exit(int(ExitCode.DRIFT))


def _retraining(prof: Profile, overrides: RetrainingOverrides):
    """The configured retraining policy with the flags' overrides, and the sandbox's retrainer."""
    from sandbox.monitoring.retraining import Retrainer

    policy = prof.config.monitoring.retraining.overridden(**asdict(overrides))
    return policy, Retrainer.in_sandbox(
        prof.endpoints(), prof.config.root, serving=prof.serving(), pipelines=prof.pipelines()
    )


@command(app, "retrain")
def monitor_retrain(
    model: Annotated[str, typer.Argument(help="Registered model name")],
    overrides: RetrainingOverrides = RetrainingOverrides(),
    stack: Stack = Stack(),
) -> None:
    """Retrain now (trigger: manual): pipeline, challenger, evaluation, promotion, redeploy."""
    from sandbox.monitoring.retraining import Trigger

    prof = stack.open()
    policy, retrainer = _retraining(prof, overrides)
    with prof.lock(f"monitor retrain {model}"), ui.step(f"Retraining {model} (manual)") as step:
        decision = retrainer.run(model, Trigger("manual", "sandbox monitor retrain"), policy)
        step.note = "promoted" if decision.promoted else "champion kept"
    render.decision(decision)


@command(app, "watch")
def monitor_watch(
    models: Annotated[list[str], typer.Argument(help="Registered model name(s) to watch")],
    interval: Annotated[float | None, typer.Option(help="Seconds between checks [monitoring.interval_s]")] = None,
    iterations: Annotated[int, typer.Option(help="Stop after this many rounds (0: until Ctrl-C)")] = 0,
    retrain: Annotated[
        bool, typer.Option("--retrain/--no-retrain", help="Apply the retraining policy after each check")
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on 127.0.0.1:PORT [monitoring.metrics_port]")
    ] = None,
    overrides: RetrainingOverrides = RetrainingOverrides(),
    stack: Stack = Stack(),
) -> None:
    """Check drift periodically, expose it as Prometheus metrics, and retrain when the policy says so."""
    from sandbox.monitoring.watch import METRICS_PORT_KEY, METRICS_PORT_SETTING, Watcher, metrics_server

    prof = stack.open()
    settings = prof.config.monitoring
    policy, retrainer = _retraining(prof, overrides) if retrain else (None, None)
    watcher = Watcher(prof.endpoints(), settings, policy=policy, retrainer=retrainer, listener=render.WatchPrinter())
    port = metrics_port if metrics_port is not None else settings.metrics_port
    port = prof.claim_port(METRICS_PORT_KEY, port, setting=METRICS_PORT_SETTING)
    with metrics_server(watcher.metrics, port) as url:
        ui.err.print(
            f"Watching {', '.join(models)} every {interval or settings.interval_s:g}s; metrics at {url} (Ctrl-C stops)"
        )
        watcher.run(models, interval=interval or settings.interval_s, iterations=iterations)
