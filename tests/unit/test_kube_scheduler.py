"""The Kubernetes scheduler backend (`sandbox.profiles.kube.scheduler`) against a FAKE kubectl.

Nothing here schedules: each test scripts what the API server and kube-scheduler answer
(`tests/fakes/fake_scheduling.py`), in Kubernetes' own wording (the local model's messages, which
mirror the API server's, are used where both exist), and checks the exact objects the backend sends
and how it reads the answers. Whether a real cluster answers that way is the parity mode of
tests/unit/test_gpu_parity.py (SANDBOX_PARITY_CONTEXT).
"""

from __future__ import annotations

import copy
import json

import pytest

from sandbox.config import load_config
from sandbox.errors import ExitCode, LockedError, NotRunningError
from sandbox.gpu.backend import NodeUsage, QuotaUsage, WorkloadState
from sandbox.gpu.inventory import NodeSpec, QuotaSpec, Taint
from sandbox.gpu.scheduler import Cluster, Workload
from sandbox.profiles import get_profile
from sandbox.profiles.kube.profile import KubeState
from sandbox.profiles.kube.scheduler import (
    PAUSE_IMAGE,
    KubeScheduler,
    api_message,
    namespace_object,
    pod_object,
    quota_object,
    remove_workloads,
)
from sandbox.profiles.kube.tools import ToolError, Tools
from sandbox.profiles.kube.validate import check_objects
from sandbox.scenarios import Outcome, discover, run_scenario
from sandbox.scenarios.context import ScenarioContext
from tests.factories import lock_held_elsewhere, make_endpoints
from tests.fakes import FakeTools
from tests.fakes.fake_scheduling import Script, node_object

GPU_TAINT = Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")
A100 = NodeSpec(name="a100", gpus=4, gpu_product="NVIDIA-A100-SXM4-80GB", cpu="32", memory="256Gi", taints=[GPU_TAINT])
CPU = NodeSpec(name="cpu", cpu="8", memory="32Gi")
QUOTA = QuotaSpec(namespace="team", name="team-quota", hard={"requests.nvidia.com/gpu": "4", "count/pods": "5"})
TOLERATE_GPU = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
PENDING = (  # kube-scheduler 1.36's wording
    "0/3 nodes are available: 1 node(s) had untolerated taint(s), 2 Insufficient nvidia.com/gpu. no new claims to "
    "deallocate, preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
)


def gpu(name: str, n: int, namespace: str = "team") -> Workload:
    return Workload(
        name=name,
        namespace=namespace,
        requests={"cpu": "1", "memory": "1Gi"},
        limits={"nvidia.com/gpu": str(n)},
        tolerations=TOLERATE_GPU,
        node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    )


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    tools = FakeTools(tmp_path, monkeypatch)
    nodes = {
        "t-control-plane": {
            "kind": "Node",
            "metadata": {"name": "t-control-plane", "labels": {"kubernetes.io/hostname": "t-control-plane"}},
            "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"}},
        },
        "t-worker": node_object("t-worker", A100),
        "t-worker2": node_object("t-worker2", CPU),
    }
    namespaces = {
        f"Namespace//{ns}": {"kind": "Namespace", "metadata": {"name": ns, "labels": {}}} for ns in ("ml-sandbox",)
    }
    tools.seed({"clusters": {"t": {"nodes": nodes, "images": []}}, "objects": {"kind-t": namespaces}})
    yield tools
    tools.stop_servers()


def scheduler(**overrides) -> KubeScheduler:
    clock = [0.0]

    def sleep(seconds: float) -> None:  # no real waiting: a FAKE clock the polls advance
        clock[0] += seconds

    options = {"instance": "sbx", "namespace": "ml-sandbox", "clock": lambda: clock[0], "sleep": sleep}
    return KubeScheduler(Tools("kind-t"), **{**options, **overrides})


# --------------------------------------------------------------------------- the objects


def test_the_pod_is_exact_and_valid():
    workload = gpu("train", 2)
    pod = pod_object(workload, "team", "sbx")
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "train",
            "namespace": "team",
            "labels": {
                "app.kubernetes.io/name": "gpu-workload",
                "app.kubernetes.io/instance": "sbx",
                "app.kubernetes.io/managed-by": "ml-sandbox",
                "app.kubernetes.io/part-of": "ml-sandbox",
                "app.kubernetes.io/component": "gpu-workload",
                "ml-sandbox/gpu-workload": "true",
            },
        },
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 5,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65535,
                "runAsGroup": 65535,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "workload",
                    "image": PAUSE_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    # As written: the API server defaults the GPU request from the limit, and validates.
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "2"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "privileged": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    bare = pod_object(Workload(name="bare", tolerations=[{"operator": "Exists"}]), "ml-sandbox", "sbx")
    assert "nodeSelector" not in bare["spec"] and bare["spec"]["containers"][0]["resources"] == {}
    assert bare["spec"]["tolerations"] == [{"operator": "Exists"}]  # no empty key/value: all taints
    equal = Workload(name="eq", tolerations=[{"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute"}])
    assert pod_object(equal, "x", "sbx")["spec"]["tolerations"] == [
        {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute"}
    ]
    check_objects([pod, bare, quota_object(QUOTA, "team", "sbx"), namespace_object("team", "sbx")])


def test_the_quota_and_namespace_are_exact():
    assert quota_object(QUOTA, "team", "sbx") == {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": "team-quota",
            "namespace": "team",
            "labels": {
                "app.kubernetes.io/name": "quota",
                "app.kubernetes.io/instance": "sbx",
                "app.kubernetes.io/managed-by": "ml-sandbox",
                "app.kubernetes.io/part-of": "ml-sandbox",
                "app.kubernetes.io/component": "quota",
            },
        },
        "spec": {"hard": {"requests.nvidia.com/gpu": "4", "count/pods": "5"}},
    }
    assert namespace_object("team", "sbx")["metadata"]["labels"]["ml-sandbox/gpu-namespace"] == "true"


# --------------------------------------------------------------------------- the API's answers


def test_submit_creates_the_pod_and_reads_the_node_the_scheduler_bound_it_to(fakes):
    Script(fakes).place("team", "train", "t-worker")
    decision = scheduler().submit(gpu("train", 2))
    assert (decision.status, decision.node, decision.workload) == ("Scheduled", "t-worker", "train")
    assert decision.message == "Successfully assigned team/train to t-worker"
    assert decision.devices == [] and decision.env == {}  # fake GPUs are counted, never allocated
    lines = fakes.lines()
    # Created (so admission runs), never applied; in a namespace made, labelled, for it.
    assert "kubectl create -f - <<Pod/train" in lines
    assert not any("apply" in line and "Pod/" in line for line in lines)
    assert any(line.startswith("kubectl apply") and line.endswith("<<Namespace/team") for line in lines)
    stored = fakes.objects("kind-t")["Pod/team/train"]
    assert stored["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}


def test_a_new_namespace_gets_its_default_service_account_before_the_pod_is_created(fakes):
    # Until the serviceaccounts controller has made `default` in a new namespace, the ServiceAccount
    # admission plugin refuses every Pod there, Forbidden (kubernetes plugin/pkg/admission/serviceaccount):
    # that is no quota or scheduler verdict, so the backend waits for the account first.
    scheduler().submit(gpu("train", 2))
    lines = fakes.lines()
    made = next(i for i, line in enumerate(lines) if line.endswith("<<Namespace/team"))
    looked = next(i for i, line in enumerate(lines) if line == "kubectl get serviceaccount default -o json -n team")
    created = lines.index("kubectl create -f - <<Pod/train")
    assert made < looked < created


def test_default_goes_to_the_stacks_namespace(fakes):
    decision = scheduler().submit(Workload(name="plain", requests={"cpu": "100m"}))
    assert decision.status == "Scheduled"
    assert "Pod/ml-sandbox/plain" in fakes.objects("kind-t")
    assert not any("<<Namespace/" in line for line in fakes.lines())  # the stack's exists: left as it is


def _local_refusal(workload: Workload, *before: Workload) -> str:
    """The local model's message for the same refusal (it mirrors the API server's wording)."""
    cpu_quota = QuotaSpec(namespace="strict", name="cpu-quota", hard={"requests.cpu": "4", "requests.memory": "8Gi"})
    cluster = Cluster([A100, CPU], [QUOTA, cpu_quota])
    for other in before:
        cluster.submit(other)
    decision = cluster.submit(workload)
    assert decision.status == "Rejected"
    return decision.message


REFUSALS = [
    # (workload, workloads admitted before it, kubectl's error output around the API's message)
    (gpu("w2", 3), [gpu("w1", 2)], 'Error from server (Forbidden): error when creating "STDIN": {}'),
    (Workload(name="bare", namespace="strict"), [], 'Error from server (Forbidden): error when creating "STDIN": {}'),
    (Workload(name="bad", namespace="team", requests={"nvidia.com/gpu": "1"}), [], "The {}"),
    (
        Workload(name="bad", namespace="team", requests={"nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "2"}),
        [],
        "The {}",
    ),
]


@pytest.mark.parametrize(("workload", "before", "output"), REFUSALS, ids=["exceeded", "failed", "limit", "equal"])
def test_an_admission_refusal_is_rejected_with_the_api_servers_own_message(fakes, workload, before, output):
    message = _local_refusal(workload, *before)
    assert api_message(output.format(message)) == message
    Script(fakes).refuse(workload.namespace, workload.name, output.format(message))
    decision = scheduler().submit(workload)
    assert (decision.status, decision.message, decision.node) == ("Rejected", message, None)
    assert f"Pod/{workload.namespace}/{workload.name}" not in fakes.objects("kind-t")


def test_a_name_taken_is_rejected_as_the_api_says(fakes):
    assert scheduler().submit(gpu("twice", 1)).status == "Scheduled"
    again = scheduler().submit(gpu("twice", 1))
    assert (again.status, again.message) == ("Rejected", 'pods "twice" already exists')


def test_any_other_failure_is_an_error_with_kubectls_output(fakes):
    fakes.fail(r"kubectl .*create -f -")
    with pytest.raises(ToolError) as error:
        scheduler().submit(gpu("w", 1))
    assert "failed calling webhook" in error.value.details


def test_unschedulable_is_pending_with_the_failedscheduling_message(fakes):
    Script(fakes).pending("team", "huge", PENDING)
    decision = scheduler().submit(gpu("huge", 5))
    assert (decision.status, decision.node) == ("Pending", None)
    assert decision.message == f"FailedScheduling: {PENDING}"


def test_no_verdict_within_the_bound_is_pending_and_says_so(fakes):
    Script(fakes).unanswered("team", "slow")
    decision = scheduler(verdict_s=2, poll_s=1).submit(gpu("slow", 1))
    assert (decision.status, decision.message) == ("Pending", "no PodScheduled condition within 2s")
    gets = [line for line in fakes.lines() if line.startswith("kubectl get pod slow")]
    assert len(gets) == 3  # at 0, 1 and 2 seconds of the FAKE clock


def test_release_of_an_unknown_workload_is_a_keyerror(fakes):
    with pytest.raises(KeyError):
        scheduler().release("ghost", "team")
    data = fakes.state()  # a Pod the sandbox did not make is not a workload either: never deleted
    data["objects"]["kind-t"]["Pod/team/theirs"] = {"kind": "Pod", "metadata": {"name": "theirs", "namespace": "team"}}
    fakes.seed(data)
    with pytest.raises(KeyError):
        scheduler().release("theirs", "team")
    assert not any(line.startswith("kubectl delete") for line in fakes.lines())


def test_release_deletes_the_pod_and_reports_the_pending_ones_the_scheduler_then_placed(fakes):
    script = Script(fakes)
    script.place("team", "a", "t-worker")
    script.pending("team", "first", PENDING)
    script.pending("team", "second", PENDING)
    script.pending("team", "stays", PENDING)
    script.after_delete("team", "a", {"team/second": "t-worker", "team/first": "t-worker"})
    sched = scheduler(settle_s=3, poll_s=1)
    for workload in (gpu("a", 4), gpu("first", 1), gpu("second", 1), gpu("stays", 4)):
        sched.submit(workload)
    started = sched.release("a", "team")
    assert [(d.workload, d.status, d.node) for d in started] == [
        ("first", "Scheduled", "t-worker"),  # oldest first
        ("second", "Scheduled", "t-worker"),
    ]
    assert "kubectl delete pod a -n team --wait=true --timeout=120s" in fakes.lines()
    assert "Pod/team/a" not in fakes.objects("kind-t")


# --------------------------------------------------------------------------- nodes, quotas, snapshot


def test_nodes_are_read_from_the_api(fakes):
    data = fakes.state()
    data["clusters"]["t"]["nodes"]["t-worker3"] = node_object(
        "t-worker3", NodeSpec(name="local-gpu", gpus=1, gpu_product="NVIDIA-L4", gpu_memory="24Gi"), real=True
    )
    fakes.seed(data)
    nodes = {node.name: node for node in scheduler().nodes()}
    assert set(nodes) == {"t-control-plane", "t-worker", "t-worker2", "t-worker3"}
    a100 = nodes["t-worker"]
    assert (a100.gpus, a100.gpu_product, a100.cpu, a100.memory, a100.real) == (
        4,
        "NVIDIA-A100-SXM4-80GB",
        "32",
        "256Gi",
        False,  # fake: patched onto the status, no device plugin label
    )
    assert a100.taints == [GPU_TAINT] and a100.labels["ml-sandbox/inventory-node"] == "a100"
    assert nodes["t-worker3"].real and nodes["t-worker3"].gpu_memory == "24576Mi"
    assert nodes["t-control-plane"].taints == [
        Taint(key="node-role.kubernetes.io/control-plane", value="", effect="NoSchedule")
    ]
    assert (nodes["t-worker2"].gpus, nodes["t-worker2"].gpu_product) == (0, None)


def test_apply_and_delete_quota(fakes):
    sched = scheduler()
    sched.apply_quota(QUOTA)
    objects = fakes.objects("kind-t")
    # Applied, then read until the quota controller has counted the namespace's use.
    assert "kubectl get resourcequota team-quota -o json -n team" in fakes.lines()
    assert objects["ResourceQuota/team/team-quota"] == quota_object(QUOTA, "team", "sbx")
    assert objects["Namespace//team"] == namespace_object("team", "sbx")
    sched.apply_quota(QuotaSpec(name="stack-quota", hard={"count/pods": "3"}))
    assert "ResourceQuota/ml-sandbox/stack-quota" in fakes.objects("kind-t")

    sched.delete_quota("team", "team-quota")
    objects = fakes.objects("kind-t")
    assert "ResourceQuota/team/team-quota" not in objects
    assert "Namespace//team" not in objects  # made for the quota, empty now: gone with it
    sched.delete_quota("default", "stack-quota")
    assert "Namespace//ml-sandbox" in fakes.objects("kind-t")  # the stack's own: never deleted


def test_snapshot_from_the_nodes_pods_and_quotas_the_api_returns(fakes):
    def pod(name, namespace, node, limits, requests, *, ours=True, phase="Running", created="10:00:00", cond=None):
        labels = {"app.kubernetes.io/instance": "sbx", "ml-sandbox/gpu-workload": "true"} if ours else {"app": "x"}
        resources = {"requests": requests, "limits": limits}
        return {
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "creationTimestamp": created},
            "spec": {"containers": [{"name": "c", "resources": resources}], **({"nodeName": node} if node else {})},
            "status": {"phase": phase, **({"conditions": [cond]} if cond else {})},
        }

    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": PENDING}
    pods = [
        pod("train", "team", "t-worker", {"nvidia.com/gpu": "3"}, {"cpu": "1", "memory": "1Gi"}),
        pod(
            "waits", "team", None, {"nvidia.com/gpu": "2"}, {}, phase="Pending", created="10:00:05", cond=unschedulable
        ),
        pod("coredns", "kube-system", "t-worker", {"memory": "170Mi"}, {"cpu": "100m", "memory": "70Mi"}, ours=False),
        pod("done", "team", "t-worker", {"nvidia.com/gpu": "1"}, {}, phase="Succeeded"),  # frees what it held
    ]
    quota = quota_object(QUOTA, "team", "sbx")
    quota["status"] = {"hard": {"requests.nvidia.com/gpu": "4", "count/pods": "5"}, "used": {
        "requests.nvidia.com/gpu": "5", "count/pods": "2"}}  # fmt: skip
    data = fakes.state()
    store = data["objects"]["kind-t"]
    for item in [*pods, quota]:
        store[f"{item['kind']}/{item['metadata']['namespace']}/{item['metadata']['name']}"] = item
    fakes.seed(data)

    snapshot = scheduler().snapshot()
    by_name = {node.name: node for node in snapshot.nodes}
    assert by_name["t-worker"] == NodeUsage(
        name="t-worker",
        labels=node_object("t-worker", A100)["metadata"]["labels"],
        taints=["nvidia.com/gpu=present:NoSchedule"],
        gpus=4,
        gpus_used=3,
        cpu="32",
        cpu_used="1100m",  # every non-terminated Pod on the node counts, the sandbox's or not
        memory="256Gi",
        memory_used="1094Mi",
        real=False,
    )
    assert (by_name["t-worker2"].gpus_used, by_name["t-worker2"].cpu_used) == (0, "0")
    assert snapshot.workloads == [
        WorkloadState(namespace="team", name="train", phase="Running", node="t-worker"),
        WorkloadState(namespace="team", name="waits", phase="Pending", node=None, reason=PENDING),
    ]
    assert snapshot.quotas == [
        QuotaUsage(
            namespace="team",
            name="team-quota",
            hard={"requests.nvidia.com/gpu": "4", "count/pods": "5"},
            used={"requests.nvidia.com/gpu": "5", "count/pods": "2"},
        )
    ]
    json.dumps(snapshot.to_dict())  # what `sandbox gpu status --json` prints


def _store(fakes, *items: dict) -> None:
    data = fakes.state()
    store = data["objects"]["kind-t"]
    for item in items:
        namespace = item["metadata"].get("namespace", "")
        store[f"{item['kind']}/{namespace}/{item['metadata']['name']}"] = item
    fakes.seed(data)


def test_a_pod_bound_to_a_node_is_pending_until_its_containers_run(fakes):
    """`gpu status` shows the Pod's own phase: bound (PodScheduled=True) is not Running while the kubelet still
    pulls the image; then the waiting container's reason says why. The phase the kubelet reports, whatever it is."""
    labels = {"app.kubernetes.io/instance": "sbx", "ml-sandbox/gpu-workload": "true"}
    scheduled = {"type": "PodScheduled", "status": "True"}

    def pod(name: str, status: dict, created: str) -> dict:
        meta = {"name": name, "namespace": "team", "labels": labels, "creationTimestamp": created}
        return {"kind": "Pod", "metadata": meta, "spec": {"nodeName": "t-worker", "containers": []}, "status": status}

    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "pause"'}}
    _store(
        fakes,
        pod(
            "pulling",
            {
                "phase": "Pending",
                "conditions": [scheduled],
                "containerStatuses": [{"name": "workload", "state": waiting}],
            },
            "10:00:01",
        ),
        pod("creating", {"phase": "Pending", "conditions": [scheduled]}, "10:00:02"),
        pod("runs", {"phase": "Running", "conditions": [scheduled]}, "10:00:03"),
        pod("lost", {"phase": "Unknown", "conditions": [scheduled]}, "10:00:04"),
    )
    assert [(w.name, w.phase, w.node, w.reason) for w in scheduler().snapshot().workloads] == [
        ("pulling", "Pending", "t-worker", 'ImagePullBackOff: Back-off pulling image "pause"'),
        ("creating", "Pending", "t-worker", ""),
        ("runs", "Running", "t-worker", ""),
        ("lost", "Unknown", "t-worker", ""),
    ]


def test_remove_workloads_deletes_the_backends_pods_quotas_and_namespaces_only(fakes):
    """What `down` calls: this instance's workload Pods in every namespace, its quotas, the namespaces it created;
    never a namespace it did not create, another instance's Pods, or anyone else's."""
    sched = scheduler()
    foreign = {"name": "theirs", "namespace": "shared", "labels": {"app": "x"}}
    _store(
        fakes,
        {"kind": "Namespace", "metadata": {"name": "shared", "labels": {}}},  # the user's, there before
        {"kind": "Pod", "metadata": foreign, "spec": {}, "status": {"phase": "Running"}},
    )
    for workload in (gpu("train", 2), gpu("sweep", 1, namespace="team-x"), gpu("side", 1, namespace="shared")):
        assert sched.submit(workload).status == "Scheduled"
    assert sched.submit(Workload(name="plain", requests={"cpu": "100m"})).status == "Scheduled"  # the stack's ns
    sched.apply_quota(QuotaSpec(namespace="shared", name="gpu-cap", hard={"requests.nvidia.com/gpu": "2"}))
    other = scheduler(instance="another")  # another sandbox on the same cluster
    assert other.submit(gpu("mine", 1, namespace="theirs-ns")).status == "Scheduled"
    # Someone else's Pod in a namespace the backend made: that namespace stays.
    _store(fakes, {"kind": "Pod", "metadata": {**foreign, "namespace": "team-x"}, "spec": {}, "status": {}})
    made = {k for k in fakes.objects("kind-t") if k.startswith("Namespace//")}
    assert {"Namespace//team", "Namespace//team-x", "Namespace//theirs-ns"} <= made

    kept = remove_workloads(Tools("kind-t"), "sbx")

    assert kept == ["team-x"]
    objects = fakes.objects("kind-t")
    ours = [
        k
        for k, o in objects.items()
        if (o.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/instance") == "sbx"
        and o["kind"] in ("Pod", "ResourceQuota")
    ]
    assert ours == []
    assert "Namespace//team" not in objects  # made by the backend, empty now: gone
    for stays in ("Namespace//team-x", "Namespace//shared", "Namespace//ml-sandbox", "Namespace//theirs-ns"):
        assert stays in objects, stays
    assert "Pod/shared/theirs" in objects and "Pod/team-x/theirs" in objects  # never anyone else's
    assert "Pod/theirs-ns/mine" in objects  # nor another instance's
    lines = fakes.lines()
    assert (
        "kubectl delete pods -A -l app.kubernetes.io/managed-by=ml-sandbox,app.kubernetes.io/instance=sbx,"
        "ml-sandbox/gpu-workload=true --ignore-not-found "
        "--wait=true --timeout=120s" in lines
    )
    assert not any(line.startswith("kubectl delete namespace") and " shared" in line for line in lines)
    assert remove_workloads(Tools("kind-t"), "sbx") == ["team-x"]  # again: nothing more to do, no error


# --------------------------------------------------------------------------- the profile


def test_the_kube_profiles_scheduler_is_this_backend_on_the_stacks_context(tmp_path):
    profile = get_profile(load_config(profile="kind", dir=tmp_path / "sb", **{"gpu.real_gpus": "off"}))
    with pytest.raises(NotRunningError):
        profile.scheduler()
    profile.folder.mkdir(parents=True)
    profile._write_state(KubeState("inst-1", "kind-ml-sandbox", "ml-sandbox", {}, cluster="ml-sandbox"))
    backend = profile.scheduler()
    assert isinstance(backend, KubeScheduler)
    assert (backend.tools.context, backend.instance, backend.namespace) == ("kind-ml-sandbox", "inst-1", "ml-sandbox")


def test_the_profiles_scheduler_changes_nothing_while_another_command_holds_the_lock(tmp_path, fakes):
    profile = get_profile(load_config(profile="kind", dir=tmp_path / "sb", **{"gpu.real_gpus": "off"}))
    profile.folder.mkdir(parents=True)
    profile._write_state(KubeState("sbx", "kind-t", "ml-sandbox", {}, cluster="t"))
    Script(fakes).place("team", "train", "t-worker")
    before = copy.deepcopy(fakes.objects("kind-t"))
    fakes.clear_log()
    with lock_held_elsewhere(profile.folder / "sandbox.lock", "up") as pid:
        backend = profile.scheduler()
        for change in (
            lambda: backend.submit(gpu("train", 2)),
            lambda: backend.release("train", "team"),
            lambda: backend.apply_quota(QUOTA),
        ):
            with pytest.raises(LockedError) as info:
                change()
            assert info.value.exit_code == ExitCode.LOCKED
            assert f"pid {pid}: sandbox up" in info.value.message
        assert backend.snapshot().workloads == []  # a read takes no lock
    assert fakes.objects("kind-t") == before and fakes.mutating() == []
    decision = profile.scheduler().submit(gpu("train", 2))  # the holder is gone: its lock went with it
    assert (decision.status, decision.node) == ("Scheduled", "t-worker")
    assert "Pod/team/train" in fakes.objects("kind-t")


# --------------------------------------------------------------------------- the gpu-quotas scenario


def test_the_gpu_quotas_scenario_runs_over_this_backend(fakes, monkeypatch):
    """The checklist's scenario, unchanged, over KubeScheduler; the FAKE API answers as this test scripts
    them (in the API server's and kube-scheduler's wording): the wiring is shown, not the cluster's verdicts."""
    ns = "checklist-gpu-quotas-20261127-101500-0001"
    monkeypatch.setattr(ScenarioContext, "unique", lambda self, name: ns)
    script = Script(fakes)
    for name in ("train-a", "train-b"):
        script.place(ns, name, "t-worker")
    script.place(ns, "cpu-job", "t-worker2")
    script.refuse(
        ns,
        "too-big",
        'Error from server (Forbidden): error when creating "STDIN": pods "too-big" is forbidden: exceeded quota: '
        "gpu-quota, requested: requests.nvidia.com/gpu=5, used: requests.nvidia.com/gpu=2, "
        "limited: requests.nvidia.com/gpu=6",
    )
    script.pending(ns, "waits", PENDING)
    script.after_delete(ns, "train-a", {f"{ns}/waits": "t-worker"})
    endpoints = make_endpoints(profile="kind", capabilities=["gpu"])
    result = run_scenario(discover()["gpu-quotas"], endpoints, None, lambda: scheduler(settle_s=2, poll_s=1))
    assert result.outcome == Outcome.PASSED, result.reason
    assert "waits pending" in " ".join(result.evidence)
    objects = fakes.objects("kind-t")
    assert not [key for key in objects if key.startswith("Pod/") or ns in key]  # released, quota and namespace gone
