"""Background processes the sandbox starts, tracked by verified pid files.

A pid file is trusted only when the process behind it still has the recorded
start time and command line: after a crash or a reboot a stale file is
harmless. Each service runs in its own session, so it is also its own process
group and `stop` can end every process it spawned (MLflow's uvicorn and huey
workers, PostgreSQL's backends). It starts with umask 077, so what it writes
is its owner's alone, like the log and pid files written here.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from sandbox.files import PRIVATE_UMASK, tail, write_private


@dataclass(frozen=True)
class PidRecord:
    pid: int
    create_time: float
    cmdline: list[str]


class ManagedProcess:
    """One long-running process and its process group."""

    def __init__(self, pid_file: Path, log_file: Path):
        self.pid_file = pid_file
        self.log_file = log_file
        # Set when this object started the process, so Python can reap it if it dies while we wait.
        self._popen: subprocess.Popen | None = None

    # ------------------------------------------------------------------ state

    def record(self) -> PidRecord | None:
        try:
            return PidRecord(**json.loads(self.pid_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def running(self) -> psutil.Process | None:
        """The live process behind the pid file, or None if the file is absent or stale."""
        record = self.record()
        if record is None:
            return None
        proc = _matching_process(record)
        if proc is None or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc

    def leftovers(self) -> list[psutil.Process]:
        """Processes still in the recorded group although its leader is gone (after a crash)."""
        record = self.record()
        if record is None:
            return []
        return _group_members(record.pid, started_after=record.create_time - 1)

    # ------------------------------------------------------------------ start/stop

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        user: str | None = None,
    ) -> psutil.Process:
        """Start ``argv`` detached in its own session, output appended to the log file."""
        self.log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        drop = _privilege_drop(user)
        with open(os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
                umask=PRIVATE_UMASK,
                **drop,
            )
        proc = psutil.Process(popen.pid)
        self._write(PidRecord(pid=proc.pid, create_time=proc.create_time(), cmdline=list(argv)))
        self._popen = popen
        return proc

    def exited(self) -> int | None:
        """Exit code of a process started by this object, if it has already ended."""
        return self._popen.poll() if self._popen is not None else None

    def stop(self, *, sig: signal.Signals = signal.SIGTERM, whole_group: bool = True, timeout: float = 30) -> bool:
        """Stop the process and everything in its group; True if something was stopped."""
        record = self.record()
        if record is None:
            return False
        leader = self.running()
        members = _group_members(record.pid, started_after=record.create_time - 1)
        if leader is None and not members:
            self.pid_file.unlink(missing_ok=True)
            return False
        targets = members if whole_group or leader is None else [leader]
        for proc in targets:
            _signal(proc, sig)
        _, alive = psutil.wait_procs(members or [leader], timeout=timeout)
        for proc in alive:  # it ignored the polite signal
            _signal(proc, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=10)
        self.pid_file.unlink(missing_ok=True)
        if self._popen is not None:
            self._popen.poll()
        return True

    def log_tail(self, lines: int = 25) -> str:
        return tail(self.log_file, lines)

    def _write(self, record: PidRecord) -> None:
        write_private(self.pid_file, json.dumps(asdict(record)))


def _matching_process(record: PidRecord) -> psutil.Process | None:
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > 0.05:
            return None  # the pid was reused by an unrelated process
        return proc
    except psutil.Error:
        return None


def _group_members(pgid: int, *, started_after: float) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["create_time"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["create_time"] >= started_after:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
        # A stopped (SIGSTOP'd, hung in a debugger) process acts on a signal only once resumed.
        if sig != signal.SIGKILL:
            proc.send_signal(signal.SIGCONT)
    except psutil.NoSuchProcess:
        pass


def _privilege_drop(user: str | None) -> dict:
    """Popen arguments that run the child as ``user`` (only meaningful as root)."""
    if user is None or os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
