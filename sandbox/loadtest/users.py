"""Locust users for inference endpoints: one class a protocol (KServe V1, V2, the A/B router, `mlflow models serve`).

Each class posts one request shape (`sandbox.wire`); the payload rows, model name and host are set on a
subclass by the runner (`sandbox.loadtest.engine`), so any tabular model can be load-tested without code.
`InferenceUser`, the only concrete class, is for plain Locust (`locust -f loadtests/users.py`, see that
file): LOADTEST_MODEL, LOADTEST_WIDTH and LOADTEST_PROTOCOL set it.

Importing this module imports Locust, which patches the standard library with gevent: only the engine's
process and the locustfiles in `loadtests/` import it (an import-linter contract keeps it so).
"""

from __future__ import annotations

import os
import random
from typing import ClassVar

from locust import FastHttpUser, constant, task

from sandbox import wire

JSON_HEADERS = {"Content-Type": "application/json"}


def _random_rows(width: int, count: int = 256, seed: int = 0) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(0.0, 1.0) for _ in range(width)] for _ in range(count)]


class _InferenceUser(FastHttpUser):
    abstract = True
    wait_time = constant(0)  # closed loop: each user sends its next request when the last one is answered
    model_name: str = os.environ.get("LOADTEST_MODEL", "model")
    rows: list[list[float]] = _random_rows(int(os.environ.get("LOADTEST_WIDTH", "8")))
    rows_per_request: int = 1
    columns: ClassVar[list[str]] = []  # feature names, for the mlflow protocol's frame
    # Every request's headers: JSON, and the serving token when there is one (the runner's, or for plain Locust
    # ML_SANDBOX_SERVING_TOKEN, which `sandbox env` exports).
    headers: ClassVar[dict[str, str]] = {**JSON_HEADERS, **wire.bearer_headers(os.environ.get(wire.SERVING_TOKEN_ENV))}

    def _sample(self) -> list[list[float]]:
        return (
            random.sample(self.rows, self.rows_per_request) if self.rows_per_request > 1 else [random.choice(self.rows)]
        )


# How each protocol's requests are named in the stats table.
REQUEST_NAMES = {"v1": "v1 predict", "v2": "v2 infer", "mlflow": "mlflow invocations"}


class _ProtocolUser(_InferenceUser):
    """One request shape: `protocol`'s (`sandbox.wire`), recorded under its name in `REQUEST_NAMES`."""

    abstract = True
    protocol: str = "v1"

    @task
    def send(self) -> None:
        call = wire.predict_call(self.protocol, self.model_name, self.columns)
        body = call.body(self._sample())
        name = REQUEST_NAMES[self.protocol]
        with self.client.post(call.path, json=body, headers=self.headers, name=name, catch_response=True) as response:
            _check(response, call.expect)


class V1User(_ProtocolUser):
    """KServe V1: `POST /v1/models/NAME:predict` with `{"instances": [...]}`."""

    abstract = True
    protocol = "v1"


class V2User(_ProtocolUser):
    """Open Inference Protocol: `POST /v2/models/NAME/infer`."""

    abstract = True
    protocol = "v2"


class MLflowServeUser(_ProtocolUser):
    """`mlflow models serve`'s scoring protocol: `POST /invocations` with a split DataFrame (for comparisons)."""

    abstract = True
    protocol = "mlflow"


class InferenceUser(_ProtocolUser):
    """For plain `locust -f loadtests/users.py`: V1 or V2 (LOADTEST_PROTOCOL), rows of LOADTEST_WIDTH features."""

    protocol = "v2" if os.environ.get("LOADTEST_PROTOCOL") == "v2" else "v1"


class ABUser(_InferenceUser):
    """V1 through the A/B router; each request is recorded under the variant that answered."""

    abstract = True

    @task
    def predict(self) -> None:
        body = wire.v1_body(self._sample())
        with self.client.post(
            wire.v1_predict_path(self.model_name), json=body, headers=self.headers, catch_response=True
        ) as response:
            variant = response.headers.get("x-model-variant") if response.headers else None
            response.request_meta["name"] = f"variant {variant}" if variant else "no variant"
            _check(response, "predictions")
            if not variant:
                response.failure("no x-model-variant header")


def _check(response, key: str) -> None:
    if response.status_code != 200:
        response.failure(f"HTTP {response.status_code}")
        return
    try:
        payload = response.json()
    except ValueError:
        response.failure("response is not JSON")
        return
    if key not in payload:
        response.failure(f"response lacks {key!r}")
