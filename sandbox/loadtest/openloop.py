"""The open-loop load generator: requests on a schedule, latency from the scheduled send time.

    python -m sandbox.loadtest.openloop SPEC.json --part K --parts N    # one generator process

Each process takes every N-th arrival of the rate profile (`shapes.Profile`)
and sends it when it is due, whether or not earlier requests have been
answered: a new keep-alive connection is opened when every open one is busy
(up to `connections`), so a server that stalls meets the traffic real users
would send, not a polite queue. A request's latency runs from the time it was
*scheduled*, not from when it went out, so time spent queued behind a stall
counts (the coordinated-omission correction wrk2 and k6's arrival-rate
executors make); the time from the actual write is kept beside it as the
service time.

The client is a small HTTP/1.1 one written on asyncio protocols (uvloop when
installed): request bytes are prepared once, a response is judged by its status
line and one byte search of its body for the expected key, so one core sends
several times what an HTTP library would (benchmarks/openloop_cost.py measures
it beside wrk). Requests the scheduler dispatched more than `late_ms` after
their time mean the generator itself fell behind; they are counted, and the
runner refuses to call the run valid past `max_late_percent`.

The runner (`run`) starts the processes, lets them start together, and merges
their histograms bucket by bucket (`histogram.Histogram`), so percentiles over
several processes are exact.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from sandbox.loadtest.histogram import Histogram
from sandbox.loadtest.shapes import Profile
from sandbox.wire import SERVING_TOKEN_ENV

# Dispatched this much after its scheduled time: the generator fell behind. Not less: on a busy machine
# the scheduler's own wake-ups slip by tens of milliseconds now and then (measured here at load 7 on 2 cores),
# which says nothing about whether the generator keeps up; one that cannot keeps slipping further.
LATE_MS = 50.0
# Every timestamp comes from the monotonic clock itself, not the event loop's: uvloop's loop.time() is
# libuv's cached millisecond clock, which would round every latency to a millisecond.
_now = time.monotonic
MAX_PENDING = 200_000  # requests waiting for a connection; past this they are dropped and counted


def build_requests(host: str, path: str, bodies: list[bytes], token: str | None = None) -> list[bytes]:
    netloc = urlsplit(host).netloc
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return [
        (
            f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]


class _Stats:
    def __init__(self, start: float) -> None:
        self.start = start
        self.latency = Histogram()
        self.service = Histogram()
        self.errors: collections.Counter[str] = collections.Counter()
        self.ok = 0
        self.scheduled = 0
        self.late = 0
        self.max_lag_s = 0.0
        self.opened = 0
        self.seconds: dict[int, list] = {}  # second -> [scheduled, completed, errors, Histogram]

    def second(self, t: float) -> list:
        index = int(t - self.start) if t > self.start else 0
        entry = self.seconds.get(index)
        if entry is None:
            entry = self.seconds[index] = [0, 0, 0, Histogram()]
        return entry

    def done(self, scheduled: float, written: float, now: float, error: str | None) -> None:
        latency_us = int((now - scheduled) * 1_000_000)
        by_schedule = self.second(scheduled)
        self.second(now)[1] += 1
        if error is None:
            self.ok += 1
            self.latency.record(latency_us)
            self.service.record(int((now - written) * 1_000_000))
            by_schedule[3].record(latency_us)
        else:
            self.errors[error] += 1
            by_schedule[2] += 1


class _Connection(asyncio.Protocol):
    __slots__ = ("_body_start", "_buffer", "_chunked", "_length", "_pool", "answered", "job", "transport", "written")

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.job: float | None = None  # the scheduled time of the request in flight
        self.written = 0.0
        self.answered = 0  # requests this connection carried before the one in flight
        self._buffer = bytearray()
        self._body_start = -1
        self._length = -1
        self._chunked = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._pool.ready(self)

    def send(self, scheduled: float, request: bytes, now: float) -> None:
        self.answered += 1 if self.job is None and self.written else 0
        self.job = scheduled
        self.written = now
        self._buffer.clear()
        self._body_start = -1
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.job is None:
            return  # nothing was asked on this connection
        buffer = self._buffer
        buffer += data
        if self._body_start < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._body_start = end + 4
            head = bytes(buffer[:end]).lower()
            self._length = -1
            self._chunked = False
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                self._length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            elif b"\r\ntransfer-encoding: chunked" in head:
                self._chunked = True
        if self._length >= 0:
            if len(buffer) - self._body_start < self._length:
                return
        elif self._chunked:
            if not buffer.endswith(b"0\r\n\r\n"):
                return
        else:
            return  # a body that ends with the connection: connection_lost completes it
        self._complete()

    def _complete(self) -> None:
        buffer = self._buffer
        status = bytes(buffer[9:12])
        if status != b"200":
            error = f"HTTP {status.decode(errors='replace')}"
        elif buffer.find(self._pool.expect, self._body_start) < 0:
            error = f"response lacks {self._pool.expect.decode()}"
        else:
            error = None
        scheduled, self.job = self.job, None
        self._body_start = -1
        self._pool.finished(self, scheduled, error)

    def connection_lost(self, exc) -> None:
        if self.job is not None and self._body_start >= 0 and self._length < 0 and not self._chunked:
            self._complete()  # HTTP/1.0 style: the body ended with the connection
        self._pool.lost(self, exc)


class _Pool:
    def __init__(self, settings: dict, stats: _Stats, loop: asyncio.AbstractEventLoop) -> None:
        parts = urlsplit(settings["host"])
        self.address = (parts.hostname, parts.port or 80)
        bodies = [b.encode() for b in settings["bodies"]]
        self.requests = build_requests(settings["host"], settings["path"], bodies, settings.get("token"))
        self.expect = b'"' + settings["expect"].encode() + b'"'
        self.max_connections = int(settings.get("connections", 1000))
        self.timeout = float(settings.get("timeout_s", 10))
        self.stats = stats
        self.loop = loop
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.opening = 0
        self.pending: collections.deque[float] = collections.deque()
        self.next_request = 0

    def _request(self) -> bytes:
        self.next_request = (self.next_request + 1) % len(self.requests)
        return self.requests[self.next_request]

    def dispatch(self, scheduled: float, now: float) -> None:
        if self.idle:
            connection = self.idle.pop()
            self.busy.add(connection)
            connection.send(scheduled, self._request(), now)
            return
        if len(self.pending) >= MAX_PENDING:
            self.stats.done(scheduled, now, now, "dropped: too many requests waiting for a connection")
            return
        self.pending.append(scheduled)
        if len(self.busy) + len(self.idle) + self.opening < self.max_connections and self.opening < len(self.pending):
            self.opening += 1
            self.loop.create_task(self._open())

    async def _open(self) -> None:
        try:
            await self.loop.create_connection(lambda: _Connection(self), *self.address)
            self.stats.opened += 1
        except OSError as exc:
            self.opening -= 1
            if self.pending:  # this connection was opened for the oldest waiting request: it fails
                scheduled = self.pending.popleft()
                now = _now()
                self.stats.done(scheduled, now, now, f"connect: {exc.strerror or type(exc).__name__}")

    def ready(self, connection: _Connection) -> None:
        self.opening -= 1
        self._next(connection)

    def _next(self, connection: _Connection) -> None:
        if self.pending:
            self.busy.add(connection)
            connection.send(self.pending.popleft(), self._request(), _now())
        else:
            self.busy.discard(connection)
            self.idle.append(connection)

    def finished(self, connection: _Connection, scheduled: float, error: str | None) -> None:
        self.stats.done(scheduled, connection.written, _now(), error)
        self._next(connection)

    def lost(self, connection: _Connection, exc) -> None:
        self.busy.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)
        if connection.job is not None:
            if connection.answered and not connection._buffer:
                # A reused keep-alive connection the server had just closed: nothing was answered, so the
                # request goes out again on another connection, as HTTP clients do for a stale keep-alive one.
                self.pending.appendleft(connection.job)
            else:
                now = _now()
                reason = "connection reset" if exc else "connection closed by the server"
                self.stats.done(connection.job, connection.written, now, reason)
            connection.job = None
        if self.pending and len(self.busy) + len(self.idle) + self.opening < self.max_connections:
            self.opening += 1
            self.loop.create_task(self._open())

    def expire(self, now: float, *, everything: bool = False) -> None:
        """Fail requests older than the timeout (their connection is closed, as a client would); all at the end."""
        timeout = -1.0 if everything else self.timeout
        for connection in [c for c in self.busy if c.job is not None and now - c.written > timeout]:
            self.stats.done(connection.job, connection.written, now, "timeout")
            connection.job = None
            self.busy.discard(connection)
            connection.transport.abort()
        while self.pending and now - self.pending[0] > timeout:
            scheduled = self.pending.popleft()
            self.stats.done(scheduled, now, now, "timeout waiting for a connection")

    def in_flight(self) -> int:
        return len(self.pending) + sum(1 for c in self.busy if c.job is not None)

    def close(self) -> None:
        for connection in [*self.idle, *self.busy]:
            if connection.transport is not None:
                connection.transport.close()


async def _generate(settings: dict, profile: Profile, part: int, parts: int, get_start: Callable[[], float]) -> _Stats:
    loop = asyncio.get_running_loop()
    stats = _Stats(0.0)
    pool = _Pool(settings, stats, loop)
    # A few connections open before the start, so the first second does not measure connection set-up.
    warm = min(pool.max_connections, 2 + int(profile.peak / parts / 1000))
    for _ in range(warm):
        pool.opening += 1
        await pool._open()
    start_wall = await loop.run_in_executor(None, get_start)
    start = stats.start = _now() + (start_wall - time.time())
    late_s = float(settings.get("late_ms", LATE_MS)) / 1000
    next_expiry = start + 0.1
    arrivals = profile.arrivals(part, parts)
    due = next(arrivals, None)
    while due is not None:
        when = start + due
        now = _now()
        if when > now:
            # At least a millisecond: uvloop's timers have millisecond resolution, and a shorter sleep spins.
            await asyncio.sleep(max(when - now, 0.001))
            now = _now()
        while due is not None and start + due <= now:
            scheduled = start + due
            lag = now - scheduled
            if lag > late_s:
                stats.late += 1
            if lag > stats.max_lag_s:
                stats.max_lag_s = lag
            stats.scheduled += 1
            stats.second(scheduled)[0] += 1
            pool.dispatch(scheduled, now)
            due = next(arrivals, None)
        if now >= next_expiry:
            pool.expire(now)
            next_expiry = now + 0.1
    # Let what is in flight finish, up to the timeout; what is left then failed.
    deadline = _now() + pool.timeout
    while pool.in_flight() and _now() < deadline:
        await asyncio.sleep(0.02)
        pool.expire(_now())
    pool.expire(_now(), everything=True)
    pool.close()
    return stats


def generate(settings: dict, part: int, parts: int, get_start: Callable[[], float]) -> dict:
    """One process's share of the run; its figures as a JSON-ready dict.

    ``get_start`` is called (in a thread) once the process is ready to send; it returns the wall-clock
    start time that every process of the run shares.
    """
    profile = Profile(tuple(tuple(p) for p in settings["profile"]))
    use_uvloop = settings.get("loop", "uvloop") == "uvloop"
    runner_factory = None
    if use_uvloop:
        try:
            import uvloop

            runner_factory = uvloop.new_event_loop
        except ImportError:
            runner_factory = None
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    wall_before = time.monotonic()
    with asyncio.Runner(loop_factory=runner_factory) if sys.version_info >= (3, 11) else _Runner() as runner:
        stats = runner.run(_generate(settings, profile, part, parts, get_start))
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    return {
        "part": part,
        "loop": "uvloop" if runner_factory else "asyncio",
        "scheduled": stats.scheduled,
        "ok": stats.ok,
        "errors": dict(stats.errors),
        "late": stats.late,
        "max_lag_ms": round(stats.max_lag_s * 1000, 3),
        "connections_opened": stats.opened,
        "cpu_s": cpu,
        "wall_s": time.monotonic() - wall_before,
        "latency": stats.latency.to_dict(),
        "service": stats.service.to_dict(),
        "seconds": {str(k): [v[0], v[1], v[2], v[3].to_dict()] for k, v in sorted(stats.seconds.items())},
    }


class _Runner:  # Python 3.10 has no asyncio.Runner
    def __enter__(self):
        self.loop = asyncio.new_event_loop()
        return self

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def __exit__(self, *exc):
        self.loop.close()


# --------------------------------------------------------------------------- the runner


def run(settings: dict, report_dir: Path, *, processes: int = 1, start_timeout_s: float = 60) -> list[dict]:
    """Start ``processes`` generator processes, start them together, return each one's figures. A ``token`` in
    the settings reaches them through their environment, never the report folder."""
    report_dir.mkdir(parents=True, exist_ok=True)
    settings_file = report_dir / "openloop-settings.json"
    token = settings.get("token")
    settings_file.write_text(json.dumps({key: value for key, value in settings.items() if key != "token"}))
    env = {key: value for key, value in os.environ.items() if key != SERVING_TOKEN_ENV}
    env.update({"PYTHONUNBUFFERED": "1", **({SERVING_TOKEN_ENV: token} if token else {})})
    log = (report_dir / "generator.log").open("ab")
    procs = []
    try:
        for part in range(processes):
            procs.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "sandbox.loadtest.openloop", str(settings_file)),
                        *("--part", str(part), "--parts", str(processes)),
                        *("--out", str(report_dir / f"openloop-part{part}.json")),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                )
            )
        deadline = time.monotonic() + start_timeout_s
        for proc in procs:  # each says "ready" once imported and set up
            line = _readline(proc, deadline)
            if line.strip() != b"ready":
                raise RuntimeError(f"a generator process did not start (exit {proc.poll()}); see {log.name}")
        start = time.time() + 0.2
        for proc in procs:
            proc.stdin.write(f"{start}\n".encode())
            proc.stdin.close()
        duration = settings["profile"][-1][0]
        limit = duration + float(settings.get("timeout_s", 10)) + 60
        codes = [proc.wait(timeout=limit) for proc in procs]
        if any(codes):
            raise RuntimeError(f"a generator process failed (exit codes {codes}); see {log.name}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.close()
    return [json.loads((report_dir / f"openloop-part{part}.json").read_text()) for part in range(processes)]


def _readline(proc: subprocess.Popen, deadline: float) -> bytes:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                return proc.stdout.readline()
            if proc.poll() is not None:
                return b""
    return b""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("settings", type=Path)
    parser.add_argument("--part", type=int, default=0)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    settings = json.loads(args.settings.read_text())
    settings["token"] = os.environ.get(SERVING_TOKEN_ENV) or None  # the runner's, for the target

    def get_start() -> float:
        print("ready", flush=True)
        return float(sys.stdin.readline())

    args.out.write_text(json.dumps(generate(settings, args.part, args.parts, get_start)))


if __name__ == "__main__":
    main()


# --------------------------------------------------------------------------- merging the processes' figures

REPORTED = (0.5, 0.9, 0.95, 0.99, 0.999)


def _key(fraction: float) -> str:
    return f"p{fraction * 100:g}".replace(".", "_") + "_ms"  # p50_ms, p99_ms, p99_9_ms


def summarize(
    parts: list[dict], profile: Profile, *, name: str, max_late_percent: float, late_ms: float = LATE_MS
) -> dict:
    """One run's raw figures from its processes': histograms merged bucket by bucket, counts added."""
    latency = Histogram.merged(Histogram.from_dict(p["latency"]) for p in parts)
    service = Histogram.merged(Histogram.from_dict(p["service"]) for p in parts)
    errors: collections.Counter[str] = collections.Counter()
    for p in parts:
        errors.update(p["errors"])
    failures = sum(errors.values())
    scheduled = sum(p["scheduled"] for p in parts)
    duration = profile.duration_s
    seconds: dict[int, list] = {}
    for p in parts:
        for key, (sent, done, failed, hist) in p["seconds"].items():
            entry = seconds.setdefault(int(key), [0, 0, 0, Histogram()])
            entry[0] += sent
            entry[1] += done
            entry[2] += failed
            entry[3].merge(Histogram.from_dict(hist))
    timeline = [
        {
            "t": float(second),
            "rate": entry[0],
            "rps": entry[1],
            "errors": entry[2],
            **{f"p{q}": entry[3].percentile_ms(q / 100) for q in (50, 95, 99)},
        }
        for second, entry in sorted(seconds.items())
        if second < duration + 1  # the drain after the schedule ends is not a second of load
    ]
    late = sum(p["late"] for p in parts)
    late_percent = 100.0 * late / scheduled if scheduled else 0.0
    cpu = [100.0 * p["cpu_s"] / p["wall_s"] if p["wall_s"] else 0.0 for p in parts]
    completed = latency.total + failures
    figures = {
        "requests": completed,
        "failures": failures,
        "rps": completed / duration if duration else 0.0,
        "avg_ms": latency.mean_ms,
        "max_ms": latency.max_us / 1000,
        **{_key(q): latency.percentile_ms(q) for q in REPORTED},
    }
    return {
        "mode": "open",
        "duration_s": duration,
        **figures,
        "offered_rps": scheduled / duration if duration else 0.0,
        "rate_profile": profile.as_text(),
        "service_time": {
            "avg_ms": service.mean_ms,
            "max_ms": service.max_us / 1000,
            **{_key(q): service.percentile_ms(q) for q in REPORTED},
        },
        "errors": dict(errors),
        "by_name": {
            name: {
                "requests": completed,
                "failures": failures,
                "rps": figures["rps"],
                **{f"p{q}": latency.percentile_ms(q / 100) for q in (50, 90, 95, 99)},
            }
        },
        "timeline": timeline,
        "late": late,
        "late_ms": late_ms,
        "late_percent": late_percent,
        "max_late_percent": max_late_percent,
        "max_lag_ms": max((p["max_lag_ms"] for p in parts), default=0.0),
        "valid": late_percent <= max_late_percent,
        "connections_opened": sum(p["connections_opened"] for p in parts),
        "processes": len(parts),
        "event_loop": parts[0]["loop"] if parts else None,
        "generator_cpu_percent": {"max": max(cpu, default=0.0), "mean": sum(cpu) / len(cpu) if cpu else 0.0},
        "generator_cpu_seconds": sum(p["cpu_s"] for p in parts),
        "generator_saturated": False,
        "latency_histogram": latency.to_dict(),
    }
