"""Fault tests: kill -9 components of a real local stack under traffic and count what survived.

They use the `Stack` and the session stack of tests/stacks.py (as the integration tests do) and are marked
`integration`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.ledger import Ledger
from tests.stacks import Stack, _session_stack, mlflow_env, stack  # noqa: F401 - shared fixtures


@pytest.fixture(scope="module")
def faults_stack(tmp_path_factory):
    """A stack of the module's own with the reference model (RandomForest, 8 features) registered once."""
    from sandbox.serving.reference_model import register_reference_model

    module_stack = Stack(tmp_path_factory.mktemp("faults") / "sandbox")
    module_stack.cli("up")
    try:
        tracking_uri = module_stack.endpoints().mlflow_tracking_uri
        register_reference_model(tracking_uri, "fraud-detector", n_estimators=20, seed=0)
        yield module_stack
    finally:
        module_stack.cli("down", "--purge", check=False)


# ---------------------------------------------------------------------------- the ledger table

_LEDGER = pytest.StashKey[Ledger]()


def pytest_configure(config):
    config.stash[_LEDGER] = Ledger()


@pytest.fixture
def ledger(request) -> Ledger:
    """Where a fault test writes what it injected and what survived (printed as one table at the end)."""
    return request.config.stash[_LEDGER]


def pytest_terminal_summary(terminalreporter, config):
    recorded = config.stash.get(_LEDGER, None)
    if not recorded or not recorded.cases:
        return
    terminalreporter.section("fault injection: what was acknowledged, what survived")
    terminalreporter.write_line(recorded.table())
    out = Path(config.rootpath) / "reports" / "faults.json"
    recorded.write(out)
    terminalreporter.write_line(f"(also in {out})")
