"""Files the suite's stacks leave outside their sandbox dirs: counted as orphans, beside processes.

`sandbox down --purge` deletes the sandbox dir; what the stack made elsewhere must go too: weed's
sockets, at fixed /tmp paths (``/tmp/seaweedfs-*-<port>.sock``), and whatever a process of the stack
makes in the temporary folder (the notebooks' ``notebook-*``, the pipeline runner's ``sandbox-pipeline-*``,
the scenario runner's ``scenario-*``, ...).

/tmp is shared with other users and with other stacks of this account (their checklists in flight hold
``scenario-*`` folders of their own), so an entry counts only when it is tied to this run:

- a weed socket, when it was not there when the run started and the port in its name is one of the ports
  the suite's stacks held (`Stack.cli` records each stack's port map before and after every command: a
  purge and an `up` choose new ones);
- anything else, when it is in the run's own temporary folder: the suite points TMPDIR there for every
  process it starts (`private_tmpdir`: the CLI's commands, and what they start where they do not choose a
  folder of their own), and removes it at the end. Each server of a stack has its TMPDIR in its own folder.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

WEED_SOCKETS = "seaweedfs-*.sock"


@contextlib.contextmanager
def private_tmpdir() -> Iterator[Path]:
    """TMPDIR, for what this process starts, a new folder of its own (short: sockets go there too).

    This process's own temporary files are already in pytest's folder (`tests/conftest.py` sets `tempfile.tempdir`,
    which wins over TMPDIR): they are the tests' (MLflow's client leaves a folder each time a test loads a
    model), not the stacks'."""
    folder = Path(tempfile.mkdtemp(prefix="sandbox-faults-", dir="/tmp"))
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    try:
        yield folder
    finally:
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved
        shutil.rmtree(folder, ignore_errors=True)


def _port_of(socket_name: str) -> int | None:
    tail = socket_name.removesuffix(".sock").rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def weed_sockets() -> set[Path]:
    return {Path("/tmp", name) for name in os.listdir("/tmp") if fnmatch.fnmatch(name, WEED_SOCKETS)}


def left_behind(tmpdir: Path, ports: set[int], sockets_before: set[Path]) -> list[Path]:
    """What the run's stacks left (see the module's docstring), once they are purged."""
    sockets = [path for path in weed_sockets() - sockets_before if _port_of(path.name) in ports]
    return sorted([*sockets, *tmpdir.iterdir()])
