"""The serving benchmark's load generators send what they are given: every request carries the headers (the
sandbox server's bearer token), or the benchmark measures a server's 401s instead of its predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.load_generators import measure, wrk_path
from tests.servers import ThreadedServer

TOKEN = "Bearer tok-[[nested]]-]=]"  # brackets that would end a Lua long string too early


def _recording_app(seen: list[str | None]) -> Starlette:
    async def predict(request: Request) -> JSONResponse:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != TOKEN:
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return JSONResponse({"predictions": [1]})

    return Starlette(routes=[Route("/v1/models/m:predict", predict, methods=["POST"])])


@pytest.mark.parametrize("generator", ["wrk", "locust"])
def test_each_request_carries_the_headers(generator, tmp_path: Path):
    if generator == "wrk" and wrk_path() is None:
        pytest.skip("wrk is not installed (Debian: apt-get install wrk)")
    seen: list[str | None] = []
    with ThreadedServer(_recording_app(seen)) as server:
        figures = measure(
            generator,
            f"{server.url}/v1/models/m:predict",
            ['{"instances": [[0.1]]}'],
            expect="predictions",
            connections=2,
            duration_s=1,
            threads=1,
            scratch=tmp_path,
            headers={"Authorization": TOKEN},
        )
    assert seen and set(seen) == {TOKEN}
    assert figures.errors == 0 and figures.requests > 0
