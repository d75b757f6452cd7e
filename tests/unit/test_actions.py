"""Ordered actions: run in order, skip what is done, undo this run's work on failure unless kept."""

import dataclasses

import pytest

from sandbox.actions import Action, plan, plan_text, run_actions


class Journal:
    def __init__(self):
        self.events: list[str] = []

    def action(self, title, *, fails=False, done=None, reversible=True):
        def run():
            self.events.append(f"run {title}")
            if fails:
                raise RuntimeError(f"{title} broke")
            return f"{title} ok"

        def undo():
            self.events.append(f"undo {title}")

        return Action(title, run, undo if reversible else None, (lambda: done) if done is not None else None)


def test_actions_run_in_order_and_report_their_notes():
    journal = Journal()
    results = run_actions([journal.action("a"), journal.action("b")])
    assert journal.events == ["run a", "run b"]
    assert [(r.title, r.outcome, r.note) for r in results] == [("a", "done", "a ok"), ("b", "done", "b ok")]


def test_an_action_already_done_is_skipped_and_never_undone():
    journal = Journal()
    actions = [journal.action("a", done="already running"), journal.action("b"), journal.action("c", fails=True)]
    with pytest.raises(RuntimeError, match="c broke"):
        run_actions(actions)
    # a was done before this run: it is neither run nor undone; b was this run's work: undone.
    assert journal.events == ["run b", "run c", "undo b"]


def test_a_failure_undoes_this_runs_work_last_first():
    journal = Journal()
    actions = [
        journal.action("a"),
        journal.action("b", reversible=False),
        journal.action("c"),
        journal.action("d", fails=True),
    ]
    with pytest.raises(RuntimeError):
        run_actions(actions)
    assert journal.events == ["run a", "run b", "run c", "run d", "undo c", "undo a"]


def test_keep_leaves_this_runs_work_in_place():
    journal = Journal()
    with pytest.raises(RuntimeError):
        run_actions([journal.action("a"), journal.action("b", fails=True)], keep=True)
    assert journal.events == ["run a", "run b"]


def test_a_failing_undo_does_not_stop_the_others():
    events = []

    def broken_undo():
        events.append("undo b")
        raise OSError("gone")

    actions = [
        Action("a", lambda: events.append("run a"), lambda: events.append("undo a")),
        Action("b", lambda: events.append("run b"), broken_undo),
        Action("c", lambda: (_ for _ in ()).throw(RuntimeError("c broke"))),
    ]
    with pytest.raises(RuntimeError, match="c broke"):
        run_actions(actions)
    assert events == ["run a", "run b", "undo b", "undo a"]


def test_plan_lists_the_titles_without_running_anything():
    journal = Journal()
    assert plan([journal.action("a"), journal.action("b")]) == ["a", "b"]
    assert journal.events == []


def test_plan_text_shows_each_actions_exact_commands_in_order():
    actions = [Action("a", lambda: None, commands=("kind create cluster --name x",)), Action("b", lambda: None)]
    text = plan_text(actions)
    assert text.splitlines() == [" 1. a", "      $ kind create cluster --name x", " 2. b"]


def test_results_carry_each_actions_seconds():
    results = run_actions([Action("a", lambda: None), Action("b", lambda: None, done=lambda: "there")])
    assert [r.outcome for r in results] == ["done", "already done"]
    assert all(isinstance(r.seconds, float) and r.seconds >= 0 for r in results)


def test_a_failure_carries_the_diagnosis_read_before_the_undo():
    from sandbox.errors import ServiceStartError

    events = []

    def fail():
        raise ServiceStartError("b broke", details="b's own output")

    def diagnose():
        events.append("diagnose")
        return "pod b-0: CrashLoopBackOff"

    actions = [Action("a", lambda: None, lambda: events.append("undo a")), Action("b", fail)]
    with pytest.raises(ServiceStartError) as info:
        run_actions(actions, diagnose=diagnose)
    assert info.value.details == "b's own output\npod b-0: CrashLoopBackOff"
    assert events == ["diagnose", "undo a"]  # read while the failing pods still exist


def test_undo_on_failure_clears_the_failing_actions_half_made_work_unless_kept():
    journal = Journal()
    half = Action("b", lambda: (_ for _ in ()).throw(RuntimeError("b broke")), lambda: journal.events.append("undo b"))
    half = dataclasses.replace(half, undo_on_failure=True)
    with pytest.raises(RuntimeError):
        run_actions([journal.action("a"), half])
    assert journal.events == ["run a", "undo b", "undo a"]
    journal.events.clear()
    with pytest.raises(RuntimeError):
        run_actions([journal.action("a"), half], keep=True)
    assert journal.events == ["run a"]
