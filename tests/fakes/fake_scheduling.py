"""FAKE answers of the API server and kube-scheduler about Pods, scripted by each test: nothing here schedules.

The FAKE kubectl (`fakecluster.kubectl`) hands Pod-level calls to `kubectl()` below. It decides
nothing by itself: deciding here would make the GPU parity test circular (the local model checked
against a copy of itself). A test scripts, per Pod (`namespace/name`), what the real API would answer:

- `refuse`: `kubectl create` of the Pod fails with this output (exit 1), e.g. the ResourceQuota
  admission's `Error from server (Forbidden): error when creating "STDIN": pods "w" is forbidden:
  exceeded quota: ...`;
- `pending`: the Pod is created and gets `PodScheduled=False`, reason `Unschedulable`, with this message;
- `place`: the Pod is created and bound to this node (`spec.nodeName`, `PodScheduled=True`);
- `unanswered`: created, and no PodScheduled condition ever comes;
- `after_delete`: when this Pod is deleted, these other Pods get bound to these nodes.

Labelled Pods and ResourceQuotas are also listed and deleted across namespaces (`-A -l ...`), as `down` does.

Unscripted Pods are admitted and bound to the cluster's first node. A ResourceQuota read by name
shows a status as the quota controller would fill it (hard from its spec, used zero unless stored).

`Script` writes these into the FAKE state (`FakeTools.seed`, key `scheduling`); `node_object`
builds a Node as the kind profile leaves it (inventory label, taints, the fake GPU status patch).
"""

from __future__ import annotations

import json
from typing import Any

SCRIPT_KEYS = ("refuse", "verdicts", "after_delete")


def _fail(message: str):
    # The FAKE kubectl's own error, from the same module object that catches it (imported late: it imports this
    # module; as a sibling in-process, top-level in the executables: see fakecluster's imports).
    if __package__:
        from .fakecluster import Fail
    else:
        from fakecluster import Fail
    return Fail(message)


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


def _labelled(obj: dict, selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels", {}) or {}
    return all(labels.get(k) == v for k, v in (part.split("=", 1) for part in selector.split(",")))


def kubectl(data: dict, store: dict, nodes: dict, args: list[str], objects: list[dict], namespace: str | None):
    """The FAKE answer to a Pod-level kubectl call, or None for calls the rest of the FAKE handles."""
    script = data.setdefault("scheduling", {})
    for key in SCRIPT_KEYS:
        script.setdefault(key, {})
    verb = args[0]
    if verb == "create" and objects and all(o.get("kind") == "Pod" for o in objects):
        return "\n".join(_create(script, store, nodes, pod) for pod in objects)
    if verb == "get" and args[1] == "resourcequota" and len(args) > 2 and not args[2].startswith("-"):
        # FAKE quota controller: status.hard from the spec, status.used as stored (zeros when none).
        quota = store.get(f"ResourceQuota/{namespace or 'default'}/{args[2]}")
        if quota is None:
            raise _fail(f'Error from server (NotFound): resourcequotas "{args[2]}" not found')
        hard = quota.get("spec", {}).get("hard", {})
        status = quota.get("status") or {"hard": dict(hard), "used": dict.fromkeys(hard, "0")}
        return json.dumps({**quota, "status": status})
    if verb == "get" and "-A" in args and args[1] in ("pods", "resourcequotas"):
        kind = {"pods": "Pod", "resourcequotas": "ResourceQuota"}[args[1]]
        selector = _option(args, "-l")
        items = [o for o in store.values() if o.get("kind") == kind and _labelled(o, selector)]
        return json.dumps({"kind": "List", "items": items})
    if verb == "delete" and "-A" in args and args[1] in ("pods", "resourcequotas"):
        # Every labelled one, in every namespace (`kubectl delete pods -A -l ...`): what `down` removes.
        kind = {"pods": "Pod", "resourcequotas": "ResourceQuota"}[args[1]]
        selector = _option(args, "-l")
        gone = [k for k, o in store.items() if o.get("kind") == kind and _labelled(o, selector)]
        return "\n".join(f'{args[1][:-1]} "{store.pop(k)["metadata"]["name"]}" deleted' for k in gone)
    if verb == "delete" and len(args) > 2 and args[1] in ("pod", "resourcequota") and not args[2].startswith("-"):
        kind = {"pod": "Pod", "resourcequota": "ResourceQuota"}[args[1]]
        name, ns = args[2], namespace or "default"
        obj = store.pop(f"{kind}/{ns}/{name}", None)
        if obj is None:
            if "--ignore-not-found" in args:
                return ""
            raise _fail(f'Error from server (NotFound): {args[1]}s "{name}" not found')
        if kind == "Pod":
            for other, node in script["after_delete"].get(f"{ns}/{name}", {}).items():
                pod = store.get(f"Pod/{other}")
                if pod is not None:
                    _bind(pod, node)
        return f'{args[1]} "{name}" deleted'
    return None


def _create(script: dict, store: dict, nodes: dict, pod: dict) -> str:
    meta = pod["metadata"]
    ns, name = meta.get("namespace", "default"), meta["name"]
    if ns != "default" and f"Namespace//{ns}" not in store:
        raise _fail(f'Error from server (NotFound): error when creating "STDIN": namespaces "{ns}" not found')
    if f"Pod/{ns}/{name}" in store:
        raise _fail(f'Error from server (AlreadyExists): error when creating "STDIN": pods "{name}" already exists')
    refusal = script["refuse"].get(f"{ns}/{name}")
    if refusal is not None:
        raise _fail(refusal)
    pod = json.loads(json.dumps(pod))
    created = sum(1 for o in store.values() if o.get("kind") == "Pod")  # one second apart, in creation order
    pod["metadata"]["creationTimestamp"] = f"2026-11-27T10:{created // 60:02d}:{created % 60:02d}Z"
    pod["status"] = {"phase": "Pending"}
    answer = script["verdicts"].get(f"{ns}/{name}", {"place": next(iter(nodes), "fake-node")})
    if "place" in answer:
        _bind(pod, answer["place"])
    elif "pending" in answer:
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": answer["pending"]}
        pod["status"]["conditions"] = [condition]
    store[f"Pod/{ns}/{name}"] = pod
    return f"pod/{name} created"


def _bind(pod: dict, node: str) -> None:
    pod.setdefault("spec", {})["nodeName"] = node
    pod["status"] = {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}]}


# --------------------------------------------------------------------------- what tests use


class Script:
    """Writes a test's scripted API answers into the FAKE state (see the module docstring)."""

    def __init__(self, fakes):
        self.fakes = fakes

    def _edit(self, section: str, key: str, value: Any) -> None:
        data = self.fakes.state()
        script = data.setdefault("scheduling", {})
        for name in SCRIPT_KEYS:
            script.setdefault(name, {})
        script[section][key] = value
        self.fakes.seed(data)

    def refuse(self, namespace: str, name: str, output: str) -> None:
        """`kubectl create` of this Pod prints ``output`` (kubectl's whole error line) and exits 1."""
        self._edit("refuse", f"{namespace}/{name}", output)

    def pending(self, namespace: str, name: str, message: str) -> None:
        self._edit("verdicts", f"{namespace}/{name}", {"pending": message})

    def place(self, namespace: str, name: str, node: str) -> None:
        self._edit("verdicts", f"{namespace}/{name}", {"place": node})

    def unanswered(self, namespace: str, name: str) -> None:
        self._edit("verdicts", f"{namespace}/{name}", {"none": True})

    def after_delete(self, namespace: str, name: str, started: dict[str, str]) -> None:
        """Deleting this Pod binds each of ``started`` (`namespace/name` → node)."""
        self._edit("after_delete", f"{namespace}/{name}", started)


def node_object(name: str, spec, *, real: bool = False) -> dict[str, Any]:
    """A Node as the kind profile leaves an inventory node (``spec``, a `NodeSpec`): named by kind, the
    inventory name in `ml-sandbox/inventory-node`, its taints, its GPUs patched onto the status (or
    advertised by the device plugin when ``real``, with `nvidia.com/gpu.present=true`)."""
    labels = {"kubernetes.io/hostname": name, "ml-sandbox/inventory-node": spec.name}
    labels.update({k: v for k, v in spec.all_labels().items() if k != "kubernetes.io/hostname"})
    if real:
        labels["nvidia.com/gpu.present"] = "true"
    resources = {"cpu": spec.cpu, "memory": spec.memory, "pods": str(spec.pods)}
    if spec.gpus:
        resources["nvidia.com/gpu"] = str(spec.gpus)
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [{"key": t.key, "value": t.value, "effect": t.effect} for t in spec.taints]},
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }
