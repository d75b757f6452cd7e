"""Shared test set-up: every test runs with no stray SANDBOX_* settings or sandbox.yaml, and its own umask."""

from __future__ import annotations

import os

import pytest


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
