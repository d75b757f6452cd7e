"""Running notebooks headless (nbclient) with a kernel of the sandbox's own Python, for the `notebooks` scenario.

A notebook takes its parameters the papermill way: the cell tagged ``parameters`` holds the
defaults, and a cell injected right after it (tagged ``injected-parameters``) overrides them.
The kernel is this process's Python (`sys.executable -m ipykernel_launcher`, from a kernelspec
written into a work folder, so no other installed `python3` kernelspec is taken), bound to
127.0.0.1, with the environment it is given. A failing cell stops the run; `NotebookRun.failure`
names the notebook, the cell (its number and first line) and its error.

`NotebookKernel` runs several notebooks one after another on one kernel: starting a kernel and
importing the platform's libraries is most of a short notebook's time. Each notebook after the
first starts from an empty namespace (a first cell ``%reset -f``, injected and tagged, there for
the reader to see); only the modules imported stay imported.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KERNEL_NAME = "sandbox-python"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


@dataclass
class NotebookRun:
    name: str
    notebook: object  # the executed nbformat.NotebookNode (outputs included)
    seconds: float
    failure: str | None = None

    def as_bytes(self) -> bytes:
        import nbformat

        return nbformat.writes(self.notebook).encode()


def inject_parameters(notebook, parameters: Mapping[str, object]) -> int:
    """Insert a cell that sets ``parameters`` after the one tagged `parameters` (or first); returns its index."""
    from nbformat.v4 import new_code_cell

    source = "# Injected parameters\n" + "".join(f"{name} = {value!r}\n" for name, value in parameters.items())
    cell = new_code_cell(source, metadata={"tags": [INJECTED_TAG]})
    position = next(
        (i + 1 for i, c in enumerate(notebook.cells) if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])), 0
    )
    notebook.cells.insert(position, cell)
    return position


def inject_reset(notebook) -> None:
    """Insert, first, a cell that empties the kernel's namespace: the kernel ran another notebook before."""
    from nbformat.v4 import new_code_cell

    source = "# Injected: this kernel ran another notebook before; start from an empty namespace\n%reset -f\n"
    notebook.cells.insert(0, new_code_cell(source, metadata={"tags": [INJECTED_TAG]}))


def describe_failure(name: str, notebook) -> str | None:
    """The first cell with an error output, as the report says it: notebook, cell number and first line, error."""
    number = 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        number += 1
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                first = next((line for line in cell.source.splitlines() if line.strip()), "")
                value = " ".join(str(output.get("evalue", "")).split())
                return f"{name}, code cell {number} ({first.strip()[:60]}): {output.get('ename')}: {value}"
    return None


def write_kernelspec(folder: Path, python: str = sys.executable) -> Path:
    """A kernelspec for ``python`` (the sandbox's environment) in ``folder``/kernels/; returns that folder."""
    spec_dir = folder / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ML sandbox)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return folder / "kernels"


class NotebookKernel:
    """One kernel (in ``workdir``, with ``env``) for notebooks run one after another; `close` shuts it down."""

    def __init__(self, env: Mapping[str, str], workdir: Path, *, timeout_s: float = 300):
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager

        self.env = dict(env)
        self.workdir = workdir
        self.timeout_s = timeout_s
        kernels = write_kernelspec(workdir / ".jupyter")
        self._manager = AsyncKernelManager(
            kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]), ip="127.0.0.1"
        )
        # The kernel's own output (ipykernel's warnings) goes to a log beside the runs, not the checklist's terminal.
        self._log = (workdir / "kernel.log").open("ab")
        self._ran = 0

    def run(self, path: Path, *, parameters: Mapping[str, object]) -> NotebookRun:
        """Execute the notebook at ``path``; never raises for a failing cell (see `NotebookRun.failure`)."""
        import time

        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

        notebook = nbformat.read(path, as_version=4)
        inject_parameters(notebook, parameters)
        if self._ran:
            inject_reset(notebook)
        client = NotebookClient(
            notebook,
            km=self._manager,
            kernel_name=KERNEL_NAME,
            timeout=self.timeout_s,
            startup_timeout=120,
            resources={"metadata": {"path": str(self.workdir)}},
        )
        started = time.monotonic()
        failure = None
        try:
            # cleanup_kc False: the kernel stays for the next notebook (`close` shuts it down).
            client.execute(env=self.env, cwd=str(self.workdir), stdout=self._log, stderr=self._log, cleanup_kc=False)
        except CellExecutionError:
            failure = describe_failure(path.name, notebook) or f"{path.name}: a cell failed"
        except (CellTimeoutError, DeadKernelError) as exc:
            failure = f"{path.name}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        finally:
            if client.kc is not None:
                client.kc.stop_channels()  # this notebook's channels; the next one opens its own
        self._ran += 1
        return NotebookRun(path.name, notebook, time.monotonic() - started, failure)

    def close(self) -> None:
        from jupyter_core.utils import run_sync

        try:
            if self._manager.has_kernel:
                run_sync(self._manager.shutdown_kernel)(now=False)  # gracefully: its clean-up (temporary folders) runs
            run_sync(self._manager.cleanup_resources)()
        finally:
            self._log.close()

    def __enter__(self) -> NotebookKernel:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def run_notebook(
    path: Path,
    *,
    parameters: Mapping[str, object],
    env: Mapping[str, str],
    workdir: Path,
    timeout_s: float = 300,
) -> NotebookRun:
    """Execute the notebook at ``path`` in ``workdir`` on a kernel of its own; never raises for a failing cell."""
    with NotebookKernel(env, workdir, timeout_s=timeout_s) as kernel:
        return kernel.run(path, parameters=parameters)
