"""Servers under test for the serving benchmark, behind one small interface.

A `ServerUnderTest` starts, names its inference URL, builds a one-row request
body in its own protocol, and stops. Every server binds 127.0.0.1 only (the
benchmark checks each one's listening sockets), and every process the
benchmark starts runs in a process group of its own, stopped as a group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from sandbox.endpoints import Endpoints, log_in_to_mlflow

LOOPBACK = "127.0.0.1"
LOOPBACK_ADDRESSES = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


@dataclass
class BenchContext:
    """What every server needs: the sandbox, the registered model, a work folder."""

    sandbox_dir: Path
    endpoints: Endpoints
    model_uri: str  # models:/NAME/VERSION in the sandbox's registry
    model_name: str
    columns: list[str]  # the model's input columns, in order
    workdir: Path
    batch_size: int
    batch_wait_ms: float
    cache_dir: Path
    inference_log: bool = False  # ours with the inference log on (the peers have none)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def compact_json(value) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- processes -------------------------------------------------------------------------------------------------


def start_group(argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Start a process as the leader of a new session (and so of its own process group)."""
    return subprocess.Popen(
        list(argv),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group, wait for all of it, then SIGKILL whatever is left."""
    pgid = proc.pid  # a session leader's pid is its group's id
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so its pid stops counting as alive
        if not _group_alive(pgid):
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def wait_until_ready(
    name: str, probe: Callable[[], bool], *, proc: subprocess.Popen | None, log: Path, timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{_tail(log)}")
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not become ready in {timeout:.0f} s:\n{_tail(log)}")


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _connections(process: psutil.Process):
    method = getattr(process, "net_connections", None) or process.connections  # psutil 6 renamed it
    return method(kind="inet")


def listening_addresses(root_pid: int) -> list[str]:
    """Every TCP address that the process tree under root_pid listens on, as HOST:PORT."""
    root = psutil.Process(root_pid)
    found = set()
    for process in [root, *root.children(recursive=True)]:
        try:
            for conn in _connections(process):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [f"{ip}:{port}" for ip, port in sorted(found, key=lambda item: item[1])]


def pid_listening_on(port: int) -> int | None:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None


# --- the interface ---------------------------------------------------------------------------------------------


class ServerUnderTest(ABC):
    """A server the benchmark measures: start, url, body, stop."""

    key: str  # short name for --only and the results file
    label: str  # what the table shows
    expect: str  # a key every good JSON answer has

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx
        self.proc: subprocess.Popen | None = None
        self.log = ctx.workdir / f"{self.key}.log"

    @abstractmethod
    def start(self) -> None:
        """Start serving the reference model; return when it answers."""

    @property
    @abstractmethod
    def url(self) -> str:
        """The inference URL that the load generators POST to."""

    @abstractmethod
    def body(self, row: Sequence[float]) -> str:
        """One request for one row, as JSON text in this server's protocol."""

    @property
    def headers(self) -> dict[str, str]:
        """Headers every request carries besides the content type: none but for the sandbox's server (its token)."""
        return {}

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None

    def root_pid(self) -> int | None:
        """The process whose tree serves requests (for the loopback check)."""
        return self.proc.pid if self.proc is not None else None

    def check_loopback_only(self) -> list[str]:
        pid = self.root_pid()
        if pid is None:
            raise RuntimeError(f"{self.label}: cannot find its process to check where it listens")
        addresses = listening_addresses(pid)
        exposed = [a for a in addresses if a.rsplit(":", 1)[0] not in LOOPBACK_ADDRESSES]
        if exposed:
            raise RuntimeError(f"{self.label} listens beyond loopback: {', '.join(exposed)}")
        return addresses

    def check_answers(self, bodies: Sequence[str], count: int = 20) -> str:
        """Send a few requests (a warm-up too); fail unless each is a 200 with the expected key."""
        answer = ""
        with httpx.Client(timeout=30, trust_env=False) as client:
            for index in range(count):
                response = client.post(
                    self.url,
                    content=bodies[index % len(bodies)],
                    headers={"Content-Type": "application/json", **self.headers},
                )
                try:
                    good = response.status_code == 200 and self.expect in response.json()
                except ValueError:
                    good = False
                if not good:
                    raise RuntimeError(f"{self.label} answered {response.status_code}: {response.text[:500]}")
                answer = response.text
        return answer


# --- the sandbox's model server ------------------------------------------------------------------------------


def sandbox_cli(*args: str, sandbox_dir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", *args, "--dir", str(sandbox_dir)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"sandbox {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def sandbox_endpoints(sandbox_dir: Path) -> Endpoints:
    """The sandbox's endpoints; this process's MLflow clients log in to it."""
    endpoints = Endpoints(**json.loads(sandbox_cli("status", "--json", sandbox_dir=sandbox_dir))["endpoints"])
    log_in_to_mlflow(endpoints.mlflow_auth_env())
    return endpoints


class SandboxModelServer(ServerUnderTest):
    """The sandbox's model server, deployed by `sandbox serve deploy` (inference log off unless the run asks for
    it), spoken to in V1."""

    key = "ours"
    expect = "predictions"
    batched = True

    def __init__(self, ctx: BenchContext) -> None:
        super().__init__(ctx)
        self.deployment = "rf-batched" if self.batched else "rf-plain"
        self._url = ""
        self._headers: dict[str, str] = {}

    @property
    def label(self) -> str:
        logged = ", inference log on" if self.ctx.inference_log else ""
        if not self.batched:
            return f"sandbox model server, no batching{logged}"
        return f"sandbox model server, batching {self.ctx.batch_size} / {self.ctx.batch_wait_ms:g} ms{logged}"

    def start(self) -> None:
        batching = ["--batch-size", str(self.ctx.batch_size if self.batched else 1)]
        if self.batched:
            batching += ["--batch-wait-ms", str(self.ctx.batch_wait_ms)]
        sandbox_cli(
            "serve",
            "deploy",
            self.deployment,
            "--model",
            self.ctx.model_uri,
            *batching,
            "--inference-log" if self.ctx.inference_log else "--no-inference-log",
            sandbox_dir=self.ctx.sandbox_dir,
        )
        endpoints = sandbox_endpoints(self.ctx.sandbox_dir)
        self._url = endpoints.inference[self.deployment].v1_predict
        self._headers = endpoints.serving_headers()  # measured as deployed: with the token on (the default)

    @property
    def url(self) -> str:
        return self._url

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    def body(self, row: Sequence[float]) -> str:
        return compact_json({"instances": [list(row)]})

    def root_pid(self) -> int | None:
        port = httpx.URL(self._url).port
        return pid_listening_on(port) if port else None

    def stop(self) -> None:
        if self._url:
            self._url = ""
            sandbox_cli("serve", "undeploy", self.deployment, sandbox_dir=self.ctx.sandbox_dir)


class SandboxModelServerNoBatching(SandboxModelServer):
    key = "ours-nobatch"
    batched = False


# --- mlflow models serve ---------------------------------------------------------------------------------------


class MLflowModelsServe(ServerUnderTest):
    """`mlflow models serve` on the registry URI, with this interpreter's packages, its /invocations protocol."""

    key = "mlflow"
    label = "mlflow models serve (pyfunc)"
    expect = "predictions"

    def start(self) -> None:
        self.port = free_port()
        # mlflow models serve execs `uvicorn` through bash: put this interpreter's scripts first on PATH.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {**os.environ, **self.ctx.endpoints.env(), "PATH": path}
        argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", self.ctx.model_uri, "--host", LOOPBACK]
        argv += ["--port", str(self.port), "--env-manager", "local"]
        self.proc = start_group(argv, log=self.log, env=env)
        base = f"http://{LOOPBACK}:{self.port}"
        wait_until_ready(
            self.label,
            lambda: httpx.get(f"{base}/ping", timeout=2, trust_env=False).status_code == 200,
            proc=self.proc,
            log=self.log,
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/invocations"

    def body(self, row: Sequence[float]) -> str:
        return compact_json({"dataframe_split": {"columns": self.ctx.columns, "data": [list(row)]}})
