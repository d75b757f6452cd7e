"""The served model: any MLflow model as a `kserve.Model`, loaded with `mlflow.pyfunc` (registry and S3), each
request converted to exactly what its signature declares (sandbox.serving.model_io), concurrent requests stacked
into one `predict` by the micro-batcher, and every answered row of a numeric model handed to the inference log.

The KServe hooks (`preprocess`, `predict`, `postprocess`) are what KServe's V2 gRPC data plane calls
(sandbox.serving.grpc_app); the REST app (sandbox.serving.rest_app) calls `infer` itself.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from kserve.model import Model as KServeModel
from kserve.protocol.infer_type import InferRequest, InferResponse

from sandbox.serving.asgi import VARIANT_HEADER
from sandbox.serving.batching import MicroBatcher
from sandbox.serving.inference_log import InferenceLogWriter, LoggedModel, LoggedRequest
from sandbox.serving.kserve_v2 import infer_response, tensor_from_infer_input
from sandbox.serving.model_io.inputs import ModelIO
from sandbox.serving.model_io.outputs import (
    Output,
    model_outputs,
    output_rows,
    outputs_metadata_from,
    slice_outputs,
    v1_predictions,
)
from sandbox.serving.model_io.schema import ModelInput
from sandbox.serving.specs import registry_version
from sandbox.wire import PayloadError

logger = logging.getLogger("sandbox.model_server")


class _Request(NamedTuple):
    """What the micro-batcher queues for one request: its input, and what its log rows are tagged with."""

    item: ModelInput
    request_id: str | None
    variant: str | None


class ModelFailure(Exception):
    """The input passed validation and the model's own predict raised."""

    def __init__(self, exc: BaseException):
        super().__init__(f"the model failed on this input: {type(exc).__name__}: {exc}")


class MLflowModel(KServeModel):
    """One MLflow model, served: `load()` it, then `infer()` (REST) or KServe's hooks (gRPC) answer requests."""

    def __init__(
        self,
        name: str,
        model_uri: str,
        *,
        batch_size: int = 1,
        batch_wait_ms: float = 0.0,
        allow_nan: bool = False,
        model_dir: Path | None = None,
    ):
        super().__init__(name)
        self.model_uri = model_uri
        # Where the model's files are downloaded (emptied first); None: MLflow's own temporary folder, never removed.
        self.model_dir = model_dir
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

        dst_path = None
        if self.model_dir is not None:
            shutil.rmtree(self.model_dir, ignore_errors=True)  # an earlier start's copy, maybe of another version
            self.model_dir.mkdir(mode=0o700, parents=True)
            dst_path = str(self.model_dir)
        # The files stay for the server's life: a flavour may read them after loading (a pyfunc's artifacts).
        self._pyfunc = mlflow.pyfunc.load_model(self.model_uri, dst_path=dst_path)
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

    def _run_batch(self, requests: list[_Request]) -> list[list[Output] | BaseException]:
        """Answers for a batch, logged in one write before any is answered (this runs in the predict thread)."""
        results, stacked = self._predict_batch([request.item for request in requests])
        if self.inference_log is not None and self._logs_features:
            self._log(requests, results, stacked)
        return results

    def _predict_batch(self, items: list[ModelInput]) -> tuple[list[list[Output] | BaseException], ModelInput | None]:
        """One predict for the whole batch when it stacks (and the stacked input, returned too); request by request
        otherwise, or when the batch fails (so one request the model cannot take does not fail the others)."""
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
                    return results, combined
        results: list[list[Output] | BaseException] = []
        for item in items:
            try:
                results.append(self._predict(item))
            except ModelFailure as exc:
                results.append(exc)
        return results, None

    def _log(
        self, requests: list[_Request], results: list[list[Output] | BaseException], stacked: ModelInput | None
    ) -> None:
        """The answered requests' rows to the inference log; if the journal cannot take them (a full disk), each
        of them fails instead of answering a prediction that is not logged. ``stacked``: the batch's requests as
        one input (all answered), whose features are converted once rather than once a request."""
        every_features = self.io.features(stacked) if stacked is not None else None
        logged, answered, offset = [], [], 0
        for index, (request, outputs) in enumerate(zip(requests, results, strict=True)):
            if isinstance(outputs, BaseException):
                continue
            if every_features is not None:
                features = every_features[offset : offset + request.item.rows]
                offset += request.item.rows
            else:
                features = self.io.features(request.item)
            if features is None:
                self._logs_features = False
                logger.warning("inference log: this model's inputs are not numeric; its rows are not logged")
                return
            predictions = v1_predictions(outputs) if len(outputs) > 1 else outputs[0].array
            logged.append(LoggedRequest(features, predictions, request.request_id, request.variant))
            answered.append(index)
        try:
            self.inference_log.log_requests(logged)
        except OSError as exc:
            for index in answered:
                results[index] = exc

    async def infer(self, item: ModelInput, *, request_id: str | None, variant: str | None) -> list[Output]:
        return await self._batcher.submit(_Request(item, request_id, variant), item.rows)

    # ---------------------------------------------------------------- KServe hooks (gRPC)

    def get_input_types(self) -> list[dict]:
        return self.io.metadata_inputs() if self.io else []

    def get_output_types(self) -> list[dict]:
        return list(self.io.outputs) if self.io else []

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        # A PayloadError is the client's tensors not fitting the model: the gRPC side's INVALID_ARGUMENT.
        if not isinstance(payload, InferRequest):
            raise PayloadError("this model server takes V2 requests over gRPC")
        item = self.io.from_v2([tensor_from_infer_input(i) for i in payload.inputs])
        # Raw inputs get raw outputs, as Triton answers (tritonclient's as_numpy reads only those).
        return item, payload.id, payload.use_binary_outputs

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        item, request_id, raw = payload
        headers = headers or {}
        outputs = await self.infer(item, request_id=request_id, variant=headers.get(VARIANT_HEADER))
        return outputs, request_id, raw

    async def postprocess(self, result: Any, headers: dict[str, str] | None = None) -> InferResponse:
        outputs, request_id, raw = result
        return infer_response(self.name, self.model_version, outputs, request_id, binary=raw)


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
