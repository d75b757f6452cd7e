"""The local profile's scheduler backend: the GPU cluster model, its state kept in the sandbox dir.

`local_cluster()` builds the model (`sandbox.gpu.Cluster`) from the inventory (plus
this machine's real GPUs when NVML finds them and `gpu.real_gpus` allows) and the
state saved in `<dir>/gpu-state.json`; `LocalScheduler`, a `sandbox.gpu.backend.SchedulerBackend`,
is what `sandbox gpu`, `serve deploy --gpus` and the `gpu-quotas` scenario use through
`LocalProfile.scheduler()`; its snapshot is the neutral `SchedulerSnapshot`.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from pathlib import Path

from sandbox.gpu import Cluster, GpuConfig, NodeSpec, QuotaSpec, SchedulingDecision, Workload, inventory_nodes
from sandbox.gpu.backend import NodeUsage, QuotaUsage, SchedulerSnapshot, WorkloadState
from sandbox.gpu.inventory import QUOTA_RESOURCES
from sandbox.gpu.quantity import CPU, MEMORY, format_quantity
from sandbox.profiles.locking import exclusive_lock, locked


def state_file(root: Path) -> Path:
    return root / "gpu-state.json"


@contextlib.contextmanager
def local_cluster(config: GpuConfig, root: Path, *, save: bool = True) -> Iterator[Cluster]:
    """The sandbox's cluster model; changes are saved when the block ends without error.

    Quotas applied at run time (`apply_quota`, as `kubectl apply` would) are kept in the
    state next to the workloads; the inventory's own quotas always apply.
    """
    path = state_file(root)
    state = json.loads(path.read_text()) if path.exists() else {}
    applied = [QuotaSpec(**q) for q in state.get("applied_quotas", [])]
    cluster = Cluster(inventory_nodes(config), [*config.quotas, *applied], config.scoring, config.score_resources)
    cluster.load(state)
    yield cluster
    if save:
        root.mkdir(parents=True, exist_ok=True)
        configured = {(q.namespace, q.name) for q in config.quotas}
        runtime = [q.model_dump() for q in cluster.quotas if (q.namespace, q.name) not in configured]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**cluster.to_dict(), "applied_quotas": runtime}, indent=2))
        tmp.replace(path)


class LocalScheduler:
    """The local profile's scheduling backend: what `kubectl` and the scheduler do on a cluster."""

    def __init__(self, config: GpuConfig, root: Path):
        self.config = config
        self.root = root
        # Its changes take a lock of their own, not the sandbox's: a deploy holds that one until its server answers,
        # and a GPU command (a checklist scenario beside a deploying one) need not wait for it. A deploy with GPUs
        # takes this one inside it (always in that order).
        self.lock = functools.partial(exclusive_lock, root / "gpu-state.lock", folder=root)

    def nodes(self) -> list[NodeSpec]:
        return inventory_nodes(self.config)

    @locked("gpu apply-quota")
    def apply_quota(self, quota: QuotaSpec) -> None:
        with local_cluster(self.config, self.root) as cluster:
            cluster.quotas = [q for q in cluster.quotas if (q.namespace, q.name) != (quota.namespace, quota.name)]
            cluster.quotas.append(quota)

    @locked("gpu delete-quota")
    def delete_quota(self, namespace: str, name: str) -> None:
        with local_cluster(self.config, self.root) as cluster:
            cluster.quotas = [q for q in cluster.quotas if (q.namespace, q.name) != (namespace, name)]

    @locked("gpu submit")
    def submit(self, workload: Workload) -> SchedulingDecision:
        with local_cluster(self.config, self.root) as cluster:
            return cluster.submit(workload)

    @locked("gpu release")
    def release(self, name: str, namespace: str = "default") -> list[SchedulingDecision]:
        with local_cluster(self.config, self.root) as cluster:
            return cluster.release(name, namespace)

    def snapshot(self) -> SchedulerSnapshot:
        """The current nodes, workloads and quota use, as a cluster's API would report them."""
        with local_cluster(self.config, self.root, save=False) as cluster:
            return _snapshot(cluster)

    def placement(self, name: str, namespace: str = "default"):
        """The model's own record of a workload (the local serving backend reads its devices)."""
        with local_cluster(self.config, self.root, save=False) as cluster:
            return cluster.placements.get(cluster.key(name, namespace))


def _snapshot(cluster: Cluster) -> SchedulerSnapshot:
    nodes = []
    for node in cluster.nodes.values():
        used = cluster.used_on(node.name)
        nodes.append(
            NodeUsage(
                name=node.name,
                labels=node.all_labels(),
                taints=[str(t) for t in node.taints],
                gpus=node.gpus,
                gpus_used=len(cluster.devices_used_on(node.name)),
                cpu=node.cpu,
                cpu_used=format_quantity(used.get(CPU, 0), CPU),
                memory=node.memory,
                memory_used=format_quantity(used.get(MEMORY, 0), MEMORY),
                real=node.real,
            )
        )
    workloads = [
        WorkloadState(
            namespace=p.workload.namespace,
            name=p.workload.name,
            phase="Running" if p.node else "Pending",
            node=p.node,
            devices=list(p.devices),
            reason=p.reason,
        )
        for p in cluster.placements.values()
    ]
    quotas = []
    for quota in cluster.quotas:
        used = cluster.quota_used(quota.namespace)
        quotas.append(
            QuotaUsage(
                namespace=quota.namespace,
                name=quota.name,
                hard={r: format_quantity(v, QUOTA_RESOURCES[r]) for r, v in quota.limits().items()},
                used={r: format_quantity(used.get(r, 0), QUOTA_RESOURCES[r]) for r in quota.limits()},
            )
        )
    return SchedulerSnapshot(nodes, workloads, quotas)
