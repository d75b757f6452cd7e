"""The launch arguments of the model server and the router: what a launcher writes (`to_argv()`) is what the
server's own `main()` reads back, for any value of every field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.serving import model_server, router
from sandbox.serving.launch import ModelServerArgs, RouterArgs, RouteVariant

names = st.from_regex(r"[a-z][a-z0-9-]{0,30}", fullmatch=True)
hosts = st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "localhost", "fraud-predictor.ml-sandbox.svc.cluster.local"])
ports = st.integers(min_value=1, max_value=65535)
model_uris = st.builds(
    "models:/{}/{}".format, names, st.integers(min_value=1, max_value=10_000).map(str)
) | st.sampled_from(["models:/fraud-detector@champion", "models:/m/latest", "runs:/0a1b2c/model", "s3://b/m"])
# Any finite value: a launcher writes what it was given, the server reads the same number back.
amounts = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)

server_args = st.builds(
    ModelServerArgs,
    name=names,
    model_uri=model_uris,
    port=ports,
    host=hosts,
    grpc_port=st.none() | ports,
    batch_size=st.integers(min_value=1, max_value=4096),
    batch_wait_ms=amounts,
    inference_log=st.booleans(),
    allow_nan=st.booleans(),
)
route_variants = st.builds(
    RouteVariant,
    label=names,
    base_url=st.builds("http://{}:{}".format, hosts, ports),
    model_name=names,
    weight=amounts,
)
router_args = st.builds(
    RouterArgs,
    name=names,
    port=ports,
    variants=st.lists(route_variants, min_size=1, max_size=4).map(tuple),
    host=hosts,
    sticky_header=st.none() | st.from_regex(r"x-[a-z][a-z-]{0,15}", fullmatch=True),
)


@given(args=server_args)
def test_model_server_args_read_back_what_they_write(args):
    assert ModelServerArgs.parse(args.to_argv()) == args


@given(args=router_args)
def test_router_args_read_back_what_they_write(args):
    assert RouterArgs.parse(args.to_argv()) == args


@pytest.mark.parametrize("value", [0.1234567, 1234567.0, 2.5, 1.0, 1e-7, 80])
def test_numbers_are_written_without_losing_digits(value):
    args = ModelServerArgs("m", "models:/m/1", 8080, batch_wait_ms=value)
    assert ModelServerArgs.parse(args.to_argv()).batch_wait_ms == value
    variant = RouteVariant("a", "http://127.0.0.1:8001", "m-a", value)
    assert RouteVariant.parse(variant.to_arg()) == variant


def test_the_mains_accept_what_the_launchers_write(monkeypatch):
    """Each server's `main()` parses its argv with the launch type (and starts nothing here)."""
    started = []
    monkeypatch.setattr(model_server, "run", started.append)
    monkeypatch.setattr(router, "run", started.append)
    served = ModelServerArgs("fraud", "models:/fraud/3", 8101, host="0.0.0.0", grpc_port=8102, batch_size=16)
    split = RouterArgs(
        "ab",
        8200,
        (
            RouteVariant("a", "http://127.0.0.1:8201", "ab-a", 80),
            RouteVariant("b", "http://127.0.0.1:8202", "ab-b", 20),
        ),
        host="127.0.0.1",
        sticky_header="X-User-Id",
    )
    model_server.main(served.to_argv())
    router.main(split.to_argv())
    assert started == [served, split]


def test_the_mains_refuse_what_no_launcher_writes(monkeypatch, capsys):
    monkeypatch.setattr(model_server, "run", pytest.fail)
    monkeypatch.setattr(router, "run", pytest.fail)
    with pytest.raises(SystemExit) as exited:
        model_server.main(["--name", "m", "--port", "8080"])
    assert exited.value.code == 2 and "--model-uri" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        router.main(["--name", "ab", "--port", "8200", "--variant", "a"])
    assert exited.value.code == 2 and "--variant" in capsys.readouterr().err
