"""Actions: run in order (or at once where `after` allows), skip what is done, undo this run's work on failure
unless kept."""

import dataclasses
import threading

import pytest

from sandbox.actions import Action, dependencies, plan, plan_text, run_actions


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


# ---------------------------------------------------------------- actions that name what they wait for (`after`)


def test_actions_that_wait_for_nothing_run_at_the_same_time():
    # Each waits for the other to have started: run one after the other, the first would wait forever.
    a_started, b_started = threading.Event(), threading.Event()

    def meet(mine, theirs, title):
        def run():
            mine.set()
            if not theirs.wait(timeout=20):
                raise RuntimeError(f"{title} ran alone")
            return f"{title} met"

        return run

    actions = [
        Action("a", meet(a_started, b_started, "a"), after=()),
        Action("b", meet(b_started, a_started, "b"), after=()),
    ]
    results = run_actions(actions)
    assert [(r.title, r.note) for r in results] == [("a", "a met"), ("b", "b met")]


def test_an_action_starts_only_once_what_it_names_has_finished():
    journal = Journal()
    gate = threading.Event()

    def slow():
        gate.wait(timeout=20)
        journal.events.append("run slow")

    def quick():
        journal.events.append("run quick")
        gate.set()  # slow finishes only now: its dependant cannot have started before

    actions = [
        Action("slow", slow, after=()),
        Action("quick", quick, after=()),
        dataclasses.replace(journal.action("needs slow"), after=("slow",)),
        journal.action("last"),  # no `after`: waits for every action before it
    ]
    results = run_actions(actions)
    assert journal.events == ["run quick", "run slow", "run needs slow", "run last"]
    assert [r.title for r in results] == ["slow", "quick", "needs slow", "last"]  # the list's order


def test_a_failure_waits_for_what_runs_beside_it_then_undoes_it_too_last_finished_first():
    journal = Journal()
    failed = threading.Event()

    def fail():
        journal.events.append("run broken")
        failed.set()
        raise RuntimeError("broken broke")

    def beside():
        failed.wait(timeout=20)  # still running when the other fails
        journal.events.append("run beside")

    actions = [
        journal.action("first"),
        Action("broken", fail, after=("first",)),
        Action("beside", beside, lambda: journal.events.append("undo beside"), after=("first",)),
        dataclasses.replace(journal.action("never"), after=("beside",)),
    ]
    with pytest.raises(RuntimeError, match="broken broke"):
        run_actions(actions)
    # "beside" finished after the failure: it is waited for and undone before "first"; "never" never starts.
    assert journal.events == ["run first", "run broken", "run beside", "undo beside", "undo first"]


def test_when_actions_run_at_once_done_ones_are_skipped_and_keep_leaves_the_rest():
    journal = Journal()
    actions = [
        dataclasses.replace(journal.action("a", done="already running"), after=()),
        dataclasses.replace(journal.action("b"), after=()),
        dataclasses.replace(journal.action("c", fails=True), after=("a", "b")),
    ]
    with pytest.raises(RuntimeError, match="c broke"):
        run_actions(actions, keep=True)
    assert journal.events == ["run b", "run c"]  # a not run; b kept
    journal.events.clear()
    results = run_actions(actions[:2])
    assert [(r.title, r.outcome, r.note) for r in results] == [
        ("a", "already done", "already running"),
        ("b", "done", "b ok"),
    ]


def test_each_action_run_at_once_prints_its_own_line_with_its_note(capsys):
    run_actions([Action("a", lambda: "a's note", after=()), Action("b", lambda: None, after=("a",))])
    err = capsys.readouterr().err
    assert "✓ a · a's note" in err
    assert "✓ b (" in err


def test_after_must_name_an_earlier_action():
    with pytest.raises(ValueError, match="'later'"):
        run_actions([Action("a", lambda: None, after=("later",)), Action("later", lambda: None)])
    assert dependencies([Action("a", lambda: None), Action("b", lambda: None)]) == [set(), {0}]


def test_plan_text_says_what_an_action_waits_for_only_when_it_names_it():
    actions = [
        Action("a", lambda: None, after=()),
        Action("b", lambda: None, after=("a",), commands=("echo b",)),
        Action("c", lambda: None),
    ]
    assert plan_text(actions).splitlines() == [
        " 1. a",
        "      from the start",
        " 2. b",
        "      after 1",
        "      $ echo b",
        " 3. c",
    ]
