"""A warm interpreter for kfp.local's steps: the training pipeline's imports paid once per runner, not per step.

kfp.local's subprocess runner starts every step as a new Python (``python3 -m kfp.dsl.executor_main ...``), and
each one imports KFP (with its Kubernetes client), MLflow, pandas and scikit-learn before the step's first line:
about 2.5 CPU-seconds a step, most of a short step's time. `WarmSteps` starts one interpreter that has imported
them (`PRELOAD`) and waits on a Unix socket in the runner's folder; each step is a fork of it, which runs the
step's module with the step's own arguments, environment, working folder and stdin/stdout/stderr
(`warm_client.py` hands them over), so a step sees what a new Python would, at the cost of a fork.

`LocalPipelineRunner` points kfp.local at the client through the Python path it substitutes for ``python3``
(`step_python`), a two-line script in the run's folder. Anything unexpected falls back to a plain Python: a step
whose command is not ``-m MODULE``, a warm interpreter that is gone. The warm interpreter ends when the process
that started it does, or after `IDLE_S` without a step, and removes its socket.

    python -m sandbox.pipelines.warm SOCKET PARENT_PID IDLE_S   (what `WarmSteps.start` runs)
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# What the training pipeline's steps import (`sandbox.pipelines.training`), and KFP's executor itself.
PRELOAD = (
    "kfp.dsl.executor_main",
    "mlflow",
    "mlflow.sklearn",
    "pandas",
    "boto3",
    "sklearn.ensemble",
    "sklearn.model_selection",
)
IDLE_S = 60.0
STARTED = b"started\n"
CLIENT = Path(__file__).with_name("warm_client.py")
# A Unix socket's path has a 108-byte limit; a runner folder deeper than this runs its steps the plain way.
MAX_SOCKET_PATH = 100


class WarmSteps:
    """One warm interpreter serving the steps of a runner's pipelines, from ``folder``."""

    def __init__(self, folder: Path, process: subprocess.Popen):
        self.folder = folder
        self.socket = folder / "warm.sock"
        self.process = process

    @classmethod
    def start(cls, folder: Path, *, idle_s: float = IDLE_S) -> WarmSteps | None:
        """Start one in ``folder`` (made 0700); None where a socket cannot live there (too long a path)."""
        socket_path = folder / "warm.sock"
        if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
            return None
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        socket_path.unlink(missing_ok=True)
        with (folder / "warm.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(socket_path), str(os.getpid()), f"{idle_s:g}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # a Ctrl-C of the checklist ends it through its parent, not mid-step
            )
        warm = cls(folder, process)
        # It binds the socket before it imports anything, so a step that comes early waits in the backlog.
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                warm.stop()
                return None
            time.sleep(0.01)
        return warm

    def alive(self) -> bool:
        return self.process.poll() is None and self.socket.exists()

    def step_python(self, folder: Path) -> Path:
        """An executable in ``folder`` (a run's) that runs ``python ARGS`` as a fork of the warm interpreter, or as
        a plain Python once it is gone."""
        script = folder / "python"
        quoted = " ".join(shlex.quote(part) for part in (sys.executable, "-I", "-S", str(CLIENT)))
        command = f'exec {quoted} {shlex.quote(str(self.socket))} {shlex.quote(sys.executable)} "$@"'
        script.write_text(f"#!/bin/sh\n{command}\n")
        script.chmod(0o700)
        return script

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _clean_up(self.folder)


@contextlib.contextmanager
def as_step_python(warm: WarmSteps | None, folder: Path):
    """kfp.local's steps run with ``warm``'s client (its script in ``folder``) for the block: kfp.local
    substitutes `sys.executable` for ``python3`` in a step's command. With None, as they would anyway."""
    if warm is None or not warm.alive():
        yield
        return
    real = sys.executable
    sys.executable = str(warm.step_python(folder))
    try:
        yield
    finally:
        sys.executable = real


# --------------------------------------------------------------------------- the warm interpreter


def serve(socket_path: Path, parent: int, idle_s: float) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)  # the socket is its owner's alone
    try:
        listener.bind(str(socket_path))
    finally:
        os.umask(old_umask)
    listener.listen(16)
    for name in PRELOAD:
        with contextlib.suppress(Exception):  # a step that needs a missing module fails in its own output
            importlib.import_module(name)
    listener.settimeout(1.0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    last = time.monotonic()
    try:
        while os.getppid() == parent and time.monotonic() - last < idle_s:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(None)
                _run_step(connection, listener)
            last = time.monotonic()
    finally:
        listener.close()
        _clean_up(socket_path.parent)


def _clean_up(folder: Path) -> None:
    """The socket goes; the folder too, unless its log says something."""
    with contextlib.suppress(FileNotFoundError):
        (folder / "warm.sock").unlink()
    log = folder / "warm.log"
    with contextlib.suppress(OSError):
        if log.stat().st_size == 0:
            log.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _run_step(connection: socket.socket, listener: socket.socket) -> None:
    header, fds, _, _ = socket.recv_fds(connection, 12, 3)
    try:
        body = _read_exactly(connection, int(header))
        request = json.loads(body)
        argv = request["argv"]
        if len(fds) != 3 or len(argv) < 2 or argv[0] != "-m":
            return  # not ours to run: the client runs a plain Python
        pid = os.fork()
        if pid == 0:
            listener.close()
            connection.close()
            _child(argv[1], argv[2:], request["env"], request["cwd"], fds)
        connection.sendall(STARTED)
        started = time.monotonic()
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        # One line per step in warm.log (this process's stderr): which steps it ran, and how they ended.
        print(f"ran {argv[1]} as pid {pid}: exit {code} after {time.monotonic() - started:.1f}s", file=sys.stderr)
        connection.sendall(b"%d\n" % code)
    finally:
        for fd in fds:
            os.close(fd)


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = connection.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the step's request was cut short")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _child(module: str, args: list[str], env: dict[str, str], cwd: str, fds: list[int]) -> None:
    """In the fork: become the step (its stdio, environment, folder, arguments), run it, exit with its code."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = None  # found again from the step's TMPDIR
        os.chdir(cwd)
        # As `python -m` starts: the working folder first, then PYTHONPATH's folders (read at an interpreter's
        # start, so the warm one's own are not the step's), then the installation's.
        extra = [folder for folder in env.get("PYTHONPATH", "").split(os.pathsep) if folder]
        sys.path[:] = [cwd, *extra, *(folder for folder in sys.path[1:] if folder not in extra)]
        importlib.invalidate_caches()
        sys.argv = [module, *args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            if done.code is not None and not isinstance(done.code, int):
                print(done.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the step's failure, reported in its own output
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
