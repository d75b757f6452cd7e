"""What `sandbox checklist` and `sandbox scenario run` do before running scenarios: choose them, set MLflow up."""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.errors import ConfigError
from sandbox.scenarios.engine import Scenario, discover


def select(names: list[str] | None, scenarios_dir: list[Path] | None = None) -> list[Scenario]:
    """The scenarios named (all when none are), in the registry's order for all; unknown names are refused."""
    registry = discover(scenarios_dir)
    unknown = [n for n in names or [] if n not in registry]
    if unknown:
        raise ConfigError(f"unknown scenario(s) {', '.join(unknown)}", hint=f"choose from: {', '.join(registry)}")
    return [registry[n] for n in names] if names else list(registry.values())


def quiet_fail_fast_mlflow() -> None:
    """MLflow settings for a checklist run (a user's own environment variables win)."""
    # Scenarios link their MLflow runs in the report; MLflow's own "View run" lines would only clutter.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # A broken stack should fail a scenario in seconds, not after MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
