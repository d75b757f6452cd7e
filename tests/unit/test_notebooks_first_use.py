"""JupyterLab started on first use (socket activation): the supervisor listens on the port, the first connection
starts the server on that very socket, which answers the queued request; the entry that serves an inherited
socket; the status row; the setting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from sandbox.config import load_config
from sandbox.errors import ConfigError, NotRunningError
from sandbox.net import LOOPBACK
from sandbox.profiles.base import ProfileStatus, ServiceState, ServiceStatus
from sandbox.profiles.local.services.base import ServiceContext
from sandbox.profiles.local.services.jupyterlab import SOCKET_ENTRY, JupyterLab, server_argv
from sandbox.profiles.local.services.jupyterlab_socket import inherited_socket, take_fd
from sandbox.profiles.local.state import PortMap, SandboxDir, load_or_create_secrets
from sandbox.profiles.local.supervisor import activation
from sandbox.profiles.local.supervisor.activation import Activations, ListeningSocket
from sandbox.profiles.local.supervisor.components import ActivatedComponent, LocalComponents, ServiceComponent
from sandbox.profiles.local.supervisor.loop import WAITING_FIRST_USE, Supervisor
from sandbox.profiles.local.supervisor.policy import RestartPolicy
from tests.factories import make_endpoints

# A server that serves the socket it inherits as fd N (argv[1]), the way the JupyterLab entry does.
TINY_SERVER = """
import socket, sys
listening = socket.socket(fileno=int(sys.argv[1]))
while True:
    conn, _ = listening.accept()
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 6\\r\\nConnection: close\\r\\n\\r\\nserved")
    conn.close()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _request(port: int) -> socket.socket:
    """A connection with its request sent, not yet answered: what a browser's first visit leaves queued."""
    conn = socket.create_connection((LOOPBACK, port), timeout=60)
    conn.sendall(f"GET / HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n\r\n".encode())
    return conn


def _answer(conn: socket.socket) -> bytes:
    data = b""
    with conn:
        while chunk := conn.recv(65536):
            data += chunk
    return data


class FakeJupyterLab:
    """What `ActivatedComponent` uses of the service; `start_on` starts TINY_SERVER on the socket handed over."""

    name = "notebooks"

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.started_on: list[int] = []
        self.prepared = 0

    def running(self):
        return self.proc if self.proc is not None and self.proc.poll() is None else None  # has .pid, as psutil

    @property
    def process(self):
        return self

    def prepare(self) -> str:
        self.prepared += 1
        return ""

    def start_on(self, listening: socket.socket) -> str:
        self.started_on.append(listening.fileno())
        fd = listening.fileno()
        self.proc = subprocess.Popen([sys.executable, "-c", TINY_SERVER, str(fd)], pass_fds=(fd,))
        return "ready"

    def stop(self) -> bool:
        if self.running() is None:
            return False
        self.proc.kill()
        self.proc.wait(10)
        return True

    def reap_leftovers(self) -> int:
        return 0


@pytest.fixture
def activated(tmp_path):
    svc = FakeJupyterLab()
    activations = Activations()
    held = activations.get("notebooks", _free_port())
    component = ActivatedComponent(svc, held)
    lines: list[str] = []
    supervisor = Supervisor(
        lambda: [component],
        lock=lambda what: _nolock(),
        policy=RestartPolicy(max_restarts=3, window_s=300, backoff_initial_s=0, backoff_max_s=0),
        state_file=tmp_path / "state.json",
        emit=lines.append,
        listening=activations.listening,
    )
    yield svc, held, activations, supervisor, lines, tmp_path / "state.json"
    svc.stop()
    activations.close()


class _nolock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_nothing_starts_until_a_connection_comes_then_the_server_answers_the_queued_request(activated):
    svc, held, activations, supervisor, lines, state_file = activated
    supervisor.round()
    assert svc.proc is None and held.sock is not None  # listening, nothing started
    state = json.loads(state_file.read_text())
    assert state["components"]["notebooks"]["state"] == WAITING_FIRST_USE
    assert state["listening"] == {"notebooks": held.port}
    assert activation.wait(activations.watched(), None, 0.05) is False  # nobody connected: the wait times out

    conn = _request(held.port)  # queued in the supervisor's socket, which never accepts it
    assert activation.wait(activations.watched(), None, 30) is True  # the selector sees it
    supervisor.round()
    assert svc.started_on == [held.sock.fileno()]  # the supervisor's own socket was handed over
    assert _answer(conn).endswith(b"served")  # the queued request, answered by the server itself
    assert _answer(_request(held.port)).endswith(b"served")  # and every later one
    assert any("started notebooks on its first use" in line for line in lines)
    assert json.loads(state_file.read_text())["components"]["notebooks"]["restarts"] == 0  # a start, not a restart
    assert activations.watched() == []  # once started, its connections are the server's business


def test_a_crashed_server_is_restarted_on_the_same_socket_and_the_port_is_let_go_at_the_end(activated):
    svc, held, activations, supervisor, _lines, state_file = activated
    supervisor.round()
    first = _request(held.port)
    supervisor.round()
    assert _answer(first).endswith(b"served")
    svc.proc.kill()
    svc.proc.wait(10)
    conn = _request(held.port)  # waits in the backlog meanwhile
    for _ in range(3):  # found down, backoff (0 s here), restarted
        supervisor.round()
    assert svc.started_on == [held.sock.fileno()] * 2
    assert _answer(conn).endswith(b"served")
    assert json.loads(state_file.read_text())["components"]["notebooks"]["restarts"] == 1
    port = held.port
    svc.stop()
    activations.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, port), timeout=5).close()


def test_a_server_seen_running_is_supervised_like_any_other_after_a_crash(activated):
    svc, held, _activations, supervisor, lines, _state_file = activated
    fd = held.open().fileno()
    svc.proc = subprocess.Popen([sys.executable, "-c", TINY_SERVER, str(fd)], pass_fds=(fd,))  # started by `up`
    supervisor.round()
    svc.proc.kill()
    svc.proc.wait(10)
    for _ in range(3):
        supervisor.round()
    assert svc.started_on == [fd]  # restarted without waiting for a connection
    assert not any(WAITING_FIRST_USE in line for line in lines)


def test_a_wake_up_from_a_signal_ends_the_wait_and_is_no_connection():
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.send(b"\0")
    assert activation.wait([], reader, 30) is False
    assert activation.wait([], reader, 0.01) is False  # drained
    reader.close()
    writer.close()


def test_the_port_of_another_process_is_refused_naming_it():
    with socket.socket() as other:
        other.bind((LOOPBACK, 0))
        other.listen()
        held = ListeningSocket("notebooks", other.getsockname()[1])
        with pytest.raises(Exception, match="held by another process"):
            held.open()


# --------------------------------------------------------------------------- the entry: an inherited socket


def test_the_entry_takes_its_descriptor_from_argv_and_leaves_the_rest():
    argv = ["--no-browser", "--listen-fd=7", "--ServerApp.port=1"]
    assert take_fd(argv) == 7 and argv == ["--no-browser", "--ServerApp.port=1"]
    argv = ["--listen-fd", "9"]
    assert take_fd(argv) == 9 and argv == []
    with pytest.raises(SystemExit, match="required"):
        take_fd(["--ServerApp.port=1"])


def test_the_entry_refuses_a_socket_that_is_not_listening_or_on_another_port():
    with socket.socket() as unbound:
        with pytest.raises(SystemExit, match="not listening"):
            inherited_socket(os.dup(unbound.fileno()))
    with socket.socket() as listening:
        listening.bind((LOOPBACK, 0))
        listening.listen()
        port = listening.getsockname()[1]
        with pytest.raises(SystemExit, match="not"):
            inherited_socket(os.dup(listening.fileno()), port=port + 1)
        sock = inherited_socket(os.dup(listening.fileno()), port=port)
        assert not sock.get_inheritable() and sock.getblocking() is False  # kernels never get the port
        sock.close()


def test_the_activated_command_line_keeps_every_setting_and_only_adds_the_descriptor(tmp_path):
    plain = server_argv("/py", 18888, tmp_path)
    handed = server_argv("/py", 18888, tmp_path, listen_fd=5)
    assert handed[:4] == ["/py", "-m", SOCKET_ENTRY, "--listen-fd=5"]
    assert handed[4:] == plain[3:]  # token from the environment, loopback, no terminals, ...


def test_jupyterlab_serves_a_socket_it_inherits_with_the_queued_request_answered(tmp_path):
    listening = socket.socket()
    listening.bind((LOOPBACK, 0))
    listening.listen(16)
    port = listening.getsockname()[1]
    conn = socket.create_connection((LOOPBACK, port), timeout=120)
    headers = f"Host: {LOOPBACK}:{port}\r\nAuthorization: token t0k\r\nConnection: close"
    conn.sendall(f"GET /api/status HTTP/1.1\r\n{headers}\r\n\r\n".encode())
    dirs = {name: tmp_path / name.lower() for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")}
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}, "JUPYTER_TOKEN": "t0k", "JUPYTER_PATH": ""}
    (tmp_path / "root").mkdir()
    argv = server_argv(sys.executable, port, tmp_path / "root", listen_fd=listening.fileno())
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(argv, pass_fds=(listening.fileno(),), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        first_line = _answer(conn).split(b"\r\n", 1)[0]
        assert first_line == b"HTTP/1.1 200 OK", (tmp_path / "server.log").read_text()[-2000:]
        listening.close()  # the server's copy serves on alone
        with httpx.Client(trust_env=False, timeout=30) as client:
            assert client.get(f"http://{LOOPBACK}:{port}/api/status").status_code == 403  # the token is still needed
            assert client.get(f"http://{LOOPBACK}:{port}/api/status", params={"token": "t0k"}).status_code == 200
        (runtime,) = dirs["JUPYTER_RUNTIME_DIR"].glob("jpserver-*.json")
        info = json.loads(runtime.read_text())
        assert (info["hostname"], info["port"]) == (LOOPBACK, port)  # what `after_ready` checks
    finally:
        server.terminate()
        server.wait(30)
        log.close()


# --------------------------------------------------------------------------- setting, components, status


def test_first_use_is_the_default_and_up_or_no_supervisor_starts_it_with_up(tmp_path):
    sandbox = SandboxDir(tmp_path / "sb")
    secrets = load_or_create_secrets(sandbox)

    def lab(**settings) -> JupyterLab:
        config = load_config(profile="local", dir=sandbox.root, **settings)
        return JupyterLab(ServiceContext(config, sandbox, secrets, PortMap(sandbox)), make_endpoints)

    assert load_config(profile="local", dir=sandbox.root).notebooks.start == "first-use"
    assert lab().on_first_use is True
    assert lab(**{"notebooks.start": "up"}).on_first_use is False
    assert lab(**{"supervisor.enabled": False}).on_first_use is False
    with pytest.raises(ConfigError, match=r"notebooks\.start"):
        load_config(profile="local", dir=sandbox.root, **{"notebooks.start": "later"})


def test_the_supervisor_watches_jupyterlab_as_activated_only_with_first_use(tmp_path):
    sandbox = SandboxDir(tmp_path / "sb")
    load_or_create_secrets(sandbox)
    ports = PortMap(sandbox)
    ports.claim("notebooks", _free_port(), setting="notebooks.port")
    ports.save()
    activations = Activations()
    first_use = load_config(profile="local", dir=sandbox.root)
    found = {c.name: c for c in LocalComponents(sandbox, first_use, make_endpoints(), activations)()}
    assert isinstance(found["notebooks"], ActivatedComponent)
    assert activations.listening() == {}  # made, not yet bound
    activations.open_all()  # what the supervisor does before it reports ready
    assert activations.listening() == {"notebooks": ports.get("notebooks")}
    on_up = load_config(profile="local", dir=sandbox.root, **{"notebooks.start": "up"})
    found = {c.name: c for c in LocalComponents(sandbox, on_up, make_endpoints(), activations)()}
    assert type(found["notebooks"]) is ServiceComponent
    assert activations.listening() == {}  # the port is let go: `up` starts JupyterLab on it


def test_status_says_waiting_with_the_url_and_the_stack_counts_as_running(tmp_path):
    sandbox = SandboxDir(tmp_path / "sb")
    secrets = load_or_create_secrets(sandbox)
    ports = PortMap(sandbox)
    ports.claim("notebooks", _free_port(), setting="notebooks.port")
    config = load_config(profile="local", dir=sandbox.root)
    lab = JupyterLab(ServiceContext(config, sandbox, secrets, ports), make_endpoints)
    row = lab.status(waiting=True)
    assert row.state == ServiceState.WAITING and row.instance is None
    assert row.detail.startswith("starts on first use") and row.url == lab.tokened_url()
    assert lab.status().state == ServiceState.STOPPED  # not running and nobody listens for it
    running = ServiceStatus(
        name="mlflow", title="MLflow", state=ServiceState.RUNNING, instance="pid 1", port=1, url=None
    )
    assert ProfileStatus(profile="local", dir="/x", services=[running, row]).overall == "running"


def test_notebooks_started_waits_for_the_first_answer_and_says_so_when_none_comes():
    listening = socket.socket()
    listening.bind((LOOPBACK, 0))
    listening.listen()
    port = listening.getsockname()[1]
    endpoints = make_endpoints(notebooks_url=f"http://{LOOPBACK}:{port}/?token=t0k")

    def slow_start() -> None:  # accepts later, as a server that takes its time to start
        conn, _ = listening.accept()
        with conn:
            request = conn.recv(65536)
            assert b"Authorization: token t0k" in request
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    server = threading.Thread(target=slow_start)
    server.start()
    assert endpoints.notebooks_started(timeout_s=60) == f"http://{LOOPBACK}:{port}"
    server.join()
    listening.close()
    with pytest.raises(NotRunningError, match="did not answer"):
        make_endpoints(notebooks_url=f"http://{LOOPBACK}:1/?token=x").notebooks_started(timeout_s=1)
    with pytest.raises(NotRunningError, match="no JupyterLab"):
        make_endpoints().notebooks_started()
