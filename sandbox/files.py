"""Files the sandbox writes and reads, whatever the profile: private modes, atomic writes, log tails, pid files.

Everything the sandbox writes is its owner's alone: the CLI sets umask 077 at
start-up (``use_private_umask``), and a file that must be private whatever the
umask is written with ``write_private``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

# New files 0600, new folders 0700: nothing in a sandbox is for group or others.
PRIVATE_UMASK = 0o077


def use_private_umask() -> int:
    """From now on this process (and what it starts) creates files 0600 and folders 0700; returns the old umask."""
    return os.umask(PRIVATE_UMASK)


def make_private_folder(path: Path) -> None:
    """Make ``path`` (and its parents) with mode 0700 whatever the umask. An existing folder keeps its mode: the
    local sandbox dir may have been opened for traversal on purpose (see `SandboxDir.create`)."""
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return
    path.chmod(0o700)


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, mode 0600 whatever the umask."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)  # an older tmp file may have had another mode
    tmp.replace(path)


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a (log) file; empty when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def follow(path: Path, *, poll_s: float = 0.3, sleep=time.sleep) -> Iterator[str]:
    """What is appended to ``path`` from now on, as it arrives (forever; the caller stops).

    A log rotated by copy-and-truncate shrinks under us: reading then starts again at its
    beginning, so what is written after the rotation is shown, as `tail -F` does.
    """
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        while True:
            chunk = handle.read()
            if chunk:
                yield chunk.decode(errors="replace")
            elif os.fstat(handle.fileno()).st_size < handle.tell():
                handle.seek(0)
            else:
                sleep(poll_s)


@dataclass(frozen=True)
class PidRecord:
    """A pid file's content: the process it names is the one with this pid *and* this start time (a reused pid
    is someone else's), started as ``cmdline`` (what was asked for, not what /proc shows: a script runs under
    its interpreter, and a process still inside exec shows no command line at all)."""

    pid: int
    create_time: float
    cmdline: list[str]

    @classmethod
    def of(cls, proc: psutil.Process, cmdline: Sequence[str]) -> PidRecord:
        return cls(pid=proc.pid, create_time=proc.create_time(), cmdline=list(cmdline))

    def process(self) -> psutil.Process | None:
        """The live process this record names: None once it has exited (a zombie has exited) or the pid is
        another process's."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.05 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None


def read_pid_record(path: Path) -> PidRecord | None:
    """The record in the pid file ``path``; None when it is missing or not a record (a stale file is harmless)."""
    try:
        return PidRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_pid_record(path: Path, record: PidRecord) -> None:
    write_private(path, json.dumps(asdict(record)))
