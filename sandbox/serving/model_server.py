"""A KServe `ModelServer` hosting an MLflow model from the sandbox's registry.

    python -m sandbox.serving.model_server --name NAME --model-uri models:/m/1 --port P
        [--batch-size N --batch-wait-ms M]

It is the local equivalent of KServe's MLflow runtime: the same endpoints (V1
`/v1/models/NAME:predict`, V2 `/v2/models/NAME/infer`, readiness, `/metrics`),
a `kserve.Model` that loads the model through MLflow (registry + S3), strict
input validation (a bad request is a 4xx, never a 5xx) and optional adaptive
micro-batching. MLflow credentials come from the environment (`sandbox env`).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, NamedTuple

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

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


class _Parsed(NamedTuple):
    protocol: str  # "v1" | "v2"
    rows: np.ndarray
    request_id: str | None


class MLflowModel(kserve.Model):
    def __init__(self, name: str, model_uri: str, *, batch_size: int = 1, batch_wait_ms: float = 0.0):
        super().__init__(name)
        self.model_uri = model_uri
        self.batch_size = batch_size
        self.batch_wait_ms = batch_wait_ms
        self.schema: FeatureSchema | None = None
        self._pyfunc = None
        self._batcher: MicroBatcher | None = None

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
        try:
            if isinstance(payload, InferRequest):
                inputs = [V2Input(i.name, i.shape, i.datatype, i.data) for i in payload.inputs]
                return _Parsed("v2", parse_v2(inputs, self.schema), payload.id)
            if isinstance(payload, bytes | bytearray | str):
                if len(payload) > MAX_BODY_BYTES:
                    raise PayloadError(f"the body is {len(payload)} bytes; at most {MAX_BODY_BYTES}")
                try:
                    payload = json.loads(payload or b"null")
                except (ValueError, UnicodeDecodeError):
                    raise PayloadError('the body is not JSON; send {"instances": [[...], ...]}') from None
            return _Parsed("v1", parse_v1(payload, self.schema), request_id)
        except PayloadError as exc:
            raise InvalidInput(str(exc)) from None

    async def predict(self, payload: _Parsed, headers: dict[str, str] | None = None) -> tuple[_Parsed, np.ndarray]:
        if self._batcher is not None:
            predictions = await self._batcher.submit(payload.rows)
        else:
            predictions = self._predict_rows(payload.rows)
        return payload, predictions

    async def postprocess(self, result: tuple[_Parsed, np.ndarray], headers: dict[str, str] | None = None):
        parsed, predictions = result
        values = np.asarray(predictions)
        if parsed.protocol == "v1":
            return {"predictions": values.tolist()}
        output = InferOutput(name="predict", shape=list(values.shape), datatype=v2_datatype(values))
        output.set_data_from_numpy(values.astype(np.float64) if output.datatype == "FP64" else values)
        return InferResponse(response_id=parsed.request_id or "", model_name=self.name, infer_outputs=[output])


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
    args = parser.parse_args(argv)

    model = MLflowModel(args.name, args.model_uri, batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms)
    model.load()
    _bind_loopback()
    # A short grace period: `sandbox down` and redeploys should not wait 30 s for idle connections.
    server = kserve.ModelServer(
        http_port=args.port, enable_grpc=False, workers=1, enable_latency_logging=False, grace_period=3
    )
    # Per-request log lines (access log, timing traces) cost more than a batched predict under load.
    for noisy in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
