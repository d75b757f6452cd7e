"""JupyterLab in the stack: started on first use, token auth, loopback only, and a kernel that sees the stack.

The kernel is started the way JupyterLab's page starts one: the REST API makes it, one cell
goes over its WebSocket channel, and the answer comes back on the same channel. The session stack
starts JupyterLab on its first use (the default): the tests that need it running make that first
use themselves (`Endpoints.notebooks_started`); the first-use test has a stack of its own, which no
one has visited.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import psutil
import pytest
import websocket

from tests.stacks import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(platform):
    """JupyterLab of the `platform` session stack (read-mostly: a crashed server is brought back by its supervisor)."""
    return platform


def _notebooks(stack) -> dict:
    return next(s for s in stack.status()["services"] if s["name"] == "notebooks")


def _base_and_token(stack) -> tuple[str, str]:
    stack.endpoints().notebooks_started()  # its first use starts it, when no test before did
    url = stack.status()["endpoints"]["notebooks_url"]
    base, _, token = url.partition("/?token=")
    return base, token


def _execute(base: str, token: str, kernel_id: str, code: str) -> str:
    """Run ``code`` in the kernel over its WebSocket channel; what it printed on stdout."""
    ws = websocket.create_connection(
        base.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels",
        header=[f"Authorization: token {token}"],
        timeout=60,
    )
    try:
        msg_id = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "test",
                        "session": msg_id,
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": code, "silent": False, "store_history": False, "allow_stdin": False},
                    "channel": "shell",
                }
            )
        )
        printed, status = [], None
        while status != "idle":
            message = json.loads(ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream" and content["name"] == "stdout":  # stderr has import-time warnings
                printed.append(content["text"])
            elif kind == "error":
                raise AssertionError(f"the cell failed: {content['ename']}: {content['evalue']}")
            elif kind == "status":
                status = content["execution_state"]
        return "".join(printed)
    finally:
        ws.close()


def test_jupyter_answers_403_without_the_token_and_200_with_it(stack):
    base, token = _base_and_token(stack)
    assert token and _notebooks(stack)["state"] == "running"
    with httpx.Client(trust_env=False, timeout=10) as anonymous:
        assert anonymous.get(f"{base}/api/contents").status_code == 403
        assert anonymous.get(f"{base}/api/contents", params={"token": "wrong"}).status_code == 403
    with httpx.Client(trust_env=False, timeout=10) as user:
        listing = user.get(f"{base}/api/contents", headers={"Authorization": f"token {token}"})
    assert listing.status_code == 200
    names = {item["name"] for item in listing.json()["content"]}
    assert {"01-explore-track-register.ipynb", "03-inference-log-and-drift.ipynb"} <= names  # the starters
    # `status` shows the URL with its token, as `jupyter server list` does.
    assert _notebooks(stack)["url"] == f"{base}/?token={token}"


def test_a_kernel_over_rest_and_websocket_sees_the_stack_and_everything_listens_on_loopback(stack):
    base, token = _base_and_token(stack)
    auth = {"Authorization": f"token {token}"}
    tracking_uri = stack.status()["endpoints"]["mlflow_tracking_uri"]
    with httpx.Client(trust_env=False, timeout=60, headers=auth) as client:
        kernel = client.post(f"{base}/api/kernels", json={"name": "python3"})
        assert kernel.status_code == 201, kernel.text
        kernel_id = kernel.json()["id"]
        try:
            printed = _execute(base, token, kernel_id, "import mlflow, os\nprint(mlflow.get_tracking_uri())")
            assert printed.strip() == tracking_uri
            # Every listener of the server and its kernel (five ZMQ ports) is on 127.0.0.1.
            home = str(stack.dir.resolve())
            pids = set()
            for proc in psutil.process_iter():
                try:
                    env = proc.environ()
                except psutil.Error:
                    continue
                if env.get("ML_SANDBOX_HOME") == home and env.get("ML_SANDBOX_COMPONENT", "").startswith("notebooks"):
                    pids.add(proc.pid)
            listening = [c for c in psutil.net_connections("inet") if c.pid in pids and c.status == psutil.CONN_LISTEN]
            kernel_pids = {p for p in pids if psutil.Process(p).environ()["ML_SANDBOX_COMPONENT"] == "notebooks.kernel"}
            assert kernel_pids, "no kernel process carries the sandbox's marker"
            assert len([c for c in listening if c.pid in kernel_pids]) >= 5
            assert {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening
        finally:
            assert client.delete(f"{base}/api/kernels/{kernel_id}").status_code == 204


def test_logs_and_a_crashed_server_comes_back_on_its_port(stack):
    stack.endpoints().notebooks_started()
    before = _notebooks(stack)
    psutil.Process(int(before["instance"].split()[1])).kill()
    deadline = time.monotonic() + 120
    while True:  # the supervisor restarts it (with backoff); no timing is asserted, only that it happens
        now = _notebooks(stack)
        if now["state"] == "running" and now["instance"] != before["instance"]:
            break
        assert time.monotonic() < deadline, f"not restarted: {now}"
        time.sleep(1)
    assert now["port"] == before["port"] and now["url"] == before["url"]  # same port, same token
    assert "Jupyter Server" in stack.cli("logs", "notebooks", "--lines", "200").stdout  # the restart's banner


def _notebooks_processes(home: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get("ML_SANDBOX_HOME") == home and env.get("ML_SANDBOX_COMPONENT") == "notebooks":
            found.append(proc)
    return found


def test_first_use_the_url_up_printed_starts_jupyterlab_which_answers_that_first_request(tmp_path):
    fresh = Stack(tmp_path / "sandbox", env={"SANDBOX_NOTEBOOKS__START": "first-use"})
    home = str(fresh.dir.resolve())
    try:
        shown = fresh.cli("up").stderr
        assert "waiting: starts on first use" in shown
        notebooks = _notebooks(fresh)
        assert notebooks["state"] == "waiting" and notebooks["instance"] is None, notebooks
        assert "starts on first use" in notebooks["detail"]
        assert not _notebooks_processes(home)  # nothing runs until someone connects
        url = fresh.status()["endpoints"]["notebooks_url"]
        assert url == notebooks["url"] and url in shown  # the URL `up` printed, with its token
        base, _, token = url.partition("/?token=")
        with httpx.Client(trust_env=False, timeout=120) as client:  # the first request waits for the start
            first = client.get(f"{base}/api/contents", headers={"Authorization": f"token {token}"})
            assert first.status_code == 200, first.text
            assert "01-explore-track-register.ipynb" in {item["name"] for item in first.json()["content"]}
        with httpx.Client(trust_env=False, timeout=60) as anonymous:  # no login cookie from the answer above
            assert anonymous.get(f"{base}/api/contents").status_code == 403
            page = anonymous.get(f"{base}/lab", follow_redirects=False)
            assert page.status_code == 302 and "/login" in page.headers["location"]
        running = _notebooks(fresh)
        assert running["state"] == "running" and running["instance"], running
        (server,) = _notebooks_processes(home)
        # It serves the supervisor's socket: no listener of its own beside it, and on loopback only.
        listening = [c for c in psutil.net_connections("inet") if c.pid == server.pid and c.status == "LISTEN"]
        assert {(c.laddr.ip, c.laddr.port) for c in listening} == {("127.0.0.1", running["port"])}
        assert "started notebooks on its first use" in fresh.cli("logs", "supervisor").stdout
    finally:
        fresh.cli("down", "--purge", check=False)
    leftovers = [p for p in psutil.process_iter() if _home_of(p) == home]
    assert not leftovers, leftovers


def _home_of(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get("ML_SANDBOX_HOME")
    except psutil.Error:
        return None
