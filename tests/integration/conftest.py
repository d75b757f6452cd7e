"""Real local stacks, driven through the CLI as a user would.

Every test can run alone and in any order: a fixture hands each test the state it needs (a running stack, a
deployment, a model), whatever an earlier test left. Read-mostly tests use the `platform` session stack,
destructive ones (`test_local_stack.py`) the `scratch` one (`stack`, `mlflow_env`): tests/stacks.py.
"""

from __future__ import annotations

import pytest

from tests.stacks import _platform, _scratch, make_scheduler, mlflow_env, platform, stack  # noqa: F401 - shared


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return make_scheduler(config, log)
