"""The lock every profile that keeps state takes while a command changes its sandbox.

`exclusive_lock(lock_file, command, folder=...)` is an flock on ``lock_file`` (0600), taken
without waiting: a second command is refused at once (`LockedError`, exit 3), naming the
holder the file records ("pid N: sandbox COMMAND, since HH:MM:SS") and ``folder``, the folder
it guards. A process started with ``ML_SANDBOX_LOCK_WAIT_S`` set (`errors.LOCK_WAIT_ENV`: the checklist's scenarios
running side by side, and the notebook kernels they start) waits that many seconds for the holder
instead. A crashed holder releases it; within one process it is re-entrant, so a command that
holds it may call code that takes it again. `locked(command)` runs a method under its object's
``lock`` (a command → that lock). The local profile locks its sandbox dir
(`local.state.SandboxDir.lock`; its GPU scheduler `gpu-state.lock`, apart), the Kubernetes ones their
`<dir>/kube/` (`KubeProfile.lock`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import LOCK_WAIT_ENV, LockedError
from sandbox.files import make_private_folder


@dataclass
class _Hold:
    """This process's hold on one lock file."""

    fd: int
    command: str
    lock_file: Path
    releasable: bool  # `released_while_waiting` may let others in meanwhile
    depth: int = 1  # a command that holds the lock (`up`, `monitor retrain`) calls code that takes it again


_held: dict[str, _Hold] = {}
_held_guard = threading.RLock()


@contextlib.contextmanager
def exclusive_lock(lock_file: Path, command: str, *, folder: Path, releasable: bool = False) -> Iterator[None]:
    """Hold ``lock_file`` while a command changes ``folder``'s sandbox, or refuse at once (exit 3).

    It is an flock, so a crashed holder releases it; the file names the holder for the refusal.
    Re-entrant within one process. The lock file's folder is made (0700) when missing. ``releasable``: the
    holder may let other commands in while it only waits (`released_while_waiting`), when this is its only hold.
    """
    key = str(lock_file.parent.resolve() / lock_file.name)
    with _held_guard:
        hold = _held.get(key)
        if hold is not None:
            hold.depth += 1
            try:
                yield
            finally:
                hold.depth -= 1
            return
        fd = _acquire(lock_file, command, folder)
        _held[key] = _Hold(fd, command, lock_file, releasable)
        try:
            yield
        finally:
            _held.pop(key, None)
            os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def released_while_waiting(lock_file: Path) -> Iterator[None]:
    """Let other commands take ``lock_file`` while this one only waits (a deploy, for its server to answer), then
    take it back, waiting as long as they hold it; a no-op unless this process holds it once, as ``releasable``.

    What the holder changes before and after is under the lock as ever; only the wait is not. A lock file
    deleted or replaced meanwhile (`down --purge`) is an error: the sandbox it guarded is gone.
    """
    key = str(lock_file.parent.resolve() / lock_file.name)
    hold = _held.get(key)
    if hold is None or hold.depth != 1 or not hold.releasable:
        yield
        return
    fcntl.flock(hold.fd, fcntl.LOCK_UN)
    try:
        yield
    finally:
        while True:
            try:
                fcntl.flock(hold.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                time.sleep(0.05)
        try:
            same = os.path.samestat(os.fstat(hold.fd), os.stat(lock_file, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if not same:
            raise LockedError(
                f"the sandbox lock {lock_file} was removed while `sandbox {hold.command}` waited",
                hint="another command deleted or replaced the sandbox meanwhile; run this one again",
            )
        _write_holder(hold.fd, hold.command)


def unlocked(command: str) -> contextlib.AbstractContextManager:
    """No lock: the default ``lock`` of a backend built outside a profile (tests, parity checks)."""
    return contextlib.nullcontext()


def locked(command: str):
    """Run a method of an object with a ``lock`` (a command → its `exclusive_lock`) under that lock."""

    def wrap(method):
        @functools.wraps(method)
        def inner(self, *args, **kwargs):
            what = f"{command} {args[0]}" if args and isinstance(args[0], str) else command
            with self.lock(what):
                return method(self, *args, **kwargs)

        return inner

    return wrap


def _wait_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(LOCK_WAIT_ENV) or 0))
    except ValueError:
        return 0.0  # a malformed value: the default, refuse at once


def _acquire(lock_file: Path, command: str, folder: Path) -> int:
    make_private_folder(lock_file.parent)
    deadline = time.monotonic() + _wait_seconds()
    while True:
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise LockedError(
                f"cannot open the sandbox lock {lock_file}: {exc.strerror}",
                hint="it must be a plain file owned by you; remove it (it holds nothing) and run this again",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise LockedError(
                f"another sandbox command is changing {folder} ({holder})",
                hint="wait for it to finish and run this again; `sandbox status` shows the stack meanwhile",
            ) from None
        # The file may have been deleted or replaced since we opened it: then our lock guards nothing.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_file, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    _write_holder(fd, command)
    return fd


def _write_holder(fd: int, command: str) -> None:
    os.ftruncate(fd, 0)
    started = time.strftime("%H:%M:%S")
    os.pwrite(fd, f"pid {os.getpid()}: sandbox {command}, since {started}".encode(), 0)
