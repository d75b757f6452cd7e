"""`Profile.claim_port`: the port a sandbox-side listener (`monitor watch`'s /metrics) gets from its profile."""

import json
import socket

import pytest

from sandbox.config import load_config
from sandbox.errors import PortInUseError
from sandbox.net import port_is_free
from sandbox.profiles import get_profile


def _profile(tmp_path, name):
    return get_profile(load_config(None, profile=name, dir=tmp_path / "sbx"))


def test_a_profile_without_state_gives_a_free_port_and_writes_nothing(tmp_path):
    port = _profile(tmp_path, "kind").claim_port("monitor.metrics", 0, setting="--metrics-port")
    assert port_is_free(port)
    assert not (tmp_path / "sbx").exists()


def test_a_configured_port_is_kept_or_refused_when_taken(tmp_path):
    profile = _profile(tmp_path, "kind")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(PortInUseError) as refused:
            profile.claim_port("monitor.metrics", busy, setting="--metrics-port")
        assert "--metrics-port" in refused.value.hint
    assert profile.claim_port("monitor.metrics", busy, setting="--metrics-port") == busy


def test_the_local_profile_keeps_its_port_in_the_sandbox_dir(tmp_path):
    (tmp_path / "sbx").mkdir()  # a running sandbox's dir (`monitor watch` needs its endpoints first)
    first = _profile(tmp_path, "local").claim_port("monitor.metrics", 0, setting="--metrics-port")
    again = _profile(tmp_path, "local").claim_port("monitor.metrics", 0, setting="--metrics-port")
    assert first == again
    assert json.loads((tmp_path / "sbx" / "ports.json").read_text())["monitor.metrics"] == first
