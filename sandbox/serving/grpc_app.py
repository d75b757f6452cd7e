"""The model server's V2 gRPC side: KServe's own servicer and data plane around the model (which KServe calls
through the model's `preprocess`, `predict` and `postprocess`), with KServe's status codes and one log line per
refused or failed call. Started next to the REST app when the server is given a gRPC port."""

from __future__ import annotations

import logging

from kserve.errors import InvalidInput

from sandbox.serving.mlflow_model import MLflowModel, ModelFailure

logger = logging.getLogger("sandbox.model_server")


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
