"""A model server for any MLflow model, speaking KServe's V1, V2 REST and V2 gRPC protocols.

    python -m sandbox.serving.model_server --name NAME --model-uri models:/m/1 --port P
        [--host 127.0.0.1] [--grpc-port G] [--batch-size N --batch-wait-ms M]
        [--allow-nan] [--no-inference-log]

The local equivalent of KServe's MLflow runtime. The model is a `kserve.Model`
that loads anything `mlflow.pyfunc` loads (registry + S3) and converts every
request to exactly what its signature declares (sandbox.serving.model_io).

- REST (V1 `/v1/models/NAME:predict`, V2 `/v2/models/NAME/infer` with the
  binary tensor extension, metadata, health, `/metrics`) is a lean Starlette
  app of this module: KServe's FastAPI app validates every body with pydantic
  first, which costs more than a batched predict.
- gRPC (V2) is KServe's own servicer and data plane around the same model.
- Bad input is a 400 naming the field, row and column; a body over 8 MiB is a
  413 however it is sent; only a failure inside the model's own `predict` is a
  500, with the model's error in the answer.
- Adaptive micro-batching stacks concurrent requests into one `predict`.

Every answered row of a numeric model is logged (features, prediction, model
name and version, the A/B variant the router chose, the request id) to the
stack's inference log when `ML_SANDBOX_MONITORING_DB_URL` is set, off the
request path. MLflow credentials come from the environment (`sandbox env`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
import warnings
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.net import LOOPBACK
from sandbox.serving.asgi import BodyLimit, error, json_response, parse_json
from sandbox.serving.batching import MicroBatcher
from sandbox.serving.inference_log import InferenceLogWriter, LoggedModel
from sandbox.serving.model_io import (
    ModelInput,
    ModelIO,
    Output,
    model_outputs,
    output_rows,
    outputs_metadata_from,
    slice_outputs,
    v1_predictions,
    v2_outputs_json,
)
from sandbox.serving.payloads import PayloadError
from sandbox.serving.specs import registry_version

logger = logging.getLogger("sandbox.model_server")

# Set by the A/B router on the requests it forwards (sandbox.serving.router).
VARIANT_HEADER = "x-model-variant"
REQUEST_ID_HEADER = "x-request-id"
BINARY_HEADER = "inference-header-content-length"
SERVER_NAME = "ml-sandbox-model-server"


class ModelFailure(Exception):
    """The input passed validation and the model's own predict raised."""

    def __init__(self, exc: BaseException):
        super().__init__(f"the model failed on this input: {type(exc).__name__}: {exc}")


class MLflowModel(kserve.Model):
    def __init__(
        self,
        name: str,
        model_uri: str,
        *,
        batch_size: int = 1,
        batch_wait_ms: float = 0.0,
        allow_nan: bool = False,
    ):
        super().__init__(name)
        self.model_uri = model_uri
        self.batch_size = batch_size
        self.batch_wait_ms = batch_wait_ms
        self.allow_nan = allow_nan
        self.io: ModelIO | None = None
        self.model_version = ""
        self._pyfunc = None
        self._batcher: MicroBatcher | None = None
        self.inference_log: InferenceLogWriter | None = None
        self._logs_features = True

    # ---------------------------------------------------------------- loading

    def load(self) -> bool:
        import mlflow

        self._pyfunc = mlflow.pyfunc.load_model(self.model_uri)
        self.io = ModelIO.from_signature(self._pyfunc.metadata.signature, allow_nan=self.allow_nan)
        self._probe()
        self._batcher = MicroBatcher(
            self._run_batch, max_batch_size=max(1, self.batch_size), max_wait=self.batch_wait_ms / 1000
        )
        self.ready = True
        return self.ready

    def _probe(self) -> None:
        """One prediction on a neutral row: warms the model, describes its outputs, and learns whether
        float64 inputs are held only within float32's range (tree models cast to float32 and fail beyond)."""
        sample = _neutral_input(self.io)
        if sample is None:
            return
        try:
            outputs = self._predict(sample)
        except ModelFailure as exc:
            logger.info("no warm-up prediction on a neutral row (%s); outputs described from the signature", exc)
            return
        if not self.io.outputs:
            self.io.outputs = outputs_metadata_from(outputs)
        beyond_float32 = _neutral_input(self.io, float64_value=1e39)
        if beyond_float32 is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the overflow this probe looks for
                    self._predict(beyond_float32)
            except ModelFailure:
                self.io.float_limit = float(np.finfo(np.float32).max)
                logger.info("the model holds float64 inputs only within float32's range; larger values are a 400")

    def _predict(self, item: ModelInput) -> list[Output]:
        try:
            return model_outputs(self._pyfunc.predict(self.io.model_input(item)))
        except Exception as exc:  # whatever the model raises is its own failure
            raise ModelFailure(exc) from exc

    def _run_batch(self, items: list[ModelInput]) -> list[list[Output] | BaseException]:
        """One predict for the whole batch when it stacks; request by request otherwise, or when the batch
        fails (so one request the model cannot take does not fail the others)."""
        if len(items) > 1:
            combined = self.io.combine(items)
            if combined is not None:
                try:
                    outputs = self._predict(combined)
                except ModelFailure:
                    outputs = None
                if outputs is not None and output_rows(outputs) == combined.rows:
                    results, offset = [], 0
                    for item in items:
                        results.append(slice_outputs(outputs, offset, offset + item.rows))
                        offset += item.rows
                    return results
        results: list[list[Output] | BaseException] = []
        for item in items:
            try:
                results.append(self._predict(item))
            except ModelFailure as exc:
                results.append(exc)
        return results

    async def infer(self, item: ModelInput, *, request_id: str | None, variant: str | None) -> list[Output]:
        outputs = await self._batcher.submit(item, item.rows)
        if self.inference_log is not None and self._logs_features:
            features = self.io.features(item)
            if features is None:
                self._logs_features = False
                logger.warning("inference log: this model's inputs are not numeric; its rows are not logged")
            else:
                predictions = v1_predictions(outputs) if len(outputs) > 1 else outputs[0].array
                self.inference_log.log(features, predictions, request_id=request_id, variant=variant)
        return outputs

    # ---------------------------------------------------------------- KServe hooks (gRPC)

    def get_input_types(self) -> list[dict]:
        return self.io.metadata_inputs() if self.io else []

    def get_output_types(self) -> list[dict]:
        return list(self.io.outputs) if self.io else []

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this model server takes V2 requests over gRPC")
        try:
            return self.io.from_v2([_v2_tensor(i) for i in payload.inputs]), payload.id
        except PayloadError as exc:
            raise InvalidInput(str(exc)) from None

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        item, request_id = payload
        headers = headers or {}
        outputs = await self.infer(item, request_id=request_id, variant=headers.get(VARIANT_HEADER))
        return outputs, request_id

    async def postprocess(self, result: Any, headers: dict[str, str] | None = None) -> InferResponse:
        outputs, request_id = result
        return _infer_response(self, outputs, request_id, binary=False)


def _v2_tensor(infer_input) -> tuple[str, list[int], str, Any]:
    data = infer_input.data
    if getattr(infer_input, "_raw_data", None) is not None or isinstance(data, np.ndarray):
        try:
            data = infer_input.as_numpy()
        except Exception as exc:  # noqa: BLE001 - raw bytes that do not match their datatype and shape
            raise PayloadError(
                f"input {infer_input.name!r}: its raw data does not decode as {infer_input.datatype} "
                f"{list(infer_input.shape)} ({type(exc).__name__}: {exc})"
            ) from None
    elif infer_input.datatype == "BYTES" and isinstance(data, list):
        data = [value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value for value in data]
    return infer_input.name, list(infer_input.shape), infer_input.datatype, data


def _infer_response(model: MLflowModel, outputs: list[Output], request_id: str | None, *, binary: bool):
    infer_outputs = []
    for output in outputs:
        array = output.array
        if output.datatype == "BYTES":
            array = np.array([_bytes_value(v) for v in array.reshape(-1).tolist()], dtype=object).reshape(array.shape)
        infer_output = InferOutput(name=output.name, shape=list(array.shape), datatype=output.datatype)
        infer_output.set_data_from_numpy(array, binary_data=binary)
        infer_outputs.append(infer_output)
    return InferResponse(
        response_id=request_id or "",
        model_name=model.name,
        model_version=model.model_version or None,
        infer_outputs=infer_outputs,
        use_binary_outputs=binary,
    )


def _bytes_value(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def _neutral_input(io: ModelIO, *, float64_value: float | None = None) -> ModelInput | None:
    """One row of zeros, falses, empty strings and epochs, in the declared types (None if unknown)."""
    if io.kind == "columns":
        neutral = {
            "double": np.float64(0.0),
            "float": np.float32(0.0),
            "long": np.int64(0),
            "integer": np.int32(0),
            "boolean": False,
            "string": "",
            "binary": b"",
            "datetime": np.datetime64(0, "ns"),
        }
        columns = {}
        for spec in io.inputs:
            if spec.type == "json":
                return None
            value = neutral[spec.type]
            if float64_value is not None and spec.type == "double":
                value = float64_value
            columns[spec.name] = np.array([value], dtype=spec.dtype)
        if float64_value is not None and not any(spec.type == "double" for spec in io.inputs):
            return None
        return ModelInput(None, 1, columns)
    if io.kind == "tensors":
        arrays = {}
        for spec in io.inputs:
            if spec.dtype.kind not in "biuf":
                return None
            shape = [1 if dim == -1 else dim for dim in spec.shape]
            fill = float64_value if float64_value is not None and spec.dtype == np.float64 else 0
            arrays[spec.name] = np.full(shape, fill, dtype=spec.dtype)
        if float64_value is not None and not any(spec.dtype == np.float64 for spec in io.inputs):
            return None
        if len(arrays) == 1:
            return ModelInput(next(iter(arrays.values())), 1)
        return ModelInput(arrays, 1)
    return None


# --------------------------------------------------------------------------- REST


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


def create_app(model: MLflowModel) -> Any:
    """The REST side of the server: KServe's V1 and V2 protocols for one model."""
    access = AccessLog()
    requests_total, latency = _REQUESTS, _LATENCY

    def unknown(name: str) -> Response:
        return error(404, f"model {name!r} is not served here; this server serves {model.name!r}")

    async def run_inference(request: Request, protocol: str, decode, encode) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID_HEADER)
        try:
            item, request_id, options = decode(await request.body(), request, request_id)
            outputs = await model.infer(item, request_id=request_id, variant=request.headers.get(VARIANT_HEADER))
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
        requests_total.labels(protocol, str(response.status_code)).inc()
        latency.labels(protocol).observe(elapsed)
        access.record(request.method, request.url.path, response.status_code, elapsed, message)
        return response

    # ---------------------------------------------------------------- V1

    def decode_v1(body: bytes, request: Request, request_id: str | None):
        return model.io.from_v1(parse_json(body)), request_id, None

    def encode_v1(outputs: list[Output], request_id: str | None, options) -> Response:
        return json_response({"predictions": v1_predictions(outputs)})

    async def v1_predict(request: Request) -> Response:
        name, _, verb = request.path_params["target"].partition(":")
        if name != model.name:
            return unknown(name)
        if verb != "predict":
            return error(404, f"unsupported verb {verb!r}; V1 serves :predict")
        return await run_inference(request, "v1", decode_v1, encode_v1)

    async def v1_model(request: Request) -> Response:
        name = request.path_params["target"]
        if name != model.name:
            return unknown(name)
        return json_response({"name": model.name, "ready": model.ready})

    async def v1_models(request: Request) -> Response:
        return json_response({"models": [model.name]})

    # ---------------------------------------------------------------- V2

    def decode_v2(body: bytes, request: Request, request_id: str | None):
        json_length = request.headers.get(BINARY_HEADER)
        if json_length is not None:
            return _decode_v2_binary(model, body, json_length, request_id)
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
            tensors.append((tensor.get("name"), tensor.get("shape"), tensor.get("datatype"), tensor["data"]))
        body_id = payload.get("id")
        if body_id is not None and not isinstance(body_id, str):
            raise PayloadError('"id" must be a string')
        options = _v2_options(payload)
        return model.io.from_v2(tensors), body_id or request_id, options

    def encode_v2(outputs: list[Output], request_id: str | None, options) -> Response:
        requested, binary = options or (None, False)
        if requested is not None:
            by_name = {output.name: output for output in outputs}
            unknown_outputs = [name for name in requested if name not in by_name]
            if unknown_outputs:
                raise PayloadError(
                    f"unknown output(s) {', '.join(unknown_outputs)}; the model gives {', '.join(by_name)}"
                )
            outputs = [by_name[name] for name in requested]
        if binary:
            body, json_length = _infer_response(model, outputs, request_id, binary=True).to_rest()
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

    async def v2_infer(request: Request) -> Response:
        name = request.path_params["model"]
        if name != model.name:
            return unknown(name)
        return await run_inference(request, "v2", decode_v2, encode_v2)

    async def v2_metadata(request: Request) -> Response:
        name = request.path_params["model"]
        if name != model.name:
            return unknown(name)
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

    async def v2_model_ready(request: Request) -> Response:
        name = request.path_params["model"]
        if name != model.name:
            return unknown(name)
        return json_response({"name": model.name, "ready": model.ready}, 200 if model.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return json_response(
            {"name": SERVER_NAME, "version": version("ml-platform-sandbox"), "extensions": ["binary_tensor_data"]}
        )

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        return json_response({"ready": model.ready}, 200 if model.ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.get_running_loop().create_task(access.run())
        logger.info("serving %s (%s) on REST", model.name, model.model_uri)
        yield
        task.cancel()
        access.flush()

    routes = [
        Route("/v1/models", v1_models, methods=["GET"]),
        Route("/v1/models/{target}", v1_predict, methods=["POST"]),
        Route("/v1/models/{target}", v1_model, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{model}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{model}/ready", v2_model_ready, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/ready", v2_model_ready, methods=["GET"]),
        Route("/v2/models/{model}", v2_metadata, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", v2_metadata, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return BodyLimit(Starlette(routes=routes, lifespan=lifespan))


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


def _decode_v2_binary(model: MLflowModel, body: bytes, json_length: str, request_id: str | None):
    """The binary tensor data extension: a JSON header, then each input's raw bytes."""
    if not json_length.isdigit() or int(json_length) > len(body):
        raise PayloadError(
            f"{BINARY_HEADER} is {json_length[:20]!r}; it must be the JSON header's length, at most the body's"
        )
    header = parse_json(body[: int(json_length)])
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise PayloadError('the binary request\'s JSON header must be an object with "inputs"')
    try:
        request = InferRequest.from_bytes(body, int(json_length), model.name)
        tensors = [_v2_tensor(infer_input) for infer_input in request.inputs]
    except InvalidInput as exc:
        raise PayloadError(str(exc.reason)) from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the client's bytes not matching their header
        raise PayloadError(
            f"the binary tensor data does not match its JSON header: {type(exc).__name__}: {exc}"
        ) from None
    return model.io.from_v2(tensors), request.id or request_id, _v2_options(header)


# --------------------------------------------------------------------------- gRPC


async def start_grpc(model: MLflowModel, host: str, port: int):
    """KServe's V2 gRPC servicer and data plane around the model, on host:port."""
    import grpc
    from grpc import aio
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
    from kserve.protocol.grpc.servicer import InferenceServicer
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    class StatusInterceptor(ExceptionToStatusInterceptor):
        """gRPC status codes as KServe maps them, with one log line per refused or failed call."""

        async def handle_exception(self, ex, request_or_iterator, context, method_name):
            if isinstance(ex, InvalidInput):
                logger.info("gRPC %s INVALID_ARGUMENT %s", method_name, ex.reason)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, ex.reason)
            if isinstance(ex, ModelFailure):
                logger.error("gRPC %s INTERNAL %s", method_name, ex)
                await context.abort(grpc.StatusCode.INTERNAL, str(ex))
            if isinstance(ex, ValueError | TypeError | IndexError | KeyError | OverflowError):
                # Raised while KServe decodes the message, before the model sees it: the client's bytes.
                reason = f"the request does not decode: {type(ex).__name__}: {ex}"
                logger.info("gRPC %s INVALID_ARGUMENT %s", method_name, reason)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
            await super().handle_exception(ex, request_or_iterator, context, method_name)

    repository = ModelRepository()
    repository.update(model)
    servicer = InferenceServicer(DataPlane(model_registry=repository), ModelRepositoryExtension(repository))
    server = aio.server(interceptors=(StatusInterceptor(),))
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    logger.info("serving %s on gRPC %s:%d", model.name, host, port)
    return server


# --------------------------------------------------------------------------- process


def resolve_logged_model(deployment: str, model_uri: str) -> LoggedModel:
    """The registry name and version a URI points at now (an alias resolved once, at load)."""
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/"):
        return LoggedModel(deployment, deployment, model_uri)
    client = MlflowClient()
    name, version = registry_version(client, model_uri)
    if version is None:  # a stage or "latest": the newest version
        version = max((v.version for v in client.search_model_versions(f"name = '{name}'")), key=int)
    return LoggedModel(deployment, name, str(version))


def _configure_logging() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a progress bar per load fills the log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # A library warning is worth reading once, not once per request.
    warnings.simplefilter("once")
    logging.captureWarnings(True)
    for noisy in ("uvicorn.access", "kserve", "kserve.trace", "mlflow", "urllib3", "botocore", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _serve(model: MLflowModel, host: str, port: int, grpc_port: int | None) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        """A signal ends serving and nothing more: uvicorn re-raises the signal it caught once serving ends,
        which would kill the process before the inference log's shipper has caught up."""

        @contextlib.contextmanager
        def capture_signals(self):
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    config = uvicorn.Config(
        create_app(model),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,  # `sandbox down` and redeploys should not wait for idle connections
        lifespan="on",
    )
    grpc_server = await start_grpc(model, host, grpc_port) if grpc_port else None
    try:
        await Server(config).serve()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--host", default=os.environ.get("ML_SANDBOX_BIND_HOST", LOOPBACK))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=None, help="V2 gRPC port (none: gRPC off)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--allow-nan", action="store_true", help="pass NaN and infinities to the model")
    parser.add_argument("--no-inference-log", dest="inference_log", action="store_false")
    args = parser.parse_args(argv)
    _configure_logging()

    model = MLflowModel(
        args.name,
        args.model_uri,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        allow_nan=args.allow_nan,
    )
    model.load()
    # The model and the libraries are hundreds of MB of long-lived objects: frozen, a full garbage
    # collection no longer walks them, which otherwise stalls every request in flight (the p99).
    gc.collect()
    gc.freeze()
    dsn = os.environ.get("ML_SANDBOX_MONITORING_DB_URL")
    if args.inference_log and dsn:
        logged = resolve_logged_model(args.name, args.model_uri)
        model.model_version = logged.model_version if logged.model_version.isdigit() else ""
        # The inference journal (every answered row, on disk before the answer) lives next to the server's log.
        model.inference_log = InferenceLogWriter(dsn, logged, spool_dir=Path.cwd()).start()
    elif args.inference_log:
        logger.warning("no ML_SANDBOX_MONITORING_DB_URL: inferences are not logged")
    run = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    try:
        run(_serve(model, args.host, args.port, args.grpc_port))
    finally:
        if model.inference_log is not None:
            model.inference_log.close()  # after the last request: ships what it can; the rest stays in the journal


if __name__ == "__main__":
    main()
