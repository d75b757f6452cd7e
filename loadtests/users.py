"""Locust users for KServe inference endpoints.

Each class posts one request shape; the payload rows, model name and request
name are set on a subclass by the runner (`sandbox loadtest`), so any tabular
model can be load-tested without code.

Usable directly with plain Locust, for people with Locust habits:

    LOADTEST_MODEL=fraud LOADTEST_WIDTH=8 locust -f loadtests/users.py --host http://127.0.0.1:8080

runs `InferenceUser` (the only concrete class here) with random rows of
LOADTEST_WIDTH features against LOADTEST_MODEL, over LOADTEST_PROTOCOL (v1,
the default, or v2). Add `loadtests/shapes.py` to the `-f` list for a ramp,
step, spike or soak shape (see that file).
"""

from __future__ import annotations

import os
import random
from typing import ClassVar

from locust import FastHttpUser, constant, task

from sandbox.serving.payloads import v1_body, v2_body

# Requests in the stats table are named by protocol; A/B responses add the variant.
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

    def _post(self, path: str, body: dict, name: str, expect: str) -> None:
        with self.client.post(path, json=body, headers=JSON_HEADERS, name=name, catch_response=True) as response:
            _check(response, expect)

    def _sample(self) -> list[list[float]]:
        return (
            random.sample(self.rows, self.rows_per_request) if self.rows_per_request > 1 else [random.choice(self.rows)]
        )


class V1User(_InferenceUser):
    """KServe V1: `POST /v1/models/NAME:predict` with `{"instances": [...]}`."""

    abstract = True

    @task
    def predict(self) -> None:
        self._post(f"/v1/models/{self.model_name}:predict", v1_body(self._sample()), "v1 predict", "predictions")


class V2User(_InferenceUser):
    """Open Inference Protocol: `POST /v2/models/NAME/infer`."""

    abstract = True

    @task
    def infer(self) -> None:
        self._post(f"/v2/models/{self.model_name}/infer", v2_body(self._sample()), "v2 infer", "outputs")


class MLflowServeUser(_InferenceUser):
    """`mlflow models serve`'s scoring protocol: `POST /invocations` with a split DataFrame (for comparisons)."""

    abstract = True
    columns: ClassVar[list[str]] = []

    @task
    def invocations(self) -> None:
        body = {"dataframe_split": {"columns": self.columns, "data": self._sample()}}
        self._post("/invocations", body, "mlflow invocations", "predictions")


class ABUser(_InferenceUser):
    """V1 through the A/B router; each request is recorded under the variant that answered."""

    abstract = True

    @task
    def predict(self) -> None:
        body = v1_body(self._sample())
        with self.client.post(
            f"/v1/models/{self.model_name}:predict", json=body, headers=JSON_HEADERS, catch_response=True
        ) as response:
            variant = response.headers.get("x-model-variant") if response.headers else None
            response.request_meta["name"] = f"variant {variant}" if variant else "no variant"
            _check(response, "predictions")
            if not variant:
                response.failure("no x-model-variant header")


class InferenceUser(_InferenceUser):
    """For plain `locust -f loadtests/users.py`: V1 or V2 (LOADTEST_PROTOCOL), rows of LOADTEST_WIDTH features."""

    protocol = os.environ.get("LOADTEST_PROTOCOL", "v1")

    @task
    def call(self) -> None:
        if self.protocol == "v2":
            self._post(f"/v2/models/{self.model_name}/infer", v2_body(self._sample()), "v2 infer", "outputs")
        else:
            self._post(f"/v1/models/{self.model_name}:predict", v1_body(self._sample()), "v1 predict", "predictions")


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
