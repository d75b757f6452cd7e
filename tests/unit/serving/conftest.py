"""The model matrix served in-process: each model's REST app through httpx's ASGI transport, its V2 gRPC server on
a free loopback port, all in one event loop the tests drive (no stack, no subprocess, no registry)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

from sandbox.net import LOOPBACK, free_port
from sandbox.serving.grpc_app import start_grpc
from sandbox.serving.mlflow_model import MLflowModel
from sandbox.serving.rest_app import ModelApp
from tests.unit.serving.models import MatrixModel, build_matrix

T = TypeVar("T")

# As the real stack deployed the matrix (`serve deploy ... --batch-size 16`, the server's default 5 ms wait).
BATCH_SIZE, BATCH_WAIT_MS = 16, 5.0


@dataclass
class Served:
    """One model behind `ModelApp` and `start_grpc`, as `python -m sandbox.serving.model_server` serves it."""

    model: MatrixModel
    server: MLflowModel
    runner: asyncio.Runner
    transport: httpx.ASGITransport  # the REST app, for any httpx client (KServe's REST client included)
    client: httpx.AsyncClient
    grpc: Any  # grpc.aio.Server
    grpc_address: str  # 127.0.0.1:PORT

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def url(self) -> str:
        return str(self.client.base_url).rstrip("/")

    @property
    def v1_predict(self) -> str:
        return f"{self.url}/v1/models/{self.name}:predict"

    @property
    def v2_infer(self) -> str:
        return f"{self.url}/v2/models/{self.name}/infer"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine in the loop both servers live in."""
        return self.runner.run(coroutine)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.run(self.client.post(url, **kwargs))

    def get(self, url: str) -> httpx.Response:
        return self.run(self.client.get(url))

    def assert_healthy(self) -> None:
        """A valid request after whatever came before is answered, exactly."""
        response = self.post(self.v1_predict, json=self.model.v1_body)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == self.model.expected_v1()


def serve(model: MatrixModel, runner: asyncio.Runner, name: str | None = None) -> Served:
    server = MLflowModel(name or model.name, model.uri, batch_size=BATCH_SIZE, batch_wait_ms=BATCH_WAIT_MS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice on PythonModels without type hints, at each load
        server.load()
    transport = httpx.ASGITransport(app=ModelApp(server).asgi())
    client = httpx.AsyncClient(transport=transport, base_url=f"http://{server.name}", timeout=30)
    port = free_port()
    grpc = runner.run(start_grpc(server, LOOPBACK, port))
    return Served(model, server, runner, transport, client, grpc, f"{LOOPBACK}:{port}")


def stop(served: Served) -> None:
    served.run(served.grpc.stop(None))
    served.run(served.client.aclose())
    served.server._batcher.close()


@pytest.fixture(scope="session")
def matrix(tmp_path_factory) -> dict[str, MatrixModel]:
    """The six models, saved once per session (per xdist worker)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice to users saving models (type hints, skops, integers)
        return build_matrix(tmp_path_factory.mktemp("matrix"))


@pytest.fixture(scope="session")
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for the session: the servers' batchers and gRPC servers live in it between tests."""
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture(scope="session")
def served(matrix, runner) -> Iterator[dict[str, Served]]:
    """Every matrix model served in-process, by key."""
    servers: dict[str, Served] = {}
    try:
        for key, model in matrix.items():
            servers[key] = serve(model, runner)
        yield servers
    finally:
        for one in servers.values():
            stop(one)
