"""What runs, read from the API: one `ServiceStatus` per component, and pod logs."""

from __future__ import annotations

from collections.abc import Iterator

from sandbox.errors import ConfigError
from sandbox.profiles.base import ServiceState, ServiceStatus
from sandbox.profiles.kube.tools import Tools, pod_ready

COMPONENT_LABEL = "app.kubernetes.io/component"


def component_statuses(
    tools: Tools, namespace: str, selector: str, urls: dict[str, str], ports: dict[str, int]
) -> list[ServiceStatus]:
    """Per component (its pods' label): running when every pod is Ready, unhealthy when one is not."""
    pods = (tools.get_json("pods", namespace=namespace, selector=selector) or {}).get("items", [])
    by_component: dict[str, list[dict]] = {}
    for pod in pods:
        if pod.get("status", {}).get("phase") == "Succeeded":
            continue  # a finished Job (the buckets): done, not a service
        by_component.setdefault(pod["metadata"].get("labels", {}).get(COMPONENT_LABEL, "other"), []).append(pod)
    statuses = []
    for name, members in sorted(by_component.items()):
        ready = [pod for pod in members if pod_ready(pod)]
        state = ServiceState.RUNNING if len(ready) == len(members) else ServiceState.UNHEALTHY
        statuses.append(
            ServiceStatus(
                name=name,
                title=name,
                state=state,
                instance=", ".join(pod["metadata"]["name"] for pod in members),
                port=ports.get(name),
                url=urls.get(name),
                detail=f"{len(ready)}/{len(members)} pods Ready",
            )
        )
    return statuses


def pod_logs(tools: Tools, namespace: str, selector: str, component: str, *, lines: int, follow: bool) -> Iterator[str]:
    """`kubectl logs -l ... --tail N [-f]` of a component's pods, as it arrives."""
    if not component or "," in component or "=" in component:
        raise ConfigError(f"no component named {component!r}", hint="see `sandbox status` for the names")
    labelled = f"{selector},{COMPONENT_LABEL}={component}"
    return tools.stream(tools.logs(namespace=namespace, lines=lines, selector=labelled, follow=follow))
