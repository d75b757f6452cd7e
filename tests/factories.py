"""Objects tests build again and again, made in one place."""

from __future__ import annotations

from typing import Any

from sandbox.endpoints import Endpoints


def make_endpoints(**overrides: Any) -> Endpoints:
    """Endpoints of a stack that is not there (closed loopback ports); override what a test looks at."""
    values: dict[str, Any] = {
        "profile": "local",
        "mlflow_tracking_uri": "http://127.0.0.1:1",
        "s3_endpoint_url": "http://127.0.0.1:2",
        "s3_access_key": "k",
        "s3_secret_key": "s",
        "postgres_url": "postgresql://u:p@127.0.0.1:3/mlflow",
    }
    values.update(overrides)
    return Endpoints(**values)
