"""Bring-up as ordered actions (kind's `create/actions`): each has a title, a run and an undo.

A profile's `up` is a list of `Action`s. `run_actions` runs them in order and
prints ✓/✗ with the time of each. An action whose `done` check finds it done
is skipped and says so (a second `up` changes nothing). When one fails, the
profile's `diagnose` hook may add what explains it (failing pods' events and
log lines) to the error, then the actions this run performed are undone, last
first, unless `keep` (leave them for debugging), and the failure is raised as
it came; an action marked `undo_on_failure` (kubectl applies, Helm releases)
has its own half-made work undone too. `plan` lists what would run, for `--dry-run`; `plan_text` adds the
exact commands each action runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sandbox import ui
from sandbox.errors import SandboxError


@dataclass(frozen=True)
class Action:
    title: str
    run: Callable[[], str | None]  # does the work; returns a note for the ✓ line; raises on failure
    undo: Callable[[], None] | None = None  # reverses `run`; None when there is nothing to reverse
    done: Callable[[], str | None] | None = None  # a note when the work is already done (then `run` is skipped)
    commands: tuple[str, ...] = ()  # the exact commands `run` executes, for `plan_text` (--dry-run)
    # `undo` also clears a failed `run`'s half-made work (it must then tolerate what is absent).
    undo_on_failure: bool = False


@dataclass(frozen=True)
class ActionResult:
    title: str
    outcome: str  # "done" | "already done"
    note: str = ""
    seconds: float = 0.0


def run_actions(
    actions: Sequence[Action], *, keep: bool = False, diagnose: Callable[[], str] | None = None
) -> list[ActionResult]:
    """Run ``actions`` in order; on a failure add ``diagnose()``'s text to it, undo this run's work, re-raise."""
    performed: list[Action] = []
    results: list[ActionResult] = []
    try:
        for action in actions:
            started = time.monotonic()
            with ui.step(action.title) as step:
                already = action.done() if action.done is not None else None
                if already is not None:
                    step.note = already or "already done"
                    results.append(ActionResult(action.title, "already done", step.note, time.monotonic() - started))
                    continue
                if action.undo_on_failure:
                    performed.append(action)
                note = action.run() or ""
                step.note = note
                if not action.undo_on_failure:
                    performed.append(action)
                results.append(ActionResult(action.title, "done", note, time.monotonic() - started))
    except BaseException as exc:
        if diagnose is not None and isinstance(exc, Exception):
            _add_diagnosis(exc, diagnose)
        undo(performed, keep=keep)
        raise
    return results


def _add_diagnosis(exc: Exception, diagnose: Callable[[], str]) -> None:
    """What explains the failure (read before the undo removes it), on the error or else printed."""
    try:
        text = diagnose()
    except Exception as problem:  # noqa: BLE001 - the original failure matters more than its diagnosis
        text = f"(could not collect diagnostics: {problem})"
    if not text:
        return
    if isinstance(exc, SandboxError):
        exc.details = f"{exc.details}\n{text}" if exc.details else text
    else:
        ui.err.print(text, markup=False)


def undo(performed: Sequence[Action], *, keep: bool) -> None:
    """Reverse what this run did, last first; each undo is tried even when another fails."""
    reversible = [a for a in performed if a.undo is not None]
    if not reversible:
        return
    if keep:
        ui.err.print(
            "[yellow]Leaving what this run started in place (--keep):[/] " + ", ".join(a.title for a in reversible)
        )
        return
    for action in reversed(reversible):
        with ui.step(f"Undo: {action.title}") as step:
            try:
                action.undo()
            except Exception as exc:  # noqa: BLE001 - report it and go on undoing the rest
                step.note = f"failed: {exc}"
                step.failed = True


def plan(actions: Sequence[Action]) -> list[str]:
    """The titles, in order: what `up` would do."""
    return [action.title for action in actions]


def plan_text(actions: Sequence[Action]) -> str:
    """The numbered titles, each with the exact commands it runs: what `up --dry-run` prints."""
    lines: list[str] = []
    for number, action in enumerate(actions, 1):
        lines.append(f"{number:2}. {action.title}")
        lines += [f"      $ {command}" for command in action.commands]
    return "\n".join(lines)
