"""`sandbox diagnose` on Kubernetes: one archive with what explains a failed or sick stack.

For every namespace the plan touches (the stack's, the quotas', KFP's, KServe's, cert-manager's, the device
plugin's): its events in time order, `describe` of its pods, the pod list, and each pod's log (all containers,
the last 500 lines, and the previous container's last 200 when it restarted); for the cluster: its nodes and
Helm releases. What KFP's CI dumps on a failure, in one private `.tar.gz` that a CI job can upload.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

from sandbox.profiles.kube.tools import Command, Tools

LOG_LINES = 500
PREVIOUS_LOG_LINES = 200


def _text(tools: Tools, command: Command) -> str:
    result = tools.run(command, check=False)
    text = f"$ {command.line}\n{result.stdout}"
    if result.returncode != 0:
        text += f"\n(exit {result.returncode})\n{result.stderr}"
    return text


def collect(tools: Tools, namespaces: Sequence[str]) -> dict[str, str]:
    """File name → content: everything `collect` reads, read with check=False (a missing part is noted)."""
    files: dict[str, str] = {
        "cluster/nodes.txt": _text(tools, tools.kubectl("get", "nodes", "-o", "wide", mutates=False, timeout_s=60)),
        "cluster/nodes-describe.txt": _text(tools, tools.kubectl("describe", "nodes", mutates=False, timeout_s=120)),
        "cluster/helm-releases.txt": _text(tools, tools.helm("list", "-A", mutates=False, timeout_s=60)),
    }
    for namespace in namespaces:

        def get(*args: str, timeout_s: int = 60, namespace: str = namespace) -> str:
            return _text(tools, tools.kubectl(*args, "-n", namespace, mutates=False, timeout_s=timeout_s))

        files[f"{namespace}/events.txt"] = get("get", "events", "--sort-by=.lastTimestamp")
        files[f"{namespace}/pods.txt"] = get("get", "pods", "-o", "wide")
        files[f"{namespace}/pods-describe.txt"] = get("describe", "pods", timeout_s=120)
        pods = (tools.get_json("pods", namespace=namespace) or {}).get("items", [])
        for pod in pods:
            name = pod["metadata"]["name"]
            files[f"{namespace}/logs/{name}.txt"] = get(
                "logs", name, "--all-containers", "--prefix", f"--tail={LOG_LINES}", timeout_s=120
            )
            restarted = any(s.get("restartCount", 0) for s in pod.get("status", {}).get("containerStatuses", []))
            if restarted:
                files[f"{namespace}/logs/{name}-previous.txt"] = get(
                    "logs", name, "--all-containers", "--prefix", "--previous", f"--tail={PREVIOUS_LOG_LINES}"
                )
    return files


def write_archive(files: dict[str, str], out: Path, *, folder: str) -> Path:
    """``files`` under ``folder/`` in a gzip'd tar at ``out`` (0600: logs may name what they should not)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as stream, tarfile.open(fileobj=stream, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            archive.addfile(info, io.BytesIO(data))
    return out
