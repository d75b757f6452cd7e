"""JupyterLab on a socket it inherits: `python -m sandbox.profiles.local.services.jupyterlab_socket --listen-fd N ARGS`.

The supervisor listens on the notebooks port itself and starts JupyterLab on the first connection (systemd's
socket activation), handing it the listening socket as file descriptor N (`pass_fds`). The server then serves
that socket instead of binding one: the connection that woke the supervisor, queued in the socket's backlog, is
answered by JupyterLab itself, and so is every later one. ARGS are `jupyterlab.server_argv`'s settings (token
from the environment, loopback, no terminals, ...), unchanged: only where the listening socket comes from differs.

The socket is checked before anything else (a listening TCP socket on 127.0.0.1, on the port the settings name),
and it is made non-inheritable, so a kernel never holds the port.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence

from sandbox.net import LOOPBACK

FD_OPTION = "--listen-fd"


def take_fd(argv: list[str]) -> int:
    """Remove `--listen-fd N` (or `--listen-fd=N`) from ``argv``; the descriptor's number."""
    for index, arg in enumerate(argv):
        if arg == FD_OPTION and index + 1 < len(argv):
            value = argv[index + 1]
            del argv[index : index + 2]
        elif arg.startswith(FD_OPTION + "="):
            value = arg.partition("=")[2]
            del argv[index]
        else:
            continue
        if not value.isdigit():
            raise SystemExit(f"{FD_OPTION} takes a file descriptor number, not {value!r}")
        return int(value)
    raise SystemExit(f"{FD_OPTION} N is required: the listening socket this server serves")


def inherited_socket(fd: int, *, port: int | None = None) -> socket.socket:
    """The listening socket ``fd``: TCP, on 127.0.0.1 (and ``port`` when given), listening; else SystemExit."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise SystemExit(f"file descriptor {fd} is not a socket this process inherited: {exc}") from None
    problem = None
    if sock.family != socket.AF_INET or sock.type != socket.SOCK_STREAM:
        problem = "not a TCP/IPv4 socket"
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = "not listening"
    elif sock.getsockname()[0] != LOOPBACK:
        problem = f"bound to {sock.getsockname()[0]}, not {LOOPBACK}"  # never serve beyond loopback
    elif port is not None and sock.getsockname()[1] != port:
        problem = f"bound to port {sock.getsockname()[1]}, not {port}"
    if problem:
        sock.detach()  # not ours to close
        raise SystemExit(f"file descriptor {fd}: {problem}")
    sock.set_inheritable(False)  # kernels and other children never get the port
    sock.setblocking(False)  # tornado's accept loop needs it
    return sock


def _port_setting(argv: Sequence[str]) -> int | None:
    for arg in argv:
        if arg.startswith("--ServerApp.port="):
            return int(arg.partition("=")[2])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    sock = inherited_socket(take_fd(args), port=_port_setting(args))

    from jupyter_server.serverapp import ServerApp
    from jupyterlab.labapp import LabApp

    class InheritedSocketServerApp(ServerApp):
        """ServerApp that serves the inherited socket: no port search, no bind."""

        def _find_http_port(self) -> None:
            # The stock search binds the port to test it, which fails on a port already listening (ours).
            self.port = sock.getsockname()[1]

        def _bind_http_server_tcp(self) -> bool:
            self.http_server.add_sockets([sock])
            return True

    class InheritedSocketLabApp(LabApp):
        serverapp_class = InheritedSocketServerApp

        @classmethod
        def get_extension_package(cls) -> str:
            return "jupyterlab"  # the extension is JupyterLab's, not this module's package

        @classmethod
        def get_extension_point(cls) -> str:
            return LabApp.__module__

    InheritedSocketLabApp.launch_instance(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
