"""The supervisor process of one sandbox, as other code sees it: start it, signal it, stop it, read its state.

`up` ends with `SupervisorHandle.ensure` (start it, or SIGHUP the running one), `down` begins with `stop`,
`status` shows its row (`status`, `summarise`), and `up`/`down` take the sandbox lock with `command_lock`,
which stops a supervisor caught in the middle of a restart instead of failing. Its files are in
`<dir>/supervisor/`: service.pid, service.log, state.json (what it decided), settings.json (what `up` said).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from sandbox import ui
from sandbox.config import SandboxConfig
from sandbox.endpoints import Endpoints
from sandbox.errors import LockedError, SandboxError
from sandbox.files import write_private
from sandbox.profiles.base import ServiceState, ServiceStatus
from sandbox.profiles.local.process import Identity, ManagedProcess
from sandbox.profiles.local.readiness import wait_ready
from sandbox.profiles.local.state import SandboxDir, exclusive_lock

NAME = "supervisor"
TITLE = "Supervisor (restarts what crashes)"
MODULE = "sandbox.profiles.local.supervisor"  # `python -m MODULE --dir DIR` runs it (`daemon.main`)


class SupervisorHandle:
    """The supervisor process of one sandbox: what `up`, `down`, `status` and `logs` do with it."""

    name = NAME
    title = TITLE

    def __init__(self, sandbox: SandboxDir):
        self.sandbox = sandbox
        self.dir = sandbox.root / NAME
        self.process = ManagedProcess(self.dir / "service.pid", self.dir / "service.log", Identity(sandbox.home, NAME))
        self.state_file = self.dir / "state.json"
        self.settings_file = self.dir / "settings.json"

    @property
    def log_file(self) -> Path:
        return self.process.log_file

    def ensure(self, config: SandboxConfig, endpoints: Endpoints) -> str:
        """End of `up`: start it, or have the running one re-read its settings and clear crash-loop marks."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings = config.model_dump(mode="json")
        settings["dir"] = str(config.root)
        write_private(
            self.settings_file, json.dumps({"config": settings, "endpoints": endpoints.model_dump(mode="json")})
        )
        proc = self.process.running()
        if not config.supervisor.enabled:
            stopped = proc is not None and self.stop()
            return "off (supervisor.enabled: false)" + ("; stopped the running one" if stopped else "")
        if proc is not None:
            before = self.read_state().get("resets", 0)
            os.kill(proc.pid, signal.SIGHUP)
            try:
                wait_ready(
                    TITLE, lambda: _assert(self.read_state().get("resets", 0) > before), self.process, timeout=15
                )
            except SandboxError:
                return f"running (pid {proc.pid}), but it did not answer `up`'s SIGHUP: see `sandbox logs {NAME}`"
            return f"running (pid {proc.pid}); backoffs and crash-looping marks cleared"
        self.state_file.unlink(missing_ok=True)  # a new supervisor starts a new history
        argv = [sys.executable, "-m", MODULE, "--dir", str(config.root)]
        proc = self.process.start(argv, env=dict(os.environ), cwd=self.dir)
        wait_ready(TITLE, lambda: _assert(self.read_state().get("pid") == proc.pid), self.process, timeout=30)
        return f"started (pid {proc.pid})"

    def stop(self) -> bool:
        """SIGTERM: it stops a restart under way and exits (killed if it has not after 45 s)."""
        return self.process.stop(timeout=45)

    def read_state(self) -> dict:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def listening(self) -> dict[str, int]:
        """name → port of each socket the running supervisor holds for a service started on first use."""
        proc = self.process.running()
        if proc is None:
            return {}
        state = self.read_state()
        if state.get("pid") != proc.pid or not state.get("running"):
            return {}
        held = state.get("listening")
        return {str(k): v for k, v in held.items() if isinstance(v, int)} if isinstance(held, dict) else {}

    def enabled(self) -> bool:
        """What the last `up` said (`supervisor.enabled`); True before any `up` wrote it."""
        try:
            return bool(json.loads(self.settings_file.read_text())["config"]["supervisor"]["enabled"])
        except (OSError, ValueError, KeyError, TypeError):
            return True

    def status(self) -> ServiceStatus | None:
        """The `supervisor` row of `sandbox status`; None when the last `up` did not start one (disabled, or older)."""
        proc = self.process.running()
        if proc is None and (not self.settings_file.exists() or not self.enabled()):
            return None
        state = self.read_state()
        if proc is not None:
            detail = summarise(state) if state.get("pid") == proc.pid else "starting"
        elif state.get("running"):
            detail = "exited unexpectedly: crashed processes stay down until `sandbox up`"
        else:
            detail = ""
        return ServiceStatus(
            name=NAME,
            title=TITLE,
            state=ServiceState.RUNNING if proc is not None else ServiceState.STOPPED,
            instance=f"pid {proc.pid}" if proc is not None else None,
            port=None,
            url=None,
            detail=detail,
        )

    def holds_lock(self) -> bool:
        """Whether the sandbox lock is the supervisor's now (it is restarting something)."""
        proc = self.process.running()
        if proc is None:
            return False
        try:
            holder = self.sandbox.lock_file.read_text(errors="replace")
        except OSError:
            holder = ""
        state = self.read_state()
        return holder.startswith(f"pid {proc.pid}:") or (state.get("pid") == proc.pid and bool(state.get("restarting")))


@contextlib.contextmanager
def command_lock(sandbox: SandboxDir, command: str) -> Iterator[None]:
    """`exclusive_lock` for `up` and `down`: a supervisor in the middle of a restart is stopped, not waited for."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive_lock(sandbox, command))
        except LockedError:
            handle = SupervisorHandle(sandbox)
            if not handle.holds_lock():
                raise
            ui.err.print(
                f"The supervisor was restarting {handle.read_state().get('restarting') or 'a component'}: "
                f"stopped it; `{command}` takes over"
            )
            handle.stop()
            held.enter_context(exclusive_lock(sandbox, command))
        yield


def summarise(state: dict) -> str:
    """The `status` row's detail: "3 restarts (mlflow 2, fraud 1); fraud crash-looping"."""
    components = state.get("components") or {}
    counts = {name: c.get("restarts", 0) for name, c in components.items() if c.get("restarts")}
    total = sum(counts.values())
    parts = [f"{total} restart{'' if total == 1 else 's'}"]
    if counts:
        parts[0] += " (" + ", ".join(f"{name} {count}" for name, count in counts.items()) + ")"
    looping = [name for name, c in components.items() if c.get("crash_looping")]
    if looping:
        parts.append(f"{', '.join(looping)} crash-looping")
    if state.get("restarting"):
        parts.append(f"restarting {state['restarting']}")
    down = [n for n, c in components.items() if c.get("state") in ("down", "backoff", "waiting") and n not in looping]
    if down:
        parts.append(f"{', '.join(down)} down, restart pending")
    return "; ".join(parts)


def _assert(condition: bool) -> None:
    if not condition:
        raise RuntimeError("not yet")
