"""Checklist: notebooks wired to the platform.

The starter notebooks (`notebooks/*.ipynb`, the ones JupyterLab's workspace starts with) run
headless with nbclient, in order, on one kernel of the sandbox's own Python (each after the first
from an empty namespace) whose environment is
what `sandbox env` exports (`Endpoints.env()`: MLflow, S3 and its keys, the buckets, and where
the platform's SDK finds this stack). Each notebook ends with assertions on what it made, so a
broken platform fails a cell; the scenario then fails naming the notebook, the cell and its
error, and the notebooks after it are not run. The executed notebooks (outputs and all) are
attached to the report.

Everything the notebooks make is named from their `PREFIX` parameter, which the scenario sets
to its own name (`checklist-notebooks`, with the run's id where the stack is not the sandbox's):
experiments and registered models `checklist-notebooks-…`, S3 keys under
`checklist-notebooks/`, the deployment `checklist-notebooks-model`. The deployment is removed
afterwards; on a platform the sandbox does not own the engine deletes the rest of the run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sandbox.scenarios import ScenarioContext, scenario
from sandbox.scenarios.notebooks import NotebookKernel

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def starter_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


@scenario(
    "notebooks",
    title="Starter notebooks",
    checklist="Notebooks (JupyterLab) wired to the platform",
    needs=["mlflow", "s3", "kfp", "serving", "monitoring"],
    order=90,
    expected_s=33,
)
def notebooks(ctx: ScenarioContext) -> None:
    prefix = ctx.scenario_name("notebooks")
    deployment = f"{prefix}-model"  # notebook 2 deploys under this name; removed below
    paths = starter_notebooks()
    ctx.check(paths, f"no starter notebooks in {NOTEBOOKS_DIR}")
    env = {
        **os.environ,
        **ctx.endpoints.env(),
        "ML_SANDBOX_DATA_BUCKET": ctx.endpoints.data_bucket,
        "ML_SANDBOX_ARTIFACTS_BUCKET": ctx.endpoints.artifacts_bucket,
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        # The kernel's temporary files (MLflow's model metadata downloads) in the scenario's folder, which goes.
        "TMPDIR": tempfile.gettempdir(),
    }
    deploying = False
    ran: list[str] = []
    try:
        with NotebookKernel(env, ctx.workdir) as kernel:  # one kernel, the notebooks one after another
            for path in paths:
                deploying = deploying or ".deploy(" in path.read_text()
                with ctx.step(f"run {path.name} headless (nbclient, the sandbox's Python)"):
                    executed = kernel.run(path, parameters={"PREFIX": prefix})
                    ctx.attach(executed.name, executed.as_bytes())
                    ctx.check(executed.failure is None, executed.failure or "")
                    ran.append(f"{executed.name} ({executed.seconds:.1f}s)")
        ctx.evidence(
            f"{len(ran)} starter notebooks ran headless, every cell and its assertions: {', '.join(ran)}; "
            "the executed notebooks are attached"
        )
    finally:
        if deploying:  # a notebook that deploys has run (maybe half-way): its deployment goes
            with ctx.step(f"remove the deployment {deployment}"):
                ctx.serving.expect(deployment)
                ctx.remove_deployments(deployment)
