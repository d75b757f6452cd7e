"""Checklist: GPU scheduling and resource quotas.

Profile-independent: it reads the nodes the profile offers, applies a quota in
a namespace of its own (`checklist-gpu-quotas-…`), and submits Pod-like
workloads through the profile's scheduler (the local model of Kubernetes'
admission and scheduler, or a real cluster's).
"""

from __future__ import annotations

from sandbox.gpu import QuotaSpec, Toleration, Workload
from sandbox.gpu.inventory import GPU_PRODUCT_LABEL
from sandbox.scenarios import ScenarioContext, scenario

GPU_TOLERATION = Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")


def _gpu_workload(name: str, namespace: str, gpus: int, product: str) -> Workload:
    return Workload(
        name=name,
        namespace=namespace,
        requests={"cpu": "1", "memory": "2Gi"},
        limits={"nvidia.com/gpu": str(gpus)},
        tolerations=[GPU_TOLERATION],
        node_selector={GPU_PRODUCT_LABEL: product},
    )


@scenario(
    "gpu-quotas",
    title="GPU scheduling and resource quotas",
    checklist="GPU scheduling and resource quotas",
    needs=["gpu"],
    order=60,
    expected_s=1,
    # It fills the inventory's GPUs and expects which devices it gets: nothing else may place a GPU meanwhile.
    exclusive=("gpu-inventory",),
)
def gpu_quotas(ctx: ScenarioContext) -> None:
    scheduler = ctx.scheduler
    # Device ids are checked where the backend allocates them (the local model, as a device plugin would).
    # On a cluster, fake GPUs are only counted and a device plugin's choice is not in the Pod: no ids to check.
    allocates = getattr(scheduler, "allocates_devices", True)
    nodes = scheduler.nodes()
    gpu_nodes = [n for n in nodes if n.gpus >= 2]
    ctx.check(gpu_nodes, "the inventory has no node with 2 or more GPUs")
    target = max(gpu_nodes, key=lambda n: n.gpus)
    product = target.all_labels()[GPU_PRODUCT_LABEL]
    namespace = ctx.unique("gpu-quotas").lower()  # this run's own; the workloads and the quota live in it
    quota = QuotaSpec(
        namespace=namespace,
        name="gpu-quota",
        hard={"requests.nvidia.com/gpu": str(target.gpus + 2), "count/pods": "10"},
    )
    submitted: list[str] = []

    def submit(workload: Workload):
        decision = scheduler.submit(workload)
        if decision.status != "Rejected":
            submitted.append(workload.name)
        return decision

    try:
        with ctx.step(f"apply ResourceQuota requests.nvidia.com/gpu={target.gpus + 2} in {namespace}"):
            scheduler.apply_quota(quota)

        with ctx.step(f"two 1-GPU workloads land on {product} nodes" + (" with distinct devices" if allocates else "")):
            first = submit(_gpu_workload("train-a", namespace, 1, product))
            second = submit(_gpu_workload("train-b", namespace, 1, product))
            for decision in (first, second):
                ctx.check(decision.status == "Scheduled", f"{decision.workload}: {decision.message}")
                if allocates:
                    ctx.check(
                        decision.env.get("CUDA_VISIBLE_DEVICES"), f"{decision.workload} got no CUDA_VISIBLE_DEVICES"
                    )
            by_node = {d.node: d for d in (first, second)}
            if allocates and len(by_node) == 1:
                ctx.check(
                    set(first.devices).isdisjoint(second.devices),
                    f"both got devices {first.devices} / {second.devices}",
                )

        with ctx.step("a workload without the GPU toleration stays off tainted nodes"):
            plain = submit(Workload(name="cpu-job", namespace=namespace, requests={"cpu": "1", "memory": "1Gi"}))
            ctx.check(plain.status == "Scheduled", f"cpu-job: {plain.message}")
            landed = next(n for n in nodes if n.name == plain.node)
            ctx.check(
                not any(t.effect in ("NoSchedule", "NoExecute") for t in landed.taints),
                f"cpu-job landed on tainted node {landed.name}",
            )

        used = 2
        with ctx.step("a request over the quota is rejected with the quota message"):
            greedy = submit(_gpu_workload("too-big", namespace, target.gpus + 1, product))
            ctx.check(greedy.status == "Rejected", f"too-big was {greedy.status}")
            ctx.check(
                f"exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu={target.gpus + 1}, "
                f"used: requests.nvidia.com/gpu={used}, limited: requests.nvidia.com/gpu={target.gpus + 2}"
                in greedy.message,
                f"unexpected message: {greedy.message}",
            )

        wanted = target.gpus - 1  # within the quota, more than the node has left
        with ctx.step(f"a {wanted}-GPU workload that fits no node stays pending with the reason"):
            waiting = submit(_gpu_workload("waits", namespace, wanted, product))
            ctx.check(waiting.status == "Pending", f"waits was {waiting.status}: {waiting.message}")
            ctx.check("nodes are available" in waiting.message, f"no FailedScheduling reason: {waiting.message}")
            ctx.check(
                "Insufficient nvidia.com/gpu" in waiting.message, f"reason lacks the GPU shortage: {waiting.message}"
            )

        with ctx.step("freeing a workload lets the pending one run"):
            started = scheduler.release("train-a", namespace)
            submitted.remove("train-a")
            ctx.check([d.workload for d in started] == ["waits"], f"after the release: {[d.workload for d in started]}")
            if allocates:
                ctx.check(len(started[0].devices) == wanted, f"waits got devices {started[0].devices}")
    finally:
        for name in submitted:
            scheduler.release(name, namespace)
        scheduler.delete_quota(namespace, quota.name)

    ctx.evidence(
        f"{first.workload} → {first.node} GPU {first.devices}, {second.workload} → {second.node} GPU {second.devices}; "
        f"cpu-job → {plain.node} (untainted); too-big rejected: {greedy.message.split(': ', 1)[1]}; "
        f"waits pending ({waiting.message.removeprefix('FailedScheduling: ')}) then ran on {started[0].node} "
        f"GPU {started[0].devices}"
    )
