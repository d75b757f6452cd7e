"""Where the FAKE cluster (tests/fakes/fakecluster.py) keeps its state and its calls log: nothing here is Kubernetes.

Both keep the same thing the same way: the state as one JSON document (sorted keys), read at the start
of a call and written back only when the call succeeds (a failing call leaves the state as it was),
and each call as one JSON line. `FileState` keeps them in the files `$FAKE_TOOLS_STATE` and
`$FAKE_TOOLS_LOG`, for the FAKE executables (tests/fakes/bin), one process per call, so under a file
lock. `MemoryState` keeps them in this process, for the in-process runner (`tests.fakes.FakeTools`):
no interpreter per call, the same answers.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULTS = {"clusters": {}, "objects": {}, "helm": {}, "built": [], "contexts": []}


def _with_defaults(text: str | None) -> dict:
    data = json.loads(text) if text else {}
    for key, empty in DEFAULTS.items():
        data.setdefault(key, type(empty)())
    return data


class FileState:
    """The FAKE executables' state and calls log, in the files the test named in their environment."""

    def __init__(self, state_file: Path, log: Path):
        self.state_file = state_file
        self.log = log

    @classmethod
    def from_env(cls) -> FileState:
        return cls(Path(os.environ["FAKE_TOOLS_STATE"]), Path(os.environ["FAKE_TOOLS_LOG"]))

    @contextmanager
    def edit(self) -> Iterator[dict]:
        """The state to read and change; written back only when the block ends without an error."""
        with open(self.state_file.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the calls of one test may run at once
            data = _with_defaults(self.state_file.read_text() if self.state_file.exists() else None)
            yield data
            self.state_file.write_text(json.dumps(data, indent=1, sort_keys=True))

    def record(self, call: dict) -> None:
        with open(self.log, "a") as log:
            log.write(json.dumps(call) + "\n")

    # What the test reads back and seeds.
    def read(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def write(self, data: dict) -> None:
        self.state_file.write_text(json.dumps(data))

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def clear_calls(self) -> None:
        self.log.unlink(missing_ok=True)


class MemoryState:
    """The same state and calls log as `FileState`, held as the same JSON text in this process."""

    def __init__(self) -> None:
        self._text: str | None = None  # None: no call has written a state yet (no file, for `FileState`)
        self._calls: list[str] = []
        self._lock = threading.Lock()  # the code under test may run calls from threads

    @contextmanager
    def edit(self) -> Iterator[dict]:
        with self._lock:
            data = _with_defaults(self._text)  # a fresh copy: a failing call's changes are dropped with it
            yield data
            self._text = json.dumps(data, sort_keys=True)  # sorted, as in the file: the fake lists in that order

    def record(self, call: dict) -> None:
        self._calls.append(json.dumps(call))

    def read(self) -> dict:
        return json.loads(self._text) if self._text is not None else {}

    def write(self, data: dict) -> None:
        self._text = json.dumps(data)

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self._calls]

    def clear_calls(self) -> None:
        self._calls.clear()
