"""The supervisor: restarts what crashes, on the ports it had, and keeps the logs bounded.

`sandbox up` starts it last, as a background process of the sandbox (`<dir>/supervisor/`:
service.pid, service.log, state.json, settings.json; it binds no port), and `sandbox down`
stops it first. Every `supervisor.interval_s` (1 s) it

- rotates every `service.log` past `logs.max_bytes` (the services', the deployments', its own:
  `logrotate.py`, copy-then-truncate, so a line written during the truncation can be lost);
- checks each service (postgres, s3, mlflow, and notebooks unless `notebooks.enabled` is false)
  and each recorded deployment (model servers before
  the routers in front of them): one whose process is gone is restarted by the code `up` runs
  for it (`LocalService.prepare` and `start`; `LocalServing`'s start of one record), on the ports
  in ports.json, never new ones. Only that component restarts; one whose dependencies are down
  waits for them (MLflow for PostgreSQL and S3, a deployment for all three, a router for its
  variants);
- paces the restarts of each component (`RestartPolicy`): the first after `backoff_initial_s`,
  each next one after twice the wait before (at most `backoff_max_s`), counting the restarts of
  the last `window_s`; a component that would need more than `max_restarts` of them is marked
  crash-looping and left alone until `sandbox up` clears the mark (it sends SIGHUP).

A restart holds the sandbox lock (`state.exclusive_lock`), taken without waiting: when a command
holds it (`up`, `down`, `serve deploy`, ...) that command owns the stack just now, and the round is
skipped. Inside the lock the component is looked up afresh, and restarted only if it is still
dead and still wanted (a deployment undeployed meanwhile is no longer recorded). `up` and `down`
that find the supervisor in the middle of a restart stop it (`command_lock`) instead of failing:
on SIGTERM it stops what it was starting and exits at once.

Every decision is a line in its log and in `state.json` (0600, replaced atomically), which
`sandbox status` sums up in its `supervisor` row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sandbox import ui
from sandbox.config import LogsConfig, SandboxConfig, SupervisorConfig
from sandbox.endpoints import Endpoints
from sandbox.errors import LockedError, PortInUseError, SandboxError
from sandbox.files import write_private
from sandbox.net import port_is_free
from sandbox.profiles.base import ServiceState, ServiceStatus
from sandbox.profiles.local.logrotate import rotate_if_needed
from sandbox.profiles.local.process import Identity, ManagedProcess
from sandbox.profiles.local.readiness import wait_ready
from sandbox.profiles.local.scheduler import LocalScheduler
from sandbox.profiles.local.services.base import LocalService, ServiceContext
from sandbox.profiles.local.services.jupyterlab import JupyterLab
from sandbox.profiles.local.services.mlflow_server import MLflowServer
from sandbox.profiles.local.services.postgres import Postgres
from sandbox.profiles.local.services.seaweedfs import SeaweedS3
from sandbox.profiles.local.serving import LocalServing
from sandbox.profiles.local.state import PortMap, SandboxDir, exclusive_lock, read_secrets
from sandbox.serving.specs import DeploymentSpec, variant_name

NAME = "supervisor"
TITLE = "Supervisor (restarts what crashes)"
SERVICES = ("postgres", "s3", "mlflow")

# --------------------------------------------------------------------------- the policy (pure)


@dataclass
class Track:
    """What the supervisor knows of one component."""

    state: str = "running"  # running | down | backoff | waiting | restarting | crash-looping
    pid: int | None = None
    attempts: deque[float] = field(default_factory=deque)  # when restarts were tried, within the window
    next_at: float | None = None  # when the pending restart may run
    crash_looping: bool = False
    restarts: int = 0  # restarts that came up, since the supervisor started
    failures: int = 0  # restarts that did not
    cause: str = ""  # how it went down, the last time
    last: str = ""  # the last decision about it


@dataclass(frozen=True)
class Decision:
    action: str  # restart | backoff (a wait begins) | wait | give-up (marked now) | crash-looping (marked before)
    wait_s: float = 0.0


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff per component and a crash-loop limit; time comes in as ``now``."""

    max_restarts: int = 5
    window_s: float = 300.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0

    @classmethod
    def from_config(cls, cfg: SupervisorConfig) -> RestartPolicy:
        return cls(cfg.max_restarts, cfg.window_s, cfg.backoff_initial_s, cfg.backoff_max_s)

    def recent(self, track: Track, now: float) -> int:
        """Restarts tried within the window (older ones are forgotten)."""
        while track.attempts and track.attempts[0] <= now - self.window_s:
            track.attempts.popleft()
        return len(track.attempts)

    def delay(self, track: Track, now: float) -> float:
        """The wait before the next restart: doubles with each restart in the window."""
        return min(self.backoff_initial_s * 2 ** min(self.recent(track, now), 60), self.backoff_max_s)

    def on_dead(self, track: Track, now: float) -> Decision:
        """What to do about a component found dead at ``now``."""
        if track.crash_looping:
            return Decision("crash-looping")
        if self.recent(track, now) >= self.max_restarts:
            track.crash_looping, track.next_at = True, None
            return Decision("give-up")
        if track.next_at is None:
            track.next_at = now + self.delay(track, now)
            return Decision("backoff", track.next_at - now)
        if now < track.next_at:
            return Decision("wait", track.next_at - now)
        return Decision("restart")

    def on_attempt(self, track: Track, now: float, *, ok: bool) -> None:
        """A restart was tried at ``now``: after a failure the next one waits twice as long."""
        track.attempts.append(now)
        track.next_at = None if ok else now + self.delay(track, now)

    def on_alive(self, track: Track) -> None:
        """It runs (restarted by us, by `up` or redeployed): no pending restart, no crash-loop mark."""
        track.next_at, track.crash_looping = None, False

    def reset(self, track: Track) -> None:
        """`sandbox up`: the history that paces and limits restarts starts over."""
        track.attempts.clear()
        self.on_alive(track)


# --------------------------------------------------------------------------- the loop


class Component(Protocol):
    """A process the supervisor keeps running."""

    name: str
    depends_on: tuple[str, ...]  # names that must run before it is restarted

    def pid(self) -> int | None:
        """Its live process, None when it is gone."""

    def restart(self) -> str:
        """Start it again and wait until it answers; a note, or an exception when it does not come up."""

    def abort(self) -> None:
        """Stop what `restart` started (the supervisor was told to stop meanwhile)."""

    def log_files(self) -> list[Path]: ...


class _Interrupted(Exception):
    """The supervisor was told to stop during a restart; what it started was stopped again."""


class Supervisor:
    """Checks, restarts and rotates, one round at a time; components, lock and clock are handed in."""

    def __init__(
        self,
        components: Callable[[], Sequence[Component]],
        *,
        lock: Callable[[str], contextlib.AbstractContextManager],
        policy: RestartPolicy,
        logs: LogsConfig | None = None,
        own_logs: Sequence[Path] = (),
        state_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] = lambda line: None,
        reap: Callable[[], dict[int, str]] = lambda: {},
        reload: Callable[[], tuple[RestartPolicy, LogsConfig | None]] | None = None,
        abort_timeout: float = 30.0,
    ):
        self.components = components
        self.lock = lock
        self.policy = policy
        self.logs = logs
        self.own_logs = list(own_logs)
        self.state_file = state_file
        self.clock = clock
        self.emit = emit
        self.reap = reap
        self.reload = reload
        self.abort_timeout = abort_timeout
        self.tracks: dict[str, Track] = {}
        self.events: deque[str] = deque(maxlen=50)
        self.rounds = 0
        self.resets = 0
        self.restarting: str | None = None
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self._reset_wanted = False
        self._skipping = False  # the last round was skipped for the lock (said once per streak)
        self._said_rotate_error: set[str] = set()
        self._last_failure = ""
        self._guard = threading.Lock()  # events and state: the restart's thread saves too

    # ---------------------------------------------------------------- signals

    def stop(self) -> None:
        """SIGTERM: finish at once (a restart under way is stopped and abandoned)."""
        self.stopping.set()
        self.wake.set()

    def request_reset(self) -> None:
        """SIGHUP from `sandbox up`: re-read the settings, clear crash-looping marks and backoffs."""
        self._reset_wanted = True
        self.wake.set()

    def run(self, interval: Callable[[], float]) -> None:
        while not self.stopping.is_set():
            try:
                self.round()
            except _Interrupted:
                break
            except Exception as exc:  # noqa: BLE001 - one bad round must not end the supervision
                if _short(exc) != self._last_failure:  # said once, not every second
                    self.event(f"a round failed: {_short(exc)}")
                self._last_failure = _short(exc)
            else:
                self._last_failure = ""
            self.wake.wait(interval())
            self.wake.clear()

    # ---------------------------------------------------------------- one round

    def round(self) -> None:
        if self._reset_wanted:
            self._reset()
        now = self.clock()
        self.rounds += 1
        exits = self.reap()
        components = list(self.components())
        self._rotate(components)
        for gone in set(self.tracks) - {c.name for c in components}:
            del self.tracks[gone]  # undeployed: nothing to watch any more
        pids = {c.name: c.pid() for c in components}
        try:
            for comp in components:
                if self.stopping.is_set() or not self._check(comp, pids, exits, now):
                    break
        finally:
            self.save()

    def _check(self, comp: Component, pids: dict[str, int | None], exits: dict[int, str], now: float) -> bool:
        """Decide about one component; False when the rest of the round is skipped (the lock is taken)."""
        track = self.tracks.setdefault(comp.name, Track(pid=pids[comp.name]))
        pid = pids[comp.name]
        if pid is not None:
            if track.state != "running":
                self.event(f"{comp.name} is running again (pid {pid}), started by another command", track)
            track.state, track.pid = "running", pid
            self.policy.on_alive(track)
            return True
        if track.state == "running":
            how = exits.get(track.pid) if track.pid is not None else None
            track.cause = f"its process (pid {track.pid}) {how or 'was gone'}" if track.pid else "it was not running"
            self.event(f"{comp.name} is down: {track.cause}", track)
            track.state = "down"
        if track.crash_looping:
            track.state = "crash-looping"
            return True
        missing = [name for name in comp.depends_on if pids.get(name) is None]
        if missing:
            if track.state != "waiting":
                self.event(f"{comp.name}: waiting for {', '.join(missing)} to run before restarting it", track)
            track.state = "waiting"
            return True
        decision = self.policy.on_dead(track, now)
        if decision.action == "give-up":
            track.state = "crash-looping"
            self.event(
                f"{comp.name} is crash-looping: {self.policy.max_restarts} restarts within "
                f"{self.policy.window_s:g}s; gave up until `sandbox up`",
                track,
            )
            return True
        if decision.action == "backoff":
            track.state = "backoff"
            self.event(f"{comp.name}: restarting in {decision.wait_s:.0f}s (backoff)", track)
            return True
        if decision.action != "restart":
            return True
        return self._restart(comp, track, pids)

    def _restart(self, comp: Component, track: Track, pids: dict[str, int | None]) -> bool:
        outcome, detail = self._abortable(comp, lambda: self._locked_restart(comp.name))
        now = self.clock()
        if outcome == "locked":
            if not self._skipping:
                self.event(f"skipped a round: {detail} owns the stack just now (restarting {comp.name} later)")
            self._skipping = True
            return False
        self._skipping = False
        if outcome == "unwanted":
            self.event(f"{comp.name}: no longer wanted (undeployed meanwhile); not restarted")
            self.tracks.pop(comp.name, None)
        elif outcome == "alive":
            self.event(f"{comp.name}: running again (pid {detail}) before the restart; not restarted", track)
            track.state, track.pid, pids[comp.name] = "running", int(detail), int(detail)
            self.policy.on_alive(track)
        elif outcome == "failed":
            self.policy.on_attempt(track, now, ok=False)
            track.failures += 1
            track.state = "backoff"
            wait = (track.next_at or now) - now
            self.event(f"{comp.name}: restart failed ({detail}); next try in {wait:.0f}s", track)
        else:
            self.policy.on_attempt(track, now, ok=True)
            track.restarts += 1
            pid = comp.pid()
            track.state, track.pid, pids[comp.name] = "running", pid, pid
            self.event(
                f"restarted {comp.name} after {track.cause or 'a crash'}: pid {pid}, {detail}; "
                f"{self.policy.recent(track, now)} of {self.policy.max_restarts} restarts allowed "
                f"within {self.policy.window_s:g}s",
                track,
            )
        return True

    def _locked_restart(self, name: str) -> tuple[str, str]:
        """Under the sandbox lock, taken without waiting: look again, then restart. (Runs in a worker thread.)"""
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.lock(f"supervisor: restarting {name}"))
            except LockedError as exc:
                return "locked", _holder(exc)
            fresh = next((c for c in self.components() if c.name == name), None)
            if fresh is None:
                return "unwanted", ""
            pid = fresh.pid()
            if pid is not None:
                return "alive", str(pid)
            self.restarting, self.tracks[name].state = name, "restarting"
            self.save()
            try:
                return "restarted", fresh.restart()
            except Exception as exc:  # noqa: BLE001 - any failure to come up is a failed restart
                return "failed", _short(exc)
            finally:
                self.restarting = None

    def _abortable(self, comp: Component, work: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        """Run ``work`` in a thread; on SIGTERM stop what it started (``comp.abort``) and give up on it."""
        result: list = []

        def target() -> None:
            try:
                result.append(work())
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                result.append(exc)

        worker = threading.Thread(target=target, name=f"restart {comp.name}", daemon=True)
        worker.start()
        aborting_since: float | None = None
        while worker.is_alive():
            worker.join(0.2)
            if self.stopping.is_set() and worker.is_alive():
                if aborting_since is None:
                    aborting_since = time.monotonic()
                    self.event(f"stopping: abandoning the restart of {comp.name} (stopping what it started)")
                with contextlib.suppress(Exception):
                    comp.abort()
                if time.monotonic() - aborting_since > self.abort_timeout:
                    break
        if self.stopping.is_set():
            raise _Interrupted(comp.name)
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    # ---------------------------------------------------------------- logs, reset, state

    def _rotate(self, components: Sequence[Component]) -> None:
        if self.logs is None:
            return
        paths = [path for comp in components for path in comp.log_files()] + self.own_logs
        for path in paths:
            try:
                if rotate_if_needed(path, max_bytes=self.logs.max_bytes, keep=self.logs.keep):
                    self.event(f"rotated {path} (over {self.logs.max_bytes} bytes; keeping {self.logs.keep})")
            except OSError as exc:
                if str(path) not in self._said_rotate_error:
                    self.event(f"cannot rotate {path}: {exc.strerror}")
                    self._said_rotate_error.add(str(path))

    def _reset(self) -> None:
        self._reset_wanted = False
        if self.reload is not None:
            self.policy, self.logs = self.reload()
        looping = sorted(name for name, track in self.tracks.items() if track.crash_looping)
        for track in self.tracks.values():
            self.policy.reset(track)
        self.resets += 1
        cleared = f"; cleared crash-looping: {', '.join(looping)}" if looping else ""
        self.event(f"`sandbox up` ran: settings re-read, backoffs reset{cleared}")

    def event(self, line: str, track: Track | None = None) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
        with self._guard:
            self.events.append(stamped)
            if track is not None:
                track.last = line
        self.emit(stamped)

    def snapshot(self, *, running: bool = True) -> dict:
        return {
            "pid": os.getpid(),
            "running": running,
            "rounds": self.rounds,
            "resets": self.resets,
            "restarting": self.restarting,
            "updated": time.time(),
            "components": {
                name: {
                    "state": track.state,
                    "pid": track.pid,
                    "restarts": track.restarts,
                    "failures": track.failures,
                    "crash_looping": track.crash_looping,
                    "last": track.last,
                }
                for name, track in self.tracks.items()
            },
            "events": list(self.events),
        }

    def save(self, *, running: bool = True) -> None:
        if self.state_file is not None:
            with self._guard:
                text = json.dumps(self.snapshot(running=running), indent=1)
                write_private(self.state_file, text)


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


# --------------------------------------------------------------------------- the sandbox's components


class ServiceComponent:
    """PostgreSQL, S3 or MLflow, restarted as `up` starts it."""

    def __init__(self, svc: LocalService, depends_on: tuple[str, ...] = ()):
        self.svc = svc
        self.name = svc.name
        self.depends_on = depends_on

    def pid(self) -> int | None:
        proc = self.svc.process.running()
        return proc.pid if proc is not None else None

    def restart(self) -> str:
        self.svc.reap_leftovers()  # what is left of the crashed group (MLflow's worker holds its port)
        for key in self.svc.port_keys():
            port = self.svc.ctx.ports.get(key)
            if port and not port_is_free(port):
                raise PortInUseError(f"port {port} ({key}) is held by another process", hint="free it")
        try:
            return ", ".join(note for note in (self.svc.prepare(), self.svc.start()) if note)
        except BaseException:
            self.svc.stop()  # nothing half-started is left behind, as `up` undoes a failed start
            raise

    def abort(self) -> None:
        self.svc.stop()

    def log_files(self) -> list[Path]:
        return [self.svc.process.log_file]


class DeploymentComponent:
    """A model server or a router, restarted as `up` restores a recorded deployment."""

    def __init__(self, serving: LocalServing, record: DeploymentSpec, depends_on: tuple[str, ...]):
        self.serving = serving
        self.record = record
        self.name = record.name
        self.depends_on = depends_on
        self.process = serving._process(record.name)

    def pid(self) -> int | None:
        proc = self.process.running()
        return proc.pid if proc is not None else None

    def restart(self) -> str:
        self.process.stop(timeout=10)  # what is left of its group after the crash
        main = f"deploy.{self.name}"
        for key in (main, f"{main}.grpc"):
            port = self.serving.ports.get(key)
            if port is None and key == main:
                raise SandboxError(f"no port recorded for {self.name}", hint="`sandbox up` starts it afresh")
            if port is not None and not port_is_free(port):
                # Never another port: clients hold this URL. `up` restarts it once the port is free.
                raise PortInUseError(f"port {port} ({key}) is held by another process", hint="free it")
        return self.serving._start(self.record)

    def abort(self) -> None:
        self.process.stop(timeout=10)

    def log_files(self) -> list[Path]:
        return [self.process.log_file]


class LocalComponents:
    """The sandbox's components as its files say now: the three services, then the recorded deployments."""

    def __init__(self, sandbox: SandboxDir, config: SandboxConfig, endpoints: Endpoints | None):
        self.sandbox = sandbox
        self.config = config
        self.endpoints = endpoints

    def __call__(self) -> list[Component]:
        secrets = read_secrets(self.sandbox)
        if secrets is None:
            return []
        ports = PortMap(self.sandbox)
        ctx = ServiceContext(self.config, self.sandbox, secrets, ports)
        postgres, s3 = Postgres(ctx), SeaweedS3(ctx)
        found: list[Component] = [
            ServiceComponent(postgres),
            ServiceComponent(s3),
            ServiceComponent(MLflowServer(ctx, postgres, s3), ("postgres", "s3")),
        ]
        if self.endpoints is None:
            return found
        if self.config.notebooks.enabled:
            # Its kernels' environment is the stack's endpoints, as `up` recorded them.
            endpoints = self.endpoints
            found.append(ServiceComponent(JupyterLab(ctx, lambda: endpoints)))
        serving = LocalServing(
            self.sandbox,
            ports,
            self.endpoints,
            startup_timeout=self.config.startup_timeout,
            scheduler=LocalScheduler(self.config.gpu, self.sandbox.root),
        )
        records = serving.records()
        for kind in ("model", "split"):  # a router needs its variants
            for record in (r for r in records.values() if r.kind == kind):
                variants = tuple(variant_name(record.name, v.label) for v in record.variants)
                found.append(DeploymentComponent(serving, record, SERVICES + variants))
        return found


# --------------------------------------------------------------------------- the process, for the profile


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
        settings = config.model_dump(mode="json", exclude={"local"})
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
        argv = [sys.executable, "-c", _ENTRY, "--dir", str(config.root)]
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


# --------------------------------------------------------------------------- the process itself

_ENTRY = "from sandbox.profiles.local.supervisor import main; raise SystemExit(main())"


def _read_settings(handle: SupervisorHandle) -> tuple[SandboxConfig, Endpoints | None]:
    data = json.loads(handle.settings_file.read_text())
    return SandboxConfig.model_validate(data["config"]), Endpoints(**data["endpoints"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path, help="the sandbox dir")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    sandbox = SandboxDir(args.dir.resolve())
    handle = SupervisorHandle(sandbox)
    config, endpoints = _read_settings(handle)
    components = LocalComponents(sandbox, config, endpoints)

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
    )
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stop())
    signal.signal(signal.SIGHUP, lambda *_: supervisor.request_reset())
    supervisor.event(
        f"supervising {sandbox.root} (pid {os.getpid()}): a check every {config.supervisor.interval_s:g}s, "
        f"at most {config.supervisor.max_restarts} restarts per component within {config.supervisor.window_s:g}s"
    )
    supervisor.save()  # the pid in the state file tells `up` it is ready (signal handlers set)

    def interval() -> float:
        record = handle.process.record()
        if not sandbox.root.is_dir() or (record is not None and record.pid != os.getpid()):
            supervisor.event("the sandbox is gone or another supervisor took over: stopping")
            supervisor.stop()
        return components.config.supervisor.interval_s

    supervisor.run(interval)
    supervisor.event("stopped")
    with contextlib.suppress(OSError):
        supervisor.save(running=False)
    return 0


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


def _assert(condition: bool) -> None:
    if not condition:
        raise RuntimeError("not yet")


def _holder(exc: LockedError) -> str:
    text = exc.message
    return text[text.find("(") + 1 : text.rfind(")")] if "(" in text else "another command"


def _short(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    lines = message.strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
