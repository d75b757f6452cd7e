import json

import kubernetes_validate
import pytest
import yaml

from sandbox.config import load_config
from sandbox.errors import ConfigError
from sandbox.gpu import detect, inventory_nodes, render
from sandbox.gpu.inventory import GpuConfig, NodeSpec, Taint
from sandbox.gpu.quantity import format_quantity, parse

K8S_VERSION = "1.33.0"


@pytest.mark.parametrize(
    "text, resource, expected",
    [
        ("500m", "cpu", 500),
        ("2", "cpu", 2000),
        ("1.5", "cpu", 1500),
        ("16Gi", "memory", 16 * 2**30),
        ("1G", "memory", 10**9),
        ("4", "nvidia.com/gpu", 4),
    ],
)
def test_quantities(text, resource, expected):
    assert parse(text, resource) == expected


def test_quantity_errors_and_formatting():
    for bad in ("abc", "1.5x", "-1"):
        with pytest.raises(ValueError):
            parse(bad, "memory")
    with pytest.raises(ValueError):
        parse("1.5", "nvidia.com/gpu")
    assert format_quantity(1500, "cpu") == "1500m" and format_quantity(2000, "cpu") == "2"
    assert format_quantity(64 * 2**30, "memory") == "64Gi"


def test_inventory_from_sandbox_yaml(tmp_path):
    (tmp_path / "sandbox.yaml").write_text(
        "gpu:\n  real_gpus: off\n  nodes:\n"
        "    - {name: gpu-a, gpus: 4, gpu_product: NVIDIA-A100-SXM4-80GB,\n"
        "       taints: ['nvidia.com/gpu=present:NoSchedule']}\n"
        "    - {name: cpu-1, cpu: 8, memory: 16Gi}\n"
        "  quotas:\n    - {namespace: ml, name: q, hard: {requests.nvidia.com/gpu: 2, count/pods: 10}}\n"
    )
    cfg = load_config().gpu
    assert [n.name for n in cfg.nodes] == ["gpu-a", "cpu-1"]
    assert cfg.nodes[0].taints == [Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")]
    assert cfg.quotas[0].limits() == {"requests.nvidia.com/gpu": 2, "count/pods": 10}


@pytest.mark.parametrize(
    "body, key",
    [
        ("gpu:\n  nodes: [{name: a, taints: ['nonsense']}]\n", "gpu.nodes.0.taints"),
        ("gpu:\n  nodes: [{name: a, memory: lots}]\n", "gpu.nodes.0.memory"),
        ("gpu:\n  quotas: [{hard: {requests.tpu: 1}}]\n", "gpu.quotas.0.hard"),
        ("gpu:\n  nodes: [{name: a}, {name: a}]\n", "gpu.nodes"),
    ],
)
def test_bad_inventory_names_the_key(tmp_path, body, key):
    (tmp_path / "sandbox.yaml").write_text(body)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config()


def test_scoring_weighs_cpu_and_memory_unless_the_config_names_gpus(tmp_path):
    """gpu.score_resources: kube-scheduler's default (NodeResourcesFit scores cpu and memory, weight 1 each);
    naming nvidia.com/gpu makes the GPU fraction count, as a scheduler profile naming it would."""
    from sandbox.gpu.scheduler import Workload
    from sandbox.profiles.local.scheduler import LocalScheduler

    assert GpuConfig().score_resources == {"cpu": 1, "memory": 1}
    tolerate = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]

    def second_lands_on(config: GpuConfig, root) -> str:
        backend = LocalScheduler(config, root)
        for name, gpus in (("first", "3"), ("second", "1")):
            workload = Workload(
                name=name, requests={"cpu": "1", "memory": "1Gi"}, limits={"nvidia.com/gpu": gpus}, tolerations=tolerate
            )
            decision = backend.submit(workload)
        return decision.node

    # After `first` (3 GPUs, only gpu-a100 has them): gpu-a100 has more cpu and memory free, gpu-l4 more GPUs.
    assert second_lands_on(GpuConfig(real_gpus="off"), tmp_path / "default") == "gpu-a100"
    (tmp_path / "sandbox.yaml").write_text(
        "gpu:\n  real_gpus: off\n  score_resources: {cpu: 1, memory: 1, nvidia.com/gpu: 1}\n"
    )
    config = load_config(tmp_path / "sandbox.yaml").gpu
    assert config.score_resources == {"cpu": 1, "memory": 1, "nvidia.com/gpu": 1}
    assert second_lands_on(config, tmp_path / "gpus") == "gpu-l4"


@pytest.mark.parametrize(
    "body",
    ["gpu:\n  score_resources: {tpu: 1}\n", "gpu:\n  score_resources: {cpu: 0}\n", "gpu:\n  score_resources: {}\n"],
)
def test_bad_score_resources_name_the_key(tmp_path, body):
    (tmp_path / "sandbox.yaml").write_text(body)
    with pytest.raises(ConfigError, match=r"gpu\.score_resources"):
        load_config()


def test_rendered_objects_validate_against_the_kubernetes_schemas():
    config = GpuConfig(real_gpus="off")
    for obj in render.quota_objects(config):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    for node in (n for n in config.nodes if n.gpus):
        kubernetes_validate.validate(render.node_with_patch(node), K8S_VERSION, strict=True)
        patch = render.gpu_capacity_patch(node)
        assert patch[0] == {"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(node.gpus)}
    kind = render.kind_config(config)
    assert kind["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    workers = [n for n in kind["nodes"] if n["role"] == "worker"]
    assert len(workers) == len(config.nodes)
    a100 = next(w for w in workers if w["labels"]["ml-sandbox/inventory-node"] == "gpu-a100")
    assert a100["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    join = yaml.safe_load(a100["kubeadmConfigPatches"][0])
    assert join["nodeRegistration"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]


def test_schema_validation_catches_a_broken_object():
    broken = render.quota_objects(GpuConfig(real_gpus="off"))[0]
    broken["spec"]["hardd"] = broken["spec"].pop("hard")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


class FakeNVML:
    """Stands in for the NVIDIA driver, which these machines do not have."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus):
        self.gpus = gpus

    def nvmlInit(self):
        if self.gpus is None:
            raise self.NVMLError("driver not loaded")

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return self.gpus[handle][0]

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle:04d}"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Memory", (), {"total": self.gpus[handle][1]})()


def test_real_gpus_join_the_inventory(monkeypatch):
    fake = FakeNVML([("NVIDIA H100 80GB HBM3", 80 * 2**30), ("NVIDIA H100 80GB HBM3", 80 * 2**30)])
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    devices = detect.detect_gpus()
    assert [d.product_label for d in devices] == ["NVIDIA-H100-80GB-HBM3"] * 2
    nodes = inventory_nodes(GpuConfig(real_gpus="auto"))
    real = nodes[-1]
    assert real.real and real.gpus == 2 and real.all_labels()["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert json.dumps(real.model_dump(mode="json"))  # serialisable for `gpu status --json`


def test_no_driver_means_no_real_node_unless_required(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pynvml", FakeNVML(None))
    monkeypatch.setattr(detect.shutil, "which", lambda name: None)
    assert [n.name for n in inventory_nodes(GpuConfig(real_gpus="auto"))] == ["gpu-a100", "gpu-l4", "cpu-1"]
    with pytest.raises(ConfigError, match="real_gpus"):
        inventory_nodes(GpuConfig(real_gpus="on"))


def test_node_spec_labels():
    node = NodeSpec(name="n", gpus=2, gpu_product="NVIDIA-L4", gpu_memory="24Gi")
    assert node.all_labels()["nvidia.com/gpu.memory"] == "24576"


def test_rendered_objects_are_written_as_files(tmp_path):
    config = GpuConfig(real_gpus="off")
    render.write_all(config, tmp_path / "out")
    fake_gpu_nodes = [n.name for n in config.nodes if n.gpus and not n.real]
    assert fake_gpu_nodes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["kind-config.yaml", "quotas.yaml", *(f"gpu-patch-{name}.json" for name in fake_gpu_nodes)]
    )
    assert yaml.safe_load((tmp_path / "out" / "kind-config.yaml").read_text()) == render.kind_config(config)
    assert list(yaml.safe_load_all((tmp_path / "out" / "quotas.yaml").read_text())) == render.quota_objects(config)


def test_a_workload_file_that_cannot_be_read_is_a_config_error(tmp_path):
    from sandbox.gpu import read_workload

    spec = tmp_path / "job.yaml"
    spec.write_text("name: train\nnamespace: team-a\n")
    assert (read_workload(spec).name, read_workload(spec).namespace) == ("train", "team-a")
    for text in ("name: [unclosed\n", "- a list\n", "name: x\nreplicas: 2\n"):
        spec.write_text(text)
        with pytest.raises(ConfigError, match="cannot read workload"):
            read_workload(spec)
    with pytest.raises(ConfigError, match="cannot read workload"):
        read_workload(tmp_path / "missing.yaml")
