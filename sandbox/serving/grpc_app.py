"""The model server's V2 gRPC side: KServe's own servicer and data plane around the model (which KServe calls
through the model's `preprocess`, `predict` and `postprocess`), with one log line per refused or failed call.
Started next to the REST app when the server is given a gRPC port.

Only a request that does not decode is the client's fault (INVALID_ARGUMENT): the message as KServe reads it
(`InferRequest.from_grpc`) and its tensors as the model reads them (`PayloadError`, raised by the model's
`preprocess`). Anything else raised on the way is the server's (INTERNAL, logged with its traceback)."""

from __future__ import annotations

import hmac
import logging

from sandbox.serving.asgi import UNAUTHORIZED
from sandbox.serving.mlflow_model import MLflowModel, ModelFailure
from sandbox.wire import PayloadError

logger = logging.getLogger("sandbox.model_server")

# The calls that answer without the token: liveness and readiness, as the REST health paths.
OPEN_METHODS = frozenset({"/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady"})

# The fields of the V2 gRPC `TensorMetadata` message; REST metadata may carry more (`parameters`).
TENSOR_METADATA_FIELDS = ("name", "datatype", "shape")


def grpc_tensor_metadata(entries: list[dict]) -> list[dict]:
    """Metadata entries cut to what the gRPC message holds."""
    return [{field: entry[field] for field in TENSOR_METADATA_FIELDS if field in entry} for entry in entries]


def bearer_matches(metadata, token: str) -> bool:
    """Whether a call's invocation metadata carries `authorization: Bearer TOKEN`."""
    for key, value in metadata or ():
        if key == "authorization":
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            return value[:7].lower() == "bearer " and hmac.compare_digest(value[7:].strip(), token)
    return False


async def start_grpc(model: MLflowModel, host: str, port: int, *, token: str | None = None):
    """KServe's V2 gRPC servicer and data plane around the model, on host:port; with ``token``, every call but
    ServerLive and ServerReady needs the metadata `authorization: Bearer TOKEN` (else UNAUTHENTICATED)."""
    import grpc
    from grpc import aio
    from grpc_interceptor.exceptions import GrpcException
    from kserve.errors import ModelNotFound, ModelNotReady, ServerNotLive, ServerNotReady
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
    from kserve.protocol.grpc.servicer import InferenceServicer
    from kserve.protocol.infer_type import InferRequest, InferResponse
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.utils.utils import to_headers

    class Servicer(InferenceServicer):
        """KServe's servicer, with metadata that fits its message and the request decoded where its errors are
        known to be the client's."""

        async def ModelMetadata(self, request, context):
            metadata = await self._data_plane.model_metadata(model_name=request.name)
            return pb.ModelMetadataResponse(
                name=metadata["name"],
                platform=metadata["platform"],
                inputs=grpc_tensor_metadata(metadata["inputs"]),
                outputs=grpc_tensor_metadata(metadata["outputs"]),
            )

        async def ModelInfer(self, request, context):
            try:
                self.validate_grpc_request(request)
                infer_request = InferRequest.from_grpc(request)
            except Exception as exc:  # noqa: BLE001 - whatever the client's message makes KServe raise
                reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                raise PayloadError(f"the request does not decode: {reason}") from None
            response, _ = await self._data_plane.infer(
                request=infer_request, headers=to_headers(context), model_name=request.model_name
            )
            if isinstance(response, InferResponse):
                response = response.to_grpc()
            for output in response.outputs:
                # A REST binary-extension word: gRPC's raw contents carry their own lengths.
                if "binary_data_size" in output.parameters:
                    del output.parameters["binary_data_size"]
            return response

    class StatusInterceptor(ExceptionToStatusInterceptor):
        """The client's undecodable request INVALID_ARGUMENT; KServe's own not found / not ready; the rest
        INTERNAL, each with one log line."""

        async def handle_exception(self, ex, request_or_iterator, context, method_name):
            if isinstance(ex, PayloadError):
                logger.info("gRPC %s INVALID_ARGUMENT %s", method_name, ex)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(ex))
            if isinstance(ex, ModelFailure):
                logger.error("gRPC %s INTERNAL %s", method_name, ex)
                await context.abort(grpc.StatusCode.INTERNAL, str(ex))
            if isinstance(ex, ModelNotFound | ModelNotReady | ServerNotReady | ServerNotLive | GrpcException):
                await super().handle_exception(ex, request_or_iterator, context, method_name)
            # A server bug (KServe's InvalidInput and InferenceError included, raised after decoding).
            logger.error("gRPC %s INTERNAL %s: %s", method_name, type(ex).__name__, ex, exc_info=ex)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(ex).__name__}: {ex}")

    class TokenInterceptor(aio.ServerInterceptor):
        """UNAUTHENTICATED for a call without the bearer token; the health calls pass."""

        async def intercept_service(self, continuation, handler_call_details):
            handler = await continuation(handler_call_details)
            if (
                handler is None
                or handler_call_details.method in OPEN_METHODS
                or bearer_matches(handler_call_details.invocation_metadata, token)
            ):
                return handler
            logger.info("gRPC %s UNAUTHENTICATED", handler_call_details.method)

            async def refuse(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHORIZED)

            if handler.unary_unary is not None:
                make = grpc.unary_unary_rpc_method_handler
            elif handler.unary_stream is not None:
                make = grpc.unary_stream_rpc_method_handler
            elif handler.stream_unary is not None:
                make = grpc.stream_unary_rpc_method_handler
            else:
                make = grpc.stream_stream_rpc_method_handler
            return make(
                refuse,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

    repository = ModelRepository()
    repository.update(model)
    servicer = Servicer(DataPlane(model_registry=repository), ModelRepositoryExtension(repository))
    interceptors = (TokenInterceptor(), StatusInterceptor()) if token else (StatusInterceptor(),)
    server = aio.server(interceptors=interceptors)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    logger.info("serving %s on gRPC %s:%d", model.name, host, port)
    return server
