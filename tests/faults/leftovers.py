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

That count misses what a process started without the suite's TMPDIR makes (a process another user runs; one
started with an environment of its own; under `make stacks`, the integration suite's, beside it), so the
run's own process (not an xdist worker) also lists /tmp when it starts and again when every stack is purged
(`new_entries`): once the run is over, each new entry but pytest's own folder is a leftover of the run.
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
# Where a process started without TMPDIR puts its temporary files (Python's tempfile, MLflow's copies of models).
SYSTEM_TMP = Path("/tmp")


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


def tmp_entries() -> set[Path]:
    """What /tmp holds now (its entries, not what is inside them)."""
    return set(SYSTEM_TMP.iterdir())


def new_entries(before: set[Path], pytest_folder: Path) -> list[Path]:
    """The entries of /tmp made since ``before``, but pytest's own folder (``pytest_folder``: the run's
    basetemp, and the folders above it, which pytest made for it)."""
    pytest_folders = {pytest_folder, *pytest_folder.parents}
    return sorted(path for path in tmp_entries() - before if path not in pytest_folders)
