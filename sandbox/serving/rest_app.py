"""The model server's REST side: KServe's V1 (`/v1/models/NAME:predict`) and V2 (`/v2/models/NAME/infer`, with
the binary tensor extension) protocols, V2 metadata and health, and `/metrics`, for one model.

A lean Starlette app: KServe's FastAPI app validates every body with pydantic first, which costs more than a
batched predict. Bad input is a 400 naming the field, row and column; a body over 8 MiB is a 413 however it is
sent; only a failure inside the model's own `predict` is a 500, with the model's error in the answer.

`ModelApp(model)` has one method per route, each taking the request and returning the answer, so a handler can be
called alone; `ModelApp(model).asgi()` is the app that serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from importlib.metadata import version
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.serving.asgi import (
    REQUEST_ID_HEADER,
    VARIANT_HEADER,
    BodyLimit,
    error,
    guarded,
    json_response,
    parse_json,
)
from sandbox.serving.kserve_v2 import infer_response, tensor_from_infer_input
from sandbox.serving.mlflow_model import MLflowModel, ModelFailure
from sandbox.serving.model_io.outputs import Output, v1_predictions, v2_outputs_json
from sandbox.serving.model_io.schema import ModelInput, V2Tensor
from sandbox.serving.model_io.values import safe, show
from sandbox.wire import PayloadError

logger = logging.getLogger("sandbox.model_server")

BINARY_HEADER = "inference-header-content-length"
SERVER_NAME = "ml-sandbox-model-server"

# What a route's decoder gives: the model's input, the request id, and the answer's options (V2: the outputs asked
# for and whether they are binary).
Decoded = tuple[ModelInput, str | None, Any]


class AccessLog:
    """At most one line per request (refused and failed ones), and a summary of the traffic every interval."""

    def __init__(self, interval: float = 10.0):
        self.interval = interval
        self.codes: Counter[int] = Counter()
        self.latencies: list[float] = []

    def record(self, method: str, path: str, status: int, seconds: float, message: str | None = None) -> None:
        self.codes[status] += 1
        if len(self.latencies) < 100_000:
            self.latencies.append(seconds)
        if status >= 400:
            log = logger.error if status >= 500 else logger.info
            log("%s %s %d %.1fms %s", method, path, status, seconds * 1000, message or "")

    def flush(self) -> None:
        if not self.codes:
            return
        total = sum(self.codes.values())
        codes = ", ".join(f"{code}: {count}" for code, count in sorted(self.codes.items()))
        p50 = float(np.percentile(self.latencies, 50)) * 1000 if self.latencies else 0.0
        p99 = float(np.percentile(self.latencies, 99)) * 1000 if self.latencies else 0.0
        logger.info(
            "%d request(s) in the last %.0fs (%s), p50 %.1fms, p99 %.1fms", total, self.interval, codes, p50, p99
        )
        self.codes.clear()
        self.latencies = []

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.flush()


_REQUESTS = PromCounter(
    "model_server_requests_total", "Inference requests, by protocol and status code", ["protocol", "code"]
)
_LATENCY = Histogram(
    "model_server_request_duration_seconds",
    "Inference latency inside the server, by protocol",
    ["protocol"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class ModelApp:
    """The REST side of the server: KServe's V1 and V2 protocols for one model."""

    def __init__(self, model: MLflowModel, access: AccessLog | None = None):
        self.model = model
        self.access = access or AccessLog()

    def asgi(self, *, token: str | None = None, local_port: int | None = None):
        """The ASGI app: every route below, behind the body limit; with ``token``, every path but the health
        checks needs `Authorization: Bearer TOKEN`; with ``local_port`` (bound to loopback), a Host header of
        127.0.0.1, localhost or [::1] (`asgi.ServingGuard`)."""
        routes = [
            Route("/v1/models", self.v1_models, methods=["GET"]),
            Route("/v1/models/{target}", self.v1_predict, methods=["POST"]),
            Route("/v1/models/{target}", self.v1_model, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2/models/{model}/infer", self.v2_infer, methods=["POST"]),
            Route("/v2/models/{model}/versions/{version}/infer", self.v2_infer, methods=["POST"]),
            Route("/v2/models/{model}/ready", self.v2_model_ready, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}/ready", self.v2_model_ready, methods=["GET"]),
            Route("/v2/models/{model}", self.v2_metadata, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}", self.v2_metadata, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
        return guarded(BodyLimit(Starlette(routes=routes, lifespan=self.lifespan)), token=token, local_port=local_port)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        task = asyncio.get_running_loop().create_task(self.access.run())
        logger.info("serving %s (%s) on REST", self.model.name, self.model.model_uri)
        yield
        task.cancel()
        self.access.flush()

    # ---------------------------------------------------------------- V1

    async def v1_predict(self, request: Request) -> Response:
        name, _, verb = request.path_params["target"].partition(":")
        if name != self.model.name:
            return self._unknown(name)
        if verb != "predict":
            return error(404, f"unsupported verb {verb!r}; V1 serves :predict")
        return await self._run_inference(request, "v1", self._decode_v1, self._encode_v1)

    async def v1_model(self, request: Request) -> Response:
        name = request.path_params["target"]
        if name != self.model.name:
            return self._unknown(name)
        return json_response({"name": self.model.name, "ready": self.model.ready})

    async def v1_models(self, request: Request) -> Response:
        return json_response({"models": [self.model.name]})

    # ---------------------------------------------------------------- V2

    async def v2_infer(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name != self.model.name:
            return self._unknown(name)
        return await self._run_inference(request, "v2", self._decode_v2, self._encode_v2)

    async def v2_metadata(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name != self.model.name:
            return self._unknown(name)
        model = self.model
        return json_response(
            {
                "name": model.name,
                "versions": [model.model_version] if model.model_version else [],
                "platform": "mlflow",
                "inputs": model.get_input_types(),
                "outputs": model.get_output_types(),
                "parameters": {"model_uri": model.model_uri, **model.io.describe()},
            }
        )

    async def v2_model_ready(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name != self.model.name:
            return self._unknown(name)
        return json_response({"name": self.model.name, "ready": self.model.ready}, 200 if self.model.ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return json_response(
            {"name": SERVER_NAME, "version": version("ml-platform-sandbox"), "extensions": ["binary_tensor_data"]}
        )

    # ---------------------------------------------------------------- health and metrics

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        return json_response({"ready": self.model.ready}, 200 if self.model.ready else 503)

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # ---------------------------------------------------------------- inference

    def _unknown(self, name: str) -> Response:
        return error(404, f"model {name!r} is not served here; this server serves {self.model.name!r}")

    async def _run_inference(self, request: Request, protocol: str, decode, encode) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID_HEADER)
        try:
            item, request_id, options = decode(await request.body(), request, request_id)
            variant = request.headers.get(VARIANT_HEADER)
            outputs = await self.model.infer(item, request_id=request_id, variant=variant)
            response = encode(outputs, request_id, options)
            message = None
        except PayloadError as exc:
            message = str(exc)
            response = error(400, message)
        except ModelFailure as exc:
            message = str(exc)
            response = error(500, message)
        except Exception as exc:  # a defect of this server: answered as JSON, with its traceback in the log
            logger.exception("unexpected error on %s %s", request.method, request.url.path)
            message = f"internal error: {type(exc).__name__}: {exc}"
            response = error(500, message)
        elapsed = time.perf_counter() - started
        _REQUESTS.labels(protocol, str(response.status_code)).inc()
        _LATENCY.labels(protocol).observe(elapsed)
        self.access.record(request.method, request.url.path, response.status_code, elapsed, message)
        return response

    def _decode_v1(self, body: bytes, request: Request, request_id: str | None) -> Decoded:
        return self.model.io.from_v1(parse_json(body)), request_id, None

    def _encode_v1(self, outputs: list[Output], request_id: str | None, options) -> Response:
        return json_response({"predictions": v1_predictions(outputs)})

    def _decode_v2(self, body: bytes, request: Request, request_id: str | None) -> Decoded:
        json_length = request.headers.get(BINARY_HEADER)
        if json_length is not None:
            return self._decode_v2_binary(body, json_length, request_id)
        payload = parse_json(body)
        if not isinstance(payload, dict):
            raise PayloadError('the body must be a JSON object like {"inputs": [{"name": ..., "data": ...}]}')
        inputs = payload.get("inputs")
        if not isinstance(inputs, list):
            raise PayloadError('"inputs" must be a list of tensors: [{"name", "shape", "datatype", "data"}]')
        tensors = []
        for index, tensor in enumerate(inputs):
            if not isinstance(tensor, dict):
                raise PayloadError(f"inputs[{index}] must be an object with name, shape, datatype and data")
            if "data" not in tensor:
                raise PayloadError(f'inputs[{index}] has no "data"')
            tensors.append(V2Tensor.from_json(tensor))
        body_id = payload.get("id")
        if body_id is not None and not isinstance(body_id, str):
            raise PayloadError('"id" must be a string')
        options = _v2_options(payload)
        return self.model.io.from_v2(tensors), body_id or request_id, options

    def _decode_v2_binary(self, body: bytes, json_length: str, request_id: str | None) -> Decoded:
        """The binary tensor data extension: a JSON header, then each input's raw bytes."""
        if not json_length.isdigit() or int(json_length) > len(body):
            raise PayloadError(
                f"{BINARY_HEADER} is {json_length[:20]!r}; it must be the JSON header's length, at most the body's"
            )
        header = parse_json(body[: int(json_length)])
        if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
            raise PayloadError('the binary request\'s JSON header must be an object with "inputs"')
        _check_binary_sizes(header["inputs"], len(body) - int(json_length))
        try:
            request = InferRequest.from_bytes(body, int(json_length), self.model.name)
            tensors = [tensor_from_infer_input(infer_input) for infer_input in request.inputs]
        except InvalidInput as exc:
            raise PayloadError(str(exc.reason)) from None
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the client's bytes not matching their header
            raise PayloadError(
                f"the binary tensor data does not match its JSON header: {type(exc).__name__}: {exc}"
            ) from None
        return self.model.io.from_v2(tensors), request.id or request_id, _v2_options(header)

    def _encode_v2(self, outputs: list[Output], request_id: str | None, options) -> Response:
        requested, binary = options or (None, False)
        if requested is not None:
            by_name = {output.name: output for output in outputs}
            unknown_outputs = [name for name in requested if name not in by_name]
            if unknown_outputs:
                raise PayloadError(
                    f"unknown output(s) {', '.join(unknown_outputs)}; the model gives {', '.join(by_name)}"
                )
            outputs = [by_name[name] for name in requested]
        model = self.model
        if binary:
            answer = infer_response(model.name, model.model_version, outputs, request_id, binary=True)
            body, json_length = answer.to_rest()
            return Response(
                body,
                media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(json_length)},
            )
        payload = {
            "model_name": model.name,
            "model_version": model.model_version or None,
            "id": request_id or "",
            "outputs": v2_outputs_json(outputs),
        }
        return json_response(payload)


def _v2_options(payload: dict) -> tuple[list[str] | None, bool]:
    """Requested outputs (by name) and whether the answer uses the binary extension."""
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise PayloadError('"parameters" must be an object')
    binary = parameters.get("binary_data_output") is True
    requested = payload.get("outputs")
    if requested is None:
        return None, binary
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise PayloadError('"outputs" must be a list of {"name": ...}')
    for output in requested:
        output_parameters = output.get("parameters") or {}
        if isinstance(output_parameters, dict) and output_parameters.get("binary_data") is True:
            binary = True
    return [output["name"] for output in requested], binary


def _check_binary_sizes(inputs: list, available: int) -> None:
    """The binary extension's sizes against the bytes after the JSON header (KServe's parser trusts them: it
    reads short, ignores `data` beside a size, and leaves trailing bytes unread)."""
    offset, last = 0, None
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise PayloadError(f"inputs[{index}] must be an object with name, shape, datatype and parameters")
        name = safe(tensor.get("name"))
        parameters = tensor.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue  # values as JSON "data", checked with the rest of the input
        if type(size) is not int or size < 0:
            raise PayloadError(f"input '{name}' has binary_data_size {show(size)}; send its data's byte count")
        if "data" in tensor:
            raise PayloadError(f"input '{name}' has both \"data\" and binary_data_size; send its values one way")
        if size > available - offset:
            raise PayloadError(
                f"input '{name}' declares {show(size)} bytes of binary data but {available - offset} are left"
            )
        offset, last = offset + size, name
    if offset != available:
        after = f"after input '{last}'" if last is not None else "but no input declares binary_data_size"
        raise PayloadError(f"{available - offset} bytes of binary data are left over {after}; the sizes must add up")
