"""Who may call a model server or a router (`serving.auth`): the bearer token on REST and gRPC, the health paths
that answer anyone, the Host header a loopback server holds to, and the token the router passes to its variants.

The servers run in-process as the other serving tests run them (`conftest.serve`): REST through httpx's ASGI
transport or uvicorn on loopback, gRPC on a loopback port, in the session's event loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

from sandbox import wire
from sandbox.net import LOOPBACK, free_port
from sandbox.serving import router
from sandbox.serving.asgi import loopback_port, serving_token
from sandbox.serving.grpc_app import start_grpc
from sandbox.serving.launch import RouteVariant
from sandbox.serving.rest_app import ModelApp
from tests.unit.serving.conftest import Served, serve, stop
from tests.unit.serving.test_router_clients import listen, shut

TOKEN = "a-token-for-these-tests"
PORT = 18123  # the port the guarded app believes it is bound to (the ASGI transport binds none)
KEY = "forest_numpy"


@pytest.fixture
def guarded(served) -> Iterator[tuple[Served, httpx.AsyncClient]]:
    """The forest served with the token on, as `model_server` serves it bound to 127.0.0.1:PORT."""
    server = served[KEY]
    app = ModelApp(server.server).asgi(token=TOKEN, local_port=PORT)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{LOOPBACK}:{PORT}", timeout=30)
    yield server, client
    server.run(client.aclose())


def _calls(server: Served) -> list[tuple[str, str, dict | None]]:
    name = server.name
    return [
        ("POST", wire.v1_predict_path(name), server.model.v1_body),
        ("POST", wire.v2_infer_path(name), {"inputs": server.model.v2_inputs}),
        ("GET", wire.v2_metadata_path(name), None),
        ("GET", f"/v2/models/{name}/ready", None),
        ("GET", f"/v1/models/{name}", None),
        ("GET", "/metrics", None),
    ]


def _send(server: Served, client: httpx.AsyncClient, method: str, path: str, body, headers=None) -> httpx.Response:
    return server.run(client.request(method, path, json=body, headers=headers))


def test_without_the_token_every_call_is_401_naming_the_fix(guarded):
    server, client = guarded
    for method, path, body in _calls(server):
        response = _send(server, client, method, path, body)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert wire.SERVING_TOKEN_ENV in response.json()["error"]
        assert "sandbox env" in response.json()["error"]


def test_a_wrong_token_or_scheme_is_401(guarded):
    server, client = guarded
    for value in (f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}"):
        response = _send(
            server, client, "POST", wire.v1_predict_path(server.name), server.model.v1_body, {"Authorization": value}
        )
        assert response.status_code == 401, value


def test_with_the_token_every_call_is_answered(guarded):
    server, client = guarded
    for method, path, body in _calls(server):
        response = _send(server, client, method, path, body, wire.bearer_headers(TOKEN))
        assert response.status_code == 200, (path, response.text)
    predicted = _send(
        server,
        client,
        "POST",
        wire.v1_predict_path(server.name),
        server.model.v1_body,
        {"authorization": f"bearer {TOKEN}"},
    )
    assert predicted.json()["predictions"] == server.model.expected_v1()


def test_the_health_paths_answer_anyone(guarded):
    server, client = guarded
    for path in ("/v2/health/live", "/v2/health/ready", "/v2"):
        assert path in wire.HEALTH_PATHS
        response = _send(server, client, "GET", path, None, {"Host": "anyone.example"})
        assert response.status_code == 200, (path, response.text)


def test_a_foreign_host_is_403_even_with_the_token(guarded):
    server, client = guarded
    path, body = wire.v1_predict_path(server.name), server.model.v1_body
    for host in ("rebound.example", f"rebound.example:{PORT}", f"{LOOPBACK}:{PORT + 1}", "10.0.0.1"):
        response = _send(server, client, "POST", path, body, {**wire.bearer_headers(TOKEN), "Host": host})
        assert response.status_code == 403, host
        assert "Host" in response.json()["error"]
    for host in (f"localhost:{PORT}", f"[::1]:{PORT}", LOOPBACK, "LOCALHOST", f"{LOOPBACK}:{PORT}"):
        response = _send(server, client, "POST", path, body, {**wire.bearer_headers(TOKEN), "Host": host})
        assert response.status_code == 200, host


def test_without_a_token_the_server_answers_anyone(served):
    """`serving.auth: none`, and a server in a pod (bound to every interface): no checks at all."""
    server = served[KEY]
    assert serving_token({wire.SERVING_TOKEN_ENV: ""}) is None and serving_token({}) is None
    assert serving_token({wire.SERVING_TOKEN_ENV: TOKEN}) == TOKEN
    assert loopback_port("0.0.0.0", PORT) is None and loopback_port(LOOPBACK, PORT) == PORT
    app = ModelApp(server.server).asgi(token=None, local_port=None)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://some.pod:8080", timeout=30)
    try:
        response = server.run(client.post(wire.v1_predict_path(server.name), json=server.model.v1_body))
    finally:
        server.run(client.aclose())
    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- gRPC


async def _grpc(address: str, method: str, request, metadata=None):
    async with grpc.aio.insecure_channel(address) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        return await getattr(stub, method)(request, metadata=metadata, timeout=30)


def test_grpc_needs_the_token_but_for_liveness_and_readiness(served, runner):
    server = served[KEY]
    port = free_port()
    grpc_server = runner.run(start_grpc(server.server, LOOPBACK, port, token=TOKEN))
    address = f"{LOOPBACK}:{port}"
    try:
        metadata_request = pb.ModelMetadataRequest(name=server.name)
        for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                runner.run(_grpc(address, "ModelMetadata", metadata_request, metadata))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert wire.SERVING_TOKEN_ENV in refused.value.details()
        assert runner.run(_grpc(address, "ServerLive", pb.ServerLiveRequest())).live
        assert runner.run(_grpc(address, "ServerReady", pb.ServerReadyRequest())).ready
        good = (("authorization", f"Bearer {TOKEN}"),)
        assert runner.run(_grpc(address, "ModelMetadata", metadata_request, good)).name == server.name
        ready = runner.run(_grpc(address, "ModelReady", pb.ModelReadyRequest(name=server.name), good))
        assert ready.ready
    finally:
        runner.run(grpc_server.stop(None))


# --------------------------------------------------------------------------- the router


async def _through_the_router(base: str, name: str, model) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as client:
        refused = await client.post(wire.v1_predict_path(name), json=model.v1_body)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/v2/health/live")).status_code == 200
        auth = wire.bearer_headers(TOKEN)
        seen = set()
        for _ in range(12):
            answer = await client.post(wire.v1_predict_path(name), json=model.v1_body, headers=auth)
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == model.expected_v1()
            seen.add(answer.headers["x-model-variant"])
        assert seen and seen <= {"a", "b"}
        assert (await client.get(f"/v2/models/{name}/ready", headers=auth)).status_code == 200
        assert (await client.get("/v2/health/ready")).status_code == 200  # the variants asked with the token
        assert (await client.get(wire.v2_metadata_path(name), headers=auth)).json()["name"] == name


def test_the_router_requires_the_token_and_passes_it_to_its_variants(served, runner):
    model = served[KEY].model
    name = "t-auth"
    variants = [serve(model, runner, f"{name}-a"), serve(model, runner, f"{name}-b")]
    listening = []
    try:
        for variant in variants:  # each variant requires the token, as the local profile starts them
            app = ModelApp(variant.server).asgi(token=TOKEN)
            listening.append(runner.run(listen(app, lifespan="off")))
        routes = [
            RouteVariant(label, f"http://{address}", variant.name, 50)
            for label, variant, (_, _, address) in zip("ab", variants, listening, strict=True)
        ]
        listening.append(runner.run(listen(router.create_app(name, routes, token=TOKEN), lifespan="on")))
        base = f"http://{listening[-1][2]}"
        runner.run(_through_the_router(base, name, model))
    finally:
        for server, task, _ in reversed(listening):
            runner.run(shut(server, task))
        for variant in variants:
            stop(variant)


def test_the_router_refuses_a_foreign_host_and_without_a_token_answers_anyone(runner):
    routes = [RouteVariant("a", "http://127.0.0.1:9", "m-a", 1)]

    async def describe(app, host: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
            return await client.get("/router", headers=wire.bearer_headers(TOKEN))

    guarded_app = router.create_app("m", routes, token=TOKEN, local_port=PORT)
    assert runner.run(describe(guarded_app, f"rebound.example:{PORT}")).status_code == 403
    assert runner.run(describe(guarded_app, f"localhost:{PORT}")).status_code == 200
    open_app = router.create_app("m", routes)
    assert runner.run(describe(open_app, "anyone.example")).json()["name"] == "m"
