"""Issue 22: what a real kind bring-up would have met first, each pinned against the FAKE tools (tests/fakes)."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.config import load_config
from sandbox.errors import ConfigError, ExitCode, SandboxError
from sandbox.gpu.render import limit_range_defaults
from sandbox.profiles import get_profile
from sandbox.profiles.kube import actions, image, preflight, versions
from sandbox.profiles.kube.manifests import bundle, kind, operators
from sandbox.profiles.kube.manifests import spec as m
from sandbox.profiles.kube.mlserver import refuse_unloadable_by_mlserver
from sandbox.profiles.kube.tools import Tools
from tests.fakes import FakeTools

REPO = Path(__file__).resolve().parents[2]
KFP_SECRET = f"Secret/{versions.KFP_NAMESPACE}/{operators.KFP_SECRET}"


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "checkout"
    folder.mkdir()
    (folder / "Dockerfile").write_text("FROM scratch\n")  # the project's image builds from a checkout
    monkeypatch.setattr("sandbox.profiles.kind.profile.REPOSITORY", folder)
    return folder


@pytest.fixture
def fakes(tmp_path, monkeypatch, checkout):
    tools = FakeTools(tmp_path, monkeypatch)
    yield tools
    tools.stop_servers()


def kind_profile(tmp_path, **overrides):
    return get_profile(load_config(profile="kind", dir=tmp_path / "sb", **{"gpu.real_gpus": "off", **overrides}))


# --------------------------------------------------------------------------- 1. the project image


def test_the_image_is_loaded_into_the_nodes_its_pods_can_run_on_before_any_object_uses_it(tmp_path, fakes):
    prof = kind_profile(tmp_path)
    prof.up()
    lines = fakes.lines()
    load = next(i for i, line in enumerate(lines) if line.startswith("kind load docker-image"))
    first_apply = next(i for i, line in enumerate(lines) if line.startswith("kubectl apply"))
    assert load < first_apply
    nodes = fakes.state()["clusters"]["ml-sandbox"]["nodes"]
    tag = prof._read_state().image
    holding = sorted(name for name, node in nodes.items() if tag in node.get("images", []))
    # Every worker (the GPU nodes too: a predictor with --gpus tolerates their taint), not the tainted control plane.
    assert holding == sorted(name for name in nodes if name != "ml-sandbox-control-plane") and len(holding) == 3
    applied = fakes.objects("kind-ml-sandbox")
    jupyterlab = applied["Deployment/ml-sandbox/jupyterlab"]["spec"]["template"]["spec"]["containers"][0]
    assert jupyterlab["image"] == tag and tag.startswith(f"{versions.PROJECT_IMAGE_REPO}:")


def test_a_changed_build_context_is_built_and_loaded_again_and_rolls_the_pods(tmp_path, fakes, checkout):
    kind_profile(tmp_path).up()
    first = kind_profile(tmp_path)._read_state().image
    (checkout / "sandbox").mkdir()
    (checkout / "sandbox" / "changed.py").write_text("x = 1\n")
    fakes.clear_log()
    kind_profile(tmp_path).up()
    second = kind_profile(tmp_path)._read_state().image
    assert second != first and second.split("-")[-1] == image.context_digest(checkout)[:12]
    mutating = fakes.mutating()
    assert any(line.startswith(f"docker build -t {second} --label {image.DIGEST_LABEL}=") for line in mutating)
    assert any(line.startswith(f"kind load docker-image {second}") for line in mutating)
    # The pods that run it are re-applied with the new tag (so they roll), the rest left alone.
    assert any("Deployment/mlflow" in line for line in mutating if line.startswith("kubectl apply"))


def test_the_context_digest_covers_what_dockerignore_lets_in():
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line[:1] == "!"]
    covered = set(image.CONTEXT_FILES) | set(image.CONTEXT_FOLDERS)
    assert allowed and all(entry in covered or entry.split("/")[0] in image.CONTEXT_FOLDERS for entry in allowed)
    assert {"Dockerfile", ".dockerignore"} <= set(image.CONTEXT_FILES)


def test_nodes_for_follows_taints_and_tolerations():
    control_plane = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
    gpu = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    nodes = [
        {"metadata": {"name": "cp"}, "spec": {"taints": [control_plane]}},
        {"metadata": {"name": "gpu"}, "spec": {"taints": [gpu]}},
        {"metadata": {"name": "soft"}, "spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}},
        {"metadata": {"name": "cpu"}, "spec": {}},
    ]  # fmt: skip
    assert image.nodes_for(nodes, []) == ["cpu", "soft"]
    assert image.nodes_for(nodes, [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]) == [
        "cpu",
        "gpu",
        "soft",
    ]


# --------------------------------------------------------------------------- 2. and 3. KFP's own objects


def test_kfp_is_left_working_by_down_keep_cluster_and_a_later_up_rotates_new_keys(tmp_path, fakes):
    kind_profile(tmp_path).up()
    applied = fakes.objects("kind-ml-sandbox")
    assert "labels" not in applied[KFP_SECRET]["metadata"]  # KFP's Secret is changed, never taken as ours
    assert not [key for key in applied if key.startswith("NetworkPolicy/")]
    kind_profile(tmp_path).down(purge=True, keep_cluster=True)  # purge: the next up has new keys
    left = fakes.objects("kind-ml-sandbox")
    assert KFP_SECRET in left, "down deleted KFP's own Secret"
    assert f"Service/kubeflow/{kind.KFP_NODEPORT_SERVICE}" not in left  # the sandbox's own Service went
    fakes.clear_log()
    prof = kind_profile(tmp_path)
    prof.up()
    keys = prof._secrets(create=False)
    secret = actions.secret_values(fakes.objects("kind-ml-sandbox")[KFP_SECRET])
    assert secret == {"accesskey": keys.kfp_s3_access_key, "secretkey": keys.kfp_s3_secret_key}
    assert any("exec deploy/seaweedfs" in line for line in fakes.mutating()), "the new keys were not rotated in"


def test_down_keep_cluster_removes_what_sandbox_gpu_made_and_nothing_else(tmp_path, fakes):
    from sandbox.profiles.kube.scheduler import NAMESPACE_LABEL, WORKLOAD_LABEL

    prof = kind_profile(tmp_path)
    prof.up()
    instance = prof._read_state().instance
    ours = {**m.instance_labels(instance, "gpu"), WORKLOAD_LABEL: "true"}
    data = fakes.state()
    store = data["objects"]["kind-ml-sandbox"]
    made = {"name": "team-z", "labels": {**m.instance_labels(instance, "namespace"), NAMESPACE_LABEL: "true"}}
    store["Namespace//team-z"] = {"kind": "Namespace", "metadata": made}
    store["Namespace//theirs"] = {"kind": "Namespace", "metadata": {"name": "theirs", "labels": {}}}
    for namespace, name, labels in (("team-z", "train", ours), ("theirs", "job", ours), ("theirs", "app", {"a": "b"})):
        pod = {"name": name, "namespace": namespace, "labels": labels}
        store[f"Pod/{namespace}/{name}"] = {"kind": "Pod", "metadata": pod, "spec": {}, "status": {"phase": "Pending"}}
    fakes.seed(data)
    prof.down(keep_cluster=True)
    left = fakes.objects("kind-ml-sandbox")
    assert "Pod/team-z/train" not in left and "Pod/theirs/job" not in left  # the backend's, in any namespace
    assert "Namespace//team-z" not in left  # the namespace it made
    assert "Pod/theirs/app" in left and "Namespace//theirs" in left  # never anyone else's


# --------------------------------------------------------------------------- 4. failure evidence


def test_the_failure_report_covers_every_namespace_the_plan_touches(tmp_path, fakes):
    fakes.unready("ml-pipeline")  # a KFP pod that never gets Ready, in KFP's namespace
    fakes.fail(r"wait pods .*-n kubeflow")
    with pytest.raises(SandboxError) as info:
        kind_profile(tmp_path).up(keep=True)
    assert "--- pod ml-pipeline-0 (Pending)" in info.value.details
    prof = kind_profile(tmp_path)
    state = prof._read_state()
    spec = prof._spec(state, m.StackSecrets.generate())
    site = prof._site(state, spec)
    assert actions.namespaces(site, prof.bundle(state, spec), prof.source) == [
        "ml-sandbox",
        "cert-manager",
        "kserve",
        "kubeflow",
    ]
    # --keep left the cluster and the state for `sandbox diagnose`.
    assert "ml-sandbox" in fakes.state()["clusters"] and (tmp_path / "sb" / "kube" / "state.json").exists()
    out = tmp_path / "diag.tar.gz"
    result = CliRunner().invoke(
        app, ["diagnose", "--profile", "kind", "--dir", str(tmp_path / "sb"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with tarfile.open(out) as archive:
        names = archive.getnames()
    for namespace in ("ml-sandbox", "kubeflow", "kserve", "cert-manager"):
        assert any(f"/{namespace}/events.txt" in name for name in names), namespace
        assert any(f"/{namespace}/pods-describe.txt" in name for name in names), namespace
    assert any(name.endswith("/kubeflow/logs/ml-pipeline-0.txt") for name in names)
    assert (out.stat().st_mode & 0o777) == 0o600


def test_a_failed_first_up_leaves_no_state_for_other_commands(tmp_path, fakes):
    fakes.fail(r"rollout status deployment/mlflow")
    with pytest.raises(SandboxError):
        kind_profile(tmp_path).up()
    assert not (tmp_path / "sb" / "kube" / "state.json").exists()
    result = CliRunner().invoke(app, ["gpu", "status", "--profile", "kind", "--dir", str(tmp_path / "sb")])
    assert result.exit_code == ExitCode.NOT_RUNNING, result.output


def test_diagnose_reads_a_cluster_kept_before_the_stack_existed_and_says_when_it_is_gone(tmp_path, fakes):
    fakes.fail(r"^kind load docker-image")  # before any namespace of the stack exists
    with pytest.raises(SandboxError):
        kind_profile(tmp_path).up(keep=True)
    fakes.fail(None)
    out = tmp_path / "early.tar.gz"
    args = ["diagnose", "--profile", "kind", "--dir", str(tmp_path / "sb"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with tarfile.open(out) as archive:
        assert any(name.endswith("/cluster/nodes.txt") for name in archive.getnames())
    kind = Tools()  # `kind delete cluster` behind the sandbox's back, on the FAKE tools
    kind.run(kind.kind_delete("ml-sandbox"))
    gone = CliRunner().invoke(app, args)
    assert gone.exit_code == ExitCode.NOT_RUNNING and "cannot be read" in gone.output


def test_diagnose_without_a_sandbox_says_so_and_exits_non_zero(tmp_path):
    result = CliRunner().invoke(app, ["diagnose", "--profile", "kind", "--dir", str(tmp_path / "sb")])
    assert result.exit_code == ExitCode.NOT_RUNNING
    assert "nothing to diagnose" in result.output
    local = CliRunner().invoke(app, ["diagnose", "--profile", "local", "--dir", str(tmp_path / "sb")])
    assert local.exit_code == ExitCode.USAGE and "sandbox logs" in local.output


def test_make_sandbox_keeps_a_failed_kind_or_cluster_up_and_not_a_local_one():
    def recipe(profile: str) -> str:
        out = subprocess.run(
            ["make", "-n", "-o", ".venv/.installed", "sandbox", f"PROFILE={profile}"],
            cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return next(line for line in out.stdout.splitlines() if "sandbox up" in line)

    assert recipe("kind").endswith("up --profile kind --keep")
    assert recipe("cluster").endswith("--keep")
    assert recipe("local").rstrip().endswith("up --profile local")


# --------------------------------------------------------------------------- 5. the smaller ones


def test_dry_run_and_render_together_are_refused(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["up", "--profile", "kind", "--dir", str(tmp_path / "sb"), "--dry-run", "--render", str(out)]
    )
    assert result.exit_code == ExitCode.USAGE and "give one" in result.output
    assert not out.exists()


def test_the_example_config_names_the_real_image():
    text = (REPO / "sandbox.example.yaml").read_text()
    assert "ml-platform-sandbox:" not in text and f"{versions.PROJECT_IMAGE_REPO}:" in text


def test_a_limit_range_caps_nothing_unless_the_quota_counts_limits():
    assert "default" not in limit_range_defaults({"requests.cpu": 32, "requests.nvidia.com/gpu": 4})
    assert limit_range_defaults({"limits.cpu": 8})["default"] == {"cpu": "1"}
    assert limit_range_defaults({})["defaultRequest"] == {"cpu": "250m", "memory": "256Mi"}


def test_every_stack_container_sets_cpu_and_memory_requests_and_limits():
    spec = m.StackSpec(instance="t1", secrets=m.StackSecrets.generate(), image="ml-sandbox:0.1.0")
    containers = [c for o in bundle.stack_objects(spec) for c in m.containers(o)]
    assert containers
    for container in containers:
        for part in ("requests", "limits"):
            assert set(container["resources"][part]) >= {"cpu", "memory"}, container["name"]


@pytest.mark.parametrize("machine, ok", [("x86_64", True), ("AMD64", True), ("arm64", False), ("aarch64", False)])
def test_an_arm64_host_is_refused_with_the_reason(machine, ok):
    (check,) = preflight.architecture_checks(machine)
    assert check.ok is ok and check.required
    if not ok:
        assert "amd64 only" in check.detail and "amd64 machine" in check.fix


def test_kserve_mlserver_refuses_a_skops_model_and_takes_a_cloudpickle_one():
    skops = {"flavors": {"sklearn": {"serialization_format": "skops", "sklearn_version": "1.7"}}}
    with pytest.raises(ConfigError, match=r"'skops'.*MLServer 1\.5\.0") as info:
        refuse_unloadable_by_mlserver(skops, "models:/fraud/1")
    assert "cloudpickle" in info.value.hint
    refuse_unloadable_by_mlserver({"flavors": {"sklearn": {"serialization_format": "cloudpickle"}}}, "models:/f/1")
    refuse_unloadable_by_mlserver({"flavors": {"python_function": {}}}, "models:/f/1")


def test_the_reference_forest_logged_with_cloudpickle_is_what_kserve_mlserver_accepts(tmp_path, monkeypatch, mlflow_db):
    import mlflow

    from sandbox.serving.reference_model import register_reference_model

    monkeypatch.chdir(tmp_path)  # the sqlite store keeps artifacts under ./mlruns
    uri = mlflow_db  # a new sqlite store in tmp_path (tests/unit/conftest.py)
    mlflow.set_registry_uri(uri)
    flavors = {}
    try:
        for serialization in ("skops", "cloudpickle"):
            name = f"forest-{serialization}"
            register_reference_model(uri, name, n_estimators=3, serialization=serialization)
            flavors[serialization] = {"flavors": mlflow.models.get_model_info(f"models:/{name}/1").flavors}
    finally:  # MLflow keeps both in globals: leave none for the next test
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert flavors["cloudpickle"]["flavors"]["sklearn"]["serialization_format"] == "cloudpickle"
    refuse_unloadable_by_mlserver(flavors["cloudpickle"], "models:/forest-cloudpickle/1")
    with pytest.raises(ConfigError, match="skops"):
        refuse_unloadable_by_mlserver(flavors["skops"], "models:/forest-skops/1")
