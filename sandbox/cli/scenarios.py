"""`sandbox scenario list|run` and `sandbox checklist`: production-checklist scenarios."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sandbox import ui
from sandbox.cli import render
from sandbox.cli.common import command
from sandbox.cli.options import ChecklistOutput, JobsOpt, ScenariosDirOpt, Stack
from sandbox.errors import ExitCode, NotRunningError

app = typer.Typer(help="Production-checklist scenarios: list them, run some.", no_args_is_help=True)


@command(app, "list")
def scenario_list(scenarios_dir: ScenariosDirOpt = None) -> None:
    """List the scenarios, the checklist item each proves and the capabilities it needs."""
    from sandbox.scenarios import discover

    table = Table(title="Scenarios", title_justify="left")
    for column in ("name", "checklist item", "needs", "file"):
        table.add_column(column)
    for item in discover(scenarios_dir).values():
        table.add_row(item.name, item.checklist, ", ".join(item.needs) or "-", Path(item.source).name)
    ui.out.print(table)


@command(app, "run")
def scenario_run(
    names: Annotated[list[str] | None, typer.Argument(help="Scenarios to run [default: all]")] = None,
    output: ChecklistOutput = ChecklistOutput(),
    jobs: JobsOpt = None,
    stack: Stack = Stack(),
) -> None:
    """Run scenarios against the running stack; exit 1 if any fails."""
    _run_scenarios(names, output, stack, jobs)


@command()
def checklist(output: ChecklistOutput = ChecklistOutput(), jobs: JobsOpt = None, stack: Stack = Stack()) -> None:
    """Run every scenario and print the production checklist: ✓ / ✗ / skipped with evidence.

    Scenarios run side by side (--jobs); the results, JUnit and reports are in checklist order all the same."""
    _run_scenarios(None, output, stack, jobs)


def _run_scenarios(names: list[str] | None, output: ChecklistOutput, stack: Stack, jobs: int | None) -> None:
    from sandbox.scenarios import Outcome, runner
    from sandbox.scenarios.context import ChecklistRun
    from sandbox.scenarios.reports import write_attachments, write_html, write_junit, write_markdown

    runner.quiet_fail_fast_mlflow()
    selected = runner.select(names, output.scenarios_dir)
    prof = stack.open()
    endpoints = prof.status().endpoints
    if endpoints is None:
        raise NotRunningError(f"no sandbox in {prof.config.root}", hint="start one with `sandbox up`")
    run = ChecklistRun(keep_artifacts=output.keep_artifacts)
    if jobs is None:
        from sandbox.scenarios.side_by_side import default_jobs

        jobs = default_jobs()
    results = runner.run_checklist(selected, endpoints, prof, run=run, jobs=jobs)

    render.checklist(results, endpoints.profile)
    if output.junit:
        write_junit(results, output.junit)
        ui.err.print(f"JUnit XML: {output.junit}")
    if output.report:
        write_markdown(results, output.report / "checklist.md", profile=endpoints.profile)
        write_html(results, output.report / "checklist.html", profile=endpoints.profile)
        write_attachments(results, output.report)
        ui.err.print(f"Reports: {output.report / 'checklist.html'}, {output.report / 'checklist.md'}")
    failed = [r.name for r in results if r.outcome == Outcome.FAILED]
    if failed:
        ui.err.print(f"[red]{len(failed)} scenario(s) failed[/]: {', '.join(failed)}")
        raise typer.Exit(int(ExitCode.FAILED))
