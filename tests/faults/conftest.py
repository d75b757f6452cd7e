"""Fault tests: kill -9 components of a real local stack under traffic and count what survived.

They run on the `scratch` session stack of tests/stacks.py (marked `integration`); each module deploys what it
needs once and removes it at its end, and each test gets the stack running again, whatever the test before did.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from tests.faults import leftovers
from tests.faults.ledger import FaultCase, Ledger
from tests.stacks import (  # noqa: F401 - shared
    STACK_PORTS,
    _platform,
    _scratch,
    make_scheduler,
    mlflow_env,
    platform,
    stack,
)


@pytest.fixture(scope="module")
def faults_stack(_scratch):  # noqa: F811 - the shared session stack
    """The scratch stack, running, with the reference model (RandomForest, 8 features) registered.

    `up` even when it runs: it also starts the supervisor's restart history over (backoffs, the crash-loop
    budget of 5 restarts in 300 s), so each module's kills count as on a stack of its own."""
    _scratch.cli("up")
    return _scratch.with_reference_model(1)


# ---------------------------------------------------------------------------- the ledger table

_LEDGER = pytest.StashKey[Ledger]()
_TMP_BEFORE = pytest.StashKey[set[Path]]()
_TMP_LEFT = pytest.StashKey[list[Path]]()
TMP_ROW = "new entries in /tmp after the run, by any of its processes (pytest's folder aside)"


def _names(paths: list[Path]) -> str:
    """A ledger line's "recovered" cell for leftovers: the first few names."""
    return ", ".join(path.name for path in paths[:5]) + (" ..." if len(paths) > 5 else "") or "-"


def _is_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config):
    config.stash[_LEDGER] = Ledger()
    if not _is_xdist_worker(config):  # the run's own process, before any worker or stack starts
        config.stash[_TMP_BEFORE] = leftovers.tmp_entries()


@pytest.fixture
def ledger(request) -> Ledger:
    """Where a fault test writes what it injected and what survived (printed as one table at the end)."""
    return request.config.stash[_LEDGER]


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_outside_the_sandbox_dirs(request):
    """After the session's stacks are purged (this fixture, set up before them, is torn down after them):
    the files they left outside their sandbox dirs, one ledger line whose orphans they are; none may be left."""
    sockets_before = leftovers.weed_sockets()
    with leftovers.private_tmpdir() as tmpdir:
        yield
        if not STACK_PORTS:
            return  # no stack ran (every test deselected or skipped)
        left = leftovers.left_behind(tmpdir, STACK_PORTS, sockets_before)
    request.config.stash[_LEDGER].add(
        "files left in the suite's TMPDIR or as weed sockets after `down --purge`",
        faults=0,
        orphans=len(left),
        recovered=_names(left),
    )
    assert not left, f"the suite's stacks left these outside their sandbox dirs: {[str(p) for p in left]}"


@pytest.hookimpl(trylast=True)  # after pytest's own, which tears down what an interrupted run left set up
def pytest_sessionfinish(session):
    """On an xdist worker: hand the ledger's lines to the controller, which prints the one table. In the run's own
    process, once every worker has purged its stacks: what the run left in /tmp, one ledger line; none may be."""
    config = session.config
    if _is_xdist_worker(config):
        config.workeroutput["fault_cases"] = [asdict(case) for case in config.stash[_LEDGER].cases]
        return
    recorded = config.stash[_LEDGER]
    if not recorded.cases:
        return  # no fault case ran (every one deselected or skipped), so no stack of the suite's either
    left = leftovers.new_entries(config.stash[_TMP_BEFORE], config._tmp_path_factory.getbasetemp())
    recorded.add(
        TMP_ROW,
        faults=0,
        orphans=len(left),
        recovered=_names(left),
    )
    if left:
        config.stash[_TMP_LEFT] = left
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    cases = getattr(node, "workeroutput", {}).get("fault_cases", [])
    node.config.stash[_LEDGER].cases.extend(FaultCase(**case) for case in cases)


def pytest_terminal_summary(terminalreporter, config):
    recorded = config.stash.get(_LEDGER, None)
    if not recorded or not recorded.cases:
        return
    terminalreporter.section("fault injection: what was acknowledged, what survived")
    terminalreporter.write_line(recorded.table())
    out = Path(config.rootpath) / "reports" / "faults.json"
    recorded.write(out)
    terminalreporter.write_line(f"(also in {out})")
    left = config.stash.get(_TMP_LEFT, [])
    if left:  # the run fails for them (`pytest_sessionfinish`), though no test did
        terminalreporter.write_line(f"FAILED: the run left these in /tmp: {[str(p) for p in left]}", red=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return make_scheduler(config, log)
