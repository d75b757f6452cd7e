"""Inference payload limits, the payload error, and the bodies the load generator sends.

The model server's parsing and validation live in sandbox.serving.model_io; a
bad payload raises `PayloadError` with a message that says what is wrong and
where, which the server turns into a 400.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_ROWS = 10_000  # rows in one request; more is a 413-worthy mistake, not a batch
MAX_BODY_BYTES = 8 * 1024 * 1024


class PayloadError(ValueError):
    """The request body does not fit the model; the message is shown to the client."""


# --------------------------------------------------------------------------- builders (load tests)


# Plain Python on purpose: the load generator calls these per request.
def v1_body(rows: Sequence[Sequence[float]]) -> dict[str, Any]:
    return {"instances": [[float(value) for value in row] for row in rows]}


def v2_body(rows: Sequence[Sequence[float]]) -> dict[str, Any]:
    data = [float(value) for row in rows for value in row]
    tensor = {"name": "input-0", "shape": [len(rows), len(rows[0]) if len(rows) else 0], "datatype": "FP64"}
    return {"inputs": [{**tensor, "data": data}]}
