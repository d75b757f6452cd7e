"""FAKE KServe controller for the FAKE kubectl (tests/fakes/fakecluster.py): nothing here is KServe.

What the real controller does in Standard mode, reduced to what the sandbox's serving backend reads:
an applied InferenceService NAME gets, at once, a predictor Service `NAME-predictor` (port 80 to the
first container port, further ports as they are), a Deployment of the same name (the InferenceService's
labels, and its and the predictor's annotations on the pod template), a predictor pod carrying
`serving.kserve.io/inferenceservice: NAME` and the InferenceService's labels, and a status whose
`Ready` condition is True with `status.url`. When NAME matches `$FAKE_TOOLS_UNREADY` (a regular
expression), Ready is False with a reason and message, the pod stays Pending, and that pod has its own
events and log lines (what a model the runtime cannot load looks like); `kubectl wait
inferenceservice/NAME --for=condition=Ready` then times out as kubectl does. Deleting an
InferenceService deletes what it owns.
"""

from __future__ import annotations

import os
import re

PLURALS = {
    "inferenceservices": "InferenceService",
    "inferenceservice": "InferenceService",
    "serviceaccounts": "ServiceAccount",
    "serviceaccount": "ServiceAccount",
}
ISVC_LABEL = "serving.kserve.io/inferenceservice"
UNREADY_EVENTS = (
    "LAST SEEN  TYPE     REASON     OBJECT  MESSAGE\n"
    "12s        Warning  BackOff    pod/{pod}  FAKE event: Back-off restarting failed container kserve-container"
)
UNREADY_LOG = (
    "FAKE predictor log: loading model from storage\n"
    "FAKE predictor log: mlflow.exceptions.MlflowException: FAKE the model flavor cannot be loaded by this runtime"
)


def _key(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def _unready(name: str) -> bool:
    pattern = os.environ.get("FAKE_TOOLS_UNREADY")
    return bool(pattern) and re.fullmatch(pattern, name) is not None


def applied(store: dict, obj: dict) -> None:
    """After an object is stored: an InferenceService gets what the controller would make for it."""
    if obj["kind"] != "InferenceService":
        return
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    owner = [{"apiVersion": obj["apiVersion"], "kind": "InferenceService", "name": name}]
    service_name = f"{name}-predictor"
    predictor = obj["spec"]["predictor"]
    container_ports = [p["containerPort"] for c in predictor.get("containers", []) for p in c.get("ports", [])]
    ports = [{"port": 80, "targetPort": (container_ports or [8080])[0]}]
    ports += [{"port": port, "targetPort": port} for port in container_ports[1:]]
    store[_key("Service", namespace, service_name)] = {
        "kind": "Service",
        "metadata": {"name": service_name, "namespace": namespace, "ownerReferences": owner, "labels": {}},
        "spec": {"ports": ports},
    }
    unready = _unready(name)
    pod_name = f"{service_name}-7d9c5b-x2x4q"
    labels = {**obj["metadata"].get("labels", {}), ISVC_LABEL: name, "component": "predictor"}
    ready = {"type": "Ready", "status": "False" if unready else "True"}
    if unready:
        ready["reason"] = "ContainersNotReady"
    store[_key("Pod", namespace, pod_name)] = {
        "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": namespace, "labels": labels, "ownerReferences": owner},
        "status": {"phase": "Pending" if unready else "Running", "conditions": [ready]},
        "fake_events": UNREADY_EVENTS.format(pod=pod_name) if unready else None,
        "fake_log": UNREADY_LOG if unready else None,
    }
    # The predictor's Deployment, named as its Service, with the InferenceService's labels and, on its pod
    # template, the InferenceService's and the predictor's annotations (kserve components/predictor.go).
    annotations = {**obj["metadata"].get("annotations", {}), **predictor.get("annotations", {})}
    store[_key("Deployment", namespace, service_name)] = {
        "kind": "Deployment",
        "metadata": {"name": service_name, "namespace": namespace, "labels": labels, "ownerReferences": owner},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": labels, "annotations": annotations}}},
        "status": {"replicas": 1, "readyReplicas": 0 if unready else 1},
    }
    url = f"http://{service_name}.{namespace}.svc.cluster.local"
    if unready:
        conditions = [
            {"type": "PredictorReady", "status": "False", "reason": "ContainersNotReady"},
            {
                "type": "Ready",
                "status": "False",
                "reason": "PredictorNotReady",
                "message": "FAKE predictor pod is not ready: containers with unready status: [kserve-container]",
            },
        ]
        obj["status"] = {"conditions": conditions}
    else:
        conditions = [{"type": t, "status": "True"} for t in ("IngressReady", "PredictorReady", "Ready")]
        obj["status"] = {"conditions": conditions, "url": url, "address": {"url": url}}


def deleted(store: dict, owner: dict) -> None:
    """Garbage collection: what an InferenceService owns goes with it."""
    if owner.get("kind") != "InferenceService":
        return
    for key, obj in list(store.items()):
        refs = obj.get("metadata", {}).get("ownerReferences", [])
        if any(ref.get("kind") == "InferenceService" and ref["name"] == owner["metadata"]["name"] for ref in refs):
            store.pop(key)


def waited(obj: dict | None, target: str) -> str | None:
    """`kubectl wait inferenceservice/NAME --for=condition=Ready`: kubectl's own timeout error when not Ready."""
    if obj is None or obj.get("kind") != "InferenceService":
        return None
    ready = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
    if ready and ready[0]["status"] == "True":
        return None
    return f"error: timed out waiting for the condition on inferenceservices/{target.split('/', 1)[1]}"


def events(store: dict, args: list[str]) -> str | None:
    """`kubectl get events --field-selector involvedObject.name=POD`: the pod's own FAKE events, if it has some."""
    for index, arg in enumerate(args):
        if arg == "--field-selector" and index + 1 < len(args):
            name = args[index + 1].split("=", 1)[1]
            for obj in store.values():
                if obj["kind"] == "Pod" and obj["metadata"]["name"] == name and obj.get("fake_events"):
                    return obj["fake_events"]
    return None


def logs(store: dict, args: list[str]) -> str | None:
    """`kubectl logs POD` (or `-l SELECTOR`): the predictor pods' FAKE log lines, if they have some."""
    words = [a for a in args[1:] if not a.startswith("-")]
    selector = next((args[i + 1] for i, a in enumerate(args) if a == "-l" and i + 1 < len(args)), None)
    lines = []
    for obj in store.values():
        if obj["kind"] != "Pod" or not obj.get("fake_log"):
            continue
        labels = obj["metadata"].get("labels", {})
        if obj["metadata"]["name"] in words or (
            selector and all(labels.get(k) == v for k, v in (p.split("=", 1) for p in selector.split(",")))
        ):
            lines.append(obj["fake_log"])
    return "\n".join(lines) or None
