"""Table-driven parity: each case is a Kubernetes rule, fed to the local admission and placement.

Every case names the rule it mirrors (plugin or admission controller) so a
failure says which part of Kubernetes' behaviour the local model lost.

Parity mode: with SANDBOX_PARITY_CONTEXT set to a kube context, `test_parity_live` also runs each
case against that cluster through the Kubernetes backend (`sandbox.profiles.kube.scheduler`): real
Pods, the real ResourceQuota admission and kube-scheduler, in namespaces of the case's own
(`parity-<run>-<namespace>`, deleted after it). It compares the local model's decisions with the
cluster's: status; node (kind nodes carry their inventory name in `ml-sandbox/inventory-node`); a
refusal's whole message; a FailedScheduling message (Kubernetes 1.36's wording) part by part: the
filters' reasons with their node counts, the other PostFilter plugins' messages, and preemption's
reasons with their node counts. The cluster's extra nodes (kind's control plane) add to those counts:
since 1.34 a taint is not named (`node(s) had untolerated taint(s)`), so the control plane's taint
and the GPU nodes' are one reason, counted together; each extra node the workload does not tolerate
must add exactly one to it (and one to `Preemption is not helpful for scheduling`). The Pods a
release lets start. The cluster must be made from this file's NODES: docs/examples/parity-gpu.yaml is that
inventory for the kind profile (`cp docs/examples/parity-gpu.yaml sandbox.yaml && make sandbox
PROFILE=kind`, then `SANDBOX_PARITY_CONTEXT=kind-ml-sandbox pytest tests/unit/test_gpu_parity.py`).
Cases that hang on the nodes' cpu/memory (kind nodes all report the host's; kube-scheduler's default
scoring weighs only cpu and memory) or on a scheduler profile the cluster does not run stay local
only, each with its reason.
"""

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sandbox.config import load_config
from sandbox.gpu.inventory import NodeSpec, QuotaSpec, Taint
from sandbox.gpu.scheduler import (
    NOT_HELPFUL,
    TAINT_REASON,
    Cluster,
    SchedulingDecision,
    Toleration,
    Workload,
    untolerated,
)

PARITY_CONTEXT = os.environ.get("SANDBOX_PARITY_CONTEXT", "")
PARITY_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "examples" / "parity-gpu.yaml"
HOST_CAPACITY = "kind nodes all report the host's cpu and memory, not the inventory's"
GPU_PROFILE = (
    "needs a scheduler profile whose NodeResourcesFit scores nvidia.com/gpu; kind runs the default (cpu, memory)"
)
# kube-scheduler 1.36's PostFilter wording for a Pod without ResourceClaims (DynamicResources, then DefaultPreemption).
POST = ". no new claims to deallocate, preemption: 0/3 nodes are available: "

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
    score_resources: dict | None = None  # gpu.score_resources (None: kube-scheduler's default, cpu and memory)
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
        message=f"0/3 nodes are available: 3 Insufficient nvidia.com/gpu{POST}3 {NOT_HELPFUL}.",
    ),
    Case(
        "fit: cpu is a fit resource too",
        workload=Workload(name="cpu-hog", namespace="other", requests={"cpu": "64"}, tolerations=TOLERATE_GPU),
        status="Pending",
        message=f"0/3 nodes are available: 3 Insufficient cpu{POST}3 {NOT_HELPFUL}.",
        live=HOST_CAPACITY,
    ),
    Case(
        "fit: every resource a node lacks is a reason of its own, each counted over the nodes",
        workload=Workload(
            name="hog", namespace="other", requests={"cpu": "20", "memory": "300Gi"}, tolerations=TOLERATE_GPU
        ),
        status="Pending",
        # a100 (32 cpu, 256Gi) lacks memory; l4 (16, 64Gi) and cpu (8, 32Gi) both: 5 reasons over 3 nodes.
        message=f"0/3 nodes are available: 2 Insufficient cpu, 3 Insufficient memory{POST}3 {NOT_HELPFUL}.",
        live=HOST_CAPACITY,
    ),
    Case(
        "fit: GPUs are not overcommitted across workloads",
        before=[gpu("a", 4, namespace="other"), gpu("b", 2, namespace="other")],
        workload=gpu("c", 1, namespace="other"),
        status="Pending",
        # The GPU nodes have the GPUs, all in use: preemption could help, were there a lower-priority Pod.
        message=f"0/3 nodes are available: 3 Insufficient nvidia.com/gpu{POST}"
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.",
    ),
    # ----- TaintToleration
    Case(
        "taint: no toleration keeps a pod off NoSchedule GPU nodes",
        workload=Workload(name="plain", namespace="other", requests={"cpu": "1"}),
        node="cpu",
    ),
    Case(
        "taint: untolerated everywhere it fits → Pending, the taint not named (since 1.34)",
        workload=Workload(name="plain", namespace="other", requests={"cpu": "12"}),
        status="Pending",
        message=f"0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint(s){POST}"
        "3 Preemption is not helpful for scheduling.",
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
        message=f"0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) had untolerated taint(s){POST}"
        f"3 {NOT_HELPFUL}.",
    ),
    Case(
        "taint: an empty-key Exists toleration tolerates everything",
        workload=Workload(
            name="any", namespace="other", limits={"nvidia.com/gpu": "1"}, tolerations=[{"operator": "Exists"}]
        ),
        node="a100",  # a tie (the workload requests no cpu or memory): the first node
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
        message=f"0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector{POST}3 {NOT_HELPFUL}.",
    ),
    # ----- scoring
    Case(
        # kube-scheduler's default: NodeResourcesFit scores cpu and memory (weight 1 each), not extended resources.
        # a100 after `second`: cpu 2/32, memory 2Gi/256Gi; l4: cpu 1/16, memory 1Gi/64Gi: a100 is the emptier.
        "score: LeastAllocated weighs cpu and memory only: the node with more of them free wins, its GPUs fuller",
        before=[gpu("first", 3, namespace="other")],
        workload=gpu("second", 1, namespace="other"),
        node="a100",
        live="the spread follows scores over cpu and memory (" + HOST_CAPACITY + ")",
    ),
    Case(
        "score: with nvidia.com/gpu among the scored resources, LeastAllocated spreads to the emptier GPU node",
        before=[gpu("first", 3, namespace="other")],
        workload=gpu("second", 1, namespace="other"),
        node="l4",
        score_resources={"cpu": 1, "memory": 1, "nvidia.com/gpu": 1},
        live=GPU_PROFILE,
    ),
    Case(
        # MostAllocated over cpu and memory: l4, the smaller node, is the fuller after `first` as before it.
        "score: MostAllocated packs onto the fuller node",
        before=[gpu("first", 1, namespace="other")],
        workload=gpu("second", 1, namespace="other"),
        node="l4",
        scoring="MostAllocated",
        live="needs a scheduler profile with NodeResourcesFit's MostAllocated; kind runs the default (LeastAllocated)",
    ),
    # ----- release
    Case(
        "release: freeing capacity schedules the pending pod (FIFO)",
        before=[gpu("a", 4, namespace="other"), gpu("b", 2, namespace="other")],
        workload=gpu("waiting", 3, namespace="other"),
        status="Pending",
        message=f"0/3 nodes are available: 3 Insufficient nvidia.com/gpu{POST}"
        "1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.",
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
    before: list[SchedulingDecision]
    decision: SchedulingDecision
    started: list[SchedulingDecision] | None  # after the release, when the case releases one


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
    return run_case(case, Cluster(NODES, [QUOTA, CPU_QUOTA], case.scoring, case.score_resources))


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
    others: list[NodeSpec] = field(
        default_factory=list
    )  # the cluster's nodes not in the inventory (kind's control plane)


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
    return Live(backend, inventory, len(nodes), [node for node in nodes if node.name not in inventory])


FAILED = re.compile(r"0/(?P<nodes>\d+) nodes are available: (?P<reasons>.*?)\.(?: (?P<post>.+))?$")


@dataclass
class Unschedulable:
    """A FailedScheduling message, part by part (kube-scheduler's FitError.Error): `0/N nodes are available:
    <filters' reasons>. <PostFilter plugins' messages, comma-joined>`; in 1.36 the PostFilter part is
    `no new claims to deallocate, preemption: 0/N nodes are available: <preemption's reasons>.`"""

    nodes: int
    reasons: dict[str, int]  # the filters' reasons, each with how many nodes gave it
    post_filter: list[str]  # the PostFilter plugins' messages before preemption's (1.36: DynamicResources')
    preemption: dict[str, int] | str | None  # preemption's reasons with their counts, its text, or None


def counted(text: str) -> dict[str, int]:
    """`1 a, 3 b` → {a: 1, b: 3}: FitError's histogram (a reason may hold commas, never one before a count)."""
    counts = {}
    for part in re.split(r", (?=\d+ )", text):
        number, _, reason = part.partition(" ")
        assert number.isdigit() and reason, f"not `N reason`: {part!r} in {text!r}"
        counts[reason] = int(number)
    return counts


def unschedulable(message: str) -> Unschedulable:
    """The parts of a FailedScheduling message (the decision's `FailedScheduling: ` prefix, if any, skipped)."""
    match = FAILED.search(message)
    assert match, f"not a FailedScheduling message: {message!r}"
    post, plugins, preemption = match.group("post") or "", [], None
    before, marker, after = post.partition("preemption: ")
    if not marker:
        before = post
    plugins = [part for part in before.removesuffix(", ").removesuffix(",").split(", ") if part]
    if marker:
        inner = re.fullmatch(r"0/(\d+) nodes are available: (.*)\.", after)
        preemption = counted(inner.group(2)) if inner else after
    return Unschedulable(int(match.group("nodes")), counted(match.group("reasons")), plugins, preemption)


def reasons(message: str) -> tuple[int, dict[str, int]]:
    """(nodes, {reason: how many nodes}) from a FailedScheduling message's filters (PostFilter parts left out)."""
    parsed = unschedulable(message)
    return parsed.nodes, parsed.reasons


def _same_counts(
    what: str, local: dict, cluster: dict, extra: dict[str, int], unknown: int, said: str, *, per_node: bool
):
    """The cluster's counts are the local model's plus its extra nodes': ``extra`` those known (a taint the
    workload does not tolerate: TaintToleration, the first filter, gives its reason and nothing else), and
    ``unknown`` more nodes whose reasons hang on their cpu/memory (at least one reason each; exactly one when
    ``per_node``, as preemption gives)."""
    for reason in {**local, **cluster, **extra}:
        here, there = local.get(reason, 0), cluster.get(reason, 0)
        assert there - here >= extra.get(reason, 0), f"{what}: {reason!r} on {here} node(s) here, {there} there: {said}"
    rest = sum(cluster.values()) - sum(local.values()) - sum(extra.values())
    if unknown == 0 or per_node:
        assert rest == unknown, f"{what}: the other nodes' reasons: {said}"
    else:
        assert rest >= unknown, f"{what}: the other nodes' reasons: {said}"


def assert_same(
    local: SchedulingDecision,
    cluster: SchedulingDecision,
    live: Live,
    workload: Workload | None = None,
    *,
    compare_node: bool = True,
) -> None:
    said = f"local: {local.status} {local.message!r}; cluster: {cluster.status} {cluster.message!r}"
    assert cluster.status == local.status, said
    if local.status == "Rejected":
        assert cluster.message == local.message, said
    elif local.status == "Pending":
        assert workload is not None, "a Pending decision is compared knowing its workload"
        here, there = unschedulable(local.message), unschedulable(cluster.message)
        assert (here.nodes, there.nodes) == (len(NODES), live.nodes), f"node counts: {said}"
        tainted = sum(1 for node in live.others if untolerated(workload.tolerations, node.taints))
        unknown = len(live.others) - tainted
        _same_counts("filters", here.reasons, there.reasons, {TAINT_REASON: tainted}, unknown, said, per_node=False)
        assert there.post_filter == here.post_filter, f"PostFilter messages: {said}"
        assert isinstance(here.preemption, dict) and isinstance(there.preemption, dict), f"preemption: {said}"
        _same_counts("preemption", here.preemption, there.preemption, {NOT_HELPFUL: tainted}, unknown, said,
                     per_node=True)  # fmt: skip
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
        assert_same(local.decision, outcome.decision, live, case.workload, compare_node=not case.live_node)
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


# Real kube-scheduler 1.36 messages (the shape of pkg/scheduler/framework/types.go FitError.Error, the
# PostFilter plugins DynamicResources and DefaultPreemption; as seen in clusters' events).
REAL_136 = [
    (
        "0/4 nodes are available: 1 Insufficient nvidia.com/gpu, 3 node(s) had untolerated taint(s). no new claims to "
        "deallocate, preemption: 0/4 nodes are available: 1 No preemption victims found for incoming pod, 3 Preemption "
        "is not helpful for scheduling.",
        Unschedulable(
            4,
            {"Insufficient nvidia.com/gpu": 1, "node(s) had untolerated taint(s)": 3},
            ["no new claims to deallocate"],
            {"No preemption victims found for incoming pod": 1, "Preemption is not helpful for scheduling": 3},
        ),
    ),
    (
        "0/3 nodes are available: 1 node(s) had untolerated taint(s), 2 Insufficient cpu, 2 Insufficient memory. "
        "no new claims to deallocate, preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
        Unschedulable(
            3,
            {"node(s) had untolerated taint(s)": 1, "Insufficient cpu": 2, "Insufficient memory": 2},
            ["no new claims to deallocate"],
            {"Preemption is not helpful for scheduling": 3},
        ),
    ),
    (
        "0/5 nodes are available: 1 Insufficient nvidia.com/gpu, 4 node(s) didn't match Pod's node affinity/selector. "
        "no new claims to deallocate, preemption: 0/5 nodes are available: 1 No preemption victims found for incoming "
        "pod, 4 Preemption is not helpful for scheduling.",
        Unschedulable(
            5,
            {"Insufficient nvidia.com/gpu": 1, "node(s) didn't match Pod's node affinity/selector": 4},
            ["no new claims to deallocate"],
            {"No preemption victims found for incoming pod": 1, "Preemption is not helpful for scheduling": 4},
        ),
    ),
]


@pytest.mark.parametrize(("message", "parsed"), REAL_136, ids=["gpu-taints", "cpu-memory", "selector"])
def test_real_136_failedscheduling_messages_are_read_part_by_part(message, parsed):
    assert unschedulable(message) == parsed
    assert unschedulable(f"FailedScheduling: {message}") == parsed  # a decision's message
    assert reasons(message) == (parsed.nodes, parsed.reasons)  # " no new claims to deallocate, " not swallowed


def test_the_local_model_speaks_136():
    """The model's Pending message, for the nodes of the first real message above, is that message, whole:
    a GPU node with its GPUs in use, three tainted nodes (one a control plane, one GPU-less), one taint each."""
    control_plane = Taint(key="node-role.kubernetes.io/control-plane", effect="NoSchedule")
    nodes = [
        NodeSpec(name="a100", gpus=4, gpu_product="NVIDIA-A100-SXM4-80GB"),
        NodeSpec(name="l4", gpus=2, gpu_product="NVIDIA-L4", taints=[GPU_TAINT]),
        NodeSpec(name="cpu", taints=[Taint(key="dedicated", value="batch", effect="NoExecute")]),
        NodeSpec(name="control-plane", taints=[control_plane]),
    ]
    cluster = Cluster(nodes, [])
    assert cluster.submit(Workload(name="busy", limits={"nvidia.com/gpu": "4"})).node == "a100"
    decision = cluster.submit(Workload(name="more", limits={"nvidia.com/gpu": "1"}))
    assert decision.message == f"FailedScheduling: {REAL_136[0][0]}"


def test_reasons_are_sorted_as_fiterror_sorts_them():
    """FitError.Error sorts `N reason` strings, counts included: `10 node(s) ...` comes before `2 Insufficient ...`."""
    nodes = [NodeSpec(name=f"t{i}", taints=[GPU_TAINT]) for i in range(10)]
    nodes += [NodeSpec(name="s1", cpu="500m"), NodeSpec(name="s2", cpu="1", pods=1)]
    cluster = Cluster(nodes, [])
    filler = Workload(name="filler", requests={"cpu": "100m"}, node_selector={"kubernetes.io/hostname": "s2"})
    assert cluster.submit(filler).node == "s2"
    decision = cluster.submit(Workload(name="w", requests={"cpu": "1"}))
    # s1 has less cpu than asked in all (preemption cannot help); s2 is full of pods and short of cpu: two reasons,
    # both curable by preemption, had the filler a lower priority.
    assert decision.message == (
        "FailedScheduling: 0/12 nodes are available: 1 Too many pods, 10 node(s) had untolerated taint(s), "
        "2 Insufficient cpu. no new claims to deallocate, preemption: 0/12 nodes are available: "
        "1 No preemption victims found for incoming pod, 11 Preemption is not helpful for scheduling."
    )


def test_older_failedscheduling_messages_are_still_read():
    """Before 1.34 a taint was named; before DynamicResources' PostFilter, preemption came alone."""
    cluster = (
        "FailedScheduling: 0/4 nodes are available: 1 node(s) had untolerated taint "
        "{node-role.kubernetes.io/control-plane: }, 3 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are "
        "available: 1 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod."
    )
    assert unschedulable(cluster) == Unschedulable(
        4,
        {
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }": 1,
            "Insufficient nvidia.com/gpu": 3,
        },
        [],
        {"Preemption is not helpful for scheduling": 1, "No preemption victims found for incoming pod": 3},
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
    cluster_says = (  # kube-scheduler 1.36, the control plane's taint unnamed
        "0/4 nodes are available: 1 node(s) had untolerated taint(s), 3 Insufficient nvidia.com/gpu. no new claims "
        "to deallocate, preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling."
    )
    Script(fakes).pending("parity-run1-other", "huge", cluster_says)
    test_parity_live(huge, live)
    Script(fakes).pending("parity-run1-other", "huge", cluster_says.replace("3 Insufficient", "2 Insufficient"))
    with pytest.raises(AssertionError, match=r"Insufficient nvidia\.com/gpu' on 3 node"):
        test_parity_live(huge, live)
    before_134 = cluster_says.replace("taint(s)", "taint {node-role.kubernetes.io/control-plane: }")
    Script(fakes).pending("parity-run1-other", "huge", before_134)
    with pytest.raises(AssertionError, match=r"untolerated taint\(s\)' on 0 node\(s\) here, 0 there"):
        test_parity_live(huge, live)

    # The control plane's taint and the GPU nodes' are one reason in 1.36, counted together: 2 here, 3 there.
    wrong = next(c for c in CASES if c.rule.startswith("taint: Equal toleration"))
    merged = (
        "0/4 nodes are available: 1 Insufficient nvidia.com/gpu, 3 node(s) had untolerated taint(s). no new claims to "
        "deallocate, preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling."
    )
    Script(fakes).pending("parity-run1-other", "wrong", merged)
    test_parity_live(wrong, live)
    for bad in (merged.replace("3 node(s)", "2 node(s)"), merged.replace("4 Preemption", "3 Preemption")):
        Script(fakes).pending("parity-run1-other", "wrong", bad)
        with pytest.raises(AssertionError):
            test_parity_live(wrong, live)
    assert not [k for k in fakes.objects("kind-p") if k.startswith(("Pod/", "Namespace//parity"))]
