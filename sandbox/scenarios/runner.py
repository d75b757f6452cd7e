"""Running scenarios: one (`run_scenario`), and the checklist, the ones chosen in order (`run_checklist`).

A scenario passes by returning, fails by raising, and is skipped only when the profile lacks a capability
it declared; what it prints is kept for the report. On a platform the sandbox does not own (`Endpoints.owned`
False: the remote profile) what the run made is found by its id after each scenario, tagged where a library
left the tag out, and deleted unless the run keeps its artifacts (`sandbox.scenarios.artifacts`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rich.markup import escape

from sandbox import ui
from sandbox.endpoints import Endpoints, patched_environ
from sandbox.errors import ConfigError
from sandbox.scenarios.context import ChecklistRun, ScenarioContext, current_run
from sandbox.scenarios.names import RUN_ID_TAG
from sandbox.scenarios.registry import Scenario, discover
from sandbox.scenarios.results import Outcome, ScenarioFailed, ScenarioResult, describe_error

if TYPE_CHECKING:
    from sandbox.gpu.backend import SchedulerBackend
    from sandbox.pipelines.runner import PipelineRunner
    from sandbox.serving.specs import ServingBackend


class Backends(Protocol):
    """A profile as the checklist sees it: its backends, each made when a scenario first uses it."""

    def serving(self) -> ServingBackend: ...

    def scheduler(self) -> SchedulerBackend: ...

    def pipelines(self) -> PipelineRunner: ...


# --------------------------------------------------------------------------- the checklist


def select(names: list[str] | None, scenarios_dir: list[Path] | None = None) -> list[Scenario]:
    """The scenarios named (all when none are), in the registry's order for all; unknown names are refused."""
    registry = discover(scenarios_dir)
    unknown = [n for n in names or [] if n not in registry]
    if unknown:
        raise ConfigError(f"unknown scenario(s) {', '.join(unknown)}", hint=f"choose from: {', '.join(registry)}")
    return [registry[n] for n in names] if names else list(registry.values())


def quiet_fail_fast_mlflow() -> None:
    """MLflow settings for a checklist run (a user's own environment variables win)."""
    # Scenarios link their MLflow runs in the report; MLflow's own "View run" lines would only clutter.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # A broken stack should fail a scenario in seconds, not after MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def run_checklist(
    selected: Sequence[Scenario],
    endpoints: Endpoints,
    backends: Backends,
    *,
    run: ChecklistRun,
    progress: bool = True,
    jobs: int = 1,
) -> list[ScenarioResult]:
    """Run ``selected`` on the stack at ``endpoints``, up to ``jobs`` at once; one result each, in their order,
    whatever the others gave.

    Each scenario is a run of `run_scenario` (so on a platform the sandbox does not own, what ``run`` made
    is deleted after each unless it keeps its artifacts, and so they run one after another there); with
    ``jobs`` above 1 each runs in a process of its own (`side_by_side`). With ``progress``, stderr gets a
    ✓/✗ line per scenario, and first, on such a platform, the run's id.
    """
    if progress and not endpoints.owned:
        ui.err.print(f"Checklist run {run.run_id}: what it makes on {endpoints.profile} is tagged with this id")

    def run_one(item: Scenario) -> ScenarioResult:
        return run_scenario(
            item, endpoints, backends.serving, backends.scheduler, run=run, pipelines_factory=backends.pipelines
        )

    if jobs > 1 and len(selected) > 1 and not endpoints.owned:
        # Each scenario's clean-up finds what the run made by the run's id: beside another scenario of the same
        # run, it would delete what that one is still using.
        if progress:
            ui.err.print("Running the scenarios one after another: each one's clean-up finds what the run made")
        jobs = 1
    if jobs > 1 and len(selected) > 1:
        from sandbox.scenarios.side_by_side import run_side_by_side

        if progress:
            ui.err.print(f"Running {len(selected)} scenarios, up to {min(jobs, len(selected))} at once")
        # Plain lines, no spinner: a spinner is a thread, and the scenarios' processes are forked from this one.
        return run_side_by_side(selected, jobs, run_one, on_done=_print_outcome if progress else lambda result: None)
    results = []
    for item in selected:
        title = f"scenario {item.name}: {item.title}"
        with ui.step(title) if progress else contextlib.nullcontext(ui.Step()) as step:
            result = run_one(item)
            step.note = _outcome_note(result)
            step.failed = result.outcome == Outcome.FAILED
        results.append(result)
    return results


def _outcome_note(result: ScenarioResult) -> str:
    return result.outcome.value + (f" · {result.reason}" if result.reason else "")


def _print_outcome(result: ScenarioResult) -> None:
    """A scenario's ✓/✗ line, as `ui.step` prints it, when it ran beside others."""
    mark = "[red]✗[/]" if result.outcome == Outcome.FAILED else "[green]✓[/]"
    title = escape(f"scenario {result.name}: {result.title}")
    ui.err.print(f" {mark} {title} [dim]· {escape(_outcome_note(result))}[/] [dim]({result.seconds:.1f}s)[/]")


# --------------------------------------------------------------------------- one scenario


def run_scenario(
    item: Scenario,
    endpoints: Endpoints,
    serving_factory,
    scheduler_factory=None,
    *,
    run: ChecklistRun | None = None,
    pipelines_factory=None,
) -> ScenarioResult:
    """Run one scenario; ``run`` is the checklist run it belongs to (default: this process's, see `current_run`).

    ``serving_factory``, ``scheduler_factory`` and ``pipelines_factory`` make the profile's backends
    (`Profile.serving`, `.scheduler`, `.pipelines`) when a scenario first uses them.
    """
    run = run or current_run()
    result = ScenarioResult(item.name, item.title, item.checklist, Outcome.PASSED)
    missing = [need for need in item.needs if need not in endpoints.capabilities]
    if missing:
        result.outcome = Outcome.SKIPPED
        result.reason = skip_reason(endpoints, missing)
        return result
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"scenario-{item.name}-") as tmp, _temporary_files_in(Path(tmp)):
        context = ScenarioContext(
            endpoints, serving_factory, Path(tmp), result, scheduler_factory, run, pipelines_factory=pipelines_factory
        )
        captured = io.StringIO()
        cwd = os.getcwd()
        try:
            with _set_aside(captured, endpoints, run):
                item.func(context)
        except Exception as exc:  # noqa: BLE001 - a broken stack fails the scenario, not the runner
            result.outcome = Outcome.FAILED
            failed_step = next((s.name for s in reversed(result.steps) if not s.ok), None)
            where = f"{failed_step}: " if failed_step else ""
            result.reason = where + describe_error(exc)
            if not isinstance(exc, ScenarioFailed):
                result.evidence.append(
                    "traceback (last lines): " + " | ".join(traceback.format_exc().splitlines()[-4:])
                )
        finally:
            os.chdir(cwd)  # a scenario that changed directory must not move the next one
        if not endpoints.owned:
            _settle(context, result, endpoints, run, captured)
    result.seconds = time.monotonic() - started
    result.output = captured.getvalue()[-20000:]
    return result


@contextlib.contextmanager
def _temporary_files_in(folder: Path) -> Iterator[None]:
    """This process's temporary files and folders (Python's `tempfile`) go under ``folder`` meanwhile: MLflow's
    client leaves a folder in /tmp each time it reads a model's metadata, and the scenario's folder goes when
    it ends. Processes a scenario starts are given ``folder`` by the scenario where they need it."""
    scratch = folder / "tmp"
    scratch.mkdir(mode=0o700, exist_ok=True)
    previous = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        yield
    finally:
        tempfile.tempdir = previous


def skip_reason(endpoints: Endpoints, missing: list[str]) -> str:
    """Why a scenario is skipped: the capabilities the stack lacks, each with what to configure to get it."""
    fixes = endpoints.capability_fixes
    parts = [f"{need} ({fixes[need]})" if need in fixes else need for need in missing]
    return f"the {endpoints.profile} profile lacks {', '.join(parts)}"


def _settle(
    context: ScenarioContext, result: ScenarioResult, endpoints: Endpoints, run: ChecklistRun, captured: io.StringIO
) -> None:
    """On a platform the sandbox does not own: tag what this run made, and delete it unless the run keeps it."""
    from sandbox.scenarios import artifacts

    verb = "tag (kept: keep_artifacts)" if run.keep_artifacts else "delete"
    title = f"{verb} what checklist run {run.run_id} made"
    try:
        with _set_aside(captured, endpoints, run), context.step(title):
            found = artifacts.settle(endpoints, run.run_id, keep=run.keep_artifacts)
    except Exception as exc:  # noqa: BLE001 - what was left behind is a failure of this scenario
        problem = f"{title}: {describe_error(exc)}"
        if result.outcome == Outcome.FAILED:
            result.evidence.append(f"clean-up failed too: {problem}")
        else:
            result.outcome, result.reason = Outcome.FAILED, problem
        return
    done = "kept" if run.keep_artifacts else "deleted"
    result.evidence.append(f"checklist run {run.run_id} ({RUN_ID_TAG}): {done} {found.summary()}")


@contextlib.contextmanager
def _set_aside(captured: io.StringIO, endpoints: Endpoints, run: ChecklistRun) -> Iterator[None]:
    """Where a scenario (and its clean-up) runs: its output kept in ``captured``, MLflow's client set up.

    What a scenario's libraries print (KFP's task logs, MLflow's notices) is kept for the report instead of
    interleaving with the checklist output.
    """
    with (
        contextlib.redirect_stdout(captured),
        contextlib.redirect_stderr(captured),
        _quiet_loggers(),
        client_environment(endpoints, run),
    ):
        yield


@contextlib.contextmanager
def client_environment(endpoints: Endpoints, run: ChecklistRun) -> Iterator[None]:
    """MLflow's client settings for a scenario, in this process and the processes it starts (kfp.local).

    Runs started with MLflow's fluent API get the run's tag (``MLFLOW_RUN_CONTEXT``), and the
    client authenticates with the stack's credentials; the previous environment comes back after.
    """
    context = {RUN_ID_TAG: run.run_id}
    try:
        context = {**json.loads(os.environ.get("MLFLOW_RUN_CONTEXT") or "{}"), **context}
    except ValueError:
        pass  # a user's malformed value: ours replaces it for the scenario
    settings = {"MLFLOW_RUN_CONTEXT": json.dumps(context), **endpoints.mlflow_auth_env()}
    with patched_environ(settings):
        yield


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    names = ("kfp", "mlflow", "urllib3", "dvc")
    previous = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)
