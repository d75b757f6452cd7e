"""Socket activation, systemd's way: the supervisor listens on a service's port and starts it on the first connection.

`up` prepares the service (JupyterLab with `notebooks.start: first-use`) and claims its port but starts nothing;
the supervisor binds that port on 127.0.0.1 (`ListeningSocket.open`) and watches it with a selector, never
accepting. When a connection is queued the socket is readable: the supervisor starts the server handing it the
socket (`pass_fds`), and the server accepts the queued connection and every later one itself. The supervisor keeps
its copy, so a crashed server is restarted on the same socket (connections meanwhile wait in the backlog), and
closes it when it stops (`down` stops it first). Once started, the server runs until `down`: no idle shutdown.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket

from sandbox.errors import PortInUseError
from sandbox.net import LOOPBACK

BACKLOG = 128  # connections queued while the server starts (a browser opens several at once)


class ListeningSocket:
    """One port the supervisor holds for a service it starts on first use."""

    def __init__(self, name: str, port: int):
        self.name = name
        self.port = port
        self.sock: socket.socket | None = None
        self.started = False  # the server was seen running: from then on it is supervised like any service
        self.seen_pending = False  # a connection waits and the loop knows: no need to wake it again

    def open(self) -> socket.socket:
        """Bind and listen, once; PortInUseError when another process holds the port."""
        if self.sock is not None:
            return self.sock
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # As a server would: a restarted supervisor binds again past connections in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LOOPBACK, self.port))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(f"port {self.port} ({self.name}) is held by another process") from None
            raise
        sock.set_inheritable(False)  # handed over explicitly (pass_fds), never to other children
        self.sock = sock
        return sock

    def pending(self) -> bool:
        """A connection waits to be accepted (readable now); never accepts it."""
        if self.sock is None:
            return False
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            return bool(selector.select(timeout=0))

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


class Activations:
    """The sockets the supervisor holds, by service name; they live as long as the supervisor process."""

    def __init__(self) -> None:
        self.sockets: dict[str, ListeningSocket] = {}

    def get(self, name: str, port: int) -> ListeningSocket:
        current = self.sockets.get(name)
        if current is not None and current.port != port:
            self.drop(name)  # the port changed (a new `up`'s settings): the old one goes
            current = None
        if current is None:
            current = self.sockets[name] = ListeningSocket(name, port)
        return current

    def drop(self, name: str) -> None:
        found = self.sockets.pop(name, None)
        if found is not None:
            found.close()

    def keep_only(self, names: set[str]) -> None:
        for name in set(self.sockets) - names:
            self.drop(name)

    def open_all(self) -> None:
        """Listen on every port not started yet; one another process holds is left for the rounds to report."""
        for held in self.sockets.values():
            if not held.started:
                with contextlib.suppress(PortInUseError):
                    held.open()

    def watched(self) -> list[socket.socket]:
        """The sockets whose first connection the loop waits for (not started, none pending already)."""
        return [
            held.sock
            for held in self.sockets.values()
            if held.sock is not None and not held.started and not held.seen_pending
        ]

    def listening(self) -> dict[str, int]:
        """name → port of each socket held open now (for `status`, through the state file)."""
        return {name: held.port for name, held in self.sockets.items() if held.sock is not None}

    def close(self) -> None:
        for name in list(self.sockets):
            self.drop(name)


def wait(sockets: list[socket.socket], wakeup: socket.socket | None, timeout: float) -> bool:
    """Sleep up to ``timeout`` s, or until a socket has a connection waiting or ``wakeup`` is readable (a signal
    came: `signal.set_wakeup_fd`); True when a connection waits. Never accepts."""
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ, "connection")
        if wakeup is not None:
            selector.register(wakeup, selectors.EVENT_READ, "signal")
        ready = selector.select(timeout=max(timeout, 0))
    if wakeup is not None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while wakeup.recv(64):
                pass
    return any(key.data == "connection" for key, _ in ready)
