"""JupyterLab: notebooks wired to the stack, on 127.0.0.1 with a per-sandbox token.

The server (`python -m jupyterlab`, the sandbox's own Python) listens on 127.0.0.1 only and
takes the token generated with the sandbox's other secrets (`secrets.json`, 0600), handed over
in its environment (`JUPYTER_TOKEN`), never on a command line. Its root folder is the sandbox's
workspace (`<dir>/notebooks/`), where the starter notebooks are copied when the workspace is
made (never over a user's copy). Everything Jupyter reads or writes for itself (config, data,
runtime, IPython, lab settings and workspaces) is under the service's own folder, so no
`~/.jupyter` config can open it up; the settings that matter are given on the command line,
which beats any config file, and `after_ready` checks the running server keeps them: its
runtime file (host, port, token, no password, root folder), a foreign Host header and a
foreign Origin refused, a request without the token refused, terminals off.

Kernels are the sandbox's Python (the kernelspec `python3`, written into the service's data
folder): their ZMQ ports bind 127.0.0.1 (`KernelManager.ip`), and their environment points at
the stack (`kernel_env`: what `sandbox env` exports, from `Endpoints.env()`), so `import
mlflow` in a notebook talks to this sandbox's MLflow and S3. A kernel carries the sandbox's
marker as component `notebooks.kernel`: `down` stops it with the rest, and it is never taken
for the server.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from sandbox.endpoints import Endpoints
from sandbox.errors import SandboxError
from sandbox.files import write_private
from sandbox.net import LOOPBACK
from sandbox.profiles.base import ServiceState, ServiceStatus
from sandbox.profiles.local.process import COMPONENT_MARKER, PORTS_MARKER, sandbox_processes, stop_marked
from sandbox.profiles.local.services.base import LocalService, ServiceContext

KERNEL_NAME = "python3"  # what the starter notebooks name: the same on a JupyterLab pod
KERNEL_COMPONENT = "notebooks.kernel"
KERNEL_DISPLAY_NAME = "Python 3 (ML sandbox)"
WORKSPACE = "notebooks"  # <dir>/notebooks/: the server's root folder


def starter_notebooks_dir() -> Path:
    """The project's `notebooks/` folder (next to the `sandbox` package)."""
    return Path(__file__).resolve().parents[4] / "notebooks"


SOCKET_ENTRY = "sandbox.profiles.local.services.jupyterlab_socket"  # JupyterLab on an inherited listening socket


def server_argv(python: str, port: int, root: Path, *, listen_fd: int | None = None) -> list[str]:
    """The server's command line: loopback only, token only, no terminals, nothing fetched from the internet.

    With ``listen_fd`` (socket activation: the supervisor listens and hands the socket over) the entry serves
    that socket instead of binding the port; every setting is the same."""
    entry = ["jupyterlab"] if listen_fd is None else [SOCKET_ENTRY, f"--listen-fd={listen_fd}"]
    return [
        python,
        "-m",
        *entry,
        "--no-browser",
        f"--ServerApp.ip={LOOPBACK}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # its own port or none: never a neighbour's
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_remote_access=False",  # Host must be a loopback name (DNS rebinding)
        "--ServerApp.allow_origin=",  # no CORS
        "--ServerApp.disable_check_xsrf=False",
        "--ServerApp.allow_unauthenticated_access=False",
        "--ServerApp.terminals_enabled=False",  # a shell in the browser: kernels are enough
        # Off: the terminals extension, jupyter-lsp (an unauthenticated-by-design websocket, no servers here).
        "--ServerApp.jpserver_extensions=jupyter_server_terminals=False",
        "--ServerApp.jpserver_extensions=jupyter_lsp=False",
        # Classic-notebook extension support, which nothing here uses: 20 of the server's ~105 MiB idle.
        "--ServerApp.jpserver_extensions=notebook_shim=False",
        "--ServerApp.allow_root=True",  # as root (CI) it runs as the user who ran `up`, like the other services
        "--PasswordIdentityProvider.hashed_password=",  # no password: the token alone
        "--PasswordIdentityProvider.allow_password_change=False",
        f"--KernelManager.ip={LOOPBACK}",  # each kernel's five ZMQ ports on loopback
        "--KernelManager.transport=tcp",
        "--KernelSpecManager.ensure_native_kernel=False",  # only the kernelspec written here
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=",
    ]


def kernel_env(endpoints: Endpoints) -> dict[str, str]:
    """A kernel's environment: the stack (`sandbox env`'s variables) and its marker as a kernel, not the server."""
    return {
        **endpoints.env(),
        "ML_SANDBOX_DATA_BUCKET": endpoints.data_bucket,
        "ML_SANDBOX_ARTIFACTS_BUCKET": endpoints.artifacts_bucket,
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        COMPONENT_MARKER: KERNEL_COMPONENT,
        PORTS_MARKER: "{}",
    }


def kernelspec(python: str, env: Mapping[str, str]) -> dict:
    """kernel.json for the sandbox's own Python."""
    return {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNEL_DISPLAY_NAME,
        "language": "python",
        "env": dict(env),
        "metadata": {"debugger": True},
    }


def tokened_url(base: str, token: str) -> str:
    """The URL with its token, as `jupyter server list` prints it."""
    return f"{base}/?token={token}"


class JupyterLab(LocalService):
    name = "notebooks"
    title = "JupyterLab (notebooks)"

    def __init__(self, ctx: ServiceContext, endpoints: Callable[[], Endpoints | None]):
        super().__init__(ctx)
        self._endpoints = endpoints
        self.workspace = ctx.sandbox.root / WORKSPACE
        self._listen_fd: int | None = None  # set while `start_on` starts it on the supervisor's socket

    @property
    def on_first_use(self) -> bool:
        """Started by the supervisor on the first connection (`notebooks.start: first-use`), not by `up`."""
        return self.ctx.config.notebooks.start == "first-use" and self.ctx.config.supervisor.enabled

    def start_on(self, listening: socket.socket) -> str:
        """Start the server on an already-listening socket (it inherits it); the checks run as for `start`."""
        self._listen_fd = listening.fileno()
        try:
            return self.start(pass_fds=(self._listen_fd,))
        finally:
            self._listen_fd = None

    def describe(self) -> str:
        from importlib.metadata import version

        return f"JupyterLab {version('jupyterlab')}"

    def port_keys(self) -> list[str]:
        return ["notebooks"]

    def claim_ports(self) -> None:
        self.ctx.ports.claim("notebooks", self.ctx.config.notebooks.port, setting="notebooks.port")

    @property
    def token(self) -> str:
        token = self.ctx.secrets.jupyter_token
        if not token:
            raise SandboxError("this sandbox has no Jupyter token yet", hint="`sandbox up` generates it")
        return token

    def url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.port}" if self.port else None

    def tokened_url(self) -> str | None:
        base = self.url()
        return tokened_url(base, self.token) if base and self.ctx.secrets.jupyter_token else None

    # ---------------------------------------------------------------- start

    def _jupyter_dirs(self) -> dict[str, Path]:
        return {
            "JUPYTER_CONFIG_DIR": self.dir / "config",
            "JUPYTER_DATA_DIR": self.dir / "data",
            "JUPYTER_RUNTIME_DIR": self.dir / "runtime",
            "IPYTHONDIR": self.dir / "ipython",
            "JUPYTERLAB_SETTINGS_DIR": self.dir / "lab" / "settings",
            "JUPYTERLAB_WORKSPACES_DIR": self.dir / "lab" / "workspaces",
        }

    def prepare(self) -> str:
        """The workspace with the starter notebooks (only when it is made), and the kernelspec."""
        note = ""
        if not self.workspace.exists():
            self.workspace.mkdir(mode=0o700, parents=True)
            copied = copy_starters(starter_notebooks_dir(), self.workspace)
            note = f"workspace {self.workspace} with {copied} starter notebook(s)"
        endpoints = self._endpoints()
        if endpoints is None:
            raise SandboxError("the stack's endpoints are not known yet", hint="start PostgreSQL, S3 and MLflow first")
        for folder in self._jupyter_dirs().values():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        seed_lab_settings(self._jupyter_dirs()["JUPYTERLAB_SETTINGS_DIR"])
        spec_dir = self.dir / "data" / "kernels" / KERNEL_NAME
        spec_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # 0600: the kernel's environment holds the stack's keys (as secrets.json does).
        write_private(spec_dir / "kernel.json", json.dumps(kernelspec(sys.executable, kernel_env(endpoints)), indent=1))
        return note

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = {key: str(path) for key, path in self._jupyter_dirs().items()}
        env.update(
            JUPYTER_TOKEN=self.token,  # in the environment, not argv: `ps` shows argv to everyone
            JUPYTER_PLATFORM_DIRS="1",
            JUPYTER_PATH="",  # no other data folders
            # The folder above before the environment's own (a virtualenv's share/jupyter is preferred by
            # default, and ipykernel's plain `python3` there would shadow the kernelspec written here).
            JUPYTER_PREFER_ENV_PATH="0",
        )
        return server_argv(sys.executable, self.port, self.workspace, listen_fd=self._listen_fd), env

    # ---------------------------------------------------------------- readiness and checks

    def _request(self, method: str, path: str, *, token: bool = True, **kwargs) -> httpx.Response:
        """One request on a fresh connection: no cookie from an earlier answer (the server sets a login cookie)."""
        headers = {**({"Authorization": f"token {self.token}"} if token else {}), **kwargs.pop("headers", {})}
        with httpx.Client(base_url=self.url(), timeout=5, trust_env=False) as client:
            return client.request(method, path, headers=headers, **kwargs)

    def probe(self) -> None:
        """A real request with the token (the kernelspecs: ours is the one offered), and the same without it refused."""
        answer = self._request("GET", "/api/kernelspecs")
        answer.raise_for_status()
        spec = answer.json().get("kernelspecs", {}).get(KERNEL_NAME, {}).get("spec", {})
        if spec.get("display_name") != KERNEL_DISPLAY_NAME:
            raise SandboxError(
                f"JupyterLab offers {spec.get('display_name')!r} as its {KERNEL_NAME!r} kernel, not the sandbox's"
            )
        anonymous = self._request("GET", "/api/kernelspecs", token=False)
        if anonymous.status_code != 403:
            raise SandboxError(f"JupyterLab answered HTTP {anonymous.status_code} to a request without the token")

    def after_ready(self) -> None:
        problems = self.settings_problems()
        if problems:
            raise SandboxError(
                "JupyterLab runs with unsafe settings: " + "; ".join(problems),
                hint=f"see {self.dir / 'config'} and the environment's jupyter config (jupyter --paths)",
            )

    def runtime_info(self) -> dict | None:
        """The running server's own record (`jupyter server list` reads the same file)."""
        proc = self.process.running()
        if proc is None:
            return None
        path = self.dir / "runtime" / f"jpserver-{proc.pid}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def settings_problems(self) -> list[str]:
        """What the running server does that it must not; empty when it keeps to loopback, token and root."""
        info = self.runtime_info()
        if info is None:
            return ["no runtime file (jpserver-PID.json): cannot tell how it runs"]
        problems = []
        expected = {"hostname": LOOPBACK, "port": self.port, "password": False, "token": self.token}
        for key, value in expected.items():
            if info.get(key) != value:
                shown = "(another token)" if key == "token" else repr(info.get(key))
                problems.append(f"{key} is {shown}, not {'the sandbox token' if key == 'token' else repr(value)}")
        if Path(info.get("root_dir", "")).resolve() != self.workspace.resolve():
            problems.append(f"root_dir is {info.get('root_dir')!r}, not {str(self.workspace)!r}")
        foreign_host = self._request("GET", "/api/status", headers={"Host": "evil.example:80"})
        if foreign_host.status_code != 403:
            problems.append(f"a foreign Host header got HTTP {foreign_host.status_code} (DNS rebinding)")
        # A browser on another site carries the login cookie, never the token: with the cookie alone,
        # the server's own origin answers and a foreign one is refused without CORS headers.
        cookies = dict(self._request("GET", "/api/status").cookies)
        own = self._request("GET", "/api/status", token=False, cookies=cookies, headers={"Origin": self.url()})
        foreign = self._request(
            "GET", "/api/status", token=False, cookies=cookies, headers={"Origin": "http://evil.example"}
        )
        if own.status_code != 200:
            problems.append(f"the login cookie from its own origin got HTTP {own.status_code}")
        if foreign.status_code < 400 or foreign.headers.get("Access-Control-Allow-Origin"):
            problems.append(f"the login cookie from a foreign Origin got HTTP {foreign.status_code} (CORS)")
        terminals = self._request("GET", "/api/terminals")
        if terminals.status_code != 404:
            problems.append(f"terminals answer HTTP {terminals.status_code}: they should be off")
        forged = self._request("POST", "/api/contents", token=False, json={"type": "notebook"}, cookies={"_xsrf": "x"})
        if forged.status_code != 403:
            problems.append(f"a POST without the token got HTTP {forged.status_code}")
        return problems

    # ---------------------------------------------------------------- stop and status

    def kernels(self) -> list:
        """The live kernel processes this server started."""
        return sandbox_processes(self.ctx.sandbox.home, component=KERNEL_COMPONENT)

    def stop(self) -> bool:
        stopped = self.process.stop(sig=self.stop_signal, whole_group=self.signal_whole_group)  # shuts its kernels
        return bool(stop_marked(self.ctx.sandbox.home, component=KERNEL_COMPONENT)) or stopped

    def reap_leftovers(self) -> int:
        found = super().reap_leftovers()
        if self.process.running() is None:
            found += len(stop_marked(self.ctx.sandbox.home, component=KERNEL_COMPONENT))  # orphans of a crashed server
        return found

    def status(self, *, waiting: bool = False) -> ServiceStatus:
        """``waiting``: not started, the supervisor listens on its port (see `supervisor/activation.py`)."""
        status = super().status()
        status.url = self.tokened_url() or status.url
        status.detail = f"workspace {self.workspace}; {len(self.kernels())} kernel(s)" if status.instance else ""
        if waiting and status.instance is None:
            status.state = ServiceState.WAITING
            status.detail = "starts on first use (the supervisor listens on its port)"
        return status


# The server fetches no news (`--LabApp.news_url=`); without this the page still asks whether to.
NEWS_OFF = ("@jupyterlab/apputils-extension", "notification", {"fetchNews": "false"})


def seed_lab_settings(settings_dir: Path) -> bool:
    """Write the sandbox's default user settings unless the user has their own; True when written."""
    plugin, name, values = NEWS_OFF
    path = settings_dir / plugin / f"{name}.jupyterlab-settings"
    if path.exists():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, json.dumps(values))
    return True


def copy_starters(source: Path, workspace: Path) -> int:
    """Copy each starter notebook into ``workspace`` unless a file of that name is there; returns how many."""
    copied = 0
    if not source.is_dir():
        return copied
    for notebook in sorted(source.glob("*.ipynb")):
        target = workspace / notebook.name
        if target.exists():
            continue  # a user's copy is never overwritten
        shutil.copyfile(notebook, target)
        os.chmod(target, 0o600)
        copied += 1
    return copied
