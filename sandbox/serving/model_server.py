"""A model server for any MLflow model, speaking KServe's V1, V2 REST and V2 gRPC protocols.

    python -m sandbox.serving.model_server --name NAME --model-uri models:/m/1 --port P
        [--host 127.0.0.1] [--grpc-port G] [--batch-size N --batch-wait-ms M]
        [--allow-nan] [--no-inference-log]

The local equivalent of KServe's MLflow runtime. The arguments are sandbox.serving.launch's `ModelServerArgs`,
which whoever starts the server writes (`to_argv()`). This module is the process: logging, loading the model,
the inference log, and serving until a signal. The rest is by responsibility:

- the model (sandbox.serving.mlflow_model): a `kserve.Model` that loads anything `mlflow.pyfunc` loads
  (registry + S3), converts every request to exactly what its signature declares (sandbox.serving.model_io)
  and stacks concurrent requests into one `predict` (adaptive micro-batching);
- REST (sandbox.serving.rest_app): V1 `/v1/models/NAME:predict`, V2 `/v2/models/NAME/infer` with the binary
  tensor extension, metadata, health, `/metrics`; bad input is a 400 naming the field, row and column, a body
  over 8 MiB a 413, and only a failure inside the model's own `predict` a 500;
- gRPC (sandbox.serving.grpc_app): V2, KServe's own servicer and data plane around the same model.

Every answered row of a numeric model is logged (features, prediction, model
name and version, the A/B variant the router chose, the request id) to the
stack's inference log when `ML_SANDBOX_MONITORING_DB_URL` is set: appended to a journal on disk before the
answer, shipped to PostgreSQL off the request path, by a thread of this process or, with
`ML_SANDBOX_INFERENCE_LOG_SHIPPER=supervisor` (the local profile while its supervisor runs), by the
supervisor (sandbox.serving.inference_log). MLflow credentials come from the environment (`sandbox env`).

With `ML_SANDBOX_SERVING_TOKEN` set at start (`serving.auth: token`, the default), every REST request but the
health checks (`wire.HEALTH_PATHS`) needs `Authorization: Bearer TOKEN` (else 401) and every gRPC call but
ServerLive and ServerReady the metadata `authorization: Bearer TOKEN` (else UNAUTHENTICATED). Bound to
loopback, REST also refuses a Host header other than 127.0.0.1, localhost or [::1] (403, as MLflow does).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.serving.asgi import loopback_port, serving_token
from sandbox.serving.launch import ModelServerArgs

if TYPE_CHECKING:
    from sandbox.serving.mlflow_model import MLflowModel

logger = logging.getLogger("sandbox.model_server")
# The model's files, in the server's working folder.
MODEL_DIR = "model"


def _configure_logging() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a progress bar per load fills the log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # A library warning is worth reading once, not once per request.
    warnings.simplefilter("once")
    logging.captureWarnings(True)
    for noisy in ("uvicorn.access", "kserve", "kserve.trace", "mlflow", "urllib3", "botocore", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _serve(model: MLflowModel, host: str, port: int, grpc_port: int | None, token: str | None = None) -> None:
    import uvicorn

    from sandbox.serving.grpc_app import start_grpc
    from sandbox.serving.rest_app import ModelApp

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
        ModelApp(model).asgi(token=token, local_port=loopback_port(host, port)),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,  # `sandbox down` and redeploys should not wait for idle connections
        lifespan="on",
    )
    grpc_server = await start_grpc(model, host, grpc_port, token=token) if grpc_port else None
    try:
        await Server(config).serve()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=1)


def main(argv: list[str] | None = None) -> None:
    run(ModelServerArgs.parse(argv))


def run(args: ModelServerArgs) -> None:
    """Load the model and serve it until SIGINT or SIGTERM."""
    # No garbage collection while the libraries import and the model loads: they make long-lived objects
    # only, and the collector's passes over them were about a tenth of a start's CPU. One pass after.
    gc.disable()
    # Here, not at the top: `main()` parses the arguments (and `--help` answers) before KServe and MLflow load.
    from sandbox.serving.inference_log import SHIPPER_ENV, InferenceLogWriter, shipper_from_env
    from sandbox.serving.mlflow_model import MLflowModel, resolve_logged_model

    _configure_logging()
    token = serving_token(os.environ)  # read once, at start: set, every call but the health checks needs it
    model = MLflowModel(
        args.name,
        args.model_uri,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        allow_nan=args.allow_nan,
        # Beside the server's log and journal (the deployment's folder, in the sandbox dir), not in /tmp, where
        # MLflow would leave a copy of the model on every start.
        model_dir=Path.cwd() / MODEL_DIR,
    )
    model.load()
    # The model and the libraries are hundreds of MB of long-lived objects: frozen, a full garbage
    # collection no longer walks them, which otherwise stalls every request in flight (the p99).
    gc.collect()
    gc.freeze()
    gc.enable()
    dsn = os.environ.get("ML_SANDBOX_MONITORING_DB_URL")
    if args.inference_log and dsn:
        logged = resolve_logged_model(args.name, args.model_uri)
        model.model_version = logged.model_version if logged.model_version.isdigit() else ""
        # The inference journal (every answered row, on disk before the answer) lives next to the server's log.
        # Shipped by this process, or by the local profile's supervisor (no CPU here spent on shipping).
        shipper = shipper_from_env(os.environ)
        model.inference_log = InferenceLogWriter(dsn, logged, spool_dir=Path.cwd(), ship=shipper == "server").start()
        logger.info("inference log: journal in %s, shipped by the %s (%s)", Path.cwd(), shipper, SHIPPER_ENV)
    elif args.inference_log:
        logger.warning("no ML_SANDBOX_MONITORING_DB_URL: inferences are not logged")
    run_loop = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run_loop = uvloop.run
    try:
        run_loop(_serve(model, args.host, args.port, args.grpc_port, token))
    finally:
        if model.inference_log is not None:
            model.inference_log.close()  # after the last request: ships what it can; the rest stays in the journal


if __name__ == "__main__":
    # The process entry (what `serve deploy` and the image run): KServe's parts without its whole client.
    from sandbox.serving.lean_kserve import skip_package_init

    skip_package_init()
    main()
