"""Table-driven parity: each case is a Kubernetes rule, fed to the local admission and placement.

Every case names the rule it mirrors (plugin or admission controller) so a
failure says which part of Kubernetes' behaviour the local model lost.

Parity mode: with SANDBOX_PARITY_CONTEXT set to a kube context, `test_parity_live` also runs each
case against that cluster through the Kubernetes backend (`sandbox.profiles.kube.scheduler`): real
Pods, the real ResourceQuota admission and kube-scheduler, in namespaces of the case's own
(`parity-<run>-<namespace>`, deleted after it). It compares the local model's decisions with the
cluster's: status; node (kind nodes carry their inventory name in `ml-sandbox/inventory-node`); a
refusal's whole message; a FailedScheduling message's reasons with their node counts (the cluster's
extra nodes, e.g. kind's tainted control plane, may add reasons of their own); the Pods a release
lets start. The cluster must be made from this file's NODES: docs/examples/parity-gpu.yaml is that
inventory for the kind profile (`cp docs/examples/parity-gpu.yaml sandbox.yaml && make sandbox
PROFILE=kind`, then `SANDBOX_PARITY_CONTEXT=kind-ml-sandbox pytest tests/unit/test_gpu_parity.py`).
Cases that hang on the nodes' cpu/memory (kind nodes all report the host's) or on a scheduler
profile the cluster does not run stay local only, each with its reason.
"""

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sandbox.config import load_config
from sandbox.gpu.inventory import NodeSpec, QuotaSpec, Taint
from sandbox.gpu.scheduler import Cluster, Decision, Toleration, Workload

PARITY_CONTEXT = os.environ.get("SANDBOX_PARITY_CONTEXT", "")
PARITY_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "examples" / "parity-gpu.yaml"
HOST_CAPACITY = "kind nodes all report the host's cpu and memory, not the inventory's"

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
    live: str = ""  # why the case cannot run against a live cluster (local only), if it cannot
    live_node: str = ""  # why the node it lands on is not compared live, if it is not


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
        live=HOST_CAPACITY,
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
        live=HOST_CAPACITY,
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
        live_node="a100 and l4 both fit; the choice is scoring's, which weighs cpu and memory (" + HOST_CAPACITY + ")",
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
        live="the spread follows scores over cpu and memory (" + HOST_CAPACITY + ")",
    ),
    Case(
        "score: MostAllocated packs onto the fuller GPU node",
        before=[gpu("first", 2, namespace="other")],
        workload=gpu("second", 1, namespace="other"),
        node="a100",
        scoring="MostAllocated",
        live="needs a scheduler profile with NodeResourcesFit's MostAllocated; kind runs the default (LeastAllocated)",
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
        # `a` is pinned to the A100 node: left to scoring it may land on the L4 node on a cluster, and the
        # release of `b` would then free a whole A100.
        before=[
            gpu("a", 1, namespace="other", node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}),
            gpu("b", 2, namespace="other"),
        ],
        workload=gpu("waiting", 4, namespace="other"),
        status="Pending",
        release="b",
        then_scheduled=[],
    ),
]


@dataclass
class Outcome:
    before: list[Decision]
    decision: Decision
    started: list[Decision] | None  # after the release, when the case releases one


def run_case(case: Case, backend, namespace=lambda name: name) -> Outcome:
    """The case against a scheduler backend (the local model, or a cluster's), namespaces renamed by ``namespace``."""

    def moved(workload: Workload) -> Workload:
        return workload.model_copy(update={"namespace": namespace(workload.namespace)})

    before = []
    for workload in case.before:
        before.append(backend.submit(moved(workload)))
        assert before[-1].status != "Rejected", f"{workload.name}: {before[-1].message}"
    decision = backend.submit(moved(case.workload))
    started = backend.release(case.release, namespace(case.before[0].namespace)) if case.release else None
    return Outcome(before, decision, started)


def run_local(case: Case) -> Outcome:
    return run_case(case, Cluster(NODES, [QUOTA, CPU_QUOTA], case.scoring))


@pytest.mark.parametrize("case", CASES, ids=[c.rule for c in CASES])
def test_parity(case: Case):
    outcome = run_local(case)
    decision = outcome.decision
    assert decision.status == case.status, decision.message
    assert case.message in decision.message
    if case.node:
        assert decision.node == case.node
    if case.release:
        assert [d.workload for d in outcome.started] == case.then_scheduled


# --------------------------------------------------------------------------- parity mode (a live cluster)


def live_cases() -> list:
    params = []
    for case in CASES:
        if not PARITY_CONTEXT:
            mark = pytest.mark.skip(reason="parity mode: set SANDBOX_PARITY_CONTEXT to the kube context of a cluster "
                                    "made from docs/examples/parity-gpu.yaml")  # fmt: skip
        elif case.live:
            mark = pytest.mark.skip(reason=f"local only: {case.live}")
        else:
            mark = ()
        params.append(pytest.param(case, id=case.rule, marks=mark))
    return params


@dataclass
class Live:
    backend: object  # sandbox.profiles.kube.scheduler.KubeScheduler
    inventory: dict[str, str]  # cluster node name -> inventory name
    nodes: int  # how many nodes the cluster has, the inventory's and others


@pytest.fixture(scope="module")
def live() -> Live:
    return connect(PARITY_CONTEXT)


def connect(context: str, **bounds) -> Live:
    """The cluster behind ``context`` through the Kubernetes backend, checked to be made from NODES."""
    from sandbox.profiles.kube.scheduler import KubeScheduler, inventory_name
    from sandbox.profiles.kube.tools import Tools

    # Generous bounds: a kind cluster on a CI runner is slow, and the scheduler retries a pending Pod after a
    # release with a back-off of its own (1 s, doubling, at most 10 s).
    options = {"verdict_s": 60, "settle_s": 30, **bounds}
    backend = KubeScheduler(Tools(context), instance="gpu-parity", namespace="gpu-parity", **options)
    nodes = backend.nodes()
    inventory = {node.name: inventory_name(node) for node in nodes if inventory_name(node)}
    by_inventory = {name: node for node in nodes for name in [inventory.get(node.name)] if name}
    for spec in NODES:
        node = by_inventory.get(spec.name)
        assert node is not None, f"{context} has no node labelled ml-sandbox/inventory-node={spec.name}"
        assert (node.gpus, node.gpu_product if node.gpus else None, node.taints) == (
            spec.gpus,
            spec.gpu_product,
            spec.taints,
        ), f"node {node.name} is not the inventory's {spec.name}: make the cluster from {PARITY_CONFIG}"
    assert len(by_inventory) == len(NODES), f"{context} has inventory nodes the test does not know"
    return Live(backend, inventory, len(nodes))


def reasons(message: str) -> tuple[int, dict[str, int]]:
    """(nodes, {reason: how many nodes}) from a FailedScheduling message; the preemption part left out."""
    match = re.search(r"0/(\d+) nodes are available: (.*?)\.(?: preemption:|$)", message)
    assert match, f"not a FailedScheduling message: {message!r}"
    counts = {}
    for part in re.split(r", (?=\d+ )", match.group(2)):
        number, reason = part.split(" ", 1)
        counts[reason] = int(number)
    return int(match.group(1)), counts


def assert_same(local: Decision, cluster: Decision, live: Live, *, compare_node: bool = True) -> None:
    said = f"local: {local.status} {local.message!r}; cluster: {cluster.status} {cluster.message!r}"
    assert cluster.status == local.status, said
    if local.status == "Rejected":
        assert cluster.message == local.message, said
    elif local.status == "Pending":
        total, cluster_reasons = reasons(cluster.message)
        _, local_reasons = reasons(local.message)
        for reason, count in local_reasons.items():
            assert cluster_reasons.get(reason) == count, f"{reason!r} on {count} node(s): {said}"
        others = sum(n for reason, n in cluster_reasons.items() if reason not in local_reasons)
        assert others == total - len(NODES) == live.nodes - len(NODES), f"the other nodes' reasons: {said}"
    elif compare_node:
        assert live.inventory.get(cluster.node) == local.node, said


@pytest.mark.parametrize("case", live_cases())
def test_parity_live(case: Case, live: Live):
    local = run_local(case)
    run = secrets.token_hex(3)
    namespaces: dict[str, str] = {}

    def namespace(name: str) -> str:
        return namespaces.setdefault(name, f"parity-{run}-{name}")

    tools = live.backend.tools
    try:
        for quota in (QUOTA, CPU_QUOTA):
            live.backend.apply_quota(quota.model_copy(update={"namespace": namespace(quota.namespace)}))
        outcome = run_case(case, live.backend, namespace)
        for mine, theirs in zip(local.before, outcome.before, strict=True):
            assert theirs.status == mine.status, f"{mine.workload}: {mine.message!r} / {theirs.message!r}"
        assert_same(local.decision, outcome.decision, live, compare_node=not case.live_node)
        if case.release:
            assert [d.workload for d in outcome.started] == [d.workload for d in local.started] == case.then_scheduled
            for mine, theirs in zip(local.started, outcome.started, strict=True):
                assert_same(mine, theirs, live)
    finally:  # everything the case made: its namespaces, waited for, so their Pods free the nodes for the next case
        names = list(namespaces.values())
        tools.run(tools.kubectl("delete", "namespace", *names, "--ignore-not-found", "--wait=true", "--timeout=180s",
                                timeout_s=240))  # fmt: skip


def test_the_parity_inventory_is_this_files():
    """docs/examples/parity-gpu.yaml, what the live cluster is made from, holds NODES (as kind will see them)."""
    config = load_config(PARITY_CONFIG)
    assert config.gpu.real_gpus == "off"
    assert [(n.name, n.gpus, n.gpu_product, n.taints) for n in config.gpu.nodes] == [
        (n.name, n.gpus, n.gpu_product, n.taints) for n in NODES
    ]


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


# --------------------------------------------------------------------------- the parity mode's own checks


def test_failedscheduling_reasons_are_read_with_their_node_counts():
    cluster = (
        "FailedScheduling: 0/4 nodes are available: 1 node(s) had untolerated taint "
        "{node-role.kubernetes.io/control-plane: }, 3 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are "
        "available: 1 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod."
    )
    assert reasons(cluster) == (
        4,
        {
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }": 1,
            "Insufficient nvidia.com/gpu": 3,
        },
    )
    local = "FailedScheduling: 0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) had untolerated taint "
    local += "{nvidia.com/gpu: present}."
    assert reasons(local) == (
        3,
        {"Insufficient nvidia.com/gpu": 1, "node(s) had untolerated taint {nvidia.com/gpu: present}": 2},
    )


def test_the_parity_mode_against_a_fake_cluster(tmp_path, monkeypatch):
    """The live mode's own plumbing (inventory check, namespaces, comparisons, clean-up) against the FAKE
    kubectl, whose answers this test scripts (tests/fakes/fake_scheduling.py): no parity is shown here."""
    from tests.fakes import FakeTools
    from tests.fakes.fake_scheduling import Script, node_object

    fakes = FakeTools(tmp_path, monkeypatch)
    control = {
        "metadata": {"name": "p-control-plane", "labels": {}},
        "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "4"}},
    }
    nodes = {f"p-worker{i or ''}": node_object(f"p-worker{i or ''}", spec) for i, spec in enumerate(NODES)}
    fakes.seed({"clusters": {"p": {"nodes": {**nodes, "p-control-plane": control}, "images": []}}})
    monkeypatch.setattr(secrets, "token_hex", lambda n: "run1")
    clock = [0.0]
    live = connect(
        "kind-p", verdict_s=1, settle_s=1, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s)
    )
    assert live.inventory == {"p-worker": "a100", "p-worker1": "l4", "p-worker2": "cpu"} and live.nodes == 4

    admitted = next(c for c in CASES if c.rule.startswith("quota: within"))
    Script(fakes).place("parity-run1-team", "w", "p-worker")
    test_parity_live(admitted, live)
    assert "Namespace//parity-run1-team" not in fakes.objects("kind-p")  # cleaned up

    over = next(c for c in CASES if c.rule.startswith("quota: over"))
    message = run_local(over).decision.message
    Script(fakes).refuse(
        "parity-run1-team", "w2", f'Error from server (Forbidden): error when creating "STDIN": {message}'
    )
    test_parity_live(over, live)
    Script(fakes).refuse("parity-run1-team", "w2", 'Error from server (Forbidden): error when creating "STDIN": other')
    with pytest.raises(AssertionError, match="cluster: Rejected 'other'"):
        test_parity_live(over, live)

    huge = next(c for c in CASES if c.rule.startswith("fit: no node has 5"))
    cluster_says = (
        "0/4 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "3 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available: 4 Preemption is not helpful for "
        "scheduling."
    )
    Script(fakes).pending("parity-run1-other", "huge", cluster_says)
    test_parity_live(huge, live)
    Script(fakes).pending("parity-run1-other", "huge", cluster_says.replace("3 Insufficient", "2 Insufficient"))
    with pytest.raises(AssertionError, match=r"Insufficient nvidia\.com/gpu' on 3 node"):
        test_parity_live(huge, live)
    assert not [k for k in fakes.objects("kind-p") if k.startswith(("Pod/", "Namespace//parity"))]
