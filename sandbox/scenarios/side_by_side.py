"""Scenarios side by side: `sandbox checklist --jobs N` runs up to N at once, each in a process of its own.

Most of a scenario's time is spent waiting on the platform (MLflow, S3, a model server or a kernel starting),
so several at once finish the checklist sooner. Each runs as `run_scenario` in a forked child: its captured
output, environment, working directory and MLflow client stay its own, a crash of one fails that one, and
its result (steps, times, evidence, attachments) comes back whole over a pipe. The results are returned in
checklist order, exactly as one after another would give them.

Two scenarios naming the same thing in ``exclusive`` (the GPU inventory) never run at once. The sandbox's
lock, which a deploy takes, is waited for (`errors.LOCK_WAIT_ENV`) instead of refusing the scenario that
comes second. Scenarios start longest first (``expected_s``, a scenario's time alone), as slots free up: the
longest-processing-time rule, so the slowest scenario is not the one left to start last.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait

from sandbox.endpoints import patched_environ
from sandbox.errors import LOCK_WAIT_ENV
from sandbox.scenarios.registry import Scenario
from sandbox.scenarios.results import Outcome, ScenarioResult

# How long a scenario waits for another's deploy (which holds the sandbox lock until its server is ready).
LOCK_WAIT_S = 600
# What most scenarios import (about 1.5 CPU-seconds together on this machine): imported once, before the
# forks, each child has it already instead of importing it again while the others wait for a core. None of
# them starts a thread on import (a fork copies no thread), and Locust, which patches the standard library
# with gevent's when imported, is not among them.
PRELOADED = (
    "mlflow",
    "mlflow.models",
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "pandas",
    "psycopg",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "boto3",
)


def default_jobs() -> int:
    """What this machine allows: scenarios mostly wait, so two per core, at least two."""
    return max(2, 2 * (os.cpu_count() or 1))


def run_side_by_side(
    selected: Sequence[Scenario],
    jobs: int,
    run_one: Callable[[Scenario], ScenarioResult],
    *,
    on_start: Callable[[Scenario], None] = lambda item: None,
    on_done: Callable[[ScenarioResult], None] = lambda result: None,
) -> list[ScenarioResult]:
    """``run_one`` for each of ``selected``, up to ``jobs`` at once; the results in ``selected``'s order."""
    if len(selected) > 1:
        preload()
    context = multiprocessing.get_context("fork")  # the child has the scenarios, the endpoints and the backends
    waiting = sorted(selected, key=lambda item: -item.expected_s)  # stable: equal ones in checklist order
    running: dict[Connection, tuple[Scenario, multiprocessing.Process, float]] = {}
    results: dict[str, ScenarioResult] = {}
    with patched_environ({LOCK_WAIT_ENV: str(LOCK_WAIT_S)}):
        while waiting or running:
            for item in _startable(waiting, running.values(), jobs):
                waiting.remove(item)
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_child, args=(run_one, item, send), name=f"scenario-{item.name}")
                process.start()
                send.close()  # the child's end: EOF here when the child is gone
                running[receive] = (item, process, time.monotonic())
                on_start(item)
            for ready in wait(list(running)):
                item, process, started = running.pop(ready)
                result = _receive(ready, item, process, started)
                results[item.name] = result
                on_done(result)
    return [results[item.name] for item in selected]


def preload(modules: Sequence[str] | None = None) -> list[str]:
    """Import ``modules`` (`PRELOADED`) here, where the scenarios are forked from; those not installed are skipped."""
    loaded = []
    for name in PRELOADED if modules is None else modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
            loaded.append(name)
    return loaded


def _startable(waiting: list[Scenario], running, jobs: int) -> list[Scenario]:
    """The next waiting scenarios that fit in the free slots and share nothing exclusive with a running one."""
    held = {thing for item, _, _ in running for thing in item.exclusive}
    free = jobs - len(running)
    chosen = []
    for item in waiting:
        if len(chosen) >= free:
            break
        if held.isdisjoint(item.exclusive):
            chosen.append(item)
            held.update(item.exclusive)
    return chosen


def _child(run_one: Callable[[Scenario], ScenarioResult], item: Scenario, send: Connection) -> None:
    try:
        send.send(run_one(item))
    finally:
        send.close()


def _receive(conn: Connection, item: Scenario, process, started: float) -> ScenarioResult:
    """The child's result; a child that died without one is that scenario's failure, and only its own."""
    try:
        result = conn.recv()
    except (EOFError, OSError):
        result = None
    finally:
        conn.close()
    process.join()
    if isinstance(result, ScenarioResult):
        return result
    return ScenarioResult(
        item.name,
        item.title,
        item.checklist,
        Outcome.FAILED,
        reason=f"the scenario's process ended without a result (exit code {process.exitcode})",
        seconds=time.monotonic() - started,
    )
