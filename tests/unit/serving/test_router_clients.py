"""NVIDIA's tritonclient and KServe's REST client against an A/B split, over real HTTP on loopback.

The split is deployed as `serve split` deploys it: a model server per variant (SPLIT-a, SPLIT-b) and the router in
front, each served by uvicorn on 127.0.0.1, all in the session's event loop. tritonclient blocks, so it runs in a
thread while that loop serves. The client must see the split, never its variants: the split's name in every V2
answer (the variant that answered only in `x-model-variant`) and one `date` and one `server` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import uvicorn
from kserve import InferenceRESTClient, RESTConfig

from sandbox.net import LOOPBACK
from sandbox.serving import router
from sandbox.serving.launch import RouteVariant
from sandbox.serving.model_io import V2_DTYPES
from tests.unit.serving.answers import assert_outputs_match, infer_request, v2_json_outputs
from tests.unit.serving.conftest import Served, serve, stop
from tests.unit.serving.models import KEYS, MatrixModel


class LoopbackServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # Ctrl-C stays pytest's: this server lives inside the test process


async def listen(app, *, lifespan: str) -> tuple[LoopbackServer, asyncio.Task, str]:
    """Serve `app` on a loopback port bound here (no race for a free port); returns once it accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    config = uvicorn.Config(app, lifespan=lifespan, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    server = LoopbackServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("uvicorn returned before it started")
        await asyncio.sleep(0.01)
    return server, task, f"{LOOPBACK}:{sock.getsockname()[1]}"


async def shut(server: LoopbackServer, task: asyncio.Task) -> None:
    server.should_exit = True
    await task


@dataclass
class Split:
    name: str
    model: MatrixModel
    address: str  # the router's HOST:PORT

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@pytest.fixture
def split(request, served, runner) -> Iterator[Split]:
    """An 80/20 split of one matrix model, both variants on that model, everything on real loopback ports."""
    model = served[request.param].model
    name = f"t-{request.param.replace('_', '-')}"
    variants: list[Served] = [serve(model, runner, f"{name}-a"), serve(model, runner, f"{name}-b")]
    listening = []
    try:
        for variant in variants:
            # lifespan off: the model is already loaded, as the in-process tests serve it
            listening.append(runner.run(listen(variant.transport.app, lifespan="off")))
        app = router.create_app(
            name,
            [
                RouteVariant(label, f"http://{address}", variant.name, weight)
                for label, variant, (_, _, address), weight in zip("ab", variants, listening, (80, 20), strict=True)
            ],
        )
        listening.append(runner.run(listen(app, lifespan="on")))
        yield Split(name, model, listening[-1][2])
    finally:
        for server, task, _ in reversed(listening):
            runner.run(shut(server, task))
        for variant in variants:
            stop(variant)


def triton_inputs(model: MatrixModel, *, binary: bool) -> list[triton.InferInput]:
    inputs = []
    for tensor in model.v2_inputs:
        array = np.array(tensor["data"], dtype=V2_DTYPES[tensor["datatype"]]).reshape(tensor["shape"])
        infer_input = triton.InferInput(tensor["name"], list(array.shape), tensor["datatype"])
        infer_input.set_data_from_numpy(array, binary_data=binary)
        inputs.append(infer_input)
    return inputs


def with_triton(split: Split) -> dict:
    """Everything tritonclient asks the split (blocking: run in a thread while the servers' loop runs)."""
    client = triton.InferenceServerClient(split.address, network_timeout=30.0)
    try:
        answers = {"server": client.get_server_metadata(), "model": client.get_model_metadata(split.name)}
        names = list(split.model.expected_outputs())
        for binary in (False, True):
            result = client.infer(
                split.name,
                triton_inputs(split.model, binary=binary),
                outputs=[triton.InferRequestedOutput(name, binary_data=binary) for name in names],
            )
            answers[binary] = (result.get_response(), {name: result.as_numpy(name) for name in names})
        return answers
    finally:
        client.close()


@pytest.mark.parametrize("split", KEYS, indirect=True)
def test_tritonclient_sees_the_split_and_its_answers(split, runner):
    answers = runner.run(asyncio.to_thread(with_triton, split))
    assert "binary_tensor_data" in answers["server"]["extensions"]
    assert answers["model"]["name"] == split.name
    for binary in (False, True):
        header, outputs = answers[binary]
        assert header["model_name"] == split.name, (binary, header)
        assert_outputs_match(outputs, split.model)


async def kserve_rest(split: Split, *, binary: bool) -> tuple[object, dict[str, str]]:
    headers: dict[str, str] = {}
    request = infer_request(split.name, split.model, binary=binary)
    if binary:
        request.parameters = {"binary_data_output": True}
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as client:
        assert await client.is_server_ready(split.url)
        assert await client.is_model_ready(split.url, split.name)
        response = await client.infer(split.url, request, model_name=split.name, response_headers=headers)
    return response, headers


@pytest.mark.parametrize("split", KEYS, indirect=True)
def test_kserve_rest_client_sees_the_split_and_its_answers(split, runner):
    for binary in (False, True):
        response, headers = runner.run(kserve_rest(split, binary=binary))
        assert response.model_name == split.name, binary
        assert headers["x-model-variant"] in ("a", "b")
        assert_outputs_match({o.name: o.as_numpy() for o in response.outputs}, split.model)
        if binary:
            assert int(headers["inference-header-content-length"]) < int(headers["content-length"])


async def plain_http(split: Split) -> tuple[httpx.Response, httpx.Response]:
    async with httpx.AsyncClient(base_url=split.url, timeout=30, trust_env=False) as client:
        infer = await client.post(f"/v2/models/{split.name}/infer", json={"inputs": split.model.v2_inputs})
        metadata = await client.get(f"/v2/models/{split.name}")
    return infer, metadata


@pytest.mark.parametrize("split", ["forest_numpy"], indirect=True)
def test_the_split_answers_with_its_own_name_and_one_date_and_server_header(split, runner):
    infer, metadata = runner.run(plain_http(split))
    for answer in (infer, metadata):
        for header in ("date", "server"):
            assert len(answer.headers.get_list(header)) == 1, (header, answer.headers.get_list(header))
    assert infer.json()["model_name"] == split.name
    assert infer.headers["x-model-variant"] in ("a", "b")
    assert_outputs_match(v2_json_outputs(infer), split.model)
    assert metadata.json()["name"] == split.name
