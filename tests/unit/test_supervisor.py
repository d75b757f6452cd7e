"""The supervisor without processes: its restart policy on a hand-moved clock, its loop on fake components
and a fake lock, and log rotation on real files."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from sandbox.config import load_config
from sandbox.errors import ConfigError, LockedError
from sandbox.profiles.local.logrotate import rotate, rotate_if_needed, rotated
from sandbox.profiles.local.supervisor.handle import summarise
from sandbox.profiles.local.supervisor.loop import Supervisor
from sandbox.profiles.local.supervisor.policy import RestartDecision, RestartPolicy, Track

# --------------------------------------------------------------------------- policy


def _die_and_restart(policy: RestartPolicy, track: Track, now: float) -> tuple[float, float]:
    """The component is found dead at ``now``: wait out the backoff, restart. Returns (wait, restart time)."""
    first = policy.on_dead(track, now)
    assert first.action == "backoff"
    assert policy.on_dead(track, now + first.wait_s / 2).action == "wait"
    at = now + first.wait_s
    assert policy.on_dead(track, at) == RestartDecision("restart")
    policy.on_attempt(track, at, ok=True)
    return first.wait_s, at


def test_the_first_restart_waits_the_initial_backoff_and_each_next_one_twice_as_long_up_to_the_cap():
    policy = RestartPolicy(max_restarts=100, window_s=10_000, backoff_initial_s=1, backoff_max_s=30)
    track, now, waits = Track(), 0.0, []
    for _ in range(8):
        wait, now = _die_and_restart(policy, track, now + 0.5)  # each restart crashes half a second later
        waits.append(wait)
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_failed_restart_doubles_the_wait_before_the_next_try():
    policy = RestartPolicy(backoff_initial_s=1, backoff_max_s=30)
    track = Track()
    _, at = _die_and_restart(policy, track, 0.0)
    policy.on_attempt(track, at + 5, ok=False)  # the next try failed
    assert track.next_at == at + 5 + 4  # two restarts in the window: 1 * 2**2
    assert policy.on_dead(track, at + 8).action == "wait"
    assert policy.on_dead(track, at + 9).action == "restart"


def test_one_restart_more_than_max_restarts_within_the_window_is_crash_looping_and_stays_so():
    policy = RestartPolicy(max_restarts=5, window_s=300, backoff_initial_s=1, backoff_max_s=30)
    track, now = Track(), 0.0
    for _ in range(5):
        _, now = _die_and_restart(policy, track, now + 1)
    assert now < 300
    assert policy.on_dead(track, now + 1) == RestartDecision("give-up")
    assert track.crash_looping
    for later in (now + 2, now + 60, now + 10_000):  # not restarted forever: not even once the window has passed
        assert policy.on_dead(track, later) == RestartDecision("crash-looping")


def test_restarts_older_than_the_window_no_longer_count_or_lengthen_the_backoff():
    policy = RestartPolicy(max_restarts=2, window_s=100, backoff_initial_s=1, backoff_max_s=30)
    track, now = Track(), 0.0
    for _ in range(10):  # one crash every 200 s: never two within 100 s
        wait, now = _die_and_restart(policy, track, now + 200)
        assert wait == 1
    assert not track.crash_looping


def test_running_again_or_a_reset_clears_the_crash_loop_mark():
    policy = RestartPolicy(max_restarts=1, window_s=300)
    track = Track()
    _, now = _die_and_restart(policy, track, 0.0)
    assert policy.on_dead(track, now + 1).action == "give-up"
    policy.on_alive(track)  # `up` or a redeploy brought it back
    assert not track.crash_looping
    assert policy.on_dead(track, now + 2).action == "give-up"  # its restart history still counts
    policy.reset(track)  # `sandbox up` (SIGHUP): the history starts over
    assert policy.on_dead(track, now + 3).action == "backoff"


# --------------------------------------------------------------------------- the loop, on fakes


class FakeComponent:
    """Stands for a service or deployment: a pid that a test sets to None to 'crash' it."""

    def __init__(self, name: str, pid: int | None = 100, depends_on: tuple[str, ...] = (), log: Path | None = None):
        self.name = name
        self.depends_on = depends_on
        self.current_pid = pid
        self.restarts = 0
        self.aborts = 0
        self.fail_with: Exception | None = None
        self.log = log
        self.started = threading.Event()
        self.block_until_aborted = False
        self._aborted = threading.Event()
        self.order: list[str] | None = None

    def pid(self) -> int | None:
        return self.current_pid

    def restart(self) -> str:
        self.started.set()
        if self.order is not None:
            self.order.append(self.name)
        if self.block_until_aborted:
            self._aborted.wait(10)
            raise RuntimeError("the process exited while starting")
        self.restarts += 1
        if self.fail_with is not None:
            raise self.fail_with
        self.current_pid = 1000 + self.restarts
        return "ready in 0.1s"

    def abort(self) -> None:
        self.aborts += 1
        self._aborted.set()

    def log_files(self) -> list[Path]:
        return [self.log] if self.log else []


class FakeLock:
    """Stands for the sandbox lock: refused while ``holder`` is set; ``on_enter`` runs once it is taken."""

    def __init__(self):
        self.holder: str | None = None
        self.on_enter = None
        self.taken: list[str] = []

    def __call__(self, what: str):
        @contextlib.contextmanager
        def held():
            if self.holder:
                raise LockedError(f"another sandbox command is changing /x ({self.holder})")
            self.taken.append(what)
            if self.on_enter is not None:
                self.on_enter()
            yield

        return held()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rig(tmp_path):
    class Rig:
        def __init__(self):
            self.components: list[FakeComponent] = []
            self.lock = FakeLock()
            self.clock = FakeClock()
            self.lines: list[str] = []
            self.supervisor = Supervisor(
                lambda: list(self.components),
                lock=self.lock,
                policy=RestartPolicy(max_restarts=3, window_s=300, backoff_initial_s=1, backoff_max_s=30),
                state_file=tmp_path / "state.json",
                clock=self.clock,
                emit=self.lines.append,
            )

        def rounds(self, count: int, step: float = 1.0) -> None:
            for _ in range(count):
                self.supervisor.round()
                self.clock.now += step

        def state(self) -> dict:
            return json.loads((tmp_path / "state.json").read_text())

    return Rig()


def test_only_the_dead_component_is_restarted_after_its_backoff(rig):
    alive, crashed = FakeComponent("postgres"), FakeComponent("s3", pid=None)
    rig.components = [alive, crashed]
    rig.supervisor.round()  # found dead: the backoff starts
    assert crashed.restarts == 0
    rig.clock.now += 1
    rig.supervisor.round()
    assert crashed.restarts == 1 and crashed.current_pid is not None
    assert alive.restarts == 0
    assert rig.lock.taken == ["supervisor: restarting s3"]
    assert any("restarted s3 after it was not running" in line for line in rig.lines)
    assert rig.state()["components"]["s3"]["restarts"] == 1
    assert summarise(rig.state()) == "1 restart (s3 1)"


def test_a_command_holding_the_lock_makes_the_round_skip_and_costs_no_restart(rig):
    crashed = FakeComponent("mlflow", pid=None)
    rig.components = [crashed]
    rig.lock.holder = "pid 7: sandbox up"
    rig.rounds(10)
    assert crashed.restarts == 0
    assert sum("skipped a round: pid 7: sandbox up owns the stack" in line for line in rig.lines) == 1  # said once
    rig.lock.holder = None
    rig.supervisor.round()  # the backoff had passed; the skipped tries did not count
    assert crashed.restarts == 1
    assert not rig.supervisor.tracks["mlflow"].crash_looping


def test_a_deployment_undeployed_while_the_lock_was_taken_is_not_restarted(rig):
    crashed = FakeComponent("fraud", pid=None)
    rig.components = [crashed]
    rig.supervisor.round()
    rig.clock.now += 1
    rig.lock.on_enter = lambda: rig.components.remove(crashed)  # `serve undeploy` got there first
    rig.supervisor.round()
    assert crashed.restarts == 0
    assert "fraud" not in rig.supervisor.tracks
    assert any("fraud: no longer wanted" in line for line in rig.lines)


def test_an_undeploy_between_the_rounds_list_and_its_check_is_said_once_and_is_no_crash(rig):
    served, crashed = FakeComponent("fraud", pid=100), FakeComponent("churn", pid=200)
    rig.components = [served, crashed]
    rig.supervisor.round()
    stale = list(rig.components)  # what this round read, before `serve undeploy fraud` forgot its record

    def lists():
        yield stale
        while True:
            yield list(rig.components)

    reads = lists()
    rig.supervisor.components = lambda: next(reads)
    rig.components.remove(served)
    served.current_pid = None  # then stopped its process
    crashed.current_pid = None  # a real crash in the same round
    rig.rounds(5)
    assert served.restarts == 0 and "fraud" not in rig.supervisor.tracks
    fraud = [line for line in rig.lines if "fraud" in line]
    assert len(fraud) == 1 and fraud[0].endswith("fraud was undeployed")
    assert crashed.restarts == 1  # the crashed one is still restarted as before
    assert any("churn is down: its process (pid 200) was gone" in line for line in rig.lines)
    assert rig.lock.taken == ["supervisor: restarting churn"]


def test_a_crash_found_while_the_records_cannot_be_read_again_is_still_a_crash_and_restarted(rig):
    crashed = FakeComponent("mlflow", pid=100)
    rig.components = [crashed]
    rig.supervisor.round()
    listed = rig.supervisor.components

    def lists():
        yield list(rig.components)  # the round's own read
        raise OSError("deployments.json: read failed")  # the second look, for the missing process

    reads = lists()
    rig.supervisor.components = lambda: next(reads)
    crashed.current_pid = None
    rig.supervisor.round()
    assert any("mlflow is down: its process (pid 100) was gone" in line for line in rig.lines)
    assert not any("a round failed" in line or "undeployed" in line for line in rig.lines)
    rig.supervisor.components = listed
    rig.rounds(2)
    assert crashed.restarts == 1


def test_a_component_started_again_by_someone_else_before_the_lock_is_not_restarted(rig):
    crashed = FakeComponent("mlflow", pid=None)
    rig.components = [crashed]
    rig.supervisor.round()
    rig.clock.now += 1

    def up_got_there_first():
        crashed.current_pid = 4242

    rig.lock.on_enter = up_got_there_first
    rig.supervisor.round()
    assert crashed.restarts == 0
    assert rig.supervisor.tracks["mlflow"].state == "running"


def test_a_component_waits_for_what_it_depends_on(rig):
    order: list[str] = []
    postgres = FakeComponent("postgres", pid=None)
    mlflow = FakeComponent("mlflow", pid=None, depends_on=("postgres",))
    postgres.order = mlflow.order = order
    rig.components = [postgres, mlflow]
    rig.supervisor.round()
    assert rig.supervisor.tracks["mlflow"].state == "waiting"
    rig.rounds(5)
    assert order == ["postgres", "mlflow"]
    assert mlflow.restarts == postgres.restarts == 1


def test_a_component_that_keeps_failing_ends_crash_looping_and_is_left_alone_until_a_reset(rig):
    broken = FakeComponent("fraud", pid=None)
    broken.fail_with = RuntimeError("port 5000 is held by another process")
    rig.components = [broken]
    rig.rounds(200)
    assert broken.restarts == 3  # max_restarts
    assert rig.supervisor.tracks["fraud"].crash_looping
    assert any("fraud is crash-looping" in line and "gave up" in line for line in rig.lines)
    assert "fraud crash-looping" in summarise(rig.state())
    rig.supervisor.request_reset()  # `sandbox up`
    broken.fail_with = None
    rig.rounds(3)
    assert broken.restarts == 4 and broken.current_pid is not None
    assert not rig.supervisor.tracks["fraud"].crash_looping


def test_the_state_file_is_private_json(rig, tmp_path):
    rig.components = [FakeComponent("postgres")]
    os.umask(0)  # whatever the umask (the test fixture restores it)
    rig.supervisor.round()
    path = tmp_path / "state.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    state = rig.state()
    assert (
        state["pid"] == os.getpid() and state["rounds"] == 1 and state["components"]["postgres"]["state"] == "running"
    )


def test_sigterm_during_a_restart_stops_what_it_started_and_ends_the_loop(rig):
    slow = FakeComponent("mlflow", pid=None)
    slow.block_until_aborted = True
    rig.components = [slow]
    rig.supervisor.round()
    rig.clock.now += 1
    threading.Thread(target=lambda: slow.started.wait(10) and rig.supervisor.stop(), daemon=True).start()
    rig.supervisor.run(lambda: 0.01)  # returns only because of the stop
    assert slow.aborts >= 1
    assert slow.restarts == 0
    assert any("abandoning the restart of mlflow" in line for line in rig.lines)


def test_each_round_rotates_the_components_logs(rig, tmp_path):
    from sandbox.config import LogsConfig

    log = tmp_path / "service.log"
    log.write_bytes(b"x" * 5000)
    rig.supervisor.logs = LogsConfig(max_bytes=1024, keep=2)
    rig.components = [FakeComponent("postgres", log=log)]
    rig.supervisor.round()
    assert log.stat().st_size == 0
    assert rotated(log, 1).read_bytes() == b"x" * 5000
    assert any(f"rotated {log}" in line for line in rig.lines)


# --------------------------------------------------------------------------- rotation


def test_a_log_within_its_limit_is_left_alone(tmp_path):
    log = tmp_path / "service.log"
    log.write_bytes(b"a" * 100)
    assert rotate_if_needed(log, max_bytes=100, keep=3) is False
    assert log.read_bytes() == b"a" * 100
    assert not rotated(log, 1).exists()
    assert rotate_if_needed(tmp_path / "absent.log", max_bytes=1, keep=3) is False


def test_rotation_shifts_the_copies_and_keeps_n(tmp_path):
    log = tmp_path / "service.log"
    for generation in range(1, 5):
        log.write_bytes(f"generation {generation}\n".encode() * 20)
        assert rotate_if_needed(log, max_bytes=50, keep=2) is True
        assert log.stat().st_size == 0
    assert rotated(log, 1).read_bytes().startswith(b"generation 4")
    assert rotated(log, 2).read_bytes().startswith(b"generation 3")
    assert not rotated(log, 3).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["service.log", "service.log.1", "service.log.2"]


def test_rotated_copies_are_0600_whatever_the_umask(tmp_path):
    log = tmp_path / "service.log"
    os.umask(0)
    log.write_bytes(b"b" * 10)
    rotated(log, 1).write_bytes(b"older")
    os.chmod(rotated(log, 1), 0o644)  # a copy left looser by hand
    rotate(log, keep=3)
    for path in (rotated(log, 1), rotated(log, 2)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_writer_holding_an_o_append_descriptor_continues_at_the_start(tmp_path):
    log = tmp_path / "service.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # as ManagedProcess hands it to a server
    try:
        os.write(fd, b"before rotation\n" * 10)
        rotate(log, keep=1)
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    assert log.read_bytes() == b"after\n"  # no hole of NULs where the old content was
    assert rotated(log, 1).read_bytes() == b"before rotation\n" * 10


def test_keep_zero_truncates_and_lowering_keep_drops_the_older_copies(tmp_path):
    log = tmp_path / "service.log"
    for _ in range(3):
        log.write_bytes(b"c" * 10)
        rotate(log, keep=3)
    assert rotated(log, 3).exists()
    log.write_bytes(b"d" * 10)
    rotate(log, keep=1)
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["service.log", "service.log.1"]
    log.write_bytes(b"e" * 10)
    rotate(log, keep=0)
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["service.log"]
    assert log.stat().st_size == 0


# --------------------------------------------------------------------------- configuration


def test_the_sections_have_defaults_and_are_configurable(tmp_path):
    cfg = load_config()
    assert cfg.supervisor.enabled and cfg.supervisor.max_restarts == 5 and cfg.supervisor.window_s == 300
    assert cfg.logs.max_bytes == 10 * 1024 * 1024 and cfg.logs.keep == 3
    (tmp_path / "sandbox.yaml").write_text("supervisor: {enabled: false}\nlogs: {keep: 1}\n")
    cfg = load_config(tmp_path / "sandbox.yaml")
    assert cfg.supervisor.enabled is False
    assert cfg.logs.keep == 1


@pytest.mark.parametrize(
    "yaml, problem",
    [
        ("supervisor: {backoff_initial_s: 10, backoff_max_s: 5}", "backoff_max_s must be at least"),
        ("supervisor: {max_restarts: 0}", "supervisor.max_restarts"),
        ("logs: {max_bytes: 10}", "logs.max_bytes"),
        ("supervisor: {restart: always}", "unknown config key 'supervisor.restart'"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, yaml, problem):
    (tmp_path / "sandbox.yaml").write_text(yaml + "\n")
    with pytest.raises(ConfigError, match=problem):
        load_config(tmp_path / "sandbox.yaml")
