import os
import sys

import pytest

from sandbox.errors import ServiceStartError
from sandbox.profiles.local.process import ManagedProcess
from sandbox.profiles.local.readiness import wait_ready


@pytest.fixture
def sleeper(tmp_path):
    proc = ManagedProcess(tmp_path / "p.pid", tmp_path / "p.log")
    proc.start(
        [sys.executable, "-c", "print('booting the thing', flush=True); import time; time.sleep(30)"],
        env=os.environ,
        cwd=tmp_path,
    )
    yield proc
    proc.stop(timeout=5)


def test_ready_once_the_probe_passes(sleeper):
    calls = []

    def probe():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("not yet")

    wait_ready("thing", probe, sleeper, timeout=10, interval=0.01)
    assert len(calls) == 3


def test_timeout_error_carries_the_last_log_lines(sleeper):
    def probe():
        raise ConnectionRefusedError("port closed")

    with pytest.raises(ServiceStartError) as info:
        wait_ready("thing", probe, sleeper, timeout=0.3, interval=0.05)
    assert "not ready after" in info.value.message
    assert "ConnectionRefusedError: port closed" in info.value.message
    assert "booting the thing" in info.value.details


def test_a_process_that_exits_fails_fast(tmp_path):
    proc = ManagedProcess(tmp_path / "p.pid", tmp_path / "p.log")
    proc.start([sys.executable, "-c", "print('bad flag'); raise SystemExit(3)"], env=os.environ, cwd=tmp_path)

    def probe():
        raise ConnectionRefusedError

    with pytest.raises(ServiceStartError) as info:
        wait_ready("thing", probe, proc, timeout=30, interval=0.05)
    assert "exited with code 3" in info.value.message
    assert "bad flag" in info.value.details
