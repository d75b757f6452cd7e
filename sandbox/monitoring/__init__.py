"""Model monitoring: the inference log, drift checks against training references, retraining."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's client prints run links and progress bars to stdout; keep `--json` output clean."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with contextlib.redirect_stdout(io.StringIO()):
        yield
