"""The local profile's scheduler backend: the GPU cluster model, its state kept in the sandbox dir.

`local_cluster()` builds the model (`sandbox.gpu.Cluster`) from the inventory (plus
this machine's real GPUs when NVML finds them and `gpu.real_gpus` allows) and the
state saved in `<dir>/gpu-state.json`; `LocalScheduler` is what `sandbox gpu`,
`serve deploy --gpus` and the `gpu-quotas` scenario use through `LocalProfile.scheduler()`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from sandbox.gpu import Cluster, Decision, GpuConfig, NodeSpec, QuotaSpec, Workload, inventory_nodes


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
    cluster = Cluster(inventory_nodes(config), [*config.quotas, *applied], config.scoring)
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

    def nodes(self) -> list[NodeSpec]:
        return inventory_nodes(self.config)

    def apply_quota(self, quota: QuotaSpec) -> None:
        with local_cluster(self.config, self.root) as cluster:
            cluster.quotas = [q for q in cluster.quotas if (q.namespace, q.name) != (quota.namespace, quota.name)]
            cluster.quotas.append(quota)

    def delete_quota(self, namespace: str, name: str) -> None:
        with local_cluster(self.config, self.root) as cluster:
            cluster.quotas = [q for q in cluster.quotas if (q.namespace, q.name) != (namespace, name)]

    def submit(self, workload: Workload) -> Decision:
        with local_cluster(self.config, self.root) as cluster:
            return cluster.submit(workload)

    def release(self, name: str, namespace: str = "default") -> list[Decision]:
        with local_cluster(self.config, self.root) as cluster:
            return cluster.release(name, namespace)

    def snapshot(self) -> Cluster:
        """The current nodes, placements and quotas, read-only."""
        with local_cluster(self.config, self.root, save=False) as cluster:
            return cluster

    def placement(self, name: str, namespace: str = "default"):
        cluster = self.snapshot()
        return cluster.placements.get(cluster.key(name, namespace))
