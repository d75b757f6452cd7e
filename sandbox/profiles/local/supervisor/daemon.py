"""The supervisor process itself: `python -m sandbox.profiles.local.supervisor --dir DIR` runs `main`.

It reads what `up` wrote (`settings.json`: the resolved config and the endpoints), wires the loop to this
sandbox (its components, its lock, its state file), sets the signal handlers (SIGTERM, SIGINT: stop; SIGHUP from
`up`: re-read the settings, clear marks and backoffs) and runs until told to stop or the sandbox is gone.

Beside the rounds, a thread of it ships the inference journals of every model server of the sandbox to
PostgreSQL (`inference_log.ship_journals`): the servers `up` and the supervisor start while it is enabled only
append to their journals (`inference_log.SHIPPER_ENV`), so shipping costs serving no CPU.

It also holds the listening sockets of what starts on first use (`activation.py`: JupyterLab with
`notebooks.start: first-use`): between rounds it waits on them with a selector, so the first connection starts
the server at once rather than at the next round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil

from sandbox.config import LogsConfig, SandboxConfig
from sandbox.endpoints import Endpoints
from sandbox.profiles.local.process import sandbox_processes
from sandbox.profiles.local.state import SandboxDir, exclusive_lock
from sandbox.profiles.local.supervisor import activation
from sandbox.profiles.local.supervisor.activation import Activations
from sandbox.profiles.local.supervisor.components import LocalComponents
from sandbox.profiles.local.supervisor.handle import SupervisorHandle
from sandbox.profiles.local.supervisor.loop import Supervisor
from sandbox.profiles.local.supervisor.policy import RestartPolicy
from sandbox.serving.inference_log import SHIPPING_NICE, journal_folders, ship_journals
from sandbox.serving.shipping import ShipperGroup

DESCRIPTION = "The supervisor: restarts what crashes, on the ports it had, and keeps the logs bounded."


def _read_settings(handle: SupervisorHandle) -> tuple[SandboxConfig, Endpoints | None]:
    data = json.loads(handle.settings_file.read_text())
    return SandboxConfig.model_validate(data["config"]), Endpoints(**data["endpoints"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox supervisor", description=DESCRIPTION)
    parser.add_argument("--dir", required=True, type=Path, help="the sandbox dir")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    sandbox = SandboxDir(args.dir.resolve())
    handle = SupervisorHandle(sandbox)
    config, endpoints = _read_settings(handle)
    activations = Activations()
    components = LocalComponents(sandbox, config, endpoints, activations)
    # A signal writes to this pair, so a round's wait on the listening sockets ends at once on SIGTERM or SIGHUP.
    wakeup, wakeup_writer = socket.socketpair()
    for end in (wakeup, wakeup_writer):
        end.setblocking(False)
    signal.set_wakeup_fd(wakeup_writer.fileno(), warn_on_full_buffer=False)

    def wait(timeout: float) -> None:
        activation.wait(activations.watched(), wakeup, timeout)

    def reload() -> tuple[RestartPolicy, LogsConfig]:
        fresh, components.endpoints = _read_settings(handle)
        components.config = fresh
        return RestartPolicy.from_config(fresh.supervisor), fresh.logs

    supervisor = Supervisor(
        components,
        lock=lambda what: exclusive_lock(sandbox, what),
        policy=RestartPolicy.from_config(config.supervisor),
        logs=config.logs,
        own_logs=[handle.log_file],
        state_file=handle.state_file,
        emit=lambda line: print(line, flush=True),
        reap=reap_children,
        reload=reload,
        listening=activations.listening,
        wait=wait,
    )
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stop())
    signal.signal(signal.SIGHUP, lambda *_: supervisor.request_reset())
    supervisor.event(
        f"supervising {sandbox.root} (pid {os.getpid()}): a check every {config.supervisor.interval_s:g}s, "
        f"at most {config.supervisor.max_restarts} restarts per component within {config.supervisor.window_s:g}s"
    )
    with contextlib.suppress(Exception):  # a failure shows in the first round
        components()
        activations.open_all()  # listening before `up`, which waits for the state file below, prints the URLs
    supervisor.save()  # the pid in the state file tells `up` it is ready (signal handlers set, ports listening)
    shipping = _start_shipping(sandbox, endpoints, supervisor)

    def interval() -> float:
        record = handle.process.record()
        if not sandbox.root.is_dir() or (record is not None and record.pid != os.getpid()):
            supervisor.event("the sandbox is gone or another supervisor took over: stopping")
            supervisor.stop()
        return components.config.supervisor.interval_s

    try:
        supervisor.run(interval)
    finally:
        activations.close()  # the ports of what waited for its first use are free again
        # What is not shipped within 5 s stays in the journals for the next start; a thread still inside a
        # write keeps its locks until the process exits, a moment later.
        if shipping is not None and shipping.stop(timeout=5):
            shipping.close()
            shipping.ship.disconnect()  # the PostgresSink
    supervisor.event("stopped")
    with contextlib.suppress(OSError):
        supervisor.save(running=False)
    return 0


def _start_shipping(sandbox: SandboxDir, endpoints: Endpoints | None, supervisor: Supervisor) -> ShipperGroup | None:
    """The inference journals' shipper: a thread of this process, independent of the rounds (a restart can take
    minutes; shipping goes on meanwhile). Its failures and recoveries are events, once per streak."""
    dsn = endpoints.monitoring_db_url if endpoints is not None else None
    if not dsn:
        return None
    failing: list[str] = []

    def failed(exc: BaseException) -> None:
        if not failing:
            supervisor.event(f"inference log: shipping failed ({_first_line(exc)}); journals kept on disk, retrying")
        failing[:] = [str(exc)]

    def shipped(folder: Path, batch) -> None:
        if failing:
            failing.clear()
            supervisor.event("inference log: shipping again")
        if batch.skipped_lines:
            supervisor.event(
                f"inference log: {batch.skipped_lines} torn or corrupt line(s) in {folder} skipped (never acknowledged)"
            )

    def lower_backend_priority(pid: int) -> None:
        """The shipping connection's PostgreSQL backend at the shipper's priority, when it is this sandbox's: a
        child of its postmaster (a backend's own marker is unreadable: PostgreSQL writes its process title over
        its environment)."""
        postmasters = {proc.pid for proc in sandbox_processes(sandbox.home, component="postgres")}
        with contextlib.suppress(OSError, psutil.Error):
            if psutil.Process(pid).ppid() in postmasters:
                os.setpriority(os.PRIO_PROCESS, pid, SHIPPING_NICE)

    journals = sandbox.root / "deployments"
    return ship_journals(
        lambda: journal_folders(journals), dsn, on_error=failed, on_shipped=shipped, on_connect=lower_backend_priority
    ).start()


def _first_line(exc: BaseException) -> str:
    lines = (str(exc) or type(exc).__name__).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def reap_children() -> dict[int, str]:
    """Collect the exit of every child that ended (the servers this process restarted): pid → how it ended."""
    ended: dict[int, str] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        code = os.waitstatus_to_exitcode(status)
        ended[pid] = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    return ended
