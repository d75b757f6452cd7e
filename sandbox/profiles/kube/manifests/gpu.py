"""GPUs on Kubernetes: this machine's real GPUs in kind nodes (nvkind's way), and what a GPU pod tolerates.

Run in each real-GPU kind node (`docker exec NODE bash -c ...`), as nvkind does after `kind create cluster`
(NVIDIA/nvkind cmd/nvkind/cluster_create.go: InstallContainerToolkit, ConfigureContainerRuntime,
PatchProcDriverNvidia, in that order; the scripts are those of pkg/nvkind/node.go, kept in `scripts/nvidia-*.sh`).
`--set-as-default` makes the nvidia runtime containerd's default, so a pod asking for `nvidia.com/gpu` gets its
device with or without `runtimeClassName: nvidia`.

Toolkits before v1.19.0 bind-mount a tmpfs over /proc/driver/nvidia in the node; nvkind unmounts it and masks
`ModifyDeviceFiles` so the driver does not recreate device nodes. Toolkits from v1.19.0 on already leave
`ModifyDeviceFiles: 0` there, and the script does nothing (as nvkind checks first). The copy goes to
/root/gpu-params (nvkind writes `root/gpu-params`, relative to the exec's working folder, /). In the toolkit
script, `gpg --dearmor --yes` (nvkind has no `--yes`) lets a second run overwrite the keyring.
"""

from __future__ import annotations

from typing import Any

from sandbox.gpu import render as gpu_render
from sandbox.gpu.inventory import NodeSpec
from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests.operators import HelmRelease
from sandbox.profiles.kube.manifests.spec import GPU, StackSpec, labels, script

TITLE = "Real GPUs (NVIDIA toolkit in the GPU nodes, device plugin)"


def nvidia_node_scripts() -> tuple[tuple[str, str], ...]:
    """(what it does, the script) for each step nvkind runs in a real-GPU node, in order."""
    return (
        (
            "install the NVIDIA container toolkit",
            script("nvidia-toolkit.sh", NVIDIA_TOOLKIT_APT=versions.NVIDIA_TOOLKIT_APT),
        ),
        ("make nvidia containerd's default runtime", script("nvidia-containerd.sh")),
        ("unmask /proc/driver/nvidia", script("nvidia-proc.sh")),
    )


def real_gpu_nodes(spec: StackSpec) -> list[NodeSpec]:
    """The inventory's nodes that carry this machine's GPUs (`NodeSpec.real`)."""
    return [node for node in spec.gpu.nodes if node.real and node.gpus]


def fake_gpu_nodes(spec: StackSpec) -> list[NodeSpec]:
    """The inventory's GPU nodes whose GPUs are advertised on the node's status only (scheduling, no device)."""
    return [node for node in spec.gpu.nodes if node.gpus and not node.real]


def real_gpu_objects(spec: StackSpec) -> list[dict[str, Any]]:
    """The RuntimeClass the device plugin (and any pod that names it) runs with; none without real GPUs."""
    if not real_gpu_nodes(spec):
        return []
    return [
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": versions.NVIDIA_RUNTIME_CLASS, "labels": labels(spec, "gpu")},
            "handler": versions.NVIDIA_RUNTIME_CLASS,
        }
    ]


def device_plugin_release(spec: StackSpec) -> HelmRelease | None:
    """NVIDIA's device plugin on the real-GPU nodes only, run with the nvidia runtime."""
    nodes = real_gpu_nodes(spec)
    if not nodes:
        return None
    # The chart's default tolerations, which `tolerations` replaces, plus each GPU node's own taints.
    tolerations = [
        {"key": "CriticalAddonsOnly", "operator": "Exists"},
        {"key": GPU, "operator": "Exists", "effect": "NoSchedule"},
    ]
    for node in nodes:
        for taint in node.taints:
            toleration = {"key": taint.key, "operator": "Exists", "effect": taint.effect}
            if toleration not in tolerations:
                tolerations.append(toleration)
    values = {
        "runtimeClassName": versions.NVIDIA_RUNTIME_CLASS,
        "nodeSelector": {gpu_render.GPU_PRESENT_LABEL: "true"},
        "tolerations": tolerations,
    }
    return HelmRelease("nvidia-device-plugin", versions.NVIDIA_DEVICE_PLUGIN, values)


def gpu_tolerations(spec: StackSpec) -> list[dict[str, Any]]:
    """Tolerations for every taint the inventory's GPU nodes carry (`nvidia.com/gpu` at least): what a pod
    asking for GPUs (a predictor with `--gpus`) needs to be scheduled there."""
    tolerations = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    for node in spec.gpu.nodes:
        if not node.gpus:
            continue
        for taint in node.taints:
            toleration = {"key": taint.key, "operator": "Exists", "effect": taint.effect}
            if toleration not in tolerations:
                tolerations.append(toleration)
    return tolerations
