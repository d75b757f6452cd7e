"""Rules every Kubernetes plan must keep, checked offline over the one list of actions `up` would run.

A real bring-up fails on each of these in minutes, and a fake cluster never does (it encodes our own beliefs),
so they are checked on every plan: by `up` before it runs anything, by `up --dry-run`, and in unit tests.

(a) every image a pod template names is pinned by tag and digest, or built and loaded by an earlier action;
(b) every wait's target is made by an earlier action or the same one;
(c) nothing the sandbox labels as its own (what `down` deletes by) is an upstream install's object;
(d) no NetworkPolicy selects pods the sandbox did not make;
(e) every container of the stack sets CPU and memory requests and limits;
(f) every timeout in a command is one of the `kube.timeouts` settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from sandbox.config import KubeTimeouts
from sandbox.errors import ConfigError
from sandbox.profiles.kube import upstream
from sandbox.profiles.kube.manifests.spec import MANAGED_BY, containers
from sandbox.profiles.kube.plan import KubeAction, Ref, ref_of

_PINNED = re.compile(r"^[^@\s]+:[^@\s/]+@sha256:[0-9a-f]{64}$")
_TIMEOUT = re.compile(r"--(?:timeout|wait)[= ](\d+)s\b")
_OWN = "app.kubernetes.io/managed-by"


class PlanInvariantError(ConfigError):
    """A plan breaks a rule every plan must keep (a bug in the plan: nothing was run)."""


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


def _covers(made: Ref, wanted: Ref) -> bool:
    kind, namespace, name = made
    return kind == wanted[0] and (namespace == wanted[1] or namespace == "*") and name in (wanted[2], "*")


def _made_by(action: KubeAction) -> list[Ref]:
    made = [ref_of(obj) for obj in action.effects.applies]
    made += list(action.effects.creates)
    # A workload's, a Job's or a namespace's pods: what a `wait pods` in that namespace waits for.
    made += [("pod", ref[1], "*") for ref in made if ref[0] in ("deployment", "statefulset", "job", "daemonset")]
    return made


def _applied(actions: Sequence[KubeAction]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(how a problem names the action, object) for every object every action applies, in plan order."""
    for number, action in enumerate(actions, 1):
        for obj in action.effects.applies:
            yield f"action {number} ({action.title})", obj


def images(actions: Sequence[KubeAction]) -> list[str]:
    problems = []
    provided: set[str] = set()
    for number, action in enumerate(actions, 1):
        for obj in action.effects.applies:
            for container in containers(obj):
                image = container.get("image", "")
                if image in provided or _PINNED.match(image):
                    continue
                why = "is built in this action, after" if image in action.effects.images else "is neither pinned"
                problems.append(
                    f"(a) action {number} ({action.title}): {_name(obj)} uses image {image!r}, which {why}"
                    + (" it is used" if "after" in why else " (tag@sha256:digest) nor built and loaded earlier")
                )
        provided.update(action.effects.images)
    return problems


def waits(actions: Sequence[KubeAction]) -> list[str]:
    problems = []
    made: list[Ref] = []
    for number, action in enumerate(actions, 1):
        made += _made_by(action)
        for wanted in action.effects.waits:
            if not any(_covers(ref, wanted) for ref in made):
                kind, namespace, name = wanted
                problems.append(
                    f"(b) action {number} ({action.title}) waits for {kind} {namespace + '/' if namespace else ''}"
                    f"{name}, which no earlier action makes"
                )
    return problems


def upstream_untouched(actions: Sequence[KubeAction]) -> list[str]:
    problems = []
    theirs = set(upstream.all_objects())
    for action in actions:
        theirs.update(action.effects.upstream)
    for where, obj in _applied(actions):
        if _OWN in (obj.get("metadata", {}).get("labels") or {}) and ref_of(obj) in theirs:
            problems.append(
                f"(c) {where}: {_name(obj)} belongs to an upstream install but carries the sandbox's labels, "
                "so `down` would delete it"
            )
    return problems


def network_policies(actions: Sequence[KubeAction]) -> list[str]:
    problems = []
    for where, obj in _applied(actions):
        if obj.get("kind") != "NetworkPolicy":
            continue
        labels = (obj.get("spec", {}).get("podSelector") or {}).get("matchLabels") or {}
        if labels.get(_OWN) != MANAGED_BY or "app.kubernetes.io/instance" not in labels:
            problems.append(
                f"(d) {where}: {_name(obj)} selects pods by {labels or 'nothing'}: it may select pods the sandbox "
                f"did not make (select on {_OWN} and the instance label)"
            )
    return problems


def resources(actions: Sequence[KubeAction]) -> list[str]:
    problems = []
    for where, obj in _applied(actions):
        for container in containers(obj):
            given = container.get("resources") or {}
            missing = [
                f"{part}.{resource}"
                for part in ("requests", "limits")
                for resource in ("cpu", "memory")
                if resource not in (given.get(part) or {})
            ]
            if missing:
                problems.append(
                    f"(e) {where}: container {container.get('name')} of {_name(obj)} sets no {', '.join(missing)}"
                )
    return problems


def timeouts(actions: Sequence[KubeAction], settings: KubeTimeouts) -> list[str]:
    allowed = set(settings.model_dump().values())
    problems = []
    for number, action in enumerate(actions, 1):
        for command in action.commands:
            for seconds in _TIMEOUT.findall(command):
                if int(seconds) not in allowed:
                    problems.append(
                        f"(f) action {number} ({action.title}): a timeout of {seconds}s is not a setting "
                        f"(kube.timeouts.*): {command[:120]}"
                    )
    return problems


def problems(actions: Sequence[KubeAction], settings: KubeTimeouts) -> list[str]:
    return [
        *images(actions),
        *waits(actions),
        *upstream_untouched(actions),
        *network_policies(actions),
        *resources(actions),
        *timeouts(actions, settings),
    ]


def check_plan(actions: Sequence[KubeAction], settings: KubeTimeouts) -> None:
    """Raise `PlanInvariantError` naming every broken rule (nothing has run yet)."""
    found = problems(actions, settings)
    if found:
        raise PlanInvariantError(
            f"the plan breaks {len(found)} rule(s) every plan must keep: {found[0]}",
            hint="this is a bug in the Kubernetes profile (sandbox/profiles/kube/); nothing was created",
            details="\n".join(found),
        )
