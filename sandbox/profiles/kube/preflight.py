"""What the Kubernetes profiles need from the machine, each miss named with its fix; no side effects.

Tools (Docker's daemon, kind, kubectl, helm) at their minimum versions (`versions.MIN_TOOLS`) are
required: `up` refuses without them (exit 5). The stack's resource needs (KUBERNETES.md: 4 CPU,
8 GiB, 30 GB of disk) and the inotify limits kind's known issues name are warnings: a smaller
machine may still bring it up, slowly or with pods evicted, and the fix needs root.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path

import tomllib

from sandbox.profiles.base import Check
from sandbox.profiles.kube import versions
from sandbox.profiles.kube.tools import Tools, parse_version, tool_version, version_text

NEEDS_CPU = 4
NEEDS_MEMORY_GIB = 8
NEEDS_DISK_GB = 30
INOTIFY = {"max_user_watches": 524288, "max_user_instances": 512}

INSTALL = {
    "docker": "install Docker Engine or Docker Desktop: https://docs.docker.com/engine/install/",
    "kind": "install kind {min} or newer: https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    "kubectl": "install kubectl {min} or newer: https://kubernetes.io/docs/tasks/tools/",
    "helm": "install Helm {min} or newer: https://helm.sh/docs/intro/install/",
}


def minimum(tool: str) -> tuple[int, ...]:
    pinned = versions.MIN_TOOLS[tool]
    return tuple(pinned) if not isinstance(pinned, str) else parse_version(pinned) or (0,)


def tool_checks(tools: Sequence[str]) -> list[Check]:
    checks = []
    for tool in tools:
        wanted = version_text(minimum(tool))
        fix = INSTALL[tool].format(min=wanted)
        path = shutil.which(tool)
        if path is None:
            checks.append(Check(tool, False, "not found on PATH", fix=fix))
            continue
        found = tool_version(tool)
        if found is None:
            checks.append(Check(tool, False, f"{path}: `{tool} version` gave no version", fix=fix))
            continue
        checks.append(Check(tool, found >= minimum(tool), f"{version_text(found)} at {path}", fix=f"upgrade: {fix}"))
    return checks


def docker_daemon_checks() -> list[Check]:
    """The daemon answers, and on cgroup v2 (kind's node images from Kubernetes 1.35 on need it)."""
    if shutil.which("docker") is None:
        return [Check("Docker daemon", False, "no docker client", fix=INSTALL["docker"].format(min=""))]
    tools = Tools()
    info = tools.run(
        tools.docker("info", "--format", "{{.ServerVersion}} {{.CgroupVersion}}", mutates=False, timeout_s=30),
        check=False,
    )
    server, _, cgroup = info.stdout.strip().partition(" ")
    if info.returncode != 0 or not server:
        detail = (info.stderr.strip().splitlines() or ["not reachable"])[-1]
        return [
            Check(
                "Docker daemon", False, detail, fix="start it (`sudo systemctl start docker`) and check `docker info`"
            )
        ]
    return [
        Check("Docker daemon", True, f"server {server}"),
        Check(
            "cgroup v2",
            cgroup == "2",
            f"Docker reports cgroup v{cgroup or '?'}",
            fix="kind's node images from Kubernetes 1.35 on need cgroup v2: "
            "boot with systemd.unified_cgroup_hierarchy=1",
        ),
    ]


# Kubeflow Pipelines 2.17.0 does not publish every image for arm64 (`kfp-metadata-writer` is linux/amd64 only;
# open upstream issues ask for arm64), and kind's nodes run the host's architecture: on an arm64 host (Apple
# Silicon) that pod never starts and KFP never gets Ready.
AMD64 = ("x86_64", "amd64")


def architecture_checks(machine: str | None = None) -> list[Check]:
    """kind's nodes are the host's architecture; KFP's images exist for amd64 only."""
    machine = machine or platform.machine()
    ok = machine.lower() in AMD64
    return [
        Check(
            "amd64 host",
            ok,
            f"this machine is {machine}"
            + (
                ""
                if ok
                else ": Kubeflow Pipelines' images are not all built for it (kfp-metadata-writer is amd64 only)"
            ),
            fix="run the kind profile on an amd64 machine (a Linux x86-64 host or CI runner), or use the "
            "cluster profile on an amd64 cluster; the local profile runs on arm64 (pipelines through kfp.local)",
        )
    ]


def resource_checks(root: Path) -> list[Check]:
    cpus = os.cpu_count() or 0
    memory_gib = _memory_gib()
    probe = root
    while not probe.exists():
        probe = probe.parent
    disk_gb = shutil.disk_usage(probe).free / 1e9
    return [
        Check(
            "CPU",
            cpus >= NEEDS_CPU,
            f"{cpus} CPUs (the stack asks for {NEEDS_CPU})",
            fix=f"give Docker at least {NEEDS_CPU} CPUs; with fewer, pods stay Pending",
            required=False,
        ),
        Check(
            "Memory",
            memory_gib >= NEEDS_MEMORY_GIB,
            f"{memory_gib:.1f} GiB (the stack asks for {NEEDS_MEMORY_GIB})",
            fix=f"give Docker at least {NEEDS_MEMORY_GIB} GiB (16 comfortable)",
            required=False,
        ),
        Check(
            "Disk for images",
            disk_gb >= NEEDS_DISK_GB,
            f"{disk_gb:.0f} GB free at {probe}",
            fix=f"free {NEEDS_DISK_GB} GB (`docker system prune`); kubelet evicts pods under disk pressure",
            required=False,
        ),
    ]


def inotify_checks() -> list[Check]:
    checks = []
    for key, needed in INOTIFY.items():
        path = Path("/proc/sys/fs/inotify") / key
        if not path.exists():
            continue  # not Linux: Docker Desktop's VM has its own limits
        value = int(path.read_text().strip() or 0)
        checks.append(
            Check(
                f"fs.inotify.{key}",
                value >= needed,
                f"{value} (kind needs {needed})",
                fix=f"sudo sysctl fs.inotify.{key}={needed}, else pods fail with 'too many open files'",
                required=False,
            )
        )
    return checks


# The host side of nvkind's way (NVIDIA/nvkind README.md, "Setup"; its gpu-e2e workflow runs the same):
# Docker's default runtime is NVIDIA's, and that runtime reads GPUs from volume mounts.
NVIDIA_RUNTIME_CONFIG = Path("/etc/nvidia-container-runtime/config.toml")
VOLUME_MOUNTS_SETTING = "accept-nvidia-visible-devices-as-volume-mounts"
NVIDIA_FIXES = {
    "nvidia-ctk": "install the NVIDIA container toolkit: "
    "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html",
    "runtime": "sudo nvidia-ctk runtime configure --runtime=docker --set-as-default --cdi.enabled "
    "&& sudo systemctl restart docker",
    "volume-mounts": f"sudo nvidia-ctk config --set {VOLUME_MOUNTS_SETTING}=true --in-place "
    "&& sudo systemctl restart docker",
}


def real_gpu_checks(*, required: bool, config: Path | None = None) -> list[Check]:
    """What nvkind needs from the host to hand GPUs to kind nodes, each miss named with its fix.

    ``required``: `gpu.real_gpus: on` (a miss refuses `up`); with `auto` a miss is a warning and the
    kind profile falls back to fake GPUs."""
    config = config or NVIDIA_RUNTIME_CONFIG
    checks = []
    ctk = shutil.which("nvidia-ctk")
    checks.append(
        Check(
            "nvidia-ctk",
            ctk is not None,
            f"at {ctk}" if ctk else "not found on PATH",
            fix=NVIDIA_FIXES["nvidia-ctk"],
            required=required,
        )
    )
    runtime = ""
    if shutil.which("docker") is not None:
        tools = Tools()
        ask = tools.docker("info", "--format", "{{.DefaultRuntime}}", mutates=False, timeout_s=30)
        info = tools.run(ask, check=False)
        runtime = info.stdout.strip() if info.returncode == 0 else ""
    checks.append(
        Check(
            "Docker's default runtime nvidia",
            runtime == "nvidia",
            f"Docker's default runtime is {runtime or 'unknown (no answer from `docker info`)'}",
            fix=NVIDIA_FIXES["runtime"],
            required=required,
        )
    )
    checks.append(_volume_mounts_check(config, required))
    return checks


def _volume_mounts_check(config: Path, required: bool) -> Check:
    """The setting is a top-level key of the toolkit's config.toml (commented out, false, by default)."""
    name, fix = VOLUME_MOUNTS_SETTING, NVIDIA_FIXES["volume-mounts"]
    try:
        value = tomllib.loads(config.read_text()).get(name)
    except FileNotFoundError:
        return Check(name, False, f"{config} does not exist", fix=fix, required=required)
    except (OSError, tomllib.TOMLDecodeError) as error:
        return Check(name, False, f"{config} cannot be read: {error}", fix=fix, required=required)
    shown = "(not set)" if value is None else str(value).lower()
    return Check(name, value is True, f"{name} = {shown} in {config}", fix=fix, required=required)


def failed(checks: Sequence[Check]) -> list[Check]:
    return [check for check in checks if check.required and not check.ok]


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0
