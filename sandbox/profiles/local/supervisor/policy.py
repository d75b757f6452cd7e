"""The supervisor's restart policy, pure: exponential backoff per component and a crash-loop limit.

Time comes in as ``now`` (the loop's clock), so a test moves it by hand (`tests/unit/test_supervisor.py`).
Each component's history is a `Track`; `RestartPolicy.on_dead` says what to do about it: a `RestartDecision`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sandbox.config import SupervisorConfig


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
class RestartDecision:
    """What to do about a component found dead."""

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

    def on_dead(self, track: Track, now: float) -> RestartDecision:
        """What to do about a component found dead at ``now``."""
        if track.crash_looping:
            return RestartDecision("crash-looping")
        if self.recent(track, now) >= self.max_restarts:
            track.crash_looping, track.next_at = True, None
            return RestartDecision("give-up")
        if track.next_at is None:
            track.next_at = now + self.delay(track, now)
            return RestartDecision("backoff", track.next_at - now)
        if now < track.next_at:
            return RestartDecision("wait", track.next_at - now)
        return RestartDecision("restart")

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
