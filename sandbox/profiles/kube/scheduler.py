"""The Kubernetes profiles' scheduler backend: real Pods against the real ResourceQuota and scheduler.

`KubeScheduler` is a `sandbox.gpu.backend.SchedulerBackend` over kubectl (always with an explicit
context). Nothing is decided here: admission is the API server's (ResourceQuota, Pod validation),
placement is kube-scheduler's, and this module only turns their answers into the neutral types.

- `submit`: a Pod (`pod_object`) created with `kubectl create -f -`, so admission runs exactly as
  for any client. A refusal (`Error from server (Forbidden): ... exceeded quota: ...`, `failed
  quota: ...`, `... is invalid: ...`, `already exists`) is a Rejected decision carrying the API's
  own message. Then the scheduler's verdict, waited for (bounded): `PodScheduled=True` →
  Scheduled on its node; `PodScheduled=False` (reason Unschedulable) → Pending with the
  FailedScheduling message. Device ids: none. A fake GPU (`nvidia.com/gpu` patched onto a node's
  status) is only counted, never allocated; with NVIDIA's device plugin the kubelet allocates
  devices, but which ones is not in the Pod object (it is in the container's environment and the
  kubelet's pod-resources API, neither reachable through the API server), so a decision's
  `devices` and `env` stay empty on this backend.
- `release`: the Pod deleted (and waited for, so its resources are free), then the sandbox's
  pending Pods that the scheduler placed within a bounded wait, oldest first.
- `apply_quota`: a labelled ResourceQuota, waited for until the quota controller has counted its
  namespace's use (before that, admission refuses every Pod there: "status unknown for quota").
- `snapshot`: nodes' allocatable and the requests of every non-terminated Pod on them (what
  `kubectl describe node` sums), the sandbox's workload Pods, and its ResourceQuotas' status.

Quotas and workloads in the namespace `default` go to the stack's namespace, as the inventory's
quotas do (`manifests.namespace.quota_namespaces`). Namespaces a workload or quota needs are created,
labelled, when missing (then their `default` ServiceAccount is waited for: Pods are refused until it
exists); one the scheduler created is deleted with its last quota once no Pod is left in it.

`remove_workloads(tools, instance)` is `down`'s part: it deletes the workload Pods (in every namespace, by
their labels), the quotas the backend applied, and the namespaces the backend created (by their label; never
a namespace it did not create).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import yaml

from sandbox.gpu import quantity
from sandbox.gpu.backend import NodeUsage, QuotaUsage, SchedulerSnapshot, WorkloadState
from sandbox.gpu.inventory import GPU_MEMORY_LABEL, GPU_PRODUCT_LABEL, NodeSpec, QuotaSpec, Taint
from sandbox.gpu.render import GPU_PRESENT_LABEL, INVENTORY_LABEL
from sandbox.gpu.scheduler import CONTAINER, SchedulingDecision, Workload
from sandbox.profiles.kube.manifests.spec import MANAGED_BY, instance_labels
from sandbox.profiles.kube.tools import ToolError, Tools, status_condition
from sandbox.profiles.locking import locked, unlocked

# The image of a workload Pod: it only has to exist for the scheduler's verdict, never to do work.
# kind bakes the images of `kubeadm config images list` into its node image, the pause image among
# them; kubeadm pins PauseVersion 3.10.1 for Kubernetes 1.34 and 1.35 (cmd/kubeadm/app/constants),
# and kindest/node v1.36.1 is assumed to carry the same (not checked on a node here: no kind runs on
# this machine). If it does not, `IfNotPresent` pulls it, which a verdict does not wait for.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
WORKLOAD_LABEL = "ml-sandbox/gpu-workload"  # "true" on every Pod `sandbox gpu` creates
NAMESPACE_LABEL = "ml-sandbox/gpu-namespace"  # "true" on a namespace the scheduler created
COMPONENT = "gpu-workload"
TERMINATED = ("Succeeded", "Failed")
REFUSALS = ("(Forbidden)", "(Invalid)", "(AlreadyExists)", " is invalid: ")


# --------------------------------------------------------------------------- objects


def pod_object(workload: Workload, namespace: str, instance: str, *, image: str = PAUSE_IMAGE) -> dict[str, Any]:
    """The Pod for ``workload``: its requests, limits, nodeSelector and tolerations as given (the API
    server defaults and validates them), one container named `CONTAINER` that does nothing."""
    resources: dict[str, Any] = {}
    if workload.requests:
        resources["requests"] = dict(workload.requests)
    if workload.limits:
        resources["limits"] = dict(workload.limits)
    container = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65535,  # the pause image's own user
            "runAsGroup": 65535,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if workload.node_selector:
        spec["nodeSelector"] = dict(workload.node_selector)
    if workload.tolerations:
        spec["tolerations"] = [
            _toleration(toleration.model_dump(exclude_none=True)) for toleration in workload.tolerations
        ]
    labels = {**instance_labels(instance, COMPONENT), WORKLOAD_LABEL: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": workload.name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def _toleration(fields: dict[str, Any]) -> dict[str, Any]:
    if not fields.get("value"):
        fields.pop("value", None)  # empty, and must be for `Exists`
    return fields


def quota_object(quota: QuotaSpec, namespace: str, instance: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": quota.name,
            "namespace": namespace,
            "labels": instance_labels(instance, "quota"),
        },
        "spec": {"hard": dict(quota.hard)},
    }


def namespace_object(name: str, instance: str) -> dict[str, Any]:
    labels = {**instance_labels(instance, "namespace"), NAMESPACE_LABEL: "true"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


# --------------------------------------------------------------------------- reading the API's answers


def node_spec(node: dict[str, Any]) -> NodeSpec:
    """A Node object as the inventory's `NodeSpec`: allocatable, GPU product, taints, labels.

    `real`: its GPUs come from NVIDIA's device plugin, which the kind profile (and NVIDIA's GPU
    feature discovery on a real cluster) marks with `nvidia.com/gpu.present=true`; fake GPUs are
    patched onto a node's status without that label."""
    meta, status = node.get("metadata", {}), node.get("status", {})
    labels = dict(meta.get("labels", {}))
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    gpus = int(allocatable.get(quantity.GPU, "0") or 0)
    memory_mib = labels.get(GPU_MEMORY_LABEL, "")
    fields: dict[str, Any] = {
        "name": meta.get("name", ""),
        "gpus": gpus,
        "gpu_product": labels.get(GPU_PRODUCT_LABEL) if gpus else None,
        "gpu_memory": f"{memory_mib}Mi" if gpus and memory_mib.isdigit() else None,
        "cpu": str(allocatable.get("cpu", "0")),
        "memory": str(allocatable.get("memory", "0")),
        "pods": int(allocatable.get("pods", "110") or 110),
        "labels": labels,
        "taints": [
            Taint(key=t["key"], value=t.get("value", ""), effect=t["effect"])
            for t in node.get("spec", {}).get("taints", []) or []
            if t.get("effect") in ("NoSchedule", "PreferNoSchedule", "NoExecute")
        ],
        "real": bool(gpus) and labels.get(GPU_PRESENT_LABEL) == "true",
    }
    try:
        return NodeSpec(**fields)
    except ValueError:  # a real cluster's node name (dots) or a count past the inventory's bounds
        return NodeSpec.model_construct(**fields)


def inventory_name(node: NodeSpec) -> str | None:
    """The inventory node a kind node was made from (the label `gpu.render.kind_config` sets)."""
    return node.labels.get(INVENTORY_LABEL)


def api_message(output: str) -> str:
    """The API server's message from kubectl's error output, without kubectl's own framing."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    text = next((line for line in lines if line.startswith(("Error from server", "The "))), lines[-1] if lines else "")
    if text.startswith("Error from server"):
        text = text.split(": ", 1)[1] if ": " in text else text
        marker = 'error when creating "STDIN": '
        text = text.split(marker, 1)[1] if marker in text else text
    return text.removeprefix("The ")


def verdict(pod: dict[str, Any]) -> SchedulingDecision | None:
    """The scheduler's answer for ``pod`` as a decision; None while it has given none."""
    meta = pod["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    node = pod.get("spec", {}).get("nodeName")
    condition = status_condition(pod, "PodScheduled") or {}
    if node or condition.get("status") == "True":
        return SchedulingDecision("Scheduled", name, f"Successfully assigned {namespace}/{name} to {node}", node)
    if condition.get("status") == "False":
        # kube-scheduler sets reason Unschedulable with the FailedScheduling event's message.
        reason = condition.get("reason", "")
        label = "FailedScheduling" if reason in ("Unschedulable", "") else reason
        return SchedulingDecision("Pending", name, f"{label}: {condition.get('message', '')}")
    return None


def pod_requests(pod: dict[str, Any]) -> dict[str, int]:
    """A Pod's effective requests (what the scheduler counts): the containers' sum, or the largest init
    container's when that is more; a limit alone stands for the request, as the API server defaults it."""

    def requests_of(container: dict[str, Any]) -> dict[str, int]:
        resources = container.get("resources", {}) or {}
        merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        out = {}
        for resource in (quantity.CPU, quantity.MEMORY, quantity.GPU):
            if resource in merged:
                try:
                    out[resource] = quantity.parse(merged[resource], resource)
                except ValueError:
                    pass
        return out

    spec = pod.get("spec", {})
    total: dict[str, int] = {}
    for container in spec.get("containers", []) or []:
        for resource, amount in requests_of(container).items():
            total[resource] = total.get(resource, 0) + amount
    for container in spec.get("initContainers", []) or []:
        for resource, amount in requests_of(container).items():
            total[resource] = max(total.get(resource, 0), amount)
    return total


# --------------------------------------------------------------------------- the backend


class KubeScheduler:
    """`sandbox gpu` against a cluster's API: kubectl, the ResourceQuota admission and kube-scheduler."""

    # Decisions name no device ids (see the module's docstring): callers that check ids read this.
    allocates_devices = False

    def __init__(
        self,
        tools: Tools,
        *,
        instance: str,
        namespace: str,
        verdict_s: float = 30.0,
        settle_s: float = 15.0,
        poll_s: float = 0.5,
        image: str = PAUSE_IMAGE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        lock: Callable[[str], contextlib.AbstractContextManager] = unlocked,
    ):
        self.tools = tools
        self.instance = instance
        self.namespace = namespace  # where `default` goes: the stack's namespace
        self.verdict_s = verdict_s  # how long `submit` waits for the scheduler's verdict
        self.settle_s = settle_s  # how long `release` waits for pending Pods to be placed
        self.poll_s = poll_s
        self.image = image
        self.clock = clock
        self.sleep = sleep
        self.lock = lock  # the profile's (`KubeProfile.lock`): quotas, submit and release run under it

    # ------------------------------------------------------------------ helpers

    def target(self, namespace: str) -> str:
        return self.namespace if namespace == "default" else namespace

    def _selector(self) -> str:
        return f"app.kubernetes.io/instance={self.instance},{WORKLOAD_LABEL}=true"

    def _list(self, kind: str, *, selector: str = "", namespace: str | None = None) -> list[dict[str, Any]]:
        scope = [] if kind == "nodes" else ["-n", namespace] if namespace else ["-A"]
        args = ["get", kind, *scope, "-o", "json"]
        if selector:
            args += ["-l", selector]
        out = self.tools.output(self.tools.kubectl(*args, mutates=False, timeout_s=60))
        return (json.loads(out or "{}") or {}).get("items", [])

    def _pod(self, name: str, namespace: str) -> dict[str, Any] | None:
        return self.tools.get_json("pod", name, namespace=namespace)

    def ensure_namespace(self, namespace: str) -> None:
        if self.tools.get_json("namespace", namespace) is not None:
            return
        self.tools.run(self.tools.apply([namespace_object(namespace, self.instance)]))
        # The ServiceAccount admission plugin looks up the Pod's service account (`default`) whatever
        # automountServiceAccountToken says, and refuses the Pod, Forbidden, until the serviceaccounts
        # controller has made it in the new namespace: "service account NS/default was not found, retry
        # after the service account is created" (kubernetes plugin/pkg/admission/serviceaccount/admission.go).
        # That refusal is no verdict of the quota or the scheduler: wait for the account first (bounded).
        deadline = self.clock() + self.verdict_s
        while self.tools.get_json("serviceaccount", "default", namespace=namespace) is None:
            if self.clock() >= deadline:
                return  # the API's own refusal, if any, then says why
            self.sleep(self.poll_s)

    # ------------------------------------------------------------------ the protocol

    def nodes(self) -> list[NodeSpec]:
        return [node_spec(node) for node in self._list("nodes")]

    @locked("gpu apply-quota")
    def apply_quota(self, quota: QuotaSpec) -> None:
        namespace = self.target(quota.namespace)
        self.ensure_namespace(namespace)
        self.tools.run(self.tools.apply([quota_object(quota, namespace, self.instance)]))
        # Until the quota controller has filled in status.used for every resource, admission refuses
        # Pods in the namespace ("status unknown for quota"): wait for it (bounded; then the API says so).
        deadline = self.clock() + self.verdict_s
        while self.clock() < deadline:
            status = (self.tools.get_json("resourcequota", quota.name, namespace=namespace) or {}).get("status", {})
            if set(quota.hard) <= set(status.get("used") or {}):
                return
            self.sleep(self.poll_s)

    @locked("gpu delete-quota")
    def delete_quota(self, namespace: str, name: str) -> None:
        namespace = self.target(namespace)
        self.tools.run(self.tools.kubectl("delete", "resourcequota", name, "-n", namespace, "--ignore-not-found"))
        labels = (self.tools.get_json("namespace", namespace) or {}).get("metadata", {}).get("labels", {}) or {}
        if labels.get(NAMESPACE_LABEL) != "true" or labels.get("app.kubernetes.io/instance") != self.instance:
            return  # not made by this sandbox's scheduler: never deleted
        if not self._list("pods", namespace=namespace) and not self._list("resourcequotas", namespace=namespace):
            self.tools.run(self.tools.delete_namespace(namespace))

    @locked("gpu submit")
    def submit(self, workload: Workload) -> SchedulingDecision:
        namespace = self.target(workload.namespace)
        self.ensure_namespace(namespace)
        pod = pod_object(workload, namespace, self.instance, image=self.image)
        command = self.tools.kubectl("create", "-f", "-", stdin=yaml.safe_dump(pod, sort_keys=False), timeout_s=60)
        result = self.tools.run(command, check=False)
        if result.returncode != 0:
            output = result.stdout + result.stderr
            if any(marker in output for marker in REFUSALS):
                return SchedulingDecision("Rejected", workload.name, api_message(output))
            raise ToolError(command, result.returncode, output)
        return self._await(workload.name, namespace)

    def _await(self, name: str, namespace: str) -> SchedulingDecision:
        deadline = self.clock() + self.verdict_s
        while True:
            pod = self._pod(name, namespace)
            if pod is None:
                return SchedulingDecision(
                    "Rejected", name, f'pods "{name}" not found after it was created (deleted meanwhile?)'
                )
            decision = verdict(pod)
            if decision is not None:
                return decision
            if self.clock() >= deadline:
                return SchedulingDecision("Pending", name, f"no PodScheduled condition within {self.verdict_s:g}s")
            self.sleep(self.poll_s)

    @locked("gpu release")
    def release(self, name: str, namespace: str = "default") -> list[SchedulingDecision]:
        namespace = self.target(namespace)
        pod = self._pod(name, namespace)
        if pod is None or pod.get("metadata", {}).get("labels", {}).get(WORKLOAD_LABEL) != "true":
            raise KeyError(f"no workload {namespace}/{name}")
        waiting = [p for p in self._workload_pods() if verdict(p) is None or verdict(p).status == "Pending"]
        waiting = [p for p in waiting if (p["metadata"]["name"], p["metadata"].get("namespace")) != (name, namespace)]
        self.tools.run(self.tools.kubectl("delete", "pod", name, "-n", namespace, "--wait=true", "--timeout=120s"))
        started: dict[tuple[str, str], SchedulingDecision] = {}
        deadline = self.clock() + self.settle_s
        while waiting:
            for pod in list(waiting):
                key = (pod["metadata"]["name"], pod["metadata"].get("namespace", "default"))
                now = self._pod(*key)
                decision = verdict(now) if now is not None else None
                if now is None or (decision is not None and decision.status == "Scheduled"):
                    waiting.remove(pod)
                    if decision is not None:
                        started[key] = decision
            if not waiting or self.clock() >= deadline:
                break
            self.sleep(self.poll_s)
        order = {(p["metadata"]["name"], p["metadata"].get("namespace", "default")): p for p in self._workload_pods()}
        return [started[key] for key in sorted(started, key=lambda k: _created(order.get(k)))]

    def _ours(self, pod: dict[str, Any]) -> bool:
        labels = pod.get("metadata", {}).get("labels", {}) or {}
        return labels.get(WORKLOAD_LABEL) == "true" and labels.get("app.kubernetes.io/instance") == self.instance

    def _workload_pods(self) -> list[dict[str, Any]]:
        pods = [
            p
            for p in self._list("pods", selector=self._selector())
            if p.get("status", {}).get("phase") not in TERMINATED
        ]
        return sorted(pods, key=_created)

    def snapshot(self) -> SchedulerSnapshot:
        nodes = self._list("nodes")
        pods = [p for p in self._list("pods") if p.get("status", {}).get("phase") not in TERMINATED]
        used: dict[str, dict[str, int]] = {}
        for pod in pods:
            node = pod.get("spec", {}).get("nodeName")
            if node:
                for resource, amount in pod_requests(pod).items():
                    used.setdefault(node, {}).setdefault(resource, 0)
                    used[node][resource] += amount
        node_rows = []
        for node in nodes:
            spec = node_spec(node)
            on = used.get(spec.name, {})
            node_rows.append(
                NodeUsage(
                    name=spec.name,
                    labels=dict(spec.labels),
                    taints=[str(t) for t in spec.taints],
                    gpus=spec.gpus,
                    gpus_used=on.get(quantity.GPU, 0),
                    cpu=spec.cpu,
                    cpu_used=quantity.format_quantity(on.get(quantity.CPU, 0), quantity.CPU),
                    memory=spec.memory,
                    memory_used=quantity.format_quantity(on.get(quantity.MEMORY, 0), quantity.MEMORY),
                    real=spec.real,
                )
            )
        workloads = [workload_state(pod) for pod in sorted(filter(self._ours, pods), key=_created)]
        quotas = [
            QuotaUsage(
                namespace=q["metadata"].get("namespace", "default"),
                name=q["metadata"]["name"],
                hard=dict(q.get("status", {}).get("hard") or q.get("spec", {}).get("hard") or {}),
                used=dict(q.get("status", {}).get("used") or {}),
            )
            for q in self._list("resourcequotas", selector=f"app.kubernetes.io/instance={self.instance}")
        ]
        return SchedulerSnapshot(node_rows, workloads, quotas)


def workload_state(pod: dict[str, Any]) -> WorkloadState:
    """A workload Pod as `gpu status` shows it: its own phase (a Pod bound to a node stays Pending until its
    containers run: the image pulled, the sandbox made), and while Pending, why: unbound, the FailedScheduling
    message; bound, its first waiting container's reason (and message)."""
    node = pod.get("spec", {}).get("nodeName")
    phase = pod.get("status", {}).get("phase") or "Pending"
    reason = ""
    if phase == "Pending" and not node:
        reason = (status_condition(pod, "PodScheduled") or {}).get("message", "")
    elif phase == "Pending":
        for container in pod.get("status", {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                reason = ": ".join(part for part in (waiting["reason"], waiting.get("message", "")) if part)
                break
    return WorkloadState(
        namespace=pod["metadata"].get("namespace", "default"),
        name=pod["metadata"]["name"],
        phase=phase,
        node=node,
        reason=reason,
    )


def remove_workloads(tools: Tools, instance: str) -> list[str]:
    """Remove what `sandbox gpu` made on the cluster for ``instance`` (for `down`): every workload Pod the
    scheduler backend created, in any namespace (by its labels: this instance's, `WORKLOAD_LABEL`), every
    ResourceQuota it applied (this instance's, component `quota`), then the namespaces it created itself (labelled
    `NAMESPACE_LABEL` and this instance's), never one it did not create. A namespace it created that still holds
    Pods of others is left in place: its name is returned (nothing else is), for the caller to report."""
    instance_selector = f"app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/instance={instance}"
    pods = f"{instance_selector},{WORKLOAD_LABEL}=true"
    quotas = f"{instance_selector},app.kubernetes.io/component=quota"
    made = f"{instance_selector},{NAMESPACE_LABEL}=true"
    tools.run(tools.kubectl("delete", "pods", "-A", "-l", pods, "--ignore-not-found", "--wait=true", "--timeout=120s",
                            timeout_s=180))  # fmt: skip
    tools.run(tools.kubectl("delete", "resourcequotas", "-A", "-l", quotas, "--ignore-not-found", "--wait=false"))
    listed = tools.output(tools.kubectl("get", "namespace", "-l", made, "-o", "json", mutates=False, timeout_s=60))
    kept = []
    for namespace in (json.loads(listed or "{}") or {}).get("items", []):
        name = namespace["metadata"]["name"]
        left = (tools.get_json("pods", namespace=name) or {}).get("items", [])
        others = [p for p in left if (p.get("metadata", {}).get("labels") or {}).get(WORKLOAD_LABEL) != "true"]
        if others:
            kept.append(name)
            continue
        tools.run(tools.delete_namespace(name))
    return kept


def _created(pod: dict[str, Any] | None) -> tuple[str, str]:
    if pod is None:
        return ("", "")
    meta = pod.get("metadata", {})
    return (meta.get("creationTimestamp", ""), meta.get("name", ""))
