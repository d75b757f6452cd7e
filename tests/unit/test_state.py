import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from sandbox.errors import LockedError, PortInUseError
from sandbox.net import port_is_free
from sandbox.profiles.local import state
from sandbox.profiles.local.process import PORTS_MARKER, Identity, running_sandboxes
from sandbox.profiles.local.state import PortMap, SandboxDir, exclusive_lock, load_or_create_secrets


@pytest.fixture
def sandbox(tmp_path):
    return SandboxDir(tmp_path / "sbx")


def test_secrets_are_generated_private_and_stable(sandbox):
    first = load_or_create_secrets(sandbox)
    mode = stat.S_IMODE(sandbox.secrets_file.stat().st_mode)
    assert mode == 0o600
    assert load_or_create_secrets(sandbox) == first  # not regenerated on the next start
    values = json.loads(sandbox.secrets_file.read_text()).values()
    assert all(len(v) >= 6 for v in values)
    assert not {"minioadmin", "postgres", "password", "admin"} & set(values)
    other = SandboxDir(sandbox.root.parent / "other")
    assert load_or_create_secrets(other).s3_secret_key != first.s3_secret_key  # per sandbox


def test_generated_secrets_are_safe_to_pass_on_a_command_line():
    # A secret starting with '-' was once read by `dvc remote modify` as an option.
    from sandbox.profiles.local.state import Secrets

    for _ in range(200):
        generated = Secrets.generate()
        for value in (generated.postgres_superuser_password, generated.mlflow_db_password, generated.s3_secret_key):
            assert value.isalnum() and value.isascii() and len(value) >= 32


def test_loosened_secrets_file_is_tightened(sandbox):
    load_or_create_secrets(sandbox)
    sandbox.secrets_file.chmod(0o644)
    load_or_create_secrets(sandbox)
    assert stat.S_IMODE(sandbox.secrets_file.stat().st_mode) == 0o600


def test_automatic_ports_are_kept_across_restarts(sandbox):
    sandbox.create()
    ports = PortMap(sandbox)
    chosen = ports.claim("mlflow", 0, setting="mlflow.port")
    ports.save()
    assert PortMap(sandbox).claim("mlflow", 0, setting="mlflow.port") == chosen


def test_an_automatic_port_taken_by_another_program_is_refused_naming_it_not_moved(sandbox):
    sandbox.create()
    ports = PortMap(sandbox)
    chosen = ports.claim("mlflow", 0, setting="mlflow.port")
    ports.save()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", chosen))
        blocker.listen()
        with pytest.raises(PortInUseError) as info:
            PortMap(sandbox).claim("mlflow", 0, setting="mlflow.port")
        assert f"port {chosen} (mlflow)" in info.value.message and f"pid {os.getpid()}" in info.value.message
    assert PortMap(sandbox).claim("mlflow", 0, setting="mlflow.port") == chosen  # free again: the same port
    assert json.loads(sandbox.ports_file.read_text()) == {"mlflow": chosen}


@pytest.mark.parametrize("damage", ["delete", "garbage", "wrong types"])
def test_a_lost_or_corrupt_port_map_is_rebuilt_from_the_running_processes(sandbox, damage):
    sandbox.create()
    ports = PortMap(sandbox)
    mine = {"mlflow": ports.claim("mlflow", 0, setting="-"), "s3": ports.claim("s3", 0, setting="-")}
    ports.save()
    env = {**os.environ, **Identity(sandbox.home, "mlflow").env(), PORTS_MARKER: json.dumps(mine)}
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        if damage == "delete":
            sandbox.ports_file.unlink()
        elif damage == "garbage":
            sandbox.ports_file.write_bytes(b"\x00{not json")
        else:
            sandbox.ports_file.write_text('["mlflow", 1]')
        deadline = time.monotonic() + 10  # until the child has exec'd with its environment
        while time.monotonic() < deadline and PortMap(sandbox).as_dict() != mine:
            time.sleep(0.05)
        assert PortMap(sandbox).as_dict() == mine
        assert json.loads(sandbox.ports_file.read_text()) == mine  # and written back
    finally:
        server.kill()
        server.wait()
    sandbox.ports_file.unlink()
    assert PortMap(sandbox).as_dict() == {}  # nothing runs: nothing to rebuild from


def test_configured_port_in_use_is_an_error_naming_the_setting(sandbox):
    sandbox.create()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        assert not port_is_free(taken)
        with pytest.raises(PortInUseError) as info:
            PortMap(sandbox).claim("mlflow", taken, setting="mlflow.port / --mlflow-port")
    assert str(taken) in info.value.message
    assert "--mlflow-port" in info.value.hint


def test_pair_offset_reserves_both_ports(sandbox):
    sandbox.create()
    ports = PortMap(sandbox)
    admin = ports.claim("admin", 0, setting="-", pair_offset=10000)
    assert port_is_free(admin + 10000)
    assert ports.claim("other", 0, setting="-") not in (admin,)


def test_two_processes_saving_the_port_map_keep_each_others_ports(sandbox):
    """Scenarios deploying side by side each hold a map read before the other saved."""
    sandbox.create()
    first, second = PortMap(sandbox), PortMap(sandbox)
    one = first.claim("deploy.one", 0, setting="-")
    first.save()
    two = second.claim("deploy.two", 0, setting="-")
    assert two != one  # the second saw the first's port as taken
    second.save()
    assert PortMap(sandbox).as_dict() == {"deploy.one": one, "deploy.two": two}


@pytest.mark.parametrize("kept_by", ["ports.json", "marker"])
def test_a_port_another_running_sandbox_keeps_is_never_picked_even_while_idle(tmp_path, monkeypatch, kept_by):
    """The other sandbox stopped a deployment: nothing listens on its port, and it may start it again."""
    idle = next(port for port in range(*state._AUTO_PORT_RANGE) if port_is_free(port))
    monkeypatch.setattr(state, "_AUTO_PORT_RANGE", (idle, idle + 1))  # the only candidate
    other = SandboxDir(tmp_path / "other")
    other.create()
    kept = {"deploy.stopped": idle}
    if kept_by == "ports.json":
        other.ports_file.write_text(json.dumps(kept))
    env = {
        **os.environ,
        **Identity(other.home, "supervisor").env(),
        PORTS_MARKER: json.dumps(kept if kept_by == "marker" else {}),
    }
    ours = SandboxDir(tmp_path / "ours")
    ours.create()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        deadline = time.monotonic() + 10  # until the child has exec'd with its environment
        while time.monotonic() < deadline and other.home not in running_sandboxes():
            time.sleep(0.05)
        with pytest.raises(PortInUseError, match="no free port"):
            PortMap(ours).claim("s3", 0, setting="-")
    finally:
        running.kill()
        running.wait()
    assert PortMap(ours).claim("s3", 0, setting="-") == idle  # the other sandbox is down: the port is free to take


HOLD_LOCK = """
import sys, time
from pathlib import Path
from sandbox.profiles.local.state import SandboxDir, exclusive_lock
with exclusive_lock(SandboxDir(Path(sys.argv[1])), "serve deploy fraud"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_command_is_refused_naming_the_holder_and_the_lock_is_reentrant(sandbox):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(sandbox.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as info:
            with exclusive_lock(sandbox, "down"):
                pytest.fail("two commands held the lock at once")
        assert info.value.exit_code == 3
        assert f"pid {holder.pid}: sandbox serve deploy fraud" in info.value.message
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(sandbox, "up"):  # a killed holder releases it; and within one process it nests
        with exclusive_lock(sandbox, "serve deploy fraud"):
            pass
        assert "sandbox up" in sandbox.lock_file.read_text()


HOLD_LOCK_A_MOMENT = """
import sys, time
from pathlib import Path
from sandbox.profiles.local.state import SandboxDir, exclusive_lock
with exclusive_lock(SandboxDir(Path(sys.argv[1])), "serve deploy fraud"):
    print("held", flush=True)
    time.sleep(1)
    (Path(sys.argv[1]) / "holder-done").touch()  # the last thing it does while holding the lock
time.sleep(30)
"""


def test_with_the_wait_set_a_second_command_waits_for_the_holder(sandbox, monkeypatch):
    from sandbox.errors import LOCK_WAIT_ENV

    monkeypatch.setenv(LOCK_WAIT_ENV, "60")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK_A_MOMENT, str(sandbox.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with exclusive_lock(sandbox, "serve deploy other"):
            assert (sandbox.root / "holder-done").exists()  # we got it once the holder let go, not beside it
    finally:
        holder.kill()
        holder.wait()


TRY_LOCK = """
import sys
from pathlib import Path
from sandbox.errors import LockedError
from sandbox.profiles.local.state import SandboxDir, exclusive_lock
try:
    with exclusive_lock(SandboxDir(Path(sys.argv[1])), "serve deploy other"):
        print("got it")
except LockedError:
    print("refused")
"""


def _other_command(sandbox) -> str:
    done = subprocess.run([sys.executable, "-c", TRY_LOCK, str(sandbox.root)], capture_output=True, text=True)
    return done.stdout.strip()


def test_a_releasable_hold_lets_other_commands_in_only_while_it_waits(sandbox):
    from sandbox.profiles.locking import released_while_waiting

    sandbox.create()
    with exclusive_lock(sandbox, "serve deploy fraud", releasable=True):
        assert _other_command(sandbox) == "refused"
        with released_while_waiting(sandbox.lock_file):
            assert _other_command(sandbox) == "got it"  # a deploy waiting for its server lets others in
        assert _other_command(sandbox) == "refused"  # and holds it again for what it writes after
        assert "serve deploy fraud" in sandbox.lock_file.read_text()
    with exclusive_lock(sandbox, "up"):  # not releasable (`up` restoring deployments): held throughout
        with released_while_waiting(sandbox.lock_file):
            assert _other_command(sandbox) == "refused"
    with exclusive_lock(sandbox, "monitor retrain", releasable=True):
        with exclusive_lock(sandbox, "serve deploy fraud", releasable=True):  # nested: the outer command holds it
            with released_while_waiting(sandbox.lock_file):
                assert _other_command(sandbox) == "refused"


def test_a_lock_path_that_is_not_a_plain_file_is_a_clear_error(sandbox):
    sandbox.create()
    sandbox.lock_file.mkdir()
    with pytest.raises(LockedError) as info:
        with exclusive_lock(sandbox, "up"):
            pass
    assert "remove it" in info.value.hint


def test_make_private_takes_group_and_other_access_off_everything(tmp_path):
    from sandbox.profiles.local.state import make_private

    root = tmp_path / "sbx"
    (root / "services" / "s3" / "data").mkdir(parents=True)
    (root / "ports.json").write_text("{}")
    (root / "services" / "s3" / "service.log").write_text("log")
    (root / "services" / "s3" / "data" / "1.dat").write_text("volume")
    tool = root / "services" / "tool.sh"
    tool.write_text("#!/bin/sh\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    (root / "link").symlink_to(outside)
    for path in (root, root / "services", root / "services" / "s3", root / "services" / "s3" / "data"):
        path.chmod(0o777)
    for path in (root / "ports.json", root / "services" / "s3" / "service.log", outside):
        path.chmod(0o666)
    tool.chmod(0o755)

    changed = make_private(root, traverse=[root, root / "services"])

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(root) == 0o711 and mode(root / "services") == 0o711  # search only, for PostgreSQL's user
    assert mode(root / "services" / "s3") == 0o700 and mode(root / "services" / "s3" / "data") == 0o700
    assert mode(root / "ports.json") == 0o600 and mode(root / "services" / "s3" / "service.log") == 0o600
    assert mode(root / "services" / "s3" / "data" / "1.dat") == 0o600
    assert mode(tool) == 0o700  # the owner's bits are kept
    assert mode(outside) == 0o666  # a symbolic link is not followed out of the sandbox
    assert root / "link" not in changed and len(changed) == 8
    assert make_private(root, traverse=[root, root / "services"]) == []  # idempotent


def test_state_files_are_private_whatever_the_umask(sandbox):
    import os

    old = os.umask(0o000)
    try:
        sandbox.create()
        ports = PortMap(sandbox)
        ports.claim("mlflow", 0, setting="mlflow.port")
        ports.save()
    finally:
        os.umask(old)
    assert stat.S_IMODE(sandbox.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(sandbox.ports_file.stat().st_mode) == 0o600


def test_a_dry_run_lists_what_is_open_to_others_and_changes_nothing(tmp_path):
    from sandbox.profiles.local.state import make_private

    root = tmp_path / "sbx"
    (root / "services" / "s3" / "data").mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    for folder in (root / "services", root / "services" / "s3", root / "services" / "s3" / "data"):
        folder.chmod(0o700)
    loose = root / "secrets.json"
    loose.write_text("{}")
    loose.chmod(0o644)
    vif = root / "services" / "s3" / "data" / "1.vif"  # SeaweedFS's own 0644, inside a 0700 folder
    vif.write_text("{}")
    vif.chmod(0o644)
    assert make_private(root, dry_run=True) == [loose]
    assert stat.S_IMODE(loose.stat().st_mode) == 0o644  # untouched
    assert set(make_private(root)) == {loose, vif}  # `up` tightens both
    assert make_private(root, dry_run=True) == []


LISTEN = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); print("listening", flush=True); time.sleep(60)
"""


@pytest.mark.parametrize("ours", [True, False])
def test_a_port_held_by_our_own_straggler_is_reclaimed_and_anyone_elses_is_refused(sandbox, ours):
    sandbox.create()
    ports = PortMap(sandbox)
    chosen = ports.claim("mlflow", 0, setting="-")
    ports.save()
    marker = Identity(sandbox.home, "mlflow").env() if ours else {}
    holder = subprocess.Popen(
        [sys.executable, "-c", LISTEN, str(chosen)], env={**os.environ, **marker}, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "listening"
        if ours:
            assert PortMap(sandbox).claim("mlflow", 0, setting="-") == chosen
            assert holder.wait(10) is not None  # stopped, not replaced
        else:
            with pytest.raises(PortInUseError, match=f"held by pid {holder.pid}"):
                PortMap(sandbox).claim("mlflow", 0, setting="-")
            assert holder.poll() is None  # another program's process is never touched
    finally:
        holder.kill()
        holder.wait()
