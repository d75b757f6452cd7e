"""Every profile holds to the protocol: the same methods, and typed backends where it has them."""

from __future__ import annotations

import inspect

import pytest

from sandbox.pipelines.runner import PipelineRunner
from sandbox.profiles import PROFILES, Profile
from sandbox.serving.specs import ServingBackend

PROTOCOL = [name for name, member in vars(Profile).items() if getattr(member, "__isabstractmethod__", False)]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_implements_the_whole_protocol(name):
    cls = PROFILES[name]
    assert issubclass(cls, Profile) and cls.name == name and cls.summary
    missing = [method for method in PROTOCOL if getattr(cls, method) is getattr(Profile, method)]
    assert missing == [], f"{name} lacks {missing}"
    for method in PROTOCOL:  # same parameters as the protocol declares
        declared = list(inspect.signature(getattr(Profile, method)).parameters)
        implemented = list(inspect.signature(getattr(cls, method)).parameters)
        assert implemented[: len(declared)] == declared, f"{name}.{method}{implemented} vs {declared}"


def test_the_local_serving_backend_is_a_serving_backend():
    from sandbox.profiles.local.serving import LocalServing

    for method in [m for m in vars(ServingBackend) if not m.startswith("_")]:
        assert callable(getattr(LocalServing, method, None)), f"LocalServing lacks {method}"


def test_the_remote_serving_backend_lists_and_refuses_to_deploy():
    from sandbox.errors import ConfigError
    from sandbox.profiles.remote.serving import RemoteServing

    serving = RemoteServing({})
    assert isinstance(serving, ServingBackend)
    assert serving.get("anything") is None
    with pytest.raises(ConfigError):
        serving.deploy("x", "models:/m/1")


def test_the_kfp_local_runner_is_a_pipeline_runner():
    from sandbox.pipelines.runner import LocalPipelineRunner

    for member in [m for m in vars(PipelineRunner) if not m.startswith("_")]:
        assert hasattr(LocalPipelineRunner, member), f"LocalPipelineRunner lacks {member}"
