"""SeaweedFS alone (the real `weed mini`, no other service): a start and a stop leave nothing in /tmp.

weed puts its S3 and filer sockets where its flags say (the service's folder) and its gRPC sockets at fixed
/tmp paths; whatever way weed ends, a graceful stop or kill -9 before `down`, none of them may be left.
"""

from __future__ import annotations

import os
import signal
import stat

import psutil
import pytest

from sandbox.config import SandboxConfig
from sandbox.profiles.local.services.base import ServiceContext
from sandbox.profiles.local.services.seaweedfs import SOCKETS_RECORD, SeaweedS3, grpc_socket_paths
from sandbox.profiles.local.state import PortMap, SandboxDir, Secrets

pytestmark = pytest.mark.integration


@pytest.fixture
def service(tmp_path_factory):
    # A deep sandbox dir: the sockets in the service's folder must not depend on its length (108-byte limit).
    root = tmp_path_factory.mktemp("weed") / ("d" * 60) / ("e" * 60) / "sandbox"
    sandbox = SandboxDir(root)
    sandbox.create()
    ctx = ServiceContext(SandboxConfig(dir=root), sandbox, Secrets.generate(), PortMap(sandbox))
    svc = SeaweedS3(ctx)
    svc.claim_ports()
    ctx.ports.save()
    try:
        yield svc
    finally:
        svc.stop()


def _weed_entries_in_tmp() -> set[str]:
    return {name for name in os.listdir("/tmp") if name.startswith("seaweedfs-")}


@pytest.fixture
def already_in_tmp() -> set[str]:
    """What another weed left in /tmp before the test (an older run, another user's): none of this service's."""
    return _weed_entries_in_tmp()


def _ours_in_tmp(svc: SeaweedS3, already: set[str]) -> list[str]:
    """New entries in /tmp named after one of this service's ports (weed names every socket it makes by a port)."""
    ports = {str(port) for key in svc.port_keys() if (port := svc.ctx.ports.get(key))}
    return sorted(
        name for name in _weed_entries_in_tmp() - already if name.removesuffix(".sock").rsplit("-", 1)[-1] in ports
    )


def test_a_start_and_stop_leaves_no_socket_in_tmp(service, already_in_tmp):
    assert _ours_in_tmp(service, already_in_tmp) == []
    service.start()
    assert service.process.running() is not None
    # The sockets weed has flags for are in the service's folder, private; the gRPC ones are recorded.
    for name in ("s3.sock", "filer.sock"):
        path = service.dir / name
        assert stat.S_ISSOCK(path.lstat().st_mode), name
    assert _ours_in_tmp(service, already_in_tmp), "weed made no gRPC socket in /tmp: is this test about anything?"
    recorded = set((service.dir / SOCKETS_RECORD).read_text().split())
    assert set(_ours_in_tmp(service, already_in_tmp)) <= {os.path.basename(path) for path in recorded}
    assert service.stop()
    assert _ours_in_tmp(service, already_in_tmp) == []
    assert not (service.dir / "s3.sock").exists()


def test_down_after_a_kill_9_leaves_no_socket_in_tmp(service, already_in_tmp):
    service.start()
    leader = service.process.running()
    assert leader is not None
    os.kill(leader.pid, signal.SIGKILL)  # weed removes nothing: every socket it made stays behind
    psutil.Process(leader.pid).wait(10)
    assert _ours_in_tmp(service, already_in_tmp)
    service.stop()
    assert _ours_in_tmp(service, already_in_tmp) == []


def test_a_socket_a_live_process_listens_on_is_not_removed(service, tmp_path):
    """A gRPC socket path of ours that another live weed holds (its port, reused since) is not ours to delete."""
    import socket

    path = grpc_socket_paths(service.ctx.ports.as_dict())[0]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen()
        service.stop()
        assert path.exists()
    finally:
        listener.close()
        path.unlink(missing_ok=True)
