"""The inference wire format: paths, request bodies, limits, and the error for a body that does not fit.

One place for what goes over the wire to a model server, whoever sends or reads it: the load tests (the
Locust users and the open-loop generator's prepared bodies) build their requests here, and the model server
(sandbox.serving.model_io parses and validates) refuses a body over the limits here, or one that does not
fit the model, with `PayloadError`, which it turns into a 400. The protocols:

- KServe V1: `POST /v1/models/NAME:predict` with `{"instances": [[...], ...]}`; a good answer has
  `predictions`.
- Open Inference Protocol (V2): `POST /v2/models/NAME/infer` with `{"inputs": [tensor, ...]}`; a good
  answer has `outputs`. `GET /v2/models/NAME` is the model's metadata (its inputs' names and shapes).
- `mlflow models serve`'s scoring protocol, for comparisons: `POST /invocations` with a split DataFrame; a
  good answer has `predictions`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_ROWS = 10_000  # rows in one request; more is a 413-worthy mistake, not a batch
MAX_BODY_BYTES = 8 * 1024 * 1024
# Values one V2 input may declare (its shape's product), and so the most any one dimension may be.
MAX_TENSOR_VALUES = MAX_ROWS * 1000

# A model's inference URL, whole: what a user may give instead of a deployed name.
V1_PREDICT_URL = re.compile(r"^(?P<base>https?://[^/]+)/v1/models/(?P<model>[^/:]+):predict$")
V2_INFER_URL = re.compile(r"^(?P<base>https?://[^/]+)/v2/models/(?P<model>[^/]+)/infer$")
INVOCATIONS_URL = re.compile(r"^(?P<base>https?://[^/]+)/invocations$")
INVOCATIONS_PATH = "/invocations"

Rows = Sequence[Sequence[float]]

# The bearer token model servers and routers require (`serving.auth: token`, the default). A server reads it from
# its environment at start: set, every request but the health checks must carry `Authorization: Bearer TOKEN`;
# unset, the server answers anyone (`serving.auth: none`). `sandbox env` exports it under the same name.
SERVING_TOKEN_ENV = "ML_SANDBOX_SERVING_TOKEN"
# Paths a server answers without the token: liveness and readiness, which say nothing but "up" (probes use them).
HEALTH_PATHS = frozenset({"/", "/v2", "/v2/health/live", "/v2/health/ready"})


def bearer_headers(token: str | None) -> dict[str, str]:
    """The request headers that carry ``token``; none without one."""
    return {"Authorization": f"Bearer {token}"} if token else {}


class PayloadError(ValueError):
    """The request body does not fit the model; the message is shown to the client."""


def v1_predict_path(model: str) -> str:
    return f"/v1/models/{model}:predict"


def v2_infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def v2_metadata_path(model: str) -> str:
    return f"/v2/models/{model}"


# --------------------------------------------------------------------------- request bodies
# Plain Python on purpose: the Locust users call these per request.


def v1_body(rows: Rows) -> dict[str, Any]:
    return {"instances": [[float(value) for value in row] for row in rows]}


def v2_body(rows: Rows) -> dict[str, Any]:
    data = [float(value) for row in rows for value in row]
    tensor = {"name": "input-0", "shape": [len(rows), len(rows[0]) if len(rows) else 0], "datatype": "FP64"}
    return {"inputs": [{**tensor, "data": data}]}


def invocations_body(rows: Rows, columns: Sequence[str]) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(columns), "data": rows}}


@dataclass(frozen=True)
class PredictCall:
    """One protocol's prediction request for one model: where to post, the body for some rows, what a good
    answer has (a top-level key of its JSON)."""

    path: str
    body: Callable[[Rows], dict[str, Any]]
    expect: str


PROTOCOLS = ("v1", "v2", "mlflow")


def predict_call(protocol: str, model: str, columns: Sequence[str] = ()) -> PredictCall:
    """The request for ``protocol`` (v1, v2, or mlflow: `mlflow models serve`, whose frame needs ``columns``)."""
    if protocol == "v1":
        return PredictCall(v1_predict_path(model), v1_body, "predictions")
    if protocol == "v2":
        return PredictCall(v2_infer_path(model), v2_body, "outputs")
    if protocol == "mlflow":
        return PredictCall(INVOCATIONS_PATH, lambda rows: invocations_body(rows, columns), "predictions")
    raise ValueError(f"unknown protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")
