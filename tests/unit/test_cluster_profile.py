"""The cluster profile, driven for real against FAKE kubectl/helm (tests/fakes/bin) on a fake cluster.

The fake cluster already holds things the sandbox did not make (a team's Deployment in the same
namespace, an operator's CRD, a ClusterRole): they must survive every failure and every `down`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from sandbox.config import load_config
from sandbox.errors import ConfigError, ExitCode, LockedError, PreflightError, SandboxError
from sandbox.files import PidRecord, read_pid_record, write_pid_record
from sandbox.profiles import get_profile
from tests.factories import lock_held_elsewhere
from tests.fakes import STACK_ACTIONS, FakeTools

CONTEXT = "minikube"
FOREIGN = {
    "Deployment/ml-sandbox/team-app": {
        "kind": "Deployment",
        "metadata": {"name": "team-app", "namespace": "ml-sandbox", "labels": {"app": "team-app"}},
    },
    "Namespace//ml-sandbox": {"kind": "Namespace", "metadata": {"name": "ml-sandbox", "labels": {}}},
    "ClusterRole//team-reader": {"kind": "ClusterRole", "metadata": {"name": "team-reader", "labels": {}}},
}
OPERATOR_CRDS = [
    "inferenceservices.serving.kserve.io",
    "certificates.cert-manager.io",
    "scheduledworkflows.kubeflow.org",
]
# Each action without operators, in order: (title starts with, a call that makes it fail, the call that undoes it).
CLUSTER_ACTIONS = [
    ("Operators' CRDs present", None, None),
    ("Namespace, quota", r"<<ResourceQuota/compute-quota,LimitRange", r"delete resourcequota/compute-quota"),
    *STACK_ACTIONS,
    ("Project image", None, None),
    ("Stack ready", r"wait pods .*-n ml-sandbox", None),
]


def crds() -> dict:
    return {
        f"CustomResourceDefinition//{name}": {"kind": "CustomResourceDefinition", "metadata": {"name": name}}
        for name in OPERATOR_CRDS
    }


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    tools = FakeTools(tmp_path, monkeypatch)
    tools.seed({"contexts": [CONTEXT, "prod-east"], "objects": {CONTEXT: {**FOREIGN, **crds()}}})
    yield tools
    tools.stop_servers(tmp_path / "sb" / "kube" / "forwards")


def cluster(tmp_path, context: str | None = CONTEXT, **overrides):
    settings = {"cluster.context": context, "gpu.real_gpus": "off", **overrides}
    return get_profile(load_config(profile="cluster", dir=tmp_path / "sb", **settings))


def test_the_context_is_required(tmp_path, fakes):
    with pytest.raises(ConfigError, match="needs the context"):
        cluster(tmp_path, context=None).up()
    assert fakes.calls() == [] and not (tmp_path / "sb").exists()


@pytest.mark.parametrize("context", ["prod-east", "gke_team_europe-west1_main", "arn:aws:eks:eu-west-1:1:cluster/x"])
def test_a_context_that_is_not_a_known_local_one_is_refused_before_any_call(tmp_path, fakes, context):
    with pytest.raises(ConfigError, match="not a known local one") as info:
        cluster(tmp_path, context=context).up()
    assert info.value.exit_code == ExitCode.USAGE and "allowed_contexts" in info.value.hint
    with pytest.raises(ConfigError):
        cluster(tmp_path, context=context).plan()  # nor planned against
    assert fakes.calls() == [] and not (tmp_path / "sb").exists()


def test_a_context_named_in_allowed_contexts_is_accepted(tmp_path, fakes):
    fakes.seed({"contexts": ["prod-east"], "objects": {"prod-east": crds()}})
    cluster(tmp_path, context="prod-east", **{"cluster.allowed_contexts": ["prod-east"]}).up()
    kubectl = [call["argv"] for call in fakes.calls() if call["tool"] == "kubectl" and call["argv"][0] != "version"]
    assert kubectl and all(argv[:2] == ["--context", "prod-east"] for argv in kubectl)


def test_a_server_side_dry_run_comes_before_each_first_apply(tmp_path, fakes):
    cluster(tmp_path).up()
    applies = [line for line in fakes.lines() if line.startswith("kubectl apply")]
    assert applies[0].startswith("kubectl apply") and "--dry-run=server" in applies[0]
    for index, line in enumerate(applies):
        if "--dry-run=server" not in line:
            previous = applies[index - 1]
            assert "--dry-run=server" in previous and previous.split("<<")[1] == line.split("<<")[1]


def test_without_install_operators_their_crds_must_exist_and_nothing_is_applied_otherwise(tmp_path, fakes):
    fakes.seed({"contexts": [CONTEXT], "objects": {CONTEXT: dict(FOREIGN)}})
    with pytest.raises(PreflightError) as info:
        cluster(tmp_path).up()
    assert "inferenceservices.serving.kserve.io (KServe)" in info.value.message
    assert "install_operators" in info.value.hint
    assert fakes.mutating() == [] and not [c for c in fakes.calls() if c["tool"] == "helm"]


def test_with_install_operators_the_charts_and_kfp_are_installed(tmp_path, fakes):
    fakes.seed({"contexts": [CONTEXT], "objects": {CONTEXT: dict(FOREIGN)}})
    prof = cluster(tmp_path, **{"cluster.install_operators": True})
    titles = [action.title for action in prof.plan()]
    assert not any(title.startswith("Operators' CRDs") for title in titles)
    assert any(t.startswith("Helm: kserve-crd") for t in titles) and any("Kubeflow" in t for t in titles)
    prof.up()
    installs = [line for line in fakes.lines() if " upgrade --install " in line]
    assert [line.split()[3] for line in installs] == ["cert-manager", "kserve-crd", "kserve", "kserve-runtime-configs"]


def test_a_second_up_changes_nothing(tmp_path, fakes):
    cluster(tmp_path).up()
    fakes.clear_log()
    cluster(tmp_path).up()
    assert fakes.mutating() == []


@pytest.mark.parametrize(
    "failing", [i for i, a in enumerate(CLUSTER_ACTIONS) if a[1]], ids=[a[0] for a in CLUSTER_ACTIONS if a[1]]
)
def test_a_failure_undoes_exactly_this_runs_work_and_nothing_it_did_not_make(tmp_path, fakes, failing):
    before = fakes.objects(CONTEXT)
    prefix, fail, _ = CLUSTER_ACTIONS[failing]
    fakes.fail(fail)
    if prefix == "Stack ready":
        fakes.unready("jupyterlab")
    with pytest.raises(SandboxError):
        cluster(tmp_path).up()
    fakes.assert_undone_last_first(CLUSTER_ACTIONS, failing)
    after = {k: v for k, v in fakes.objects(CONTEXT).items() if v["kind"] != "Pod"}
    assert after == before  # the team's objects, its namespace and the CRDs untouched; ours gone
    forbidden = r"delete (namespace|crd|customresourcedefinition|clusterrole)"
    assert not [line for line in fakes.lines() if re.search(forbidden, line)]


def test_down_deletes_only_objects_carrying_its_labels(tmp_path, fakes):
    prof = cluster(tmp_path)
    prof.up()
    instance = prof._read_state().instance
    fakes.clear_log()
    prof.down()
    deletes = [line for line in fakes.mutating() if line.startswith("kubectl delete")]
    selector = f"-l app.kubernetes.io/managed-by=ml-sandbox,app.kubernetes.io/instance={instance}"
    assert deletes and all(selector in line for line in deletes)
    # Namespaced, or across namespaces by the labels (what `sandbox gpu` made): never a cluster-scoped object.
    assert all(" -n " in line or " -A " in line for line in deletes)
    assert not [line for line in deletes if re.search(r"namespace|crd|customresourcedefinition|cluster", line)]
    remaining = fakes.objects(CONTEXT)
    assert set(FOREIGN) | set(crds()) <= set(remaining)
    assert not [k for k, v in remaining.items() if v["metadata"].get("labels", {}).get("app.kubernetes.io/instance")]


def test_down_and_up_are_refused_while_another_command_holds_the_lock(tmp_path, fakes):
    prof = cluster(tmp_path)
    prof.up()
    lock_file = prof.folder / "sandbox.lock"
    assert "sandbox up" in lock_file.read_text() and oct(lock_file.stat().st_mode & 0o777) == "0o600"
    before, forwards = copy.deepcopy(fakes.objects(CONTEXT)), sorted((prof.folder / "forwards").glob("*.pid"))
    fakes.clear_log()
    with lock_held_elsewhere(lock_file, "serve deploy fraud") as pid:
        for command in (prof.down, prof.up):
            with pytest.raises(LockedError) as info:
                command()
            assert info.value.exit_code == ExitCode.LOCKED
            assert f"another sandbox command is changing {tmp_path / 'sb'} (pid {pid}: sandbox serve deploy fraud" in (
                info.value.message
            )
        assert prof.status().services  # a read takes no lock
    assert fakes.objects(CONTEXT) == before and fakes.mutating() == []
    assert prof._read_state() is not None and sorted((prof.folder / "forwards").glob("*.pid")) == forwards
    prof.down()  # the holder is gone: its lock went with it
    assert prof._read_state() is None
    labelled = [
        v for v in fakes.objects(CONTEXT).values() if "app.kubernetes.io/instance" in v["metadata"].get("labels", {})
    ]
    assert labelled == []


def _up_with_mlflow_forward(prof):
    """Bring ``prof`` up; its port-forwards and MLflow's forward among them."""
    prof.up()
    state = prof._read_state()
    return prof.reach.forwards(state), next(f for f in prof.reach._stack_forwards(state) if f.name == "mlflow")


def test_a_forward_recorded_on_another_port_is_stopped_not_orphaned(tmp_path, fakes):
    prof = cluster(tmp_path)
    forwards, mlflow = _up_with_mlflow_forward(prof)
    old = forwards.running(mlflow)
    assert old is not None
    moved = dataclasses.replace(mlflow, local_port=mlflow.local_port + 1)  # the kept port changed under it
    assert forwards.running(moved) is None  # not the forward wanted now...
    new = forwards.start(moved)  # ...so it is started again, and the old one must not be left behind
    assert ended(old)
    forwards.stop([moved])
    assert ended(new)
    prof.down()


def test_a_forward_stopped_while_still_inside_exec_is_ended(tmp_path, fakes, monkeypatch):
    # Right after its start a forward may still be inside exec, where /proc shows no command line: the pid file's
    # record (start time and the command it was given) is what identifies it, so `stop` still ends it.
    prof = cluster(tmp_path)
    forwards, mlflow = _up_with_mlflow_forward(prof)
    with monkeypatch.context() as inside_exec:
        inside_exec.setattr(psutil.Process, "cmdline", lambda self: [])
        pid = forwards.running(mlflow)
        assert pid is not None
        forwards.stop([mlflow])
        assert ended(pid)
    prof.down()


def test_a_pid_file_whose_pid_is_another_process_now_is_not_trusted(tmp_path, fakes):
    prof = cluster(tmp_path)
    forwards, mlflow = _up_with_mlflow_forward(prof)
    prof.down()
    # The recorded pid now runs something else (pid reuse after a reboot): same pid, another start time.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        argv = list(forwards.command(mlflow).argv)
        write_pid_record(forwards.folder / "mlflow.pid", PidRecord(pid=other.pid, create_time=1.0, cmdline=argv))
        assert forwards.running(mlflow) is None
        forwards.stop([mlflow])
        assert other.poll() is None  # not signalled
        assert not (forwards.folder / "mlflow.pid").exists()
    finally:
        other.kill()
        other.wait()


def ended(pid: int) -> bool:
    """True once the process has exited (waited for, so a child of this test is reaped, not left a zombie)."""
    try:
        psutil.Process(pid).wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return not psutil.pid_exists(pid)


def test_port_forwards_are_started_watched_and_stopped(tmp_path, fakes):
    prof = cluster(tmp_path)
    endpoints = prof.up()
    forwards = tmp_path / "sb" / "kube" / "forwards"
    pids = {p.stem: read_pid_record(p).pid for p in forwards.glob("*.pid")}
    assert set(pids) == {"postgres", "s3", "mlflow", "notebooks"}
    assert endpoints.mlflow_tracking_uri.startswith("http://127.0.0.1:")
    os.killpg(pids["mlflow"], signal.SIGTERM)  # a forward dies (its pod restarted)
    for _ in range(50):  # until it is gone
        if prof.reach.forwards(prof._read_state()).running(prof.reach._stack_forwards(prof._read_state())[2]) is None:
            break
        time.sleep(0.1)
    prof.endpoints()  # the next command brings it back
    assert read_pid_record(forwards / "mlflow.pid").pid != pids["mlflow"]
    prof.down()
    assert list(forwards.glob("*.pid")) == []
