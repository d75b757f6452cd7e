"""Damaged state files, racing commands and restart storms: never a second copy, never a moved port, no orphan.

Each process the sandbox starts carries a marker naming the sandbox and its component (see
sandbox/profiles/local/process.py); these tests read the markers back with psutil to count what really
runs, whatever the pid files say.
"""

from __future__ import annotations

import collections
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from sandbox.profiles.local.process import sandbox_processes
from tests.stacks import Stack

pytestmark = pytest.mark.integration

DEPLOYMENT = "steady"
COMPONENTS = ("postgres", "s3", "mlflow", "notebooks", f"deployment:{DEPLOYMENT}")


@pytest.fixture(scope="module")
def deployed(faults_stack: Stack) -> Iterator[Stack]:
    faults_stack.cli("serve", "deploy", DEPLOYMENT, "--model", "models:/fraud-detector/1")
    yield faults_stack
    faults_stack.running().cli("serve", "undeploy", DEPLOYMENT, check=False)  # the scratch stack goes on


@pytest.fixture
def stack(deployed: Stack) -> Stack:
    return deployed.running()


def home(stack: Stack) -> str:
    return str(stack.dir.resolve())


def leaders(stack: Stack) -> dict[str, list[int]]:
    """Per component, the processes that lead their own session: the servers the sandbox started."""
    found = collections.defaultdict(list)
    for proc in sandbox_processes(home(stack)):
        try:
            if os.getsid(proc.pid) == proc.pid:
                found[proc.environ()["ML_SANDBOX_COMPONENT"]].append(proc.pid)
        except (OSError, KeyError):
            continue
    return {component: sorted(pids) for component, pids in found.items()}


def ports(stack: Stack) -> dict[str, int]:
    return json.loads((stack.dir / "ports.json").read_text())


def pid_file(stack: Stack, component: str):
    if component.startswith("deployment:"):
        return stack.dir / "deployments" / component.split(":", 1)[1] / "service.pid"
    return stack.dir / "services" / component / "service.pid"


def damage(path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"\x00\xff{pid: not json")
    elif how == "stale":  # a pid that is alive but is not the server: this test's own process
        path.write_text(json.dumps({"pid": os.getpid(), "create_time": 1.0, "cmdline": ["x"]}))
    elif how == "deleted":
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("how", ["garbage", "stale", "deleted"])
def test_damaged_pid_files_never_start_a_second_copy_nor_move_a_port(stack, how, ledger):
    before_leaders, before_ports = leaders(stack), ports(stack)
    assert all(len(before_leaders.get(c, [])) == 1 for c in COMPONENTS), before_leaders
    for component in COMPONENTS:
        damage(pid_file(stack, component), how)
    up = stack.cli("up")
    assert "already running" in up.stderr
    assert leaders(stack) == before_leaders
    assert ports(stack) == before_ports
    status = stack.status()
    assert status["state"] == "running" and all(d["state"] == "running" for d in status["deployments"])
    ledger.add(f"{how} pid files ({len(COMPONENTS)} components)", faults=len(COMPONENTS), recovered="repaired by `up`")


@pytest.mark.parametrize("how", ["deleted", "garbage"])
def test_a_lost_or_corrupt_port_map_is_rebuilt_from_what_runs(stack, how, ledger):
    # What runs (the map also keeps the ports of deployments removed before, for their return: those cannot be
    # rebuilt from any process).
    running = {d["name"] for d in stack.status()["deployments"]}
    kept = [key for key in ports(stack) if not key.startswith("deploy.") or key.split(".")[1] in running]
    before = {key: ports(stack)[key] for key in kept}
    path = stack.dir / "ports.json"
    if how == "deleted":
        path.unlink()
    else:
        path.write_text("{not json")
    endpoints = stack.status()["endpoints"]
    assert str(before["mlflow"]) in endpoints["mlflow_tracking_uri"]
    assert ports(stack) == before  # written back, whole
    assert "already running" in stack.cli("up").stderr
    ledger.add(f"{how} ports.json", faults=1, recovered="rebuilt from the processes' markers")


def test_down_with_every_pid_file_damaged_leaves_no_process(stack, ledger):
    before_ports = ports(stack)
    for component, how in zip(COMPONENTS, ("garbage", "stale", "deleted", "stale", "garbage"), strict=True):
        damage(pid_file(stack, component), how)
    stack.cli("down")
    orphans = sandbox_processes(home(stack))
    assert orphans == []
    stack.cli("up")
    assert ports(stack) == before_ports
    assert set(leaders(stack)) >= set(COMPONENTS)
    ledger.add("down with damaged pid files", faults=len(COMPONENTS), orphans=len(orphans), recovered="`up`")


def test_loosened_state_files_are_made_private_again_by_up(stack, ledger):
    loosened = [stack.dir / "secrets.json", stack.dir / "ports.json", pid_file(stack, "mlflow")]
    for path in loosened:
        path.chmod(0o644)
    [warning] = stack.status()["warnings"]
    assert warning.startswith("3 file(s) or folder(s)") and "open to other users" in warning
    stack.cli("up")
    assert {stat.S_IMODE(p.stat().st_mode) for p in loosened} == {0o600}
    assert stack.status()["warnings"] == []
    ledger.add("loosened secrets.json, ports.json, a pid file", faults=3, recovered="`up`")


def _spawn(stack: Stack, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sandbox", *args, "--dir", str(stack.dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    return [(p.wait(timeout=600), p.communicate()[1]) for p in procs]


def test_serve_deploy_racing_down_never_leaves_a_server_of_a_stopped_stack(stack, ledger):
    deploy = _spawn(stack, "serve", "deploy", "racer", "--model", "models:/fraud-detector/1")
    time.sleep(0.5)  # the deploy is under way (checking the registry, starting the server) when down comes
    down = _spawn(stack, "down")
    (deploy_rc, deploy_err), (down_rc, down_err) = _finish([deploy, down])
    assert {deploy_rc, down_rc} <= {0, 3, 4}, (deploy_err, down_err)
    for rc, err in ((deploy_rc, deploy_err), (down_rc, down_err)):
        if rc == 3:
            assert "another sandbox command is changing" in err and "pid " in err
    if down_rc == 0:
        assert sandbox_processes(home(stack)) == []  # whichever ran first, down stopped everything
    stack.cli("up")
    if "racer" in {d["name"] for d in stack.status()["deployments"]}:
        stack.cli("serve", "undeploy", "racer")
    ledger.add("serve deploy against down", faults=1, orphans=0, recovered=f"exit codes {deploy_rc}/{down_rc}")


def test_two_deploys_of_one_name_leave_one_server(stack, ledger):
    racers = [_spawn(stack, "serve", "deploy", "twin", "--model", "models:/fraud-detector/1") for _ in range(2)]
    results = _finish(racers)
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 0], [0, 3]), results
    assert len(leaders(stack).get("deployment:twin", [])) == 1
    stack.cli("serve", "undeploy", "twin")
    assert "deployment:twin" not in leaders(stack)
    ledger.add("two deploys of one name", faults=1, recovered=f"exit codes {codes}")


def test_up_against_up_starts_nothing_twice(stack, ledger):
    stack.cli("down")
    racers = [_spawn(stack, "up") for _ in range(2)]
    results = _finish(racers)
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 3], results
    assert all(len(pids) == 1 for pids in leaders(stack).values()), leaders(stack)
    ledger.add("up against up", faults=1, recovered=f"exit codes {codes}")


def test_a_restart_storm_changes_no_port_no_deployment_and_leaves_no_orphan(stack, ledger):
    cycles = int(os.environ.get("FAULTS_STORM_CYCLES", "3"))  # `make nightly`: 20
    before_ports = ports(stack)
    before_deployments = {d["name"]: d["model_uri"] for d in stack.status()["deployments"]}
    orphans = 0
    for _ in range(cycles):
        stack.cli("down")
        orphans += len(sandbox_processes(home(stack)))
        stack.cli("up")
    status = stack.status()
    assert orphans == 0
    assert ports(stack) == before_ports
    assert {d["name"]: d["model_uri"] for d in status["deployments"]} == before_deployments
    assert status["state"] == "running" and all(d["state"] == "running" for d in status["deployments"])
    assert all(len(pids) == 1 for pids in leaders(stack).values())
    ledger.add(f"restart storm ({cycles} down/up cycles)", faults=cycles, orphans=orphans, recovered="`up`")


def test_a_damaged_lock_file_neither_wedges_the_sandbox_nor_lets_two_commands_in(stack, ledger):
    lock = stack.dir / "sandbox.lock"
    lock.write_bytes(b"\x00garbage from a crashed holder")  # an flock's content means nothing
    assert "already running" in stack.cli("up").stderr
    lock.unlink()  # deleted: made again by the next command
    assert "already running" in stack.cli("up").stderr
    lock.unlink()
    lock.mkdir()  # not a file at all: a clear refusal naming the fix, nothing changed
    try:
        refused = stack.cli("down", check=False)
        assert refused.returncode == 3 and "remove it" in refused.stderr
        assert stack.status()["state"] == "running"
    finally:
        lock.rmdir()
    ledger.add("garbage, deleted and replaced sandbox.lock", faults=3, recovered="`up`; a clear refusal")
