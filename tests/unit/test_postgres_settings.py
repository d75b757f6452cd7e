"""PostgreSQL's settings for a sandbox: each one real for the server found, durability left alone."""

from __future__ import annotations

import subprocess

import pytest

from sandbox.errors import PreflightError
from sandbox.profiles.local.services.postgres import find_binaries, memory_settings

DURABILITY = ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")


def test_no_setting_weakens_durability():
    assert not set(memory_settings(1)) & set(DURABILITY)


def test_connections_cover_every_mlflow_workers_pools_and_never_go_below_the_default():
    assert int(memory_settings(1)["max_connections"]) == 100
    for workers in range(1, 17):
        # 3 engines (tracking, registry, auth), each SQLAlchemy's 5 + 10 overflow, per worker; plus the rest.
        assert int(memory_settings(workers)["max_connections"]) >= workers * 3 * 15 + 40


def test_the_server_found_knows_every_setting():
    try:
        binaries = find_binaries("auto", None)
    except PreflightError:
        pytest.skip("no PostgreSQL server here")
    # `--describe-config`: every parameter the server has, one a line, tab-separated, its name first.
    described = subprocess.run(
        [str(binaries.postgres), "--describe-config"], capture_output=True, text=True, check=True
    ).stdout
    known = {line.split("\t", 1)[0] for line in described.splitlines()}
    # A value it cannot take stops the server at start: the integration suite starts it with these.
    assert set(memory_settings(4)) <= known


def test_a_crashed_postmasters_lock_is_cleared_and_a_live_ones_is_left(tmp_path):
    """After a kill -9 the lock names a process that is gone (or a zombie): PostgreSQL would refuse to start."""
    import os
    import subprocess
    import sys

    from sandbox.profiles.local.services.postgres import _clear_stale_lock

    lock = tmp_path / "postmaster.pid"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock.write_text(f"{gone.pid}\n/some/data\n")
    _clear_stale_lock(lock)
    assert not lock.exists()
    lock.write_text(f"{os.getpid()}\n/some/data\n")  # a live process: PostgreSQL's to judge
    _clear_stale_lock(lock)
    assert lock.exists()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while open(f"/proc/{zombie.pid}/stat").read().split(") ")[1][0] != "Z":
            pass  # exited, not yet reaped
        lock.write_text(f"{zombie.pid}\n")
        _clear_stale_lock(lock, wait_s=0.3)
        assert not lock.exists()
    finally:
        zombie.wait()
