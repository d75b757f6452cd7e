"""Bring-up as ordered actions (kind's `create/actions`): each has a title, a run and an undo.

A profile's `up` is a list of `Action`s. `run_actions` runs them in order and
prints ✓/✗ with the time of each. An action whose `done` check finds it done
is skipped and says so (a second `up` changes nothing). When one fails, the
actions this run performed are undone, last first, unless `keep` (leave them
for debugging), and the failure is raised as it came. `plan` lists what would
run, for `--dry-run`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sandbox import ui


@dataclass(frozen=True)
class Action:
    title: str
    run: Callable[[], str | None]  # does the work; returns a note for the ✓ line; raises on failure
    undo: Callable[[], None] | None = None  # reverses `run`; None when there is nothing to reverse
    done: Callable[[], str | None] | None = None  # a note when the work is already done (then `run` is skipped)


@dataclass(frozen=True)
class ActionResult:
    title: str
    outcome: str  # "done" | "already done"
    note: str = ""


def run_actions(actions: Sequence[Action], *, keep: bool = False) -> list[ActionResult]:
    performed: list[Action] = []
    results: list[ActionResult] = []
    try:
        for action in actions:
            with ui.step(action.title) as step:
                already = action.done() if action.done is not None else None
                if already is not None:
                    step.note = already or "already done"
                    results.append(ActionResult(action.title, "already done", step.note))
                    continue
                note = action.run() or ""
                step.note = note
                performed.append(action)
                results.append(ActionResult(action.title, "done", note))
    except BaseException:
        undo(performed, keep=keep)
        raise
    return results


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
