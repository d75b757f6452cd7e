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


def test_every_serving_runtime_is_a_serving_runtime_and_the_planner_a_serving_backend(tmp_path):
    from sandbox.profiles.local.serving import LocalProcessRuntime
    from sandbox.profiles.local.state import PortMap, SandboxDir
    from sandbox.profiles.remote.serving import RemoteRuntime
    from sandbox.serving.deployments import Deployments
    from sandbox.serving.runtime import ServingRuntime

    sandbox = SandboxDir(tmp_path / "sb")
    for runtime in (LocalProcessRuntime(sandbox, PortMap(sandbox)), RemoteRuntime({})):
        assert isinstance(runtime, ServingRuntime), type(runtime).__name__
        assert isinstance(Deployments(runtime), ServingBackend)


def test_the_remote_serving_runtime_lists_and_refuses_every_change():
    from sandbox.errors import ConfigError
    from sandbox.profiles.remote.serving import RemoteRuntime
    from sandbox.serving.deployments import Deployments
    from sandbox.serving.specs import DeploymentSpec, VariantSpec

    serving = Deployments(RemoteRuntime({}))
    assert serving.get("anything") is None and serving.statuses() == []
    variants = [VariantSpec.parse("a=models:/m/1:1"), VariantSpec.parse("b=models:/m/2:1")]
    for change in (
        lambda: serving.deploy(DeploymentSpec.model("x", "models:/m/1")),
        lambda: serving.deploy(DeploymentSpec.split("x", variants)),
        lambda: serving.undeploy("x"),
    ):
        with pytest.raises(ConfigError, match="deploys nothing") as info:
            change()
        assert "remote.inference" in info.value.hint


def test_the_kfp_local_runner_is_a_pipeline_runner():
    from sandbox.pipelines.runner import LocalPipelineRunner

    for member in [m for m in vars(PipelineRunner) if not m.startswith("_")]:
        assert hasattr(LocalPipelineRunner, member), f"LocalPipelineRunner lacks {member}"


def test_the_local_scheduler_is_a_scheduler_backend_and_reports_a_neutral_snapshot(tmp_path):
    import dataclasses

    from sandbox.gpu import GpuConfig, Workload
    from sandbox.gpu.backend import SchedulerBackend, SchedulerSnapshot
    from sandbox.profiles.local.scheduler import LocalScheduler

    for member in [m for m in vars(SchedulerBackend) if not m.startswith("_")]:
        assert callable(getattr(LocalScheduler, member, None)), f"LocalScheduler lacks {member}"
    scheduler = LocalScheduler(GpuConfig(real_gpus="off"), tmp_path)
    gpu = {"nvidia.com/gpu": "2", "cpu": "1", "memory": "1Gi"}
    tolerate = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert scheduler.submit(Workload(name="train", limits=gpu, tolerations=tolerate)).status == "Scheduled"
    assert scheduler.submit(Workload(name="big", limits={**gpu, "nvidia.com/gpu": "64"})).status != "Scheduled"

    snapshot = scheduler.snapshot()
    assert isinstance(snapshot, SchedulerSnapshot)
    [train] = [w for w in snapshot.workloads if w.name == "train"]
    assert train.phase == "Running" and len(train.devices) == 2
    node = next(n for n in snapshot.nodes if n.name == train.node)
    assert (node.gpus_used, node.cpu_used, node.memory_used) == (2, "1", "1Gi")
    quota = next(q for q in snapshot.quotas if q.name == "compute-quota")
    assert quota.used["requests.nvidia.com/gpu"] == "2"
    assert set(quota.used) == set(quota.hard)

    # Only plain values: what `gpu status --json` prints and a Kubernetes backend can build from the API.
    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, bool))

    assert plain(snapshot.to_dict()) and all(dataclasses.is_dataclass(n) for n in snapshot.nodes)
