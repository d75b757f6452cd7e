"""What the supervisor watches, read from a sandbox dir's files without processes: the services, then the recorded
deployments with model servers before the routers in front of them; a deployment restarts on its own ports only;
and the module that runs it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from sandbox.config import load_config
from sandbox.errors import PortInUseError, SandboxError
from sandbox.profiles.local.process import ManagedProcess
from sandbox.profiles.local.serving import LocalProcessRuntime
from sandbox.profiles.local.state import PortMap, SandboxDir, load_or_create_secrets
from sandbox.profiles.local.supervisor.components import SERVICES, DeploymentComponent, LocalComponents
from sandbox.profiles.local.supervisor.handle import MODULE
from sandbox.serving.specs import DeploymentSpec, VariantSpec
from tests.factories import make_endpoints


def _record(name: str, **fields) -> DeploymentSpec:
    return DeploymentSpec.model_validate({"name": name, "kind": "model", "model_uri": f"models:/{name}/1", **fields})


def _split() -> DeploymentSpec:
    variants = [VariantSpec(label=label, model_uri=f"models:/fraud/{n}", weight=50) for n, label in enumerate("ab", 1)]
    return DeploymentSpec.model_validate({"name": "ab", "kind": "split", "variants": variants})


def test_the_components_are_the_services_then_model_servers_then_the_routers_that_need_them(tmp_path):
    sandbox = SandboxDir(tmp_path / "sb")
    load_or_create_secrets(sandbox)
    records = [_split(), _record("fraud"), _record("ab-a", parent="ab"), _record("ab-b", parent="ab")]
    (sandbox.root / "deployments.json").write_text(json.dumps({r.name: r.model_dump() for r in records}))
    config = load_config(profile="local", dir=sandbox.root, **{"notebooks.enabled": False})

    found = LocalComponents(sandbox, config, make_endpoints())()

    assert [c.name for c in found] == ["postgres", "s3", "mlflow", "fraud", "ab-a", "ab-b", "ab"]
    needs = {c.name: c.depends_on for c in found}
    assert needs["postgres"] == needs["s3"] == () and needs["mlflow"] == ("postgres", "s3")
    assert needs["fraud"] == needs["ab-a"] == SERVICES
    assert needs["ab"] == (*SERVICES, "ab-a", "ab-b")


def test_without_secrets_there_is_nothing_to_watch_and_without_endpoints_only_the_core_services(tmp_path):
    sandbox = SandboxDir(tmp_path / "sb")
    config = load_config(profile="local", dir=sandbox.root)
    assert LocalComponents(sandbox, config, make_endpoints())() == []
    load_or_create_secrets(sandbox)
    assert [c.name for c in LocalComponents(sandbox, config, None)()] == ["postgres", "s3", "mlflow"]


def test_an_undeploy_forgets_the_record_before_it_stops_the_process_so_no_round_sees_it_crashed(tmp_path):
    sandbox = SandboxDir(tmp_path / "sb")
    load_or_create_secrets(sandbox)
    records = [_record("fraud"), _record("churn")]
    (sandbox.root / "deployments.json").write_text(json.dumps({r.name: r.model_dump() for r in records}))
    config = load_config(profile="local", dir=sandbox.root, **{"notebooks.enabled": False})
    watched = LocalComponents(sandbox, config, make_endpoints())
    seen: list[list[str]] = []

    class Stopping:
        """The deployment's process: what a supervisor's round would read while it goes."""

        def stop(self, timeout: float) -> bool:
            seen.append([c.name for c in watched()])
            return True

    runtime = LocalProcessRuntime(sandbox, PortMap(sandbox))
    runtime.process = lambda name: Stopping()
    runtime.stop(["fraud"])
    assert seen == [["postgres", "s3", "mlflow", "churn"]]
    assert list(runtime.records()) == ["churn"]


def test_an_undeploy_whose_process_cannot_be_stopped_records_it_again_so_no_server_runs_unrecorded(tmp_path):
    sandbox = SandboxDir(tmp_path / "sb")
    sandbox.root.mkdir()
    records = [_record("split"), _record("split-a"), _record("split-b"), _record("churn")]
    (sandbox.root / "deployments.json").write_text(json.dumps({r.name: r.model_dump() for r in records}))
    stopped: list[str] = []

    class Process:
        def __init__(self, name: str):
            self.name = name

        def stop(self, timeout: float) -> bool:
            if self.name == "split-a":
                raise OSError("cannot signal it")
            stopped.append(self.name)
            return True

    runtime = LocalProcessRuntime(sandbox, PortMap(sandbox))
    runtime.process = Process
    with pytest.raises(OSError):
        runtime.stop(["split", "split-a", "split-b"])
    assert stopped == ["split"]
    assert sorted(runtime.records()) == ["churn", "split-a", "split-b"]  # what still runs is still recorded


class FakeRuntime:
    """The serving runtime as a `DeploymentComponent` uses it: its ports, a process per name, a restart."""

    def __init__(self, root, ports: dict[str, int]):
        self.root, self.ports, self.restarted = root, ports, []

    def process(self, name: str) -> ManagedProcess:
        return ManagedProcess(self.root / name / "service.pid", self.root / name / "service.log")

    def restart(self, record: DeploymentSpec) -> str:
        self.restarted.append(record.name)
        return "ready in 0.1s"


def test_a_deployment_restarts_through_the_runtime_on_its_recorded_port_and_never_another(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        runtime = FakeRuntime(tmp_path, {"deploy.fraud": taken})
        component = DeploymentComponent(runtime, _record("fraud"), SERVICES)
        with pytest.raises(PortInUseError, match=f"port {taken} \\(deploy.fraud\\)"):
            component.restart()
        assert runtime.restarted == []
    assert component.restart() == "ready in 0.1s"  # the port is free again
    assert runtime.restarted == ["fraud"]
    with pytest.raises(SandboxError, match="no port recorded for other"):
        DeploymentComponent(FakeRuntime(tmp_path, {}), _record("other"), SERVICES).restart()


def test_the_supervisor_process_is_python_m_its_package():
    """What `SupervisorHandle.ensure` starts: `python -m sandbox.profiles.local.supervisor --dir DIR`."""
    result = subprocess.run([sys.executable, "-m", MODULE, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--dir DIR" in result.stdout and "restarts what crashes" in result.stdout
