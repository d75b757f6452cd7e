"""The supervisor's loop: one round at a time it reaps, rotates logs, checks each component and restarts the dead.

Components, lock, clock and policy are handed in (`Supervisor.__init__`): the loop knows no sandbox. A restart
runs in a worker thread under the sandbox lock, taken without waiting (`_locked_restart`); a round whose lock is
taken is skipped. On SIGTERM (`stop`) a restart under way is stopped (`Component.abort`) and the loop ends.
Every decision is a line in `events` and in the state file (`snapshot`, `save`).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from sandbox.config import LogsConfig
from sandbox.errors import LockedError
from sandbox.files import write_private
from sandbox.profiles.local.logrotate import rotate_if_needed
from sandbox.profiles.local.supervisor.policy import RestartPolicy, Track


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

    # Optional, for a component started on first use (`activation.py`): `demand()` says "waiting" (not started,
    # nobody asked: not a crash), "wanted" (a connection waits: start it now, no backoff) or None (it ran before:
    # supervised like any other).


WAITING_FIRST_USE = "waiting for first use"


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
        listening: Callable[[], dict[str, int]] = dict,
        wait: Callable[[float], None] | None = None,
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
        self.listening = listening  # ports held for components started on first use, for `status`
        self.wait = wait  # between rounds: the interval, cut short by stop, reset or a first connection
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
            if self.wait is None or self.wake.is_set():
                self.wake.wait(interval())
            else:
                self.wait(interval())
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
        for gone in sorted(set(self.tracks) - {c.name for c in components}):
            self._forget(gone)
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
        demand = comp.demand() if pid is None and hasattr(comp, "demand") else None
        if demand == "waiting":
            if track.state != WAITING_FIRST_USE:
                self.event(f"{comp.name}: waiting for its first use (listening on its port)", track)
            track.state, track.pid = WAITING_FIRST_USE, None
            return True
        if demand == "wanted" and track.state in (WAITING_FIRST_USE, "running") and track.next_at is None:
            # A first start, not a crash: at once, without the backoff, and not counted as a restart.
            self.event(f"{comp.name}: a connection is waiting: starting it", track)
            return self._restart(comp, track, pids, first_use=True)
        if pid is not None:
            if track.state != "running":
                self.event(f"{comp.name} is running again (pid {pid}), started by another command", track)
            track.state, track.pid = "running", pid
            self.policy.on_alive(track)
            return True
        if track.state == "running" and track.pid is not None and not self._still_recorded(comp.name):
            self._forget(comp.name)  # `serve undeploy` forgot it after this round read the list, then stopped it
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

    def _still_recorded(self, name: str) -> bool:
        """Read afresh: a process gone with its record was undeployed, not crashed (the record goes first).

        When the records cannot be read just now, it counts as recorded: a crash is handled as one."""
        try:
            return any(c.name == name for c in self.components())
        except Exception:  # noqa: BLE001 - an unreadable list must not hide a crash
            return True

    def _forget(self, name: str) -> None:
        """No longer recorded: nothing to watch any more. Said once, and only of what was seen running."""
        track = self.tracks.pop(name, None)
        if track is not None and track.pid is not None:
            self.event(f"{name} was undeployed")

    def _restart(self, comp: Component, track: Track, pids: dict[str, int | None], *, first_use: bool = False) -> bool:
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
        elif first_use:
            pid = comp.pid()
            track.state, track.pid, pids[comp.name] = "running", pid, pid
            self.event(f"started {comp.name} on its first use: pid {pid}, {detail}", track)
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
            "listening": self.listening(),
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


def _holder(exc: LockedError) -> str:
    text = exc.message
    return text[text.find("(") + 1 : text.rfind(")")] if "(" in text else "another command"


def _short(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    lines = message.strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
