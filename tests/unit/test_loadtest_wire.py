"""What the load tests send: the open-loop generator's prepared requests are `sandbox.wire`'s, to the letter, and
the Locust users load only where Locust may (its import patches the standard library with gevent)."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sandbox import wire
from sandbox.loadtest import LoadTestOptions, Target, request_template

REPO = Path(__file__).resolve().parents[2]
ROWS = [[1.0, 2.0], [3.0, 4.5], [5.0, 6.0]]


@pytest.mark.parametrize(
    ("protocol", "path", "expect", "first"),
    [
        ("v1", "/v1/models/m:predict", "predictions", {"instances": [[1.0, 2.0], [3.0, 4.5]]}),
        ("ab", "/v1/models/m:predict", "predictions", {"instances": [[1.0, 2.0], [3.0, 4.5]]}),
        (
            "v2",
            "/v2/models/m/infer",
            "outputs",
            {"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.5]}]},
        ),
        (
            "mlflow",
            "/invocations",
            "predictions",
            {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0], [3.0, 4.5]]}},
        ),
    ],
)
def test_open_loop_requests_are_the_wire_formats(protocol, path, expect, first):
    options = LoadTestOptions(rows_per_request=2, columns=["a", "b"])
    template = request_template(Target("http://h:1", "m", protocol, "m"), ROWS, options)
    assert (template["host"], template["path"], template["expect"]) == ("http://h:1", path, expect)
    assert [json.loads(body) for body in template["bodies"]] == [first]
    call = wire.predict_call(Target("http://h:1", "m", protocol, "m").wire_protocol, "m", ["a", "b"])
    assert (call.path, call.expect, call.body(ROWS[:2])) == (path, expect, first)


def test_an_unknown_protocol_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown protocol 'v3'"):
        wire.predict_call("v3", "m")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_the_loadtest_api_does_not_import_locust():
    result = _python("import sys, sandbox.loadtest; print(sorted({'locust', 'gevent'} & set(sys.modules)))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_plain_locust_files_are_the_packaged_users_and_shapes():
    result = _python(
        "import loadtests.users as u, loadtests.shapes as s, sandbox.loadtest.users as lu\n"
        "print(u.InferenceUser is lu.InferenceUser, u.InferenceUser.abstract, u.V1User.abstract, s.EnvShape.abstract)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False", "True", "False"]


def _guarded_stub(token: str):
    """A V1 endpoint that answers only requests carrying ``token`` (as a model server with `serving.auth: token`)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from sandbox.serving.asgi import guarded

    async def predict(request):
        return JSONResponse({"predictions": [0]})

    async def metadata(request):
        return JSONResponse({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 2]}]})

    routes = [Route("/v1/models/{target}", predict, methods=["POST"]), Route("/v2/models/m", metadata)]
    return guarded(Starlette(routes=routes), token=token)


@pytest.mark.parametrize("loop", ["open", "closed"])
def test_load_tests_send_the_token_and_keep_it_out_of_the_report(tmp_path, monkeypatch, loop):
    from sandbox.loadtest import run
    from sandbox.loadtest.shapes import constant
    from tests.servers import ThreadedServer

    monkeypatch.setenv(wire.SERVING_TOKEN_ENV, "a-stale-exported-one")  # the target's token wins, never this
    options = (
        LoadTestOptions(rate_profile=constant(20, 1.5), rows=ROWS)
        if loop == "open"
        else LoadTestOptions(users=2, spawn_rate=2, duration_s=2, rows=ROWS)
    )
    with ThreadedServer(_guarded_stub("lt-token-7")) as server:
        target = Target(server.url, "m", "v1", "m", "lt-token-7")
        summary = run(target, options, tmp_path / "report", echo=lambda *_: None)
        assert summary["requests"] > 0 and summary["failures"] == 0, summary.get("errors")
        refused = run(Target(server.url, "m", "v1", "m"), options, tmp_path / "refused", echo=lambda *_: None)
        assert refused["failures"] == refused["requests"] > 0  # without it: every request a 401
    for path in (tmp_path / "report").rglob("*"):
        assert not path.is_file() or b"lt-token-7" not in path.read_bytes(), path


def test_a_closed_loop_run_goes_on_past_its_duration_until_enough_requests_were_answered(tmp_path):
    """What a check's traffic needs (`monitoring.traffic.replay`): so many rows in one run, however slow."""
    from sandbox.loadtest import run
    from tests.servers import ThreadedServer

    # 2 users at 5 requests/s each answer about 10 in 1 s; 30 are wanted, within 6 s at the most.
    held = LoadTestOptions(users=2, spawn_rate=2, duration_s=1, rows=ROWS, user_rate=5.0)
    with ThreadedServer(_guarded_stub("t")) as server:
        target = Target(server.url, "m", "v1", "m", "t")
        short = run(target, held, tmp_path / "short", echo=lambda *_: None)
        enough = run(
            target, replace(held, min_requests=30, max_duration_s=6), tmp_path / "enough", echo=lambda *_: None
        )
    assert short["failures"] == enough["failures"] == 0
    assert short["requests"] < 30 <= enough["requests"]
