"""Model monitoring: the inference log, drift checks against training references, retraining."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator


def experiment_id(client, name: str) -> str:
    """The id of the MLflow experiment ``name``, created on first use."""
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's client prints run links and progress bars to stdout; keep `--json` output clean."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with contextlib.redirect_stdout(io.StringIO()):
        yield
