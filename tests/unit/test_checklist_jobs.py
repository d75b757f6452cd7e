"""`sandbox checklist --jobs N`: scenarios side by side, each in a forked process, results in checklist order."""

import os
import sys
import time
from pathlib import Path

import pytest

from sandbox.errors import LOCK_WAIT_ENV
from sandbox.scenarios import side_by_side
from sandbox.scenarios.context import ChecklistRun
from sandbox.scenarios.registry import Scenario
from sandbox.scenarios.results import Outcome, ScenarioResult
from sandbox.scenarios.runner import run_checklist
from sandbox.scenarios.side_by_side import default_jobs, run_side_by_side
from tests.factories import make_endpoints


def _scenario(name: str, func, *, exclusive: tuple[str, ...] = (), expected_s: float = 10.0) -> Scenario:
    return Scenario(name, name.title(), f"item {name}", (), func, __file__, exclusive=exclusive, expected_s=expected_s)


def _wait_for(path: Path, limit: float = 20.0) -> bool:
    deadline = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class FakeBackends:
    def serving(self):
        raise AssertionError("not used")

    def scheduler(self):
        raise AssertionError("not used")

    def pipelines(self):
        raise AssertionError("not used")


def test_scenarios_run_at_once_and_their_results_come_back_in_checklist_order(tmp_path):
    """Each of two scenarios waits for a file the other writes: one after another, both would fail."""
    ping, pong = tmp_path / "ping", tmp_path / "pong"

    def first(ctx):
        ping.touch()
        with ctx.step("the other scenario answers"):
            ctx.check(_wait_for(pong), "the other scenario never ran beside this one")
        ctx.evidence(f"pid {os.getpid()}")

    def second(ctx):
        with ctx.step("the other scenario is running"):
            ctx.check(_wait_for(ping), "the other scenario never ran beside this one")
        pong.touch()
        print("said pong")
        ctx.evidence(f"pid {os.getpid()}")

    selected = [_scenario("first", first), _scenario("second", second)]
    results = run_checklist(
        selected, make_endpoints(), FakeBackends(), run=ChecklistRun("ab12cd34"), progress=False, jobs=2
    )
    assert [(r.name, r.outcome) for r in results] == [("first", Outcome.PASSED), ("second", Outcome.PASSED)]
    assert [s.name for s in results[0].steps] == ["the other scenario answers"]
    assert "said pong" in results[1].output  # each one's own output, kept whole
    pids = {r.evidence[0] for r in results}
    assert len(pids) == 2 and f"pid {os.getpid()}" not in pids  # a process of its own, not this one


def test_scenarios_that_name_the_same_thing_never_run_at_once(tmp_path):
    held = tmp_path / "gpu-inventory-held"

    def uses_the_inventory(ctx):
        try:
            fd = os.open(held, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            ctx.check(False, "another scenario held the inventory")
        time.sleep(0.5)  # long enough that a second one, started beside it, would find the file
        os.close(fd)
        held.unlink()

    selected = [_scenario(f"gpu-{n}", uses_the_inventory, exclusive=("gpu-inventory",)) for n in range(3)]
    results = run_checklist(selected, make_endpoints(), FakeBackends(), run=ChecklistRun(), progress=False, jobs=3)
    assert [r.outcome for r in results] == [Outcome.PASSED] * 3, [r.reason for r in results]


def test_a_scenario_whose_process_dies_fails_alone():
    def dies(ctx):
        os._exit(7)

    def passes(ctx):
        ctx.evidence("fine")

    selected = [_scenario("dies", dies), _scenario("passes", passes)]
    results = run_checklist(selected, make_endpoints(), FakeBackends(), run=ChecklistRun(), progress=False, jobs=2)
    assert results[0].outcome == Outcome.FAILED
    assert results[0].reason == "the scenario's process ended without a result (exit code 7)"
    assert (results[1].outcome, results[1].evidence) == (Outcome.PASSED, ["fine"])


def test_a_scenario_waits_for_the_sandbox_lock_instead_of_being_refused(monkeypatch):
    monkeypatch.delenv(LOCK_WAIT_ENV, raising=False)
    seen = run_side_by_side(
        [_scenario("one", None), _scenario("two", None)],
        2,
        lambda item: ScenarioResult(
            item.name, item.title, item.checklist, Outcome.PASSED, reason=os.environ[LOCK_WAIT_ENV]
        ),
    )
    assert [r.reason for r in seen] == ["600", "600"]
    assert LOCK_WAIT_ENV not in os.environ  # this process's environment is as it was


def test_progress_prints_a_line_per_scenario_as_it_ends(capsys):
    selected = [_scenario("one", lambda ctx: None), _scenario("two", lambda ctx: ctx.check(False, "nope"))]
    run_checklist(selected, make_endpoints(), FakeBackends(), run=ChecklistRun(), jobs=2)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Running 2 scenarios, up to 2 at once"
    assert sorted(line.split(" (")[0] for line in lines[1:]) == [
        " ✓ scenario one: One · passed",
        " ✗ scenario two: Two · failed · nope",
    ]


def test_the_longest_start_first_and_the_results_keep_the_checklist_order():
    selected = [_scenario("quick", None, expected_s=2), _scenario("slow", None, expected_s=36)]
    selected += [_scenario("middling", None, expected_s=14), _scenario("also-quick", None, expected_s=2)]
    started = []
    results = run_side_by_side(
        selected,
        1,
        lambda item: ScenarioResult(item.name, item.title, item.checklist, Outcome.PASSED),
        on_start=lambda item: started.append(item.name),
    )
    assert started == ["slow", "middling", "quick", "also-quick"]  # equal ones in checklist order
    assert [r.name for r in results] == ["quick", "slow", "middling", "also-quick"]


def test_what_the_scenarios_import_is_imported_once_before_the_forks(monkeypatch):
    """Each child finds the preloaded modules already imported (so it does not spend a core importing them)."""
    module = "xml.dom.minidom"  # in the standard library, imported by nothing this suite loads
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(side_by_side, "PRELOADED", (module, "no_such_module_here"))
    seen = run_side_by_side(
        [_scenario("one", None), _scenario("two", None)],
        2,
        lambda item: ScenarioResult(
            item.name, item.title, item.checklist, Outcome.PASSED, reason=str(module in sys.modules)
        ),
    )
    assert [r.reason for r in seen] == ["True", "True"]


@pytest.mark.parametrize("cores, jobs", [(1, 2), (2, 4), (8, 16), (None, 2)])
def test_the_default_is_two_per_core(monkeypatch, cores, jobs):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert default_jobs() == jobs


HELD_TO_A_RATE = """
import time
from sandbox.loadtest.engine import _user_class
settings = {"protocol": "v1", "host": "http://127.0.0.1:1", "model_name": "m", "rows": [[0.0]], "user_rate": 50}
held, free = _user_class(settings), _user_class({**settings, "user_rate": None})
user = object.__new__(held)
user._cp_last_wait_time, user._cp_last_run = 0, time.time()  # as Locust keeps them between tasks
print(0 < held.wait_time(user) <= 1 / 50, "wait_time" in held.__dict__, "wait_time" in free.__dict__)
"""


def test_traffic_for_a_check_can_be_held_to_a_rate():
    """Locust users given a rate send at most that many requests a second each (a check's traffic, not a load
    test's); without one they keep the closed loop's no wait. In a process of its own: the engine patches gevent."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HELD_TO_A_RATE], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True", "False"], done.stderr[-2000:]


def test_on_a_platform_the_sandbox_does_not_own_they_run_one_after_another(capsys, monkeypatch):
    """There each scenario's clean-up deletes what the run made (found by the run's id): beside another scenario
    of the same run it would delete what that one still uses."""
    from sandbox.scenarios import artifacts

    monkeypatch.setattr(artifacts, "find", lambda endpoints, run_id: artifacts.RunArtifacts(run_id))
    selected = [_scenario(name, lambda ctx: ctx.evidence(f"pid {os.getpid()}")) for name in ("one", "two")]
    remote = make_endpoints(profile="remote", capabilities=["mlflow"], owned=False)
    results = run_checklist(selected, remote, FakeBackends(), run=ChecklistRun("ab12cd34"), jobs=4)
    assert [r.evidence[0] for r in results] == [f"pid {os.getpid()}"] * 2  # in this process, one after another
    assert "Running the scenarios one after another" in capsys.readouterr().err


def test_what_a_scenario_leaves_in_the_temporary_folder_goes_with_it(tmp_path, monkeypatch):
    """MLflow's client leaves a folder of model metadata in /tmp whenever it reads a model: during a scenario
    Python's temporary files go to the scenario's own folder, which is removed when it ends."""
    import tempfile

    from sandbox.scenarios.runner import run_scenario

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made = []
    item = _scenario("leaks", lambda ctx: made.append(tempfile.mkdtemp()))
    result = run_scenario(item, make_endpoints(), FakeBackends().serving)
    assert result.outcome == Outcome.PASSED and made
    assert not Path(made[0]).exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing left where temporary files go
    assert tempfile.tempdir == str(tmp_path)  # and this process's setting is as it was
