"""Bring-up as ordered actions (kind's `create/actions`): each has a title, a run and an undo.

A profile's `up` is a list of `Action`s. `run_actions` runs them in order and
prints ✓/✗ with the time of each. An action may instead name the earlier actions it
needs (`after`): then every action whose needs are met runs at once, each in a thread
of its own (they mostly wait on a server's start), its ✓/✗ line printed as it finishes,
and the list's order is still the plan's. An action whose `done` check finds it done
is skipped and says so (a second `up` changes nothing). When one fails, the
profile's `diagnose` hook may add what explains it (failing pods' events and
log lines) to the error, then the actions this run performed are undone, last
first, unless `keep` (leave them for debugging), and the failure is raised as
it came; an action marked `undo_on_failure` (kubectl applies, Helm releases)
has its own half-made work undone too. When actions run at once and one fails, nothing
more is started, those still running are waited for (a server's start cannot be cut
short safely), and whatever finished is undone with the rest, last finished first.
`plan` lists what would run, for `--dry-run`; `plan_text` adds the exact commands each
action runs, and what it waits for when it names its needs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.markup import escape

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
    # The titles of the earlier actions this one needs finished. None (the default): every earlier one, so a list
    # where no action says otherwise runs strictly in order; () : none, it may start first.
    after: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ActionResult:
    title: str
    outcome: str  # "done" | "already done"
    note: str = ""
    seconds: float = 0.0


def run_actions(
    actions: Sequence[Action], *, keep: bool = False, diagnose: Callable[[], str] | None = None
) -> list[ActionResult]:
    """Run ``actions`` (in order, or at once where `after` allows); on a failure add ``diagnose()``'s text to it,
    undo this run's work, re-raise. The results come in the list's order."""
    needs = dependencies(actions)
    if all(needs[index] == set(range(index)) for index in range(len(actions))):
        return _run_in_order(actions, keep=keep, diagnose=diagnose)
    return _run_at_once(actions, needs, keep=keep, diagnose=diagnose)


def dependencies(actions: Sequence[Action]) -> list[set[int]]:
    """For each action, the indexes of the earlier actions it waits for; an `after` naming no earlier one is a bug."""
    index_of: dict[str, int] = {}
    needs: list[set[int]] = []
    for index, action in enumerate(actions):
        if action.after is None:
            needs.append(set(range(index)))
        else:
            unknown = [title for title in action.after if title not in index_of]
            if unknown:
                raise ValueError(f"action {action.title!r} waits for {unknown}, which no earlier action is titled")
            needs.append({index_of[title] for title in action.after})
        index_of[action.title] = index
    return needs


def _run_in_order(actions: Sequence[Action], *, keep: bool, diagnose: Callable[[], str] | None) -> list[ActionResult]:
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


def _run_at_once(
    actions: Sequence[Action], needs: list[set[int]], *, keep: bool, diagnose: Callable[[], str] | None
) -> list[ActionResult]:
    """Each action in a thread as soon as what it needs has finished; ✓/✗ lines and the one status line are the
    main thread's (a live display belongs to one thread). After a failure (or Ctrl-C) nothing more starts, what
    runs is waited for, then this run's work is undone, last finished first."""
    performed: list[Action] = []  # in the order each was performed (finished; started for undo_on_failure)
    performed_lock = threading.Lock()
    finished: queue.Queue[tuple[int, ActionResult | None, BaseException | None, float]] = queue.Queue()

    def work(index: int) -> None:
        action, started = actions[index], time.monotonic()
        try:
            already = action.done() if action.done is not None else None
            if already is not None:
                result = ActionResult(action.title, "already done", already or "already done")
            else:
                if action.undo_on_failure:
                    with performed_lock:
                        performed.append(action)
                note = action.run() or ""
                if not action.undo_on_failure:
                    with performed_lock:
                        performed.append(action)
                result = ActionResult(action.title, "done", note)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            finished.put((index, None, exc, time.monotonic() - started))
            return
        seconds = time.monotonic() - started
        finished.put((index, ActionResult(result.title, result.outcome, result.note, seconds), None, seconds))

    results: dict[int, ActionResult] = {}
    running: dict[int, threading.Thread] = {}
    waiting = list(range(len(actions)))
    failure: BaseException | None = None
    with ui.err.status("") as status:
        while True:
            try:
                if failure is None:
                    for index in [i for i in waiting if needs[i] <= results.keys()]:
                        waiting.remove(index)
                        running[index] = threading.Thread(target=work, args=(index,), daemon=True)
                        running[index].start()
                if not running:
                    break
                titles = ", ".join(actions[i].title for i in sorted(running))
                status.update(escape(f"{titles} …" if failure is None else f"Waiting for {titles} before undoing …"))
                index, result, exc, seconds = finished.get()
            except KeyboardInterrupt as interrupt:  # start nothing more; what runs finishes, then is undone
                if failure is not None:
                    raise  # a second Ctrl-C: leave at once
                failure = interrupt
                continue
            running.pop(index).join()
            if result is not None:
                results[index] = result
                ui.step_line(result.title, result.note, seconds)
            else:
                ui.step_line(actions[index].title, "", seconds, failed=True)
                failure = failure or exc
    if failure is not None:
        if diagnose is not None and isinstance(failure, Exception):
            _add_diagnosis(failure, diagnose)
        undo(performed, keep=keep)
        raise failure
    return [results[index] for index in range(len(actions))]


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
    """The numbered titles, each with the exact commands it runs and, where it names them, the actions it waits
    for (by number): what `up --dry-run` prints."""
    lines: list[str] = []
    needs = dependencies(actions)
    for number, action in enumerate(actions, 1):
        lines.append(f"{number:2}. {action.title}")
        if action.after is not None:
            waits = needs[number - 1]
            lines.append(
                "      after " + ", ".join(str(i + 1) for i in sorted(waits)) if waits else "      from the start"
            )
        lines += [f"      $ {command}" for command in action.commands]
    return "\n".join(lines)
