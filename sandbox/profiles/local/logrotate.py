"""Bounded logs: size-based rotation of the `service.log` files the sandbox's processes write.

Every process the sandbox starts writes its output to its `service.log` through a
descriptor opened with ``O_APPEND`` (`ManagedProcess.start`), which the process keeps
for its whole life and which no server here can be told to reopen (PostgreSQL
without its logging collector, SeaweedFS, MLflow, the model servers). So a log is
rotated in place, copy-then-truncate (logrotate's ``copytruncate``): the older
copies shift up (``service.log.1`` → ``.2``, ..., the oldest beyond ``keep``
deleted), the log's content is copied to ``service.log.1``, and the log is
truncated to 0. With ``O_APPEND`` every later write lands at the new end, so the
file starts again from nothing, not after a hole.

The caveat is logrotate's too: a line written between the last read of the copy
and the truncation is lost. The copy reads until the file stops growing before it
truncates, which makes that window a few microseconds, not the whole copy. (The
alternative without it, the sandbox reading each process's output through a pipe
and writing the files itself, would put a relay process in front of every server.)

Rotated copies are created 0600, like every file of the sandbox.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_CHUNK = 1 << 20


def rotated(path: Path, index: int) -> Path:
    """``service.log.<index>``: 1 is the newest copy."""
    return path.with_name(f"{path.name}.{index}")


def rotate_if_needed(path: Path, *, max_bytes: int, keep: int) -> bool:
    """Rotate ``path`` when it is larger than ``max_bytes``; True if it was rotated."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes:
        return False
    rotate(path, keep=keep)
    return True


def rotate(path: Path, *, keep: int) -> None:
    """Shift the kept copies, copy ``path`` to ``path.1`` and truncate it; ``keep`` 0 only truncates."""
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        if keep > 0:
            _shift(path, keep)
            _copy_until_quiet(fd, rotated(path, 1))
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    _drop_beyond(path, keep)


def _shift(path: Path, keep: int) -> None:
    rotated(path, keep).unlink(missing_ok=True)
    for index in range(keep - 1, 0, -1):
        older = rotated(path, index)
        if older.exists():
            os.replace(older, rotated(path, index + 1))
            os.chmod(rotated(path, index + 1), 0o600)  # one made by hand may have been looser


def _copy_until_quiet(src: int, dest: Path) -> None:
    """Copy all of ``src``, then whatever was appended meanwhile, until a read finds nothing new."""
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(out, 0o600)  # whatever the umask
        offset = 0
        while True:
            chunk = os.pread(src, _CHUNK, offset)
            if not chunk:
                break
            os.write(out, chunk)
            offset += len(chunk)
    finally:
        os.close(out)


def _drop_beyond(path: Path, keep: int) -> None:
    """Copies numbered above ``keep`` (left when ``keep`` was lowered) are deleted."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)$")
    for candidate in path.parent.iterdir():
        match = pattern.match(candidate.name)
        if match and int(match.group(1)) > keep:
            candidate.unlink(missing_ok=True)
