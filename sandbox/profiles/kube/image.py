"""The project's image on kind: named by a digest of its build context, loaded only where its pods can run.

A tag that stays `ml-sandbox:0.1.0` while the code changes would never be rebuilt by a done-check that asks
"is this tag in the node?", and pods that name an unchanged tag are never replaced. So the tag carries the
first 12 hex digits of a SHA-256 over the files the Dockerfile's build context holds (`.dockerignore`'s
allow-list): a changed file is a new tag, a new build, a new `kind load` and new pods.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sandbox.profiles.kube import versions

# What `.dockerignore` lets into the build context (its `!` lines), plus the two files that decide how it
# is built. A test keeps this list equal to `.dockerignore`'s.
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "requirements.lock")
CONTEXT_FOLDERS = ("sandbox", "loadtests", "docker")
_SKIPPED = ("__pycache__", ".pytest_cache", ".ruff_cache")
DIGEST_LABEL = "ml-sandbox.context-digest"  # also set on the image (`docker build --label`)
# Taint effects that keep a pod off a node unless it tolerates them.
_REPELLING = ("NoSchedule", "NoExecute")


def context_digest(root: Path) -> str:
    """SHA-256 over each context file's relative path and bytes, in a stable order."""
    digest = hashlib.sha256()
    paths = [root / name for name in CONTEXT_FILES if (root / name).is_file()]
    for folder in CONTEXT_FOLDERS:
        if (root / folder).is_dir():
            paths += sorted(
                path
                for path in (root / folder).rglob("*")
                if path.is_file() and not any(part in _SKIPPED for part in path.parts) and path.suffix != ".pyc"
            )
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def project_image(build_context: Path | None) -> str:
    """`ml-sandbox:VERSION-DIGEST12` when the build context is here to be digested, else `ml-sandbox:VERSION`."""
    if build_context is None or not (build_context / "Dockerfile").is_file():
        return versions.project_image()
    return versions.project_image(f"{versions.project_version()}-{context_digest(build_context)[:12]}")


def _tolerated(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    for toleration in tolerations:
        effect_ok = not toleration.get("effect") or toleration["effect"] == taint.get("effect")
        key_ok = toleration.get("key") == taint.get("key") or (
            not toleration.get("key") and toleration.get("operator") == "Exists"
        )
        value_ok = toleration.get("operator") == "Exists" or toleration.get("value") == taint.get("value")
        if effect_ok and key_ok and value_ok:
            return True
    return False


def nodes_for(nodes: Iterable[Mapping[str, Any]], tolerations: Iterable[Mapping[str, Any]]) -> list[str]:
    """The nodes a pod with ``tolerations`` may be scheduled on, by taints alone (kind's multi-node control
    plane keeps its NoSchedule taint: nothing of the stack runs there, so the image need not be copied in)."""
    tolerations = list(tolerations)
    chosen = []
    for node in nodes:
        taints = [t for t in node.get("spec", {}).get("taints") or [] if t.get("effect") in _REPELLING]
        if all(_tolerated(taint, tolerations) for taint in taints):
            chosen.append(node["metadata"]["name"])
    return sorted(chosen)
