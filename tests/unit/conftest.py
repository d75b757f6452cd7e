"""Unit-test fixtures shared across modules: an MLflow tracking database of the test's own, made fast."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory) -> Path:
    """An empty MLflow sqlite database with every migration run: MLflow takes seconds to migrate a new one, so
    it is done once per session and copied (`mlflow_db`)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow-template")
    path = folder / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{path}", str(folder / "mlruns")).engine.dispose()
    return path


@pytest.fixture
def mlflow_db(tmp_path, _migrated_mlflow_db) -> str:
    """The URI of a new MLflow database at ``tmp_path/mlflow.db``, as MLflow would make it there: a copy of the
    migrated one, its Default experiment's artifacts where a store made in ``tmp_path`` keeps them (./mlruns)."""
    path = tmp_path / "mlflow.db"
    shutil.copyfile(_migrated_mlflow_db, path)
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(tmp_path / "mlruns" / "0"),)
        )
    db.close()
    return f"sqlite:///{path}"
