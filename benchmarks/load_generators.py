"""The serving benchmark's two load generators, Locust and wrk, behind one call.

Both POST the same prepared bodies (one row each, cycled) to the same URL in a
closed loop; each runs as a process group of its own, stopped with its group
if the benchmark is interrupted. The generator's own CPU time (mean % of one
core over the run) is reported beside its figures: on a small machine the
generator competes with the server for the same cores.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.servers import stop_group

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERATORS = ("locust", "wrk")


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    generator_cpu_percent: float  # mean over the run, % of one core
    error_kinds: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def wrk_path() -> str | None:
    return shutil.which("wrk")


def measure(
    generator: str,
    url: str,
    bodies: Sequence[str],
    *,
    expect: str,
    connections: int,
    duration_s: float,
    threads: int,
    scratch: Path,
    headers: Mapping[str, str] | None = None,
) -> Figures:
    """One run of ``generator``; ``headers`` go with every request (the sandbox server's bearer token)."""
    scratch.mkdir(parents=True, exist_ok=True)
    headers = dict(headers or {})
    if generator == "locust":
        return _locust(
            url, bodies, expect=expect, users=connections, duration_s=duration_s, scratch=scratch, headers=headers
        )
    if generator == "wrk":
        return _wrk(
            url,
            bodies,
            connections=connections,
            duration_s=duration_s,
            threads=threads,
            scratch=scratch,
            headers=headers,
        )
    raise ValueError(f"unknown load generator {generator!r}")


def _run(argv: Sequence[str], *, timeout: float, log: Path, cwd: Path | None = None) -> tuple[str, float, float]:
    """Run a generator in its own process group; return its stdout, wall seconds and CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:  # interrupted or timed out: take its whole group down
                stop_group(proc, timeout=5)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with code {proc.returncode}:\n{log.read_text()[-2000:]}\n{stdout}")
    return stdout, wall, cpu


# --- Locust ----------------------------------------------------------------------------------------------------


def _locust(
    url: str,
    bodies: Sequence[str],
    *,
    expect: str,
    users: int,
    duration_s: float,
    scratch: Path,
    headers: Mapping[str, str] | None = None,
) -> Figures:
    spec = scratch / "locust-spec.json"
    fields = {"url": url, "bodies": list(bodies), "expect": expect, "users": users, "duration_s": duration_s}
    spec.write_text(json.dumps({**fields, "headers": dict(headers or {})}))
    stdout, wall, cpu = _run(
        [sys.executable, "-m", "benchmarks.locust_post", str(spec)],
        timeout=duration_s + 120,
        log=scratch / "locust.log",
        cwd=REPO_ROOT,
    )
    raw = json.loads(stdout.strip().splitlines()[-1])
    return Figures(
        rps=raw["rps"],
        p50_ms=raw["p50_ms"],
        p90_ms=raw["p90_ms"],
        p99_ms=raw["p99_ms"],
        requests=raw["requests"],
        errors=raw["errors"],
        generator_cpu_percent=100 * cpu / wall,
        error_kinds=raw["error_kinds"],
    )


# --- wrk -------------------------------------------------------------------------------------------------------

# Requests are formatted once per thread in init(); request() only hands the next one out.
_WRK_LUA = """\
local bodies = {
%(bodies)s
}
local requests = {}
local next_index = 0

function init(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", %(path)s, {["Content-Type"] = "application/json"%(headers)s}, body)
  end
end

function request()
  next_index = next_index %% #requests + 1
  return requests[next_index]
end
"""

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def _lua_long_string(text: str) -> str:
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def wrk_script(path: str, bodies: Sequence[str], headers: Mapping[str, str] | None = None) -> str:
    # "[ [=[k]=] ]": a key in brackets, spaced, or Lua reads "[[" as the start of a long string
    extra = "".join(f", [ {_lua_long_string(k)} ] = {_lua_long_string(v)}" for k, v in (headers or {}).items())
    return _WRK_LUA % {
        "bodies": ",\n".join(f"  {_lua_long_string(body)}" for body in bodies),
        "path": _lua_long_string(path),
        "headers": extra,
    }


def parse_wrk(output: str) -> dict:
    """Requests/s, p50/p90/p99 (from --latency), totals and errors from wrk's report."""
    rps = _RPS.search(output)
    percentiles = {int(p): float(value) * _UNITS_MS[unit] for p, value, unit in _PERCENTILE.findall(output)}
    if rps is None or not {50, 90, 99} <= percentiles.keys():
        raise RuntimeError(f"cannot read wrk's report:\n{output}")
    total = _TOTAL.search(output)
    kinds: dict[str, int] = {}
    if match := _NON_2XX.search(output):
        kinds["non-2xx/3xx"] = int(match.group(1))
    if match := _SOCKET.search(output):
        for name, count in zip(("connect", "read", "write", "timeout"), match.groups(), strict=True):
            if int(count):
                kinds[f"socket {name}"] = int(count)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": percentiles[50],
        "p90_ms": percentiles[90],
        "p99_ms": percentiles[99],
        "requests": int(total.group(1)) if total else 0,
        "errors": sum(kinds.values()),
        "error_kinds": kinds,
    }


def _wrk(
    url: str,
    bodies: Sequence[str],
    *,
    connections: int,
    duration_s: float,
    threads: int,
    scratch: Path,
    headers: Mapping[str, str] | None = None,
) -> Figures:
    executable = wrk_path()
    if executable is None:
        raise RuntimeError("wrk is not on PATH (Debian/Ubuntu: apt-get install wrk)")
    script = scratch / "post.lua"
    script.write_text(wrk_script(urlsplit(url).path, bodies, headers))
    argv = [executable, "--threads", str(min(threads, connections)), "--connections", str(connections)]
    argv += ["--duration", f"{duration_s:g}s", "--timeout", "30s", "--latency", "--script", str(script), url]
    stdout, wall, cpu = _run(argv, timeout=duration_s + 60, log=scratch / "wrk.log")
    (scratch / "wrk.out").write_text(stdout)
    figures = parse_wrk(stdout)
    return Figures(**figures, generator_cpu_percent=100 * cpu / wall)
