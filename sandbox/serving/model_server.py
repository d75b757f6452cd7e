"""A KServe `ModelServer` hosting an MLflow model from the sandbox's registry.

    python -m sandbox.serving.model_server --name NAME --model-uri models:/m/1 --port P
        [--batch-size N --batch-wait-ms M] [--no-inference-log]

It is the local equivalent of KServe's MLflow runtime: the same endpoints (V1
`/v1/models/NAME:predict`, V2 `/v2/models/NAME/infer`, readiness, `/metrics`),
a `kserve.Model` that loads the model through MLflow (registry + S3), strict
input validation (a bad request is a 4xx, never a 5xx) and optional adaptive
micro-batching. MLflow credentials come from the environment (`sandbox env`).

Every answered row is logged (features, prediction, model name and version,
the A/B variant the router chose, the request id) to the stack's inference log
when `ML_SANDBOX_MONITORING_DB_URL` is set: asynchronously, off the request path.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from sandbox.monitoring.inference_log import InferenceLogWriter, LoggedModel
from sandbox.serving.batching import MicroBatcher
from sandbox.serving.payloads import (
    MAX_BODY_BYTES,
    FeatureSchema,
    PayloadError,
    V2Input,
    parse_v1,
    parse_v2,
    v2_datatype,
)
from sandbox.state import LOOPBACK

logger = logging.getLogger("sandbox.model_server")


# Set by the A/B router on the requests it forwards (sandbox.serving.router).
VARIANT_HEADER = "x-model-variant"


class _Parsed(NamedTuple):
    protocol: str  # "v1" | "v2"
    rows: np.ndarray
    request_id: str | None
    variant: str | None = None


class MLflowModel(kserve.Model):
    def __init__(self, name: str, model_uri: str, *, batch_size: int = 1, batch_wait_ms: float = 0.0):
        super().__init__(name)
        self.model_uri = model_uri
        self.batch_size = batch_size
        self.batch_wait_ms = batch_wait_ms
        self.schema: FeatureSchema | None = None
        self._pyfunc = None
        self._batcher: MicroBatcher | None = None
        self.inference_log: InferenceLogWriter | None = None

    def load(self) -> bool:
        import mlflow

        self._pyfunc = mlflow.pyfunc.load_model(self.model_uri)
        self.schema = FeatureSchema.from_mlflow_signature(self._pyfunc.metadata.signature)
        # One prediction at load: warms the model up and tells the output datatype for metadata.
        self._output_datatype = v2_datatype(self._predict_rows(np.zeros((1, self.schema.width))))
        if self.batch_size > 1:
            self._batcher = MicroBatcher(
                self._predict_rows, max_batch_size=self.batch_size, max_wait=self.batch_wait_ms / 1000
            )
        self.ready = True
        return self.ready

    def _predict_rows(self, rows: np.ndarray) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame(rows, columns=list(self.schema.names))
        for name, type_name in zip(self.schema.names, self.schema.types, strict=True):
            if type_name in ("long", "integer"):
                frame[name] = frame[name].astype("int64" if type_name == "long" else "int32")
            elif type_name == "float":
                frame[name] = frame[name].astype("float32")
            elif type_name == "boolean":
                frame[name] = frame[name].astype(bool)
        predictions = np.asarray(self._pyfunc.predict(frame))
        if predictions.ndim == 2 and predictions.shape[1] == 1:
            predictions = predictions[:, 0]
        return predictions

    # ---------------------------------------------------------------- KServe hooks

    def get_input_types(self) -> list[dict]:
        return self.schema.v2_inputs_metadata() if self.schema else []

    def get_output_types(self) -> list[dict]:
        return [{"name": "predict", "datatype": getattr(self, "_output_datatype", "FP64"), "shape": [-1]}]

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> _Parsed:
        request_id = (headers or {}).get("x-request-id")
        variant = (headers or {}).get(VARIANT_HEADER)
        try:
            if isinstance(payload, InferRequest):
                inputs = [V2Input(i.name, i.shape, i.datatype, i.data) for i in payload.inputs]
                return _Parsed("v2", parse_v2(inputs, self.schema), payload.id or request_id, variant)
            if isinstance(payload, bytes | bytearray | str):
                if len(payload) > MAX_BODY_BYTES:
                    raise PayloadError(f"the body is {len(payload)} bytes; at most {MAX_BODY_BYTES}")
                try:
                    payload = json.loads(payload or b"null")
                except (ValueError, UnicodeDecodeError):
                    raise PayloadError('the body is not JSON; send {"instances": [[...], ...]}') from None
            return _Parsed("v1", parse_v1(payload, self.schema), request_id, variant)
        except PayloadError as exc:
            raise InvalidInput(str(exc)) from None

    async def predict(self, payload: _Parsed, headers: dict[str, str] | None = None) -> tuple[_Parsed, np.ndarray]:
        if self._batcher is not None:
            predictions = await self._batcher.submit(payload.rows)
        else:
            predictions = self._predict_rows(payload.rows)
        if self.inference_log is not None:
            self.inference_log.log(payload.rows, predictions, request_id=payload.request_id, variant=payload.variant)
        return payload, predictions

    async def postprocess(self, result: tuple[_Parsed, np.ndarray], headers: dict[str, str] | None = None):
        parsed, predictions = result
        values = np.asarray(predictions)
        if parsed.protocol == "v1":
            return {"predictions": values.tolist()}
        output = InferOutput(name="predict", shape=list(values.shape), datatype=v2_datatype(values))
        output.set_data_from_numpy(values.astype(np.float64) if output.datatype == "FP64" else values)
        return InferResponse(response_id=parsed.request_id or "", model_name=self.name, infer_outputs=[output])


def resolve_logged_model(deployment: str, model_uri: str) -> LoggedModel:
    """The registry name and version a URI points at now (an alias resolved once, at load)."""
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/"):
        return LoggedModel(deployment, deployment, model_uri)
    ref = model_uri.removeprefix("models:/")
    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return LoggedModel(deployment, name, str(client.get_model_version_by_alias(name, alias).version))
    name, version = ref.split("/", 1)
    if not version.isdigit():  # a stage or "latest": the newest version
        version = max((v.version for v in client.search_model_versions(f"name = '{name}'")), key=int)
    return LoggedModel(deployment, name, str(version))


def _bind_loopback() -> None:
    """KServe's REST server listens on 0.0.0.0; a sandbox serves on loopback only."""
    import kserve.model_server as ks_model_server
    from kserve.protocol.rest.server import RESTServer

    class LoopbackRESTServer(RESTServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.config.host = LOOPBACK

        def create_application(self):
            super().create_application()
            _add_body_limit()

    ks_model_server.RESTServer = LoopbackRESTServer


def _add_body_limit() -> None:
    """Refuse oversized bodies with 413 before they are read into memory."""
    from kserve.model_server import app
    from starlette.responses import JSONResponse

    @app.middleware("http")
    async def limit_body(request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse(
                {"error": f"request body over {MAX_BODY_BYTES} bytes; send fewer rows per request"}, status_code=413
            )
        return await call_next(request)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--no-inference-log", dest="inference_log", action="store_false")
    args = parser.parse_args(argv)

    model = MLflowModel(args.name, args.model_uri, batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms)
    model.load()
    dsn = os.environ.get("ML_SANDBOX_MONITORING_DB_URL")
    if args.inference_log and dsn:
        # Spooled rows (written while the database was away at shutdown) live next to the server's log.
        model.inference_log = InferenceLogWriter(
            dsn, resolve_logged_model(args.name, args.model_uri), spool_dir=Path.cwd()
        ).start()
    elif args.inference_log:
        logger.warning("no ML_SANDBOX_MONITORING_DB_URL: inferences are not logged")
    _bind_loopback()
    # A short grace period: `sandbox down` and redeploys should not wait 30 s for idle connections.
    server = kserve.ModelServer(
        http_port=args.port, enable_grpc=False, workers=1, enable_latency_logging=False, grace_period=3
    )
    # Per-request log lines (access log, timing traces) cost more than a batched predict under load.
    for noisy in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        server.start([model])
    finally:
        if model.inference_log is not None:
            model.inference_log.close()  # after the last request: drains the queue, or spools it


if __name__ == "__main__":
    main()
