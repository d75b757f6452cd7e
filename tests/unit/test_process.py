import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sandbox.files import follow, tail
from sandbox.profiles.local import process
from sandbox.profiles.local.process import ManagedProcess

# A parent that spawns a child in its own process group, then waits: like MLflow and its workers.
_PARENT_WITH_CHILD = (
    "import subprocess, sys, time;"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
    "print('ready', flush=True); time.sleep(60)"
)


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


@pytest.fixture(autouse=True)
def adopt_orphans():
    """This process reaps the orphans of the processes these tests start, for the test only.

    A service's worker outlives its killed leader for a moment, then its zombie waits for whoever adopts it;
    `stop` waits (psutil) until it is gone. Adopted by init, that takes as long as init takes to reap (a second
    or two on some CI machines); adopted here, psutil's wait reaps it at once. What is asserted is the same."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
    if libc is None or libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        yield
        return
    before = {child.pid for child in psutil.Process().children()}
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for child in psutil.Process().children():  # whatever of this test is left (adopted or not): ended, reaped
            if child.pid not in before:
                with contextlib.suppress(psutil.Error):
                    child.kill()
                    child.wait(timeout=5)


@pytest.fixture
def managed(tmp_path):
    proc = ManagedProcess(tmp_path / "service.pid", tmp_path / "service.log")
    yield proc
    proc.stop(sig=signal.SIGKILL, timeout=5)


def _wait_for_children(pid: int, count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = psutil.Process(pid).children(recursive=True)
        if len(children) >= count:
            return children
        time.sleep(0.05)
    raise AssertionError("child process did not start")


def test_start_records_a_verified_pid(managed, tmp_path):
    proc = managed.start([sys.executable, "-c", "import time; time.sleep(60)"], env=os.environ, cwd=tmp_path)
    assert managed.running().pid == proc.pid
    record = json.loads(managed.pid_file.read_text())
    assert record["pid"] == proc.pid and record["cmdline"][0] == sys.executable
    assert os.getpgid(proc.pid) == proc.pid  # its own process group


def test_stale_pid_file_is_not_trusted(managed):
    # Our own pid, but with another start time: what a reused pid looks like after a crash.
    managed.pid_file.write_text(json.dumps({"pid": os.getpid(), "create_time": 1.0, "cmdline": ["x"]}))
    assert managed.running() is None
    managed.pid_file.write_text("garbage")
    assert managed.running() is None


def test_stop_ends_the_whole_group(managed, tmp_path):
    proc = managed.start([sys.executable, "-c", _PARENT_WITH_CHILD], env=os.environ, cwd=tmp_path)
    child = _wait_for_children(proc.pid, 1)[0]
    assert managed.stop(timeout=5) is True
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert managed.running() is None
    assert not managed.pid_file.exists()
    assert managed.stop() is False  # idempotent


def test_leftovers_after_the_leader_is_killed(managed, tmp_path):
    proc = managed.start([sys.executable, "-c", _PARENT_WITH_CHILD], env=os.environ, cwd=tmp_path)
    child = _wait_for_children(proc.pid, 1)[0]
    os.kill(proc.pid, signal.SIGKILL)
    managed.exited()  # reap the leader, as a crashed service would be
    deadline = time.monotonic() + 5
    while managed.running() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert managed.running() is None
    assert [p.pid for p in managed.leftovers()] == [child.pid]
    assert managed.stop(timeout=5) is True
    assert managed.leftovers() == []


def test_output_goes_to_the_log(managed, tmp_path):
    managed.start([sys.executable, "-c", "print('hello from the service')"], env=os.environ, cwd=tmp_path)
    deadline = time.monotonic() + 10
    while managed.exited() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "hello from the service" in tail(managed.log_file)


def test_a_started_process_keeps_its_temporary_files_in_its_folder_and_a_new_start_clears_them(tmp_path):
    """What a process leaves in its temporary folder (a kill -9 mid-upload) stays in the sandbox dir, not /tmp."""
    managed = ManagedProcess(tmp_path / "svc" / "service.pid", tmp_path / "svc" / "service.log")
    script = "import tempfile; print('left', tempfile.mkdtemp())"
    for _ in range(2):
        proc = managed.start([sys.executable, "-c", script], env={**os.environ, "TMPDIR": "/tmp"}, cwd=tmp_path)
        psutil.Process(proc.pid).wait(10)
        assert managed.exited() is not None
    left = [line.split()[1] for line in managed.log_tail().splitlines() if line.startswith("left ")]
    assert len(left) == 2
    assert all(Path(path).parent == tmp_path / "svc" / "tmp" for path in left)
    assert not Path(left[0]).exists() and Path(left[1]).is_dir()  # the second start cleared the first's


def test_a_started_process_writes_private_files_whatever_our_umask(tmp_path):
    import stat

    managed = ManagedProcess(tmp_path / "svc" / "service.pid", tmp_path / "svc" / "service.log")
    old = os.umask(0o000)
    try:
        script = "import os; open('made-by-child', 'w').close(); print('umask', oct(os.umask(0)))"
        proc = managed.start([sys.executable, "-c", script], env=os.environ, cwd=tmp_path)
        psutil.Process(proc.pid).wait(10)
    finally:
        os.umask(old)
    assert "umask 0o77" in managed.log_tail()
    for path, expected in (
        (tmp_path / "svc", 0o700),
        (managed.log_file, 0o600),
        (managed.pid_file, 0o600),
        (tmp_path / "made-by-child", 0o600),
    ):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_follow_yields_what_is_appended_after_it_starts(tmp_path):
    log = tmp_path / "service.log"
    log.write_bytes(b"old line\n")
    waits = []

    def sleep(seconds):  # instead of waiting, the "service" writes while the follower polls
        waits.append(seconds)
        with log.open("ab") as handle:
            handle.write(b"new line \xff\n")

    lines = follow(log, poll_s=0.3, sleep=sleep)
    assert next(lines) == "new line \ufffd\n"  # not the old line; undecodable bytes replaced
    assert waits == [0.3]


def test_follow_goes_on_after_the_log_is_rotated_by_copy_and_truncate(tmp_path):
    log = tmp_path / "service.log"
    log.write_bytes(b"a long line written before the follower started\n")

    def sleep(seconds):  # the supervisor rotates: copy, truncate; then the service writes a short line
        log.with_suffix(".log.1").write_bytes(log.read_bytes())
        with log.open("r+b") as handle:
            handle.truncate(0)
        with log.open("ab") as handle:
            handle.write(b"after\n")

    lines = follow(log, poll_s=0.3, sleep=sleep)
    assert next(lines) == "after\n"


# ---------------------------------------------------------------------- identity by marker


def _marked(tmp_path, component: str, home: str | None = None) -> ManagedProcess:
    from sandbox.profiles.local.process import Identity

    folder = tmp_path / component.replace(":", "-")
    return ManagedProcess(folder / "service.pid", folder / "service.log", Identity(home or str(tmp_path), component))


@pytest.mark.parametrize("damage", ["garbage", "deleted", "another pid"])
def test_a_damaged_pid_file_still_finds_the_running_process_and_is_repaired(tmp_path, damage):
    managed = _marked(tmp_path, "mlflow")
    try:
        proc = managed.start([sys.executable, "-c", _PARENT_WITH_CHILD], env=os.environ, cwd=tmp_path)
        child = _wait_for_children(proc.pid, 1)[0]
        if damage == "garbage":
            managed.pid_file.write_text("\x00not json")
        elif damage == "deleted":
            managed.pid_file.unlink()
        else:
            record = {"pid": child.pid, "create_time": child.create_time(), "cmdline": []}  # its worker
            managed.pid_file.write_text(json.dumps(record))
        assert managed.running().pid == proc.pid  # the session leader, not its worker
        assert json.loads(managed.pid_file.read_text())["pid"] == proc.pid
    finally:
        managed.stop(sig=signal.SIGKILL, timeout=5)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_stop_ends_every_marked_process_of_the_component_whatever_the_pid_file_says(tmp_path):
    managed = _marked(tmp_path, "deployment:fraud")
    other = _marked(tmp_path, "deployment:fraud-b")  # same sandbox, another component: left alone
    try:
        proc = managed.start([sys.executable, "-c", _PARENT_WITH_CHILD], env=os.environ, cwd=tmp_path)
        child = _wait_for_children(proc.pid, 1)[0]
        kept = other.start([sys.executable, "-c", "import time; time.sleep(60)"], env=os.environ, cwd=tmp_path)
        managed.pid_file.write_text("garbage")
        assert managed.stop(timeout=5) is True
        for gone in (proc, child):
            assert not gone.is_running() or gone.status() == psutil.STATUS_ZOMBIE
        assert kept.is_running() and other.running().pid == kept.pid
    finally:
        other.stop(sig=signal.SIGKILL, timeout=5)


def test_stop_marked_ends_every_process_of_one_sandbox_and_no_other(tmp_path):
    from sandbox.profiles.local.process import sandbox_processes, stop_marked

    ours = [_marked(tmp_path, name, home="/sandbox/a") for name in ("postgres", "deployment:x")]
    theirs = _marked(tmp_path, "postgres", home="/sandbox/b")
    try:
        started = [m.start([sys.executable, "-c", _PARENT_WITH_CHILD], env=os.environ, cwd=tmp_path) for m in ours]
        children = [_wait_for_children(p.pid, 1)[0] for p in started]
        survivor = theirs.start([sys.executable, "-c", "import time; time.sleep(60)"], env=os.environ, cwd=tmp_path)
        for m in ours:
            m.pid_file.unlink()  # no pid file leads to them any more
        assert {p.pid for p in sandbox_processes("/sandbox/a")} == {p.pid for p in [*started, *children]}
        stopped = stop_marked("/sandbox/a", timeout=5)
        assert {p.pid for p in stopped} == {p.pid for p in [*started, *children]}
        assert sandbox_processes("/sandbox/a") == []
        assert survivor.is_running()
    finally:
        theirs.stop(sig=signal.SIGKILL, timeout=5)


def test_a_process_that_exited_counts_as_ended_before_it_is_reaped():
    """Its parent (here this test; for a service, an init that reaps orphans on a timer) may reap it late: a
    stop does not wait for that."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc = psutil.Process(child.pid)
    try:
        child.kill()
        while proc.status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.02)
        assert process._wait_ended([proc], timeout=60) == []
        assert proc.status() == psutil.STATUS_ZOMBIE  # ended without being reaped
    finally:
        child.wait()
