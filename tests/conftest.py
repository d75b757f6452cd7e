"""Shared test set-up: every test runs with no stray SANDBOX_* settings or sandbox.yaml, and its own umask."""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE: `ci` (the default) sends the serving fuzzers a few hundred
# bodies per protocol and model (every class of body their strategies draw comes up many times over); `nightly`
# (`make nightly`) 5,000. A test's own @settings(max_examples=...) still wins over the profile's size.
settings.register_profile("ci", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nightly", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def _test_process_temporary_files(tmp_path_factory):
    """The test process's own temporary files go to pytest's folder, not /tmp: MLflow's client leaves a folder
    with a copy of the model each time a test loads one, and nothing removes it."""
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("test-process-tmp"))
    yield
    tempfile.tempdir = saved


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("SANDBOX_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    # The CLI sets a private umask for its process; a test that invokes it in-process must not leak it.
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)
