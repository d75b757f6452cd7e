"""Background processes the sandbox starts, known by a marker in their environment.

Every process the sandbox starts carries `ML_SANDBOX_HOME` (the sandbox dir)
and `ML_SANDBOX_COMPONENT` (which service or deployment) in its environment,
and so do the processes it forks or spawns (MLflow's workers, PostgreSQL's
backends): psutil reads them back from /proc, the way testcontainers finds its
containers by label. The pid file is the fast path; it is trusted only when the
process behind it still has the recorded start time (after a crash or a reboot a
stale file is harmless), and a missing, stale or corrupt one is rebuilt from
the marker, so it never leads to a second copy of a running server, and
`sandbox_processes()` finds every process of a sandbox for `down` to stop,
whatever its pid file says. Each service runs in its own session, so it is also its own process
group and `stop` can end every process it spawned (MLflow's uvicorn and huey
workers, PostgreSQL's backends). It starts with umask 077, so what it writes
is its owner's alone, like the log and pid files written here.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from sandbox.files import PRIVATE_UMASK, PidRecord, read_pid_record, tail, write_pid_record

HOME_MARKER = "ML_SANDBOX_HOME"
COMPONENT_MARKER = "ML_SANDBOX_COMPONENT"
PORTS_MARKER = "ML_SANDBOX_PORTS"  # the component's ports, so a lost ports.json can be rebuilt


@dataclass(frozen=True)
class Identity:
    """Which sandbox and which of its components a process belongs to."""

    home: str  # the sandbox dir, resolved
    component: str  # "postgres", "deployment:fraud", ...

    def env(self) -> dict[str, str]:
        return {HOME_MARKER: self.home, COMPONENT_MARKER: self.component}


class ManagedProcess:
    """One long-running process and its process group."""

    def __init__(self, pid_file: Path, log_file: Path, identity: Identity | None = None):
        self.pid_file = pid_file
        self.log_file = log_file
        self.identity = identity
        # Set when this object started the process, so Python can reap it if it dies while we wait.
        self._popen: subprocess.Popen | None = None

    # ------------------------------------------------------------------ state

    def record(self) -> PidRecord | None:
        return read_pid_record(self.pid_file)

    def running(self) -> psutil.Process | None:
        """The live process: the pid file's when it is right, else the marked leader (the file is repaired)."""
        record = self.record()
        proc = record.process() if record is not None else None
        if proc is not None and self._is_mine(proc):
            return proc
        leader = self._marked_leader()
        if leader is not None:
            with contextlib.suppress(psutil.Error, OSError):
                write_pid_record(self.pid_file, PidRecord.of(leader, leader.cmdline()))
        return leader

    def leftovers(self) -> list[psutil.Process]:
        """Processes of this component still alive although its leader is gone (after a crash)."""
        record = self.record()
        found = {p.pid: p for p in self._marked()}
        if record is not None:
            found.update({p.pid: p for p in _group_members(record.pid, started_after=record.create_time - 1)})
        return list(found.values())

    def _marked(self) -> list[psutil.Process]:
        if self.identity is None:
            return []
        return sandbox_processes(self.identity.home, component=self.identity.component)

    def _marked_leader(self) -> psutil.Process | None:
        """The marked process that leads its own session (the one `start` made), if any."""
        for proc in self._marked():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(proc.pid) == proc.pid:
                    return proc
        return None

    def _is_mine(self, proc: psutil.Process) -> bool:
        """The leader `start` made: its own session, and no marker that names another component."""
        if self.identity is None:
            return True
        try:
            if os.getsid(proc.pid) != proc.pid:
                return False  # a worker of the server, not the server
        except OSError:
            return False
        marker = _markers(proc)
        return marker is None or marker == (self.identity.home, self.identity.component)

    # ------------------------------------------------------------------ start/stop

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        user: str | None = None,
        pass_fds: Sequence[int] = (),
    ) -> psutil.Process:
        """Start ``argv`` detached in its own session, output appended to the log file; it inherits ``pass_fds``."""
        self.log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        drop = _privilege_drop(user)
        env = {**env, **(self.identity.env() if self.identity else {}), "TMPDIR": str(self._fresh_scratch(drop))}
        with open(os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
                pass_fds=tuple(pass_fds),
                umask=PRIVATE_UMASK,
                **drop,
            )
        proc = psutil.Process(popen.pid)
        write_pid_record(self.pid_file, PidRecord.of(proc, argv))
        self._popen = popen
        return proc

    @property
    def scratch_dir(self) -> Path:
        """The process's TMPDIR: in its own folder, so what it leaves there goes with the sandbox dir."""
        return self.log_file.parent / "tmp"

    def _fresh_scratch(self, drop: dict) -> Path:
        """The scratch folder, emptied of what an earlier process of the component left (a kill -9 mid-upload
        leaves MLflow's temporary copy) unless one of its processes still runs."""
        if not self._marked():
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
        self.scratch_dir.mkdir(mode=0o700, exist_ok=True)
        if drop:
            os.chown(self.scratch_dir, drop["user"], drop["group"])
        return self.scratch_dir

    def exited(self) -> int | None:
        """Exit code of a process started by this object, if it has already ended."""
        return self._popen.poll() if self._popen is not None else None

    def stop(self, *, sig: signal.Signals = signal.SIGTERM, whole_group: bool = True, timeout: float = 30) -> bool:
        """Stop the process, everything in its group and every process marked as this component.

        True if something was stopped.
        """
        leader = self.running()  # repairs the pid file when the marker finds the leader
        found = {p.pid: p for p in self.leftovers()}
        if leader is not None:
            found.setdefault(leader.pid, leader)
        members = list(found.values())
        if not members:
            self.pid_file.unlink(missing_ok=True)
            return False
        signalled = members if whole_group or leader is None else [leader]
        _terminate(members, timeout, sig=sig, signalled=signalled)
        self.pid_file.unlink(missing_ok=True)
        if self._popen is not None:
            self._popen.poll()
        return True

    def log_tail(self, lines: int = 25) -> str:
        return tail(self.log_file, lines)


def _marked_processes() -> Iterator[tuple[psutil.Process, tuple[str, str]]]:
    """Every live marked process this user may read, with its marker; never this command or its callers (a
    command run from a marked shell spares them)."""
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    for proc in psutil.process_iter():
        if proc.pid in spared:
            continue
        marker = _markers(proc)
        if marker is not None and _alive(proc):
            yield proc, marker


def sandbox_processes(home: str, *, component: str | None = None) -> list[psutil.Process]:
    """Every live process marked as the sandbox ``home``'s (and ``component``'s, when given)."""
    return [
        proc
        for proc, (marked_home, marked_component) in _marked_processes()
        if marked_home == home and (component is None or marked_component == component)
    ]


def running_sandboxes() -> dict[str, dict[str, int]]:
    """Each sandbox dir with a live process on this machine (that this user may see), and the ports its
    processes were started with (their `PORTS_MARKER`s, merged)."""
    found: dict[str, dict[str, int]] = {}
    for proc, (home, _) in _marked_processes():
        ports = found.setdefault(home, {})
        with contextlib.suppress(psutil.Error, OSError, ValueError, TypeError, AttributeError):
            ports.update({str(k): int(v) for k, v in json.loads(proc.environ().get(PORTS_MARKER, "{}")).items()})
    return found


def stop_marked(home: str, *, component: str | None = None, timeout: float = 15) -> list[psutil.Process]:
    """Stop every process still marked as the sandbox's (and ``component``'s, when given); returns them."""
    strays = sandbox_processes(home, component=component)
    _terminate(strays, timeout)
    return strays


def listener(port: int) -> psutil.Process | None:
    """The process listening on a loopback TCP port, when this user may see it."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return psutil.Process(conn.pid)
    except (psutil.Error, OSError):
        pass
    return None


def reclaim_port(home: str, port: int, *, timeout: float = 15) -> bool:
    """Stop the sandbox's own process that still holds ``port`` (a crashed server's straggler); True if freed.

    A process that is not marked as this sandbox's is never touched.
    """
    proc = listener(port)
    if proc is None or _markers(proc) is None or _markers(proc)[0] != home:
        return False
    _terminate([proc, *proc.children(recursive=True)], timeout)
    return True


def _terminate(
    procs: list[psutil.Process],
    timeout: float,
    *,
    sig: signal.Signals = signal.SIGTERM,
    signalled: list[psutil.Process] | None = None,
) -> None:
    """``sig`` to ``signalled`` (all of ``procs`` unless given: a leader may end its group itself), then SIGKILL
    whichever of ``procs`` is still running after ``timeout`` (it ignored the polite signal)."""
    for proc in procs if signalled is None else signalled:
        _signal(proc, sig)
    alive = _wait_ended(procs, timeout)
    for proc in alive:
        _signal(proc, signal.SIGKILL)
    _wait_ended(alive, 10)


def _wait_ended(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` for ``procs`` to exit; those still running. A zombie has exited (its ports and
    files are closed): waiting for its reaping would wait on whoever its parent is, and an init that reaps
    orphans on a timer (these VMs' takes over a second) made every stop that much slower."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [proc for proc in procs if _alive(proc)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def marked_ports(home: str) -> dict[str, int]:
    """The ports the sandbox's running processes were started with (to rebuild a lost ports.json)."""
    return running_sandboxes().get(home, {})


def _markers(proc: psutil.Process) -> tuple[str, str] | None:
    try:
        env = proc.environ()
    except (psutil.Error, OSError):
        return None  # gone, or another user's process we may not read
    if HOME_MARKER not in env:
        return None
    return env[HOME_MARKER], env.get(COMPONENT_MARKER, "")


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE  # is_running: not a reused pid
    except psutil.Error:
        return False


def _group_members(pgid: int, *, started_after: float) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["create_time"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["create_time"] >= started_after:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
        # A stopped (SIGSTOP'd, hung in a debugger) process acts on a signal only once resumed.
        if sig != signal.SIGKILL:
            proc.send_signal(signal.SIGCONT)
    except psutil.NoSuchProcess:
        pass


def _privilege_drop(user: str | None) -> dict:
    """Popen arguments that run the child as ``user`` (only meaningful as root)."""
    if user is None or os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
