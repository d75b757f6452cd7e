"""Table-driven parity: each case is a Kubernetes rule, fed to the local admission and placement.

Every case names the rule it mirrors (plugin or admission controller) so a
failure says which part of Kubernetes' behaviour the local model lost.
"""

from dataclasses import dataclass, field

import pytest

from sandbox.gpu.inventory import NodeSpec, QuotaSpec, Taint
from sandbox.gpu.scheduler import Cluster, Toleration, Workload

GPU_TAINT = Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")
TOLERATE_GPU = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
NODES = [
    NodeSpec(name="a100", gpus=4, gpu_product="NVIDIA-A100-SXM4-80GB", cpu="32", memory="256Gi", taints=[GPU_TAINT]),
    NodeSpec(name="l4", gpus=2, gpu_product="NVIDIA-L4", cpu="16", memory="64Gi", taints=[GPU_TAINT]),
    NodeSpec(name="cpu", cpu="8", memory="32Gi"),
]
QUOTA = QuotaSpec(namespace="team", name="team-quota", hard={"requests.nvidia.com/gpu": "4", "count/pods": "5"})
CPU_QUOTA = QuotaSpec(namespace="strict", name="cpu-quota", hard={"requests.cpu": "4", "requests.memory": "8Gi"})


def gpu(name, n, namespace="team", **extra):
    return Workload(
        name=name,
        namespace=namespace,
        requests={"cpu": "1", "memory": "1Gi"},
        limits={"nvidia.com/gpu": str(n)},
        tolerations=TOLERATE_GPU,
        **extra,
    )


@dataclass
class Case:
    rule: str  # the Kubernetes behaviour mirrored
    before: list = field(default_factory=list)  # workloads submitted first (must not be rejected)
    workload: Workload | None = None
    status: str = "Scheduled"
    node: str | None = None
    message: str = ""  # a substring of the decision's message
    release: str | None = None  # released after `workload`; then expect `then_scheduled`
    then_scheduled: list = field(default_factory=list)
    scoring: str = "LeastAllocated"


CASES = [
    # ----- ResourceQuota admission
    Case("quota: within requests.nvidia.com/gpu is admitted", workload=gpu("w", 4), node="a100"),
    Case(
        "quota: over requests.nvidia.com/gpu is forbidden with the API server's wording",
        before=[gpu("w1", 2)],
        workload=gpu("w2", 3),
        status="Rejected",
        message='pods "w2" is forbidden: exceeded quota: team-quota, requested: requests.nvidia.com/gpu=3, '
        "used: requests.nvidia.com/gpu=2, limited: requests.nvidia.com/gpu=4",
    ),
    Case(
        "quota: count/pods is enforced",
        before=[Workload(name=f"p{i}", namespace="team") for i in range(5)],
        workload=Workload(name="p5", namespace="team"),
        status="Rejected",
        message="exceeded quota: team-quota, requested: count/pods=1, used: count/pods=5, limited: count/pods=5",
    ),
    Case(
        "quota: pending pods count toward usage (quota is checked at admission, not at scheduling)",
        before=[gpu("big", 3, node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"})],
        workload=gpu("more", 2),
        status="Rejected",
        message="used: requests.nvidia.com/gpu=3",
    ),
    Case(
        "quota: a requests.cpu quota makes the cpu request mandatory",
        workload=Workload(name="bare", namespace="strict"),
        status="Rejected",
        message="failed quota: cpu-quota: must specify requests.cpu for: workload; requests.memory for: workload",
    ),
    Case(
        "quota: other namespaces are unaffected",
        before=[gpu("w1", 4)],
        workload=gpu("x", 2, namespace="other"),
        node="l4",
    ),
    # ----- extended resources
    Case(
        "extended resources: request must equal limit",
        workload=Workload(name="bad", requests={"nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "2"}),
        status="Rejected",
        message="must be equal to nvidia.com/gpu limit of 2",
    ),
    Case(
        "extended resources: a limit is required",
        workload=Workload(name="bad", requests={"nvidia.com/gpu": "1"}),
        status="Rejected",
        message="Limit must be set for non overcommitable resources",
    ),
    # ----- NodeResourcesFit
    Case(
        "fit: no node has 5 GPUs → Pending with Insufficient nvidia.com/gpu",
        workload=gpu("huge", 5, namespace="other"),
        status="Pending",
        message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    ),
    Case(
        "fit: cpu is a fit resource too",
        workload=Workload(name="cpu-hog", namespace="other", requests={"cpu": "64"}, tolerations=TOLERATE_GPU),
        status="Pending",
        message="3 Insufficient cpu",
    ),
    Case(
        "fit: GPUs are not overcommitted across workloads",
        before=[gpu("a", 4, namespace="other"), gpu("b", 2, namespace="other")],
        workload=gpu("c", 1, namespace="other"),
        status="Pending",
        message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    ),
    # ----- TaintToleration
    Case(
        "taint: no toleration keeps a pod off NoSchedule GPU nodes",
        workload=Workload(name="plain", namespace="other", requests={"cpu": "1"}),
        node="cpu",
    ),
    Case(
        "taint: untolerated everywhere it fits → Pending naming the taint",
        workload=Workload(name="plain", namespace="other", requests={"cpu": "12"}),
        status="Pending",
        message="1 Insufficient cpu, 2 node(s) had untolerated taint {nvidia.com/gpu: present}.",
    ),
    Case(
        "taint: Equal toleration with the wrong value does not tolerate",
        workload=Workload(
            name="wrong",
            namespace="other",
            limits={"nvidia.com/gpu": "1"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent", "effect": "NoSchedule"}],
        ),
        status="Pending",
        message="had untolerated taint",
    ),
    Case(
        "taint: an empty-key Exists toleration tolerates everything",
        workload=Workload(
            name="any", namespace="other", limits={"nvidia.com/gpu": "1"}, tolerations=[{"operator": "Exists"}]
        ),
        node="a100",
    ),
    # ----- NodeAffinity (nodeSelector on the GPU product label)
    Case(
        "selector: the GPU product label picks the node",
        workload=gpu("l4-job", 1, namespace="other", node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"}),
        node="l4",
    ),
    Case(
        "selector: an unknown product → Pending, didn't match Pod's node affinity/selector",
        workload=gpu("h100-job", 1, namespace="other", node_selector={"nvidia.com/gpu.product": "NVIDIA-H100"}),
        status="Pending",
        message="0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
    ),
    # ----- scoring
    Case(
        "score: LeastAllocated spreads to the emptier GPU node",
        before=[gpu("first", 3, namespace="other")],
        workload=gpu("second", 1, namespace="other"),
        node="l4",
    ),
    Case(
        "score: MostAllocated packs onto the fuller GPU node",
        before=[gpu("first", 2, namespace="other")],
        workload=gpu("second", 1, namespace="other"),
        node="a100",
        scoring="MostAllocated",
    ),
    # ----- release
    Case(
        "release: freeing capacity schedules the pending pod (FIFO)",
        before=[gpu("a", 4, namespace="other"), gpu("b", 2, namespace="other")],
        workload=gpu("waiting", 3, namespace="other"),
        status="Pending",
        release="a",
        then_scheduled=["waiting"],
    ),
    Case(
        "release: a pending pod that still does not fit stays pending",
        before=[gpu("a", 1, namespace="other"), gpu("b", 2, namespace="other")],
        workload=gpu("waiting", 4, namespace="other"),
        status="Pending",
        release="b",
        then_scheduled=[],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.rule for c in CASES])
def test_parity(case: Case):
    cluster = Cluster(NODES, [QUOTA, CPU_QUOTA], case.scoring)
    for workload in case.before:
        assert cluster.submit(workload).status != "Rejected", workload.name
    decision = cluster.submit(case.workload)
    assert decision.status == case.status, decision.message
    assert case.message in decision.message
    if case.node:
        assert decision.node == case.node
    if case.release:
        started = cluster.release(case.release, case.before[0].namespace)
        assert [d.workload for d in started] == case.then_scheduled


def test_devices_are_distinct_and_exported():
    cluster = Cluster(NODES, [])
    decisions = [
        cluster.submit(
            gpu(f"w{i}", 1, namespace="x", node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"})
        )
        for i in range(4)
    ]
    devices = [d.devices[0] for d in decisions]
    assert sorted(devices) == [0, 1, 2, 3]
    assert decisions[2].env == {"CUDA_VISIBLE_DEVICES": str(devices[2]), "NVIDIA_VISIBLE_DEVICES": str(devices[2])}
    cluster.release("w1", "x")
    again = cluster.submit(
        gpu("w9", 1, namespace="x", node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"})
    )
    assert again.devices == [devices[1]]  # the freed device is reused


def test_state_round_trips(tmp_path):
    cluster = Cluster(NODES, [QUOTA])
    cluster.submit(gpu("keep", 2))
    cluster.submit(gpu("wait", 9, namespace="other"))
    restored = Cluster(NODES, [QUOTA])
    restored.load(cluster.to_dict())
    assert restored.placements["team/keep"].devices == cluster.placements["team/keep"].devices
    assert restored.placements["other/wait"].node is None


def test_toleration_rule():
    taint = Taint(key="k", value="v", effect="NoSchedule")
    assert Toleration(key="k", operator="Equal", value="v", effect="NoSchedule").tolerates(taint)
    assert Toleration(key="k", operator="Exists").tolerates(taint)
    assert not Toleration(key="k", operator="Exists", effect="NoExecute").tolerates(taint)
    assert not Toleration(key="other", operator="Exists").tolerates(taint)
