"""The kind profile's bring-up, driven for real against FAKE kind/kubectl/helm/docker (tests/fakes/bin).

The fakes record every call and keep a small cluster state; nothing here runs Docker or Kubernetes.
What a real cluster does is checked by `benchmarks/kind_actions.py` and the kind CI workflow.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sandbox.config import load_config
from sandbox.errors import ExitCode, NotRunningError, PreflightError, SandboxError
from sandbox.profiles import get_profile
from tests.fakes import STACK_ACTIONS, FakeTools

REPO = Path(__file__).resolve().parents[2]

# Each action of the plan, in order: (title starts with, a call that makes it fail, the call that undoes it).
KIND_ACTIONS = [
    ("kind cluster", r"^kind create cluster", r"^kind delete cluster"),
    ("Fake GPUs", r"patch node", None),
    ("Project image", r"^docker build", None),
    ("Namespace, quota", r"<<Namespace/ml-sandbox", r"delete namespace ml-sandbox"),
    *STACK_ACTIONS,
    ("Helm: cert-manager", r"upgrade --install cert-manager", r"uninstall cert-manager"),
    ("Helm: kserve-crd", r"upgrade --install kserve-crd", r"uninstall kserve-crd"),
    ("Helm: kserve ", r"upgrade --install kserve oci", r"uninstall kserve -n"),
    ("Helm: kserve-runtime-configs", r"upgrade --install kserve-runtime-configs", r"uninstall kserve-runtime"),
    ("Kubeflow Pipelines", r"cluster-scoped-resources", r"delete -k .*platform-agnostic"),
    ("Stack ready", r"wait pods .*-n ml-sandbox", None),
]


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    tools = FakeTools(tmp_path, monkeypatch)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "Dockerfile").write_text("FROM scratch\n")  # the project's image builds from a checkout
    monkeypatch.setattr("sandbox.profiles.kind.profile.REPOSITORY", checkout)
    yield tools
    tools.stop_servers()


def kind_profile(tmp_path, **overrides):
    return get_profile(load_config(profile="kind", dir=tmp_path / "sb", **{"gpu.real_gpus": "off", **overrides}))


def timings(tmp_path) -> list[dict]:
    return json.loads((tmp_path / "sb" / "kube" / "timings.json").read_text())


def test_the_plan_is_in_order_with_the_exact_commands_and_touches_nothing(tmp_path, fakes):
    actions = kind_profile(tmp_path).plan()
    titles = [action.title for action in actions]
    assert len(titles) == len(KIND_ACTIONS)
    for title, (prefix, _, _) in zip(titles, KIND_ACTIONS, strict=True):
        assert title.startswith(prefix), (title, prefix)
    commands = [command for action in actions for command in action.commands]
    assert commands[0].startswith("kind create cluster --name ml-sandbox --config ")
    assert "kindest/node:v1.36.1@sha256:" in commands[0]  # the node image pinned by digest
    assert any("helm --kube-context kind-ml-sandbox upgrade --install cert-manager" in c for c in commands)
    assert all("--context kind-ml-sandbox" in c for c in commands if c.startswith("kubectl"))
    assert fakes.calls() == [] and not (tmp_path / "sb").exists()


def test_dry_run_on_the_command_line_makes_no_call_and_writes_nothing(tmp_path, fakes):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "up", "--profile", "kind", "--dir", str(tmp_path / "sb"), "--dry-run"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "kind create cluster" in result.stdout and "Kubeflow Pipelines" in result.stdout
    assert "oci://ghcr.io/kserve/charts/kserve-crd --version v0.20.0" in result.stdout
    assert fakes.calls() == [] and not (tmp_path / "sb").exists()


def test_smoke_the_fake_executables_through_the_subprocess_runner_answer_as_the_in_process_fakes(tmp_path, monkeypatch):
    """The one test of the subprocess path: the FAKE executables on PATH, run by the real `SubprocessRunner`
    (every other test answers the same calls in-process), give the same answers, calls and state."""
    from sandbox.net import LOOPBACK, free_port, wait_listening
    from sandbox.profiles.kube.portforward import Forward, PortForwards
    from sandbox.profiles.kube.tools import Command, SubprocessRunner, ToolError, Tools, tool_version
    from tests.fakes import InProcessRunner

    config = tmp_path / "kind-config.yaml"
    mapping = {"containerPort": 30500, "hostPort": free_port(), "listenAddress": LOOPBACK}
    config.write_text(yaml.safe_dump({"nodes": [{"role": "control-plane", "extraPortMappings": [mapping]}]}))
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    deployment = {"kind": "Deployment", "metadata": {"name": "web", "namespace": "team"},
                  "spec": {"template": {"metadata": {"labels": {"app": "web"}}}}}  # fmt: skip

    def session(folder: Path, *, executables: bool):
        folder.mkdir()
        with monkeypatch.context() as patch:
            fakes = FakeTools(folder, patch, executables=executables)
            tools = Tools("kind-smoke")
            assert type(tools.runner) is (SubprocessRunner if executables else InProcessRunner)
            answers = []

            def ask(command: Command):
                result = tools.run(command, check=False)
                answers.append((result.returncode, result.stdout, result.stderr))

            ask(tools.kind_create("smoke", config, node_image="kindest/node:v1.36.1", wait_s=60))
            assert wait_listening(mapping["hostPort"], 10)  # the FAKE MLflow /health behind kind's mapping
            ask(tools.apply([namespace, deployment]))
            ask(tools.get("deployment", "web", namespace="team"))
            ask(tools.get("pods", namespace="team", selector="app=web"))
            ask(tools.get("deployment", "gone", namespace="team"))  # NotFound, exit 1
            fakes.fail(r"rollout status deployment/web")
            with pytest.raises(ToolError) as failed:
                tools.run(tools.rollout_status("deployment/web", namespace="team"))
            answers.append((failed.value.returncode, failed.value.output))
            fakes.fail(None)
            answers.append(list(tools.stream(tools.logs("web-0", namespace="team", lines=5, follow=True))))
            answers.append(tool_version("kubectl"))
            with pytest.raises(ToolError) as missing:
                tools.run(Command(("no-such-tool", "version")))
            answers.append((missing.value.returncode, missing.value.output))
            forwards = PortForwards(tools, "team", folder / "forwards")
            forward = Forward("web", "web", 80, free_port())
            assert forwards.ensure([forward]) == ["web"] and forwards.running(forward) is not None
            forwards.stop([forward])
            ask(tools.kind_delete("smoke"))
            fakes.stop_servers(folder / "forwards")
            return answers, fakes.calls(), fakes.state()

    through_subprocesses = session(tmp_path / "executables", executables=True)
    in_process = session(tmp_path / "in-process", executables=False)
    assert through_subprocesses == in_process
    answers, calls, state = through_subprocesses
    assert answers[0][0] == 0 and 'Set kubectl context to "kind-smoke"' in answers[0][1]
    assert "deployment/web serverside-applied" in answers[1][1] and answers[4][0] == 1
    assert json.loads(answers[2][1])["status"]["readyReplicas"] == 1
    assert answers[5][0] == 1 and "Error from server" in answers[5][1]
    assert answers[6] and answers[7] == (1, 36, 1) and answers[8] == (127, "no-such-tool: command not found")
    assert [call["tool"] for call in calls][:2] == ["kind", "kubectl"] and calls[1]["stdin_objects"] == [
        "Namespace/team",
        "Deployment/web",
    ]
    assert state["clusters"] == {} and state["objects"] == {}


def test_up_then_a_second_up_finds_every_action_done_and_changes_nothing(tmp_path, fakes):
    prof = kind_profile(tmp_path)
    endpoints = prof.up()
    # Every action ran (readiness may find the fakes' pods Ready at once: its check is then enough).
    assert [row["outcome"] for row in timings(tmp_path)][:-1] == ["done"] * (len(KIND_ACTIONS) - 1)
    assert all(row["seconds"] >= 0 for row in timings(tmp_path))
    assert endpoints.mlflow_tracking_uri.startswith("http://127.0.0.1:")
    assert endpoints.notebooks_url and "token=" in endpoints.notebooks_url
    secrets = tmp_path / "sb" / "kube" / "secrets.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert json.loads(secrets.read_text())["s3_secret_key"] == endpoints.s3_secret_key
    # The kind config maps every host port on 127.0.0.1 only.
    config = (tmp_path / "sb" / "kube" / "kind-config.yaml").read_text()
    assert "listenAddress: 127.0.0.1" in config and "0.0.0.0" not in config

    fakes.clear_log()
    kind_profile(tmp_path).up()
    assert [row["outcome"] for row in timings(tmp_path)] == ["already done"] * len(KIND_ACTIONS)
    assert fakes.mutating() == []
    assert fakes.lines(), "the second up read the cluster"


def test_fake_gpus_dropped_by_a_node_restart_are_advertised_again(tmp_path, fakes):
    kind_profile(tmp_path).up()
    data = fakes.state()
    nodes = data["clusters"]["ml-sandbox"]["nodes"]
    restarted = next(n for n in nodes.values() if n["status"].get("capacity", {}).get("nvidia.com/gpu"))
    restarted["status"] = {}  # a restarted kubelet reports no extended resource until it is patched again
    fakes.seed(data)
    fakes.clear_log()
    kind_profile(tmp_path).up()
    assert fakes.mutating() == [
        f"kubectl patch node {restarted['metadata']['name']} --subresource=status --type=json -p "
        + json.dumps(
            [
                {"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "4"},
                {"op": "add", "path": "/status/allocatable/nvidia.com~1gpu", "value": "4"},
            ]
        )
    ]


@pytest.mark.parametrize("failing", range(len(KIND_ACTIONS)), ids=[a[0].strip() for a in KIND_ACTIONS])
def test_a_failure_in_each_action_undoes_exactly_this_runs_work_last_first(tmp_path, fakes, failing):
    prefix, fail, _ = KIND_ACTIONS[failing]
    fakes.fail(fail)
    if prefix == "Stack ready":
        fakes.unready("jupyterlab")  # else its check finds the fakes' pods Ready and it has nothing to run
    with pytest.raises(SandboxError) as info:
        kind_profile(tmp_path).up()
    assert "FAKE" not in info.value.message
    assert info.value.details, "the failing command's own output travels with the error"
    fakes.assert_undone_last_first(KIND_ACTIONS, failing)
    state = fakes.state()
    assert state["clusters"] == {} and state["objects"] == {} and state["helm"] == {}


def test_keep_leaves_what_the_failed_run_made(tmp_path, fakes):
    fakes.fail(r"rollout status deployment/mlflow")
    with pytest.raises(SandboxError):
        kind_profile(tmp_path).up(keep=True)
    assert not [line for line in fakes.lines() if re.match(r"(kind delete|kubectl delete|helm uninstall)", line)]
    objects = fakes.objects("kind-ml-sandbox")
    assert "Deployment/ml-sandbox/mlflow" in objects and "StatefulSet/ml-sandbox/postgres" in objects
    fakes.fail(None)
    kind_profile(tmp_path).up()  # and a later up finishes from there
    assert [row["outcome"] for row in timings(tmp_path)][:6] == ["already done"] * 6


def test_a_failure_shows_the_failing_pods_events_and_last_log_lines(tmp_path, fakes):
    fakes.unready("mlflow")
    fakes.fail(r"rollout status deployment/mlflow")
    with pytest.raises(SandboxError) as info:
        kind_profile(tmp_path).up()
    details = info.value.details
    assert "Error from server" in details  # the failing command's own output
    assert "pod mlflow-0 (Pending)" in details and "FAKE event: ErrImagePull" in details
    assert "Back-off pulling image" in details  # its last log lines


def test_down_deletes_the_cluster_and_keep_cluster_only_the_labelled_stack(tmp_path, fakes):
    prof = kind_profile(tmp_path)
    prof.up()
    fakes.clear_log()
    prof.down(keep_cluster=True)
    deletes = [line for line in fakes.mutating() if " delete " in f" {line} "]
    instance = json.loads((tmp_path / "sb" / "kube" / "state.json").read_text())["instance"]
    assert deletes and all(
        f"-l app.kubernetes.io/managed-by=ml-sandbox,app.kubernetes.io/instance={instance}" in d for d in deletes
    )
    assert "ml-sandbox" in fakes.state()["clusters"]
    remaining = fakes.objects("kind-ml-sandbox")
    assert not [k for k in remaining if k.startswith(("Deployment/ml-sandbox/", "StatefulSet/ml-sandbox/"))]
    assert "CustomResourceDefinition//inferenceservices.serving.kserve.io" in remaining  # operators stay
    prof.down()
    assert fakes.state()["clusters"] == {}


def test_endpoints_and_backends_need_a_sandbox(tmp_path, fakes):
    prof = kind_profile(tmp_path)
    with pytest.raises(SandboxError) as info:
        prof.endpoints()
    assert info.value.exit_code == ExitCode.NOT_RUNNING
    for backend in (prof.serving, prof.pipelines, prof.scheduler):  # each is built (tests/unit/test_kube_*.py)
        with pytest.raises(NotRunningError, match="no kind sandbox"):
            backend()


def test_render_writes_validated_files_and_refuses_an_invalid_object(tmp_path, fakes, monkeypatch):
    from typer.testing import CliRunner

    from sandbox.cli import app
    from sandbox.profiles.kube.manifests import mlflow

    out = tmp_path / "rendered"
    result = CliRunner().invoke(app, ["up", "--profile", "kind", "--dir", str(tmp_path / "sb"), "--render", str(out)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert "00-kind-config.yaml" in names and any(n.startswith("helm-values-") for n in names)
    assert fakes.calls() == []

    real = mlflow.objects

    def broken(spec):
        objects = real(spec)
        deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow")
        deployment["spec"]["replicas"] = "two"  # not an integer: the schema refuses it
        return objects

    monkeypatch.setattr(mlflow, "objects", broken)
    bad = tmp_path / "bad"
    result = CliRunner().invoke(app, ["up", "--profile", "kind", "--dir", str(tmp_path / "sb"), "--render", str(bad)])
    assert result.exit_code == ExitCode.USAGE
    assert "mlflow" in result.output and "replicas" in result.output
    assert not bad.exists()


@pytest.mark.parametrize("profile", ["kind", "cluster"])
def test_a_component_added_in_one_place_is_planned_rendered_and_validated(tmp_path, fakes, monkeypatch, profile):
    """`manifests.bundle.COMPONENTS` is the one list of what `up` applies: a component added there is an action
    of the plan (`--dry-run`), files of `--render`, and checked by the offline validation."""
    from typer.testing import CliRunner

    from sandbox.cli import app
    from sandbox.profiles.kube.manifests import bundle
    from sandbox.profiles.kube.manifests.spec import meta

    broken = [True]

    def redis(spec):
        service = {"selector": {"app.kubernetes.io/name": "redis"}, "ports": [{"port": 6379}]}
        if broken[0]:
            service["replicas"] = 1  # a Service has none: the offline validation refuses it
        objects = [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(spec, "redis", "redis-config")},
            {"apiVersion": "v1", "kind": "Service", "metadata": meta(spec, "redis", "redis"), "spec": service},
        ]
        return bundle.stack_part("redis", "Redis (a dummy component)", objects)

    at = bundle.COMPONENTS.index(bundle._operators)  # the last of the stack's own, before the operators
    monkeypatch.setattr(bundle, "COMPONENTS", [*bundle.COMPONENTS[:at], redis, *bundle.COMPONENTS[at:]])
    flags = ["--profile", profile, "--dir", str(tmp_path / "sb")]
    flags += ["--context", "kind-x"] if profile == "cluster" else []

    result = CliRunner().invoke(app, ["up", *flags, "--dry-run"])
    assert result.exit_code == 0, result.output
    planned = re.search(r"\d+\. Redis \(a dummy component\)\n(.*)\n", result.output)
    assert planned and planned.group(1).endswith("<<EOF (ConfigMap/redis-config, Service/redis)"), result.output

    result = CliRunner().invoke(app, ["up", *flags, "--render", str(tmp_path / "out")])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "Service ml-sandbox/redis: spec" in result.output and "replicas" in result.output
    assert not (tmp_path / "out").exists()

    broken[0] = False
    result = CliRunner().invoke(app, ["up", *flags, "--render", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    ours = [name for name in written if "redis" in name]
    assert [name.split("-", 1)[1] for name in ours] == ["configmap-redis-config.yaml", "service-redis.yaml"]
    jupyterlab = next(name for name in written if name.endswith("-deployment-jupyterlab.yaml"))
    assert written.index(ours[0]) == written.index(jupyterlab) + 2  # after the stack's own
    assert fakes.calls() == [] and not (tmp_path / "sb").exists()


def test_up_on_a_machine_without_the_tools_exits_5_naming_each_with_its_fix(tmp_path):
    empty = tmp_path / "no-tools"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SANDBOX_", "FAKE_TOOLS_"))}
    env.update(PATH=str(empty), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "up", "--profile", "kind", "--dir", str(tmp_path / "sb")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == ExitCode.PREFLIGHT, result.stderr
    for tool, fix in [
        ("docker", "https://docs.docker.com/engine/install/"),
        ("kind", "https://kind.sigs.k8s.io/"),
        ("kubectl", "https://kubernetes.io/docs/tasks/tools/"),
        ("helm", "https://helm.sh/docs/intro/install/"),
    ]:
        assert re.search(rf"✗ {tool}: not found on PATH\. Fix: install .*{re.escape(fix)}", result.stderr), tool
    assert "Docker daemon" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-tools"]  # nothing left behind


def test_status_reads_the_api_and_says_stopped_when_the_cluster_is_gone(tmp_path, fakes):
    prof = kind_profile(tmp_path)
    prof.up()
    status = prof.status()
    assert status.overall == "running"
    assert {s.name for s in status.services} == {"postgres", "s3", "mlflow", "jupyterlab"}
    assert next(s for s in status.services if s.name == "mlflow").instance == "mlflow-0"  # the pod's name
    fakes.stop_servers()
    data = fakes.state()
    data["clusters"] = {}  # deleted behind the sandbox's back (`kind delete cluster`)
    fakes.seed(data)
    gone = prof.status()
    assert gone.overall == "stopped" and 'context "kind-ml-sandbox" does not exist' in gone.services[0].detail
    prof.down()
    assert prof.status().services == []  # after down there is no stack to report


def test_keep_cluster_is_refused_on_a_profile_without_a_cluster(tmp_path):
    from typer.testing import CliRunner

    from sandbox.cli import app

    result = CliRunner().invoke(app, ["down", "--dir", str(tmp_path / "sb"), "--keep-cluster"])
    assert result.exit_code == ExitCode.USAGE and "--keep-cluster" in result.output


# --------------------------------------------------------------------------- real GPUs, nvkind's way (FAKE host)

REAL_ACTIONS = [
    *KIND_ACTIONS[:2],
    ("Real GPUs", r"upgrade --install nvidia-device-plugin", r"delete runtimeclass/nvidia"),
    *KIND_ACTIONS[2:],
]


def two_gpus(monkeypatch) -> None:
    """This machine "has" two GPUs: `inventory_nodes` adds its real node (no NVML involved)."""
    from sandbox.gpu.detect import GpuDevice

    devices = [GpuDevice(index, "NVIDIA L4", 24 * 2**30, f"GPU-FAKE-{index}") for index in range(2)]
    monkeypatch.setattr("sandbox.gpu.detect_gpus", lambda: devices)


def nvidia_host(tmp_path, monkeypatch, fakes, *, ctk=True, runtime="nvidia", setting="true") -> None:
    """A FAKE host set up (or not) the way nvkind asks: nvidia-ctk, Docker's default runtime, the toolkit's setting."""
    folder = tmp_path / "host-bin"
    folder.mkdir(exist_ok=True)
    if ctk:
        ctk_path = folder / "nvidia-ctk"
        ctk_path.write_text("#!/bin/sh\necho FAKE nvidia-ctk\n")
        ctk_path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    fakes.docker_runtime(runtime)
    config = tmp_path / "nvidia-container-runtime.toml"
    if setting is None:
        config.unlink(missing_ok=True)
    else:
        config.write_text(f"#accept-nvidia-visible-devices-as-volume-mounts = false\n"
                          f"accept-nvidia-visible-devices-as-volume-mounts = {setting}\n")  # fmt: skip
    monkeypatch.setattr("sandbox.profiles.kube.preflight.NVIDIA_RUNTIME_CONFIG", config)


def test_the_plan_with_real_gpus_shows_nvkinds_commands_and_the_pinned_device_plugin(tmp_path, fakes, monkeypatch):
    from sandbox.profiles.kube import versions

    two_gpus(monkeypatch)
    nvidia_host(tmp_path, monkeypatch, fakes)
    actions = kind_profile(tmp_path, **{"gpu.real_gpus": "auto"}).plan()
    titles = [action.title for action in actions]
    for title, (prefix, _, _) in zip(titles, REAL_ACTIONS, strict=True):
        assert title.startswith(prefix), (title, prefix)
    real = next(a for a in actions if a.title.startswith("Real GPUs"))
    lines = "\n".join(real.commands)
    node = "'<node labelled ml-sandbox/inventory-node=local-gpu>'"
    assert f"docker exec {node} bash -c" in lines and "apt-get install -y nvidia-container-toolkit" in lines
    assert "nvidia-ctk runtime configure --runtime=containerd" in lines and "systemctl restart containerd" in lines
    assert "umount -R /proc/driver/nvidia" in lines
    assert "apply --server-side --field-manager=ml-sandbox --force-conflicts -f - <<EOF (RuntimeClass/nvidia)" in lines
    chart = versions.NVIDIA_DEVICE_PLUGIN
    assert chart.version == "0.19.3" and chart.repo == "https://nvidia.github.io/k8s-device-plugin"
    assert (
        f"upgrade --install nvidia-device-plugin nvidia-device-plugin --repo {chart.repo} --version {chart.version}"
        f" -n nvidia" in lines
    )
    assert (
        "wait 'node/<node labelled ml-sandbox/inventory-node=local-gpu>' "
        "'--for=jsonpath={.status.allocatable.nvidia\\.com/gpu}=2'" in lines
    )
    # The fake nodes keep their patched capacity; the real one is not patched.
    fake = next(a for a in actions if a.title.startswith("Fake GPUs"))
    assert fake.commands and not any("local-gpu" in c for c in fake.commands)
    # The plan asked the host whether it can hand its GPUs to kind (`docker info`), and changed nothing.
    assert fakes.mutating() == [] and not (tmp_path / "sb").exists()


@pytest.mark.parametrize("command", ["plan", "up"])
def test_with_auto_a_host_that_cannot_hand_its_gpus_to_kind_gets_fake_ones_in_the_plan_as_in_up(
    tmp_path, fakes, monkeypatch, command
):
    """The plan does not depend on an earlier preflight: `--dry-run` shows what `up` then makes."""
    two_gpus(monkeypatch)
    nvidia_host(tmp_path, monkeypatch, fakes, runtime="runc")
    prof = kind_profile(tmp_path, **{"gpu.real_gpus": "auto"})
    if command == "up":
        prof.up()
        titles = [row["title"] for row in timings(tmp_path)]
    else:
        titles = [action.title for action in prof.plan()]
    assert not any(title.startswith("Real GPUs") for title in titles)
    assert any(title.startswith("Fake GPUs") for title in titles)
    fake = next(a for a in kind_profile(tmp_path, **{"gpu.real_gpus": "auto"}).plan() if a.title.startswith("Fake"))
    assert any("inventory-node=local-gpu" in line for line in fake.commands)  # its GPUs advertised, not real


def test_up_with_real_gpus_mounts_them_runs_nvkinds_steps_and_a_second_up_is_done(tmp_path, fakes, monkeypatch):
    two_gpus(monkeypatch)
    nvidia_host(tmp_path, monkeypatch, fakes)
    kind_profile(tmp_path, **{"gpu.real_gpus": "on"}).up()
    rows = timings(tmp_path)
    assert [row["title"][:9] for row in rows][:3] == ["kind clus", "Fake GPUs", "Real GPUs"]
    assert all(row["outcome"] == "done" for row in rows[:-1])
    # The kind config hands the GPUs to the real node's worker, the nvkind way.
    config = yaml.safe_load((tmp_path / "sb" / "kube" / "kind-config.yaml").read_text())
    worker = next(n for n in config["nodes"] if n.get("labels", {}).get("ml-sandbox/inventory-node") == "local-gpu")
    assert worker["extraMounts"] == [
        {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"}
    ]
    assert worker["labels"]["nvidia.com/gpu.present"] == "true"
    node = next(n for n in fakes.state()["clusters"]["ml-sandbox"]["nodes"].values()
                if n["metadata"]["labels"].get("ml-sandbox/inventory-node") == "local-gpu")  # fmt: skip
    assert [line for line in node["scripts"]] == [
        "apt-get update",
        "nvidia-ctk runtime configure --runtime=containerd --config-source=command --set-as-default",
        "if grep -qx 'ModifyDeviceFiles: 1' /proc/driver/nvidia/params; then",
    ]
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"  # the FAKE device plugin advertised them
    assert "RuntimeClass//nvidia" in fakes.objects("kind-ml-sandbox")
    values = yaml.safe_load((tmp_path / "sb" / "kube" / "values" / "nvidia-device-plugin.yaml").read_text())
    assert values["runtimeClassName"] == "nvidia" and values["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]

    fakes.clear_log()
    kind_profile(tmp_path, **{"gpu.real_gpus": "on"}).up()
    assert [row["outcome"] for row in timings(tmp_path)] == ["already done"] * len(REAL_ACTIONS)
    assert fakes.mutating() == []

    # A node that lost its GPUs (the plugin gone) is not "done": the next up runs the action again.
    data = fakes.state()
    del data["helm"]["kind-ml-sandbox"]["nvidia/nvidia-device-plugin"]
    node = next(n for n in data["clusters"]["ml-sandbox"]["nodes"].values() if "scripts" in n)
    node["status"]["allocatable"].pop("nvidia.com/gpu")
    fakes.seed(data)
    fakes.clear_log()
    kind_profile(tmp_path, **{"gpu.real_gpus": "on"}).up()
    assert any(line.startswith("helm upgrade --install nvidia-device-plugin") for line in fakes.mutating())


@pytest.mark.parametrize(
    "fail", [r"upgrade --install nvidia-device-plugin", r"^docker exec \S+ bash", r"wait node/"], ids=str
)
def test_a_failure_in_the_real_gpu_action_undoes_it_and_the_cluster(tmp_path, fakes, monkeypatch, fail):
    two_gpus(monkeypatch)
    nvidia_host(tmp_path, monkeypatch, fakes)
    fakes.fail(fail)
    with pytest.raises(SandboxError) as info:
        kind_profile(tmp_path, **{"gpu.real_gpus": "auto"}).up()
    assert info.value.details
    rows = [(title, fail if title == "Real GPUs" else f, undo) for title, f, undo in REAL_ACTIONS]
    fakes.assert_undone_last_first(rows, 2)
    lines = fakes.lines()
    if fail == r"wait node/":  # the release was installed before the wait failed: it is uninstalled
        assert any(line.startswith("helm uninstall nvidia-device-plugin -n nvidia") for line in lines)
    state = fakes.state()
    assert state["clusters"] == {} and state["objects"] == {} and state["helm"] == {}


def test_preflight_names_each_missing_nvidia_prerequisite_with_its_fix_when_real_gpus_are_on(
    tmp_path, fakes, monkeypatch
):
    two_gpus(monkeypatch)
    nvidia_host(tmp_path, monkeypatch, fakes, ctk=False, runtime="runc", setting=None)
    with pytest.raises(PreflightError) as info:
        kind_profile(tmp_path, **{"gpu.real_gpus": "on"}).up()
    assert info.value.exit_code == ExitCode.PREFLIGHT
    details = info.value.details
    assert re.search(r"✗ nvidia-ctk: not found on PATH\. Fix: install the NVIDIA container toolkit", details)
    assert re.search(
        r"✗ Docker's default runtime nvidia: Docker's default runtime is runc\. Fix: sudo nvidia-ctk runtime "
        r"configure --runtime=docker --set-as-default --cdi\.enabled",
        details,
    )
    assert re.search(
        r"✗ accept-nvidia-visible-devices-as-volume-mounts: .* does not exist\. Fix: sudo nvidia-ctk config "
        r"--set accept-nvidia-visible-devices-as-volume-mounts=true --in-place",
        details,
    )
    assert fakes.mutating() == [] and not (tmp_path / "sb").exists()

    # Each one alone is named too: a setting left false.
    nvidia_host(tmp_path, monkeypatch, fakes, setting="false")
    with pytest.raises(PreflightError) as info:
        kind_profile(tmp_path, **{"gpu.real_gpus": "on"}).up()
    assert "accept-nvidia-visible-devices-as-volume-mounts = false" in info.value.details
    assert "nvidia-ctk:" not in info.value.details and "default runtime" not in info.value.details


def test_auto_falls_back_to_fake_gpus_with_a_warning_when_the_host_is_not_ready(tmp_path, fakes, monkeypatch, capsys):
    two_gpus(monkeypatch)
    nvidia_host(tmp_path, monkeypatch, fakes, runtime="runc")
    kind_profile(tmp_path, **{"gpu.real_gpus": "auto"}).up()
    err = capsys.readouterr().err
    assert "are not handed to the kind cluster" in err and "fake GPUs instead" in err
    assert "Docker's default runtime nvidia (warning)" in err and "--set-as-default --cdi.enabled" in err
    titles = [row["title"] for row in timings(tmp_path)]
    assert not any(title.startswith("Real GPUs") for title in titles)
    config = yaml.safe_load((tmp_path / "sb" / "kube" / "kind-config.yaml").read_text())
    assert not any("extraMounts" in node for node in config["nodes"])
    assert not [line for line in fakes.lines() if "nvidia-device-plugin" in line or " bash -c " in line]
    node = next(n for n in fakes.state()["clusters"]["ml-sandbox"]["nodes"].values()
                if n["metadata"]["labels"].get("ml-sandbox/inventory-node") == "local-gpu")  # fmt: skip
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"  # patched, as every fake GPU node is
